"""docs/benchmarks.md and its plots from one results record."""

from __future__ import annotations

from pathlib import Path

from bench import confirmed
from bench.credentials import report_section as credentials_section

__all__ = ["write_report", "replace_section", "keep_sections"]

PEERS = ["statestore", "plain-dapr", "reference"]
BASELINE = "plain-dapr"


def _ratio(value: float, base: float, higher_is_better: bool) -> str:
    if not value or not base:
        return "n/a"
    ratio = base / value if not higher_is_better else value / base
    return f"{ratio:.1f}x"


def _table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _kept_up(rows: list[dict]) -> int:
    ok = [s["offered_per_s"] for s in rows if s["achieved_per_s"] >= 0.95 * s["offered_per_s"] and s["drain_s"] < 1]
    return max(ok, default=0)


def _fleet(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(not measured in this run)"]
    table = []
    for row in rows:
        ss, plain = row["statestore"], row.get("plain-dapr")
        for name, f in (("statestore", ss), ("plain-dapr", plain)):
            if f is None:
                continue
            rss = f["peak_rss_mb"]
            table.append([
                f"{f['ids']:,} x {f['fields']}", name, f["applied_per_s"],
                _ratio(ss["applied_per_s"], plain["applied_per_s"], True) if plain and name == "statestore" else "",
                f["staleness"].get("p50_ms"), f["staleness"].get("p99_ms"),
                rss.get("subscriber") if name == "statestore" else "", rss.get("subscriber-daprd"), rss.get("caller-daprd"),
                f["snapshots_after_s"] if name == "statestore" else "", f["complete"],
            ])  # fmt: skip
    processes = ["caller", "caller-daprd", "subscriber", "subscriber-daprd", "broker"]
    cpu = [[f"{f['ids']:,} x {f['fields']}", name, window, *_cpu_columns(f[key], processes)]
           for row in rows for name, f in row.items() if f
           for window, key in (("visible", "cpu_us_per_update"), ("+ snapshots", "cpu_us_per_update_with_snapshots"))
           if key in f]  # fmt: skip
    return [_table(["workload", "peer", "applied/s", "vs plain-dapr", "visible p50 ms", "visible p99 ms",
                    "subscriber MiB", "subscriber sidecar MiB", "caller sidecar MiB", "snapshots after s",
                    "complete"], table),
            "", "CPU µs per update of each process, from the first update until all are visible (\"visible\";"
            " snapshots being written meanwhile count too), and until every snapshot is written too (\"+ snapshots\")."
            " The bench process is the caller; \"of which snapshot writes\" is the subscriber's CPU in object-store"
            " writes (statestore_snapshot_write_cpu_seconds, local folders only):", "",
            _table(["workload", "peer", "until", *processes, "all", "caller + subscriber",
                    "of which snapshot writes", "caller + subscriber, writes aside"], cpu) if cpu else "(not measured in this run)"]  # fmt: skip


def _cpu_columns(cpu: dict[str, int], processes: list[str]) -> list:
    """Each process's figure, then every process together, caller + subscriber, the
    subscriber's snapshot writes, and caller + subscriber without them ("" when not measured)."""
    ours = cpu.get("caller", 0) + cpu.get("subscriber", 0)
    writes = cpu.get("subscriber-snapshot-writes")
    all_processes = sum(value for name, value in cpu.items() if name != "subscriber-snapshot-writes")
    return [*(cpu.get(p, "") for p in processes), all_processes, ours,
            "" if writes is None else writes, "" if writes is None else ours - writes]


def _credential_seconds(rows: list[dict], peer_prefix: str, count: int, scenario_prefix: str) -> float | None:
    return next((row["seconds"] for row in rows if row["peer"].startswith(peer_prefix) and row["credentials"] == count
                 and row["scenario"].startswith(scenario_prefix)), None)  # fmt: skip


def _targets(record: dict) -> list[str]:
    """The issues' targets (29, and 17 for credentials) against this run, the misses first."""
    r = record["results"]
    rows: list[tuple[str, str, str, bool]] = []
    fleet = [row for row in r.get("fleet", []) if row.get("plain-dapr")]
    if fleet:
        big = max(fleet, key=lambda row: row["statestore"]["ids"])
        ss, plain = big["statestore"], big["plain-dapr"]
        name = f"fleet {ss['ids']:,} x {ss['fields']}"
        ratio = ss["applied_per_s"] / plain["applied_per_s"]
        rows.append((f"{name}: vs plain Dapr RMW", f"{ratio:.1f}x ({ss['applied_per_s']:,}/s)", ">= 8x", ratio >= 8))
        for window, key in (("until visible", "cpu_us_per_update"), ("until every snapshot is written", "cpu_us_per_update_with_snapshots")):
            if key in ss:
                columns = _cpu_columns(ss[key], [])
                total, aside = columns[0], columns[3]
                rows.append((f"{name}: CPU µs per update, every process, {window}", f"{total}", "<= 330", total <= 330))
                if aside != "":
                    rows.append((f"{name}: CPU µs per update, caller + subscriber, snapshot writes aside, {window}",
                                 f"{aside}", "<= 110", aside <= 110))  # fmt: skip
    all_fleet = r.get("fleet", [])
    if all_fleet:
        for row in all_fleet:
            f, after = row["statestore"], row["statestore"]["snapshots_after_s"]
            # Issue 29's bound is for 100,000 x 2; issue 9's 30 s holds for every fleet row.
            bound = 10 if (f["ids"], f["fields"]) == (100_000, 2) else 30
            rows.append((f"every snapshot written, after the last update, fleet {f['ids']:,} x {f['fields']}",
                         f"{after} s" if after is not None else "not all", f"<= {bound} s",
                         after is not None and after <= bound))  # fmt: skip
        rss = [(row["statestore"]["ids"], row["statestore"]["peak_rss_mb"].get("subscriber", 0)) for row in all_fleet]
        peak = max(mb for _, mb in rss)
        shown = ", ".join(f"{mb} MiB at {ids:,}" for ids, mb in rss)
        rows.append(("subscriber peak RSS during the fleet rows", shown, "<= 200 MiB, flat", peak <= 200))
    tp = r["statestore"]["throughput"]["applied_per_s"]
    rows.append(("hot keys (1,000 ids x 10 fields, 16 producers): applied/s", f"{tp:,}", ">= 12,000", tp >= 12_000))
    latency = r[BASELINE]["latency"]["p50_ms"] / r["statestore"]["latency"]["p50_ms"]
    rows.append(("caller `save_state` p50 vs plain Dapr RMW", f"{latency:.0f}x", ">= 50x", latency >= 50))
    for rate, bound in ((2000, 100), (4000, 250)):
        at = next((s for s in r["statestore"]["staleness"] if s["offered_per_s"] == rate), None)
        if at:
            rows.append((f"staleness p99 at {rate:,} updates/s offered", f"{at['p99_ms']:.0f} ms", f"< {bound} ms", at["p99_ms"] < bound))
    credentials = r.get("credentials") or []
    ours, theirs = _credential_seconds(credentials, "statestore", 1000, "idle"), _credential_seconds(credentials, "reference", 1000, "idle")
    if ours and theirs:
        rows.append(("1,000 credentials saved and readable, vs one plain RMW each (idle)", f"{theirs / ours:.1f}x", ">= 10x",
                     theirs / ours >= 10))  # fmt: skip
    behind = _credential_seconds(credentials, "statestore", 200, "caller")
    if behind is not None:
        rows.append(("`save_secrets(200)` with 100,000 progress updates queued ahead", f"{behind} s", "<= 2 s", behind <= 2))
    rows += confirmed.targets(r.get("confirmed"))
    rows.sort(key=lambda row: row[3])  # misses first
    return [
        "## Against the targets (issues 17, 26 and 29), misses first",
        "",
        _table(["figure", "this run", "target", "met"], [[f, got, want, "yes" if ok else "**no**"] for f, got, want, ok in rows]),
    ]


SECTIONS = ["temporal", "floors"]  # written by other bench modules, kept by write_report


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def _section(text: str, name: str) -> str | None:
    begin, end = _markers(name)
    if begin not in text or end not in text:
        return None
    return text[text.index(begin) + len(begin) : text.index(end)].strip("\n")


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the section ``name`` (between its markers) set to ``body``; appended
    at the end when the text has no such section yet."""
    begin, end = _markers(name)
    block = f"{begin}\n{body}\n{end}"
    if _section(text, name) is None:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    return text[: text.index(begin)] + block + text[text.index(end) + len(end) :]


def keep_sections(text: str, old: str) -> str:
    """``text`` with the sections other benchmarks wrote into ``old`` (bench/temporal.py)."""
    for name in SECTIONS:
        body = _section(old, name)
        if body is not None:
            text = replace_section(text, name, body)
    return text


def write_report(record: dict, docs: Path) -> None:
    r = record["results"]
    base = r[BASELINE]
    parts = [
        "# Benchmarks",
        "",
        "`make bench` (quick sizes) or `make bench-full` runs this on one stack: the",
        "same daprd, Redis, sqlite store and object store for all three peers "
        "(see `bench/peers.py`):",
        "",
        "- **statestore**: `save_state` / `get_state` of this project.",
        "- **plain-dapr**: a synchronous read-modify-write of the JSON object through the Dapr",
        "  SDK's `DaprClient` against the sqlite store, with ETag retry.",
        "- **reference**: the reference system's algorithm: read the object from the",
        "  object-store binding, change it, write a local file, upload it; no ETag.",
        "",
        f"Mode `{record['mode']}`, {record['machine']['cpus']} cores, Python {record['machine']['python']}, "
        f"daprd {record['machine']['daprd']}; run took {record['seconds']} s. Ratios are against plain-dapr.",
        "",
        *_targets(record),
        "",
        # bench/floors.py writes this section (make bench runs it after this report).
        *_markers("floors"),
        "",
        "The load users run most comes first: many states with a few updates each. It is",
        "also where statestore's advantage is smallest.",
        "",
        "## Fleet: many states, few updates each, one caller",
        "",
        "Every id gets `status`, then every id gets `progress` (`bench/measures.py: fleet`);",
        "applied/s counts until every update is visible through reads (`sync_many` in chunks",
        "of 2,000 for statestore). plain-dapr runs 16 read-modify-writes at once. Peak RSS is",
        "sampled during the row only. Snapshots: seconds after the last update was visible",
        "until every `config.json` exists and a sample holds every field.",
        "",
        *_fleet(r.get("fleet", [])),
        "",
        "## Caller latency of one field update",
        "",
        _table(
            ["peer", "p50 ms", "p99 ms", "p999 ms", "p50 vs plain-dapr"],
            [[p, r[p]["latency"]["p50_ms"], r[p]["latency"]["p99_ms"], r[p]["latency"]["p999_ms"],
              _ratio(r[p]["latency"]["p50_ms"], base["latency"]["p50_ms"], False)] for p in PEERS],
        ),  # fmt: skip
        "",
        "statestore returns once the event is queued; the others once the write is stored.",
        "",
        "## Sustained throughput (applied and visible through reads)",
        "",
        _table(
            ["peer", "updates", "producers", "applied/s", "calls/s", "vs plain-dapr", "complete"],
            [[p, r[p]["throughput"]["updates"], r[p]["throughput"]["producers"], r[p]["throughput"]["applied_per_s"],
              r[p]["throughput"]["calls_per_s"],
              _ratio(r[p]["throughput"]["applied_per_s"], base["throughput"]["applied_per_s"], True),
              r[p]["throughput"]["complete"]] for p in PEERS],
        ),  # fmt: skip
        "",
        f"Median of {record['parameters'].get('tp_repeats', 1)} runs; statestore's runs: "
        f"{r['statestore']['throughput'].get('runs_applied_per_s')} applied/s. "
        f"Subscriber CPU per 1,000 applied updates: {r['statestore']['throughput'].get('subscriber_cpu_s_per_1000')} s "
        f"(its sidecar: {r['statestore']['throughput'].get('subscriber_sidecar_cpu_s_per_1000')} s).",
        "",
        "## Lost updates (producers writing distinct fields of the same states at once)",
        "",
        _table(["peer", "updates", "lost", "lost %"],
               [[p, r[p]["lost"]["updates"], r[p]["lost"]["lost"], r[p]["lost"]["lost_pct"]] for p in PEERS]),  # fmt: skip
        "",
        f"plain-dapr retried {r['plain-dapr'].get('etag_conflicts', 0)} ETag conflicts to lose nothing; the reference "
        f"read {r['reference'].get('torn_reads', 0)} torn files (two uploads interleaved), each treated as no state.",
        "",
        "## get_state latency on a warm store",
        "",
        _table(["peer", "ids", "p50 ms", "p99 ms", "p50 vs plain-dapr"],
               [[p, record["parameters"]["read_ids"], r[p]["read"]["p50_ms"], r[p]["read"]["p99_ms"],
                 _ratio(r[p]["read"]["p50_ms"], base["read"]["p50_ms"], False)] for p in PEERS]),  # fmt: skip
        "",
        "## Staleness: publish-to-visible delay at a fixed offered load (statestore)",
        "",
        _table(["offered/s", "achieved/s", "p50 ms", "p99 ms", "drain after load s"],
               [[s["offered_per_s"], s["achieved_per_s"], s.get("p50_ms"), s.get("p99_ms"), s["drain_s"]]
                for s in r["statestore"]["staleness"]]),  # fmt: skip
        "",
        f"Highest offered load kept up with (achieved at least 95% of it, backlog drained within 1 s): "
        f"{_kept_up(r['statestore']['staleness'])}/s; the closed-loop throughput above is the ceiling.",
        "",
        f"plain-dapr at {r['plain-dapr']['staleness'][0]['offered_per_s']}/s: "
        f"p50 {r['plain-dapr']['staleness'][0].get('p50_ms')} ms (write plus read; it is synchronous).",
        "",
        "## Scaling (statestore)",
        "",
        "Each row is a closed-loop run: the producers enqueue as fast as they can, so the probe",
        "that samples staleness waits behind the whole backlog (at 100,000 ids, 200,000 updates",
        "queued in about 2 s). Staleness at a sustainable load is the table above.",
        "",
        _table(["producers", "updates", "applied/s", "staleness p50 ms", "staleness p99 ms"],
               [[s["producers"], s["updates"], s["applied_per_s"], s.get("staleness", {}).get("p50_ms"),
                 s.get("staleness", {}).get("p99_ms")] for s in r["statestore"]["scaling"]["producers"]]),
        "",
        _table(["ids", "updates", "applied/s", "staleness p50 ms", "staleness p99 ms"],
               [[s["ids"], s["updates"], s["applied_per_s"], s.get("staleness", {}).get("p50_ms"),
                 s.get("staleness", {}).get("p99_ms")] for s in r["statestore"]["scaling"]["ids"]]),
        "",
        *confirmed.report_section(r.get("confirmed")),
        *credentials_section(r.get("credentials")),
        "## Memory",
        "",
        f"Peak RSS: subscriber {r['memory']['subscriber_peak_rss_mb']} MiB, "
        f"benchmark producer process {r['memory']['producer_peak_rss_mb']} MiB.",
        "",
        "![latency](bench-latency.png) ![staleness](bench-staleness.png) ![scaling](bench-scaling.png)",
        "",
        "## Where the time goes",
        "",
        "### Issue 29, continued: full messages on Redis, a cheaper `save_state` and `sync`",
        "",
        "The figures at the top are from the last `make bench-full` run (21:08 UTC, every change",
        "below). It ran on a disk holding three earlier runs' stacks, 11 GB and millions of",
        "snapshot files each (the bench did not remove them then; it does now), and it is the",
        "worse of two: the run at 20:43, without the `sync` change, measured every process at",
        "269 µs per fleet update (291 here), caller + subscriber with the snapshot writes aside",
        "at 113 µs (120 here), the snapshots written 6.8 s after the last update (16.7 s here),",
        "the fleet at 5.8x plain Dapr RMW (the same), hot keys at 14,871/s (15,598 here). The run",
        "before all of them (18:11 UTC) had hot keys at 10,396/s, every process at 342 µs,",
        "caller + subscriber at 139 µs, the fleet at 5.7x.",
        "",
        "- The caller split every batch into one message per Kafka partition it touched (12)",
        "  on Redis too, where a topic is one stream and a partition key means nothing: a",
        "  200-event batch went out as about 12 messages of 17 events, a delivery of 64",
        "  messages held about 1,100 events, and a hot state's updates were spread over more",
        "  deliveries, each one a state write. Each pipeline now asks its sidecar the pub/sub",
        "  component's type once and packs regardless on `pubsub.redis`: messages of up to 100",
        "  events, deliveries of up to 6,400. Quick hot-key runs (5 each, fresh stack): 11,000-",
        "  12,300/s before, 13,400-16,300/s after; the subscriber's sidecar 38 -> 28 ms of CPU per",
        "  1,000 updates. The fleet, whose states get one update per delivery either way, did not",
        "  move by more than the noise; the subscriber's peak RSS rose from about 110 to 130 MiB",
        "  (larger deliveries). Kafka keeps packing by partition.",
        "- `save_state` validated the app name and the id again for every key it built (6.8",
        "  `validate_id` calls per call) and parsed back every value it had just encoded: the app",
        "  name is checked once per settings object, keys are formatted from the checked id, and",
        "  strings, integers, booleans and None skip the parse (not the size check). 13.1 -> 10.7",
        "  µs of CPU per call before queuing (100,000 calls, the pipeline stubbed).",
        "- `sync_many` polled every 20 ms however long it had waited: behind a backlog of",
        "  seconds that was most of its reads. It now polls at most every twentieth of the time",
        "  waited (up to 100 ms). The caller's CPU per fleet update in quick runs: 57-62 µs before,",
        "  52-54 after; in the two bench-full runs 63 and 66, inside their noise.",
        "",
        "What still holds the caller + subscriber figure (113-120 µs, target 110): the caller's",
        "63-66 µs are `save_state` and queuing (about 29), publishing (about 9) and the reads",
        "`sync_many` makes to see every update applied (about 25; 130,000 documents read for",
        "100,000 states); the subscriber's 50-54 µs besides its snapshot writes are decoding, the",
        "merge, encoding and the gRPC calls of its loads, transactions and the flusher's reads,",
        "each a few µs per update, none above a fifth of it (cProfile of the delivery path).",
        "The fleet's ratio is held by the sidecars: a state's first write is a first-write",
        "insert (about 120 µs in daprd against 34 without the check, \"The floor\" above), and the",
        "subscriber's sidecar spent 89-97 µs per update; at 269-291 µs per update for every",
        "process, two cores give at most 6,900-7,400 updates/s, 7.0-7.1x the plain-dapr rate of",
        "those runs, before any idle time. The snapshots-after figure swings with the file",
        "system (6.8 and 16.7 s in the two runs; quick runs on a clean disk 3.7-13.9 s): the",
        "flusher writes what the applier left behind at a few hundred µs of CPU per file when",
        "the disk is full of files.",
        "",
        '### Issue 29: snapshots without the binding, and the CPU per update',
        '',
        '**The unfavourable figures first.** Measured with quick fleet runs (20,000 ids x 2, the',
        '`fleet` measure, a fresh local stack each) on the shared two-core machine, not in a',
        "`make bench-full` run: wall-clock rates swung 2x with the other engineers' load, so only",
        'the CPU figures are worth comparing. In the best of them every process together spent',
        '342 µs of CPU per update until all were visible (target 330) and 393 µs until every',
        'snapshot was written too; caller + subscriber with the snapshot writes aside, 128 µs',
        '(target 110). Both targets are missed by 4-20%, and so are the 8x, 12,000/s and staleness',
        'targets in the quick runs below.',
        '',
        '| fleet 20,000 x 2, CPU µs per update until visible | caller | caller sidecar | subscriber (of which snapshot writes) | subscriber sidecar | Redis | all |',
        '| --- | --- | --- | --- | --- | --- | --- |',
        "| before (issue 28's code, 1 ms probe), load 27 | 173 | 134 | 156 | 226 | 6 | 695 |",
        '| after, the same minute, load 37 | 90 | 51 | 123 | 152 | 5 | 421 |',
        '| after, a quieter minute, load 10 | 69 | 40 | 103 (44) | 127 | 3 | 342 |',
        '',
        "Issue 29's other targets, from quick runs of the same measures on a fresh local stack, on",
        'the loaded machine (load average 8-12, another suite running beside some of them):',
        '',
        '| target | quick run after the change | the code before, the same minute | target met |',
        '| --- | --- | --- | --- |',
        '| fleet vs plain Dapr RMW (50,000 x 2 against plain at 5,000 x 2) | 5.1x (1,459/s against 284/s) | | **no** (8x) |',
        '| every snapshot written after the last update (50,000 x 2) | 11.7-15.3 s | | **no** (10 s at 100,000) |',
        '| hot keys, 1,000 ids x 10 fields, 16 producers | 2,241-3,930/s | 4,711/s | **no** (12,000/s) |',
        '| staleness p99 at 2,000/s offered | 338-761 ms | 968 ms | **no** (100 ms) |',
        '| staleness p99 at 4,000/s offered | 3,294 ms (2,791/s achieved) | | **no** (250 ms) |',
        '| subscriber peak RSS, fleet 50,000 x 2 | 89 MiB | | yes (200 MiB) |',
        '| S3 snapshot, CPU of the writing side (floors, scale) | 400 µs (S3Proxy 1,100 apart) | 1,567 µs (binding) | yes (1 ms) |',
        '',
        'These rates are CPU-bound on a shared two-core machine and swung 2x between runs; the',
        "lead's quiet `make bench-full` decides. Per update, the fleet at 50,000 x 2 cost more",
        'CPU than at 20,000 x 2 (439 µs until visible, 494 with the snapshots; 91 µs of them',
        'snapshot writes: a folder per state, 50,000 in one directory), so the full fleet will',
        'likely miss the 330 µs budget too.',
        '',
        'What changed, by what the profiles (py-spy on the subscriber and the caller during the',
        'fleet) showed:',
        '',
        '- The snapshot binding was the largest single cost: 260 µs of sidecar CPU per',
        '  `config.json` against 60 µs written directly ("The floor" above); the subscriber\'s',
        '  gRPC call per snapshot went with it. Local files are written with plain system calls',
        "  in a worker thread beside the event loop, a flush round's puts in one `put_many` per",
        "  piece of 250 (the next piece's documents are read meanwhile); a snapshot whose bytes",
        '  this writer already put there is not written again.',
        '- The visibility probe read its state every millisecond through backlogs of seconds:',
        '  1,000 reads a second that loaded the caller and its sidecar and counted in their CPU',
        '  (caller 430 against 145 µs per update with the probe off, in one loaded run). It now',
        '  polls every twentieth of its wait (1-20 ms), within 5% of the delay it measures.',
        '- Decoding a packed message called Python twice per event (the id validators) and built',
        '  a dict per event for the version-1 upcast: the id rules are now pydantic-core',
        '  constraints and version 1 is read only when the version-2 models refuse an event',
        '  (2.6 instead of 5.7-6.7 µs of CPU per event). The event JSON is written by orjson,',
        "  events and merged documents are built without pydantic's general `model_construct`,",
        '  `key` and `stamp` are plain attribute reads after the first, and the applied-events',
        '  metric is counted once per delivery and kind.',
        '',
        'What holds the rest (the quieter run): the sidecars and Redis, 170 µs per update, sit at',
        "their floor (113 µs before a snapshot, plus the flusher's read of each document and the",
        "outbox entries); a flusher that keeps up writes a state's snapshot after each of its two",
        'updates, 44-62 µs per update of file-system work, since the two updates of a state are',
        'the whole fleet apart and cannot share a write without holding snapshots back that long;',
        "the caller's 69 µs are `save_state` (about 30 µs of CPU each with a sidecar that costs",
        'nothing), the reads `sync_many` polls to see the updates applied, and gRPC; the',
        "subscriber's remaining 59 µs are the merge, the gRPC calls to its sidecar (a third of",
        "its event-loop samples) and the flusher's reads.",
        '',
        "Profiled with cProfile on the subscriber's batch path and with CPU counters of every",
        "process (`/proc/<pid>/stat`) around the throughput run:",
        "",
        "- With one pub/sub message per event, the two sidecars and Redis spent about 220 us of",
        "  CPU per event (bulk publish is one `XADD` per entry; each delivered message is parsed,",
        "  traced and acknowledged on its own), capping applied throughput near 4,700/s on two",
        "  cores. Packing up to 100 events into one `io.statestore.event_batch.v1` CloudEvent",
        "  made that cost per message, not per event.",
        "- Writing each state's snapshot through the object-store binding inside the batch cost",
        "  one gRPC call and one file write per state per batch; the outbox (snapshots written by",
        "  a leased flusher, coalesced) took them out of the batch path.",
        "- In the subscriber's Python, the merge built a pydantic model per field entry and per",
        "  producer record and compared whole documents; named tuples, an identity check and one",
        "  pydantic-core pass per packed message cut the subscriber's CPU per 1,000 updates from",
        "  68 ms to about 21 ms.",
        "",
        "Many states, few updates each (the fleet rows). Profiled with cProfile on the",
        "subscriber's delivery path (1,000 packed messages, 20,000 states, against the real",
        "sidecar) and with timers around every store call: the subscriber's Python spends about",
        "55 us of CPU per event (by cProfile's wall-clock counts on a loaded machine: the merge with",
        "its per-state document construction first, then pydantic decoding of packed messages, then",
        "JSON encoding and building transaction requests) and waits on its sidecar the rest of the time. In the sidecar, a",
        "transaction costs about 100-200 us per written state (`state.sqlite` runs one",
        "`INSERT ... WHERE NOT EXISTS` or ETag `UPDATE` statement per state; 250 states take about",
        "35 ms on an idle machine), a bulk read about 15 us per state. So with two updates per",
        "state arriving in different deliveries, every update is one sqlite row write: the store's",
        "per-row cost, not the subscriber, bounds the fleet rate on two cores (about 5,000-7,000",
        "rows/s for the sidecar alone), which is why the issue's 12,000/s target is not met. What",
        "was cut: no outbox document is read or rewritten by a commit (each commit appends its own",
        "entry instead of re-parsing a slot that grew with the backlog), commits of one replica no",
        "longer run concurrently against sqlite's single writer (no `SQLITE_BUSY`), and the next",
        "chunk's read and merge overlap the current chunk's commit. Not done: a replica-local",
        "cache of documents and ETags: Dapr's transaction API does not return the new ETags, so a",
        "cached document could not be written back without reading it again.",
        "",
        "What limits us now: on two cores the producer process (about 10 us per `save_state`),",
        "the subscriber's merge and document encoding (about 20 us per update) and the",
        "subscriber sidecar's sqlite transactions (about 30 us per update) share the CPU; with",
        "few updates per state the per-state costs (one JSON document read and written per",
        "state per batch) dominate, which is why 1,000 states x 2 fields applies slower than",
        "1,000 x 10. Staleness at low load is bounded by the batching windows: 5 ms in the",
        "publisher, 10 ms in bulk delivery.",
        "",
    ]
    if "cloudevents_sdk" in r:
        from bench.cloudevents_sdk import section

        parts += section(r["cloudevents_sdk"])
    if "workflows" in r:
        from bench.workflows import report_section

        parts += report_section(r["workflows"])
    elif "workflows_error" in r:
        from bench.workflows import SECTION

        parts += [SECTION, "", f"Not measured in this run: `{r['workflows_error']}`.", ""]
    old = (docs / "benchmarks.md").read_text() if (docs / "benchmarks.md").exists() else ""
    (docs / "benchmarks.md").write_text(keep_sections("\n".join(parts), old))
    _plots(record, docs)


def _plots(record: dict, docs: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = record["results"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for p in PEERS:
        lat = r[p]["latency"]
        ax.plot(["p50", "p99", "p999"], [lat["p50_ms"], lat["p99_ms"], lat["p999_ms"]], marker="o", label=p)
    ax.set_yscale("log"), ax.set_ylabel("ms (log)"), ax.set_title("Caller latency of one field update"), ax.legend()
    fig.tight_layout(), fig.savefig(docs / "bench-latency.png", dpi=100), plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    stale = r["statestore"]["staleness"]
    ax.plot([s["offered_per_s"] for s in stale], [s.get("p50_ms") for s in stale], marker="o", label="p50")
    ax.plot([s["offered_per_s"] for s in stale], [s.get("p99_ms") for s in stale], marker="o", label="p99")
    ax.set_xlabel("offered updates/s"), ax.set_ylabel("ms"), ax.set_title("statestore publish-to-visible delay"), ax.legend()
    fig.tight_layout(), fig.savefig(docs / "bench-staleness.png", dpi=100), plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.5))
    prod = r["statestore"]["scaling"]["producers"]
    a1.plot([s["producers"] for s in prod], [s["applied_per_s"] for s in prod], marker="o")
    a1.set_xscale("log", base=2), a1.set_xlabel("producers"), a1.set_ylabel("applied updates/s")
    ids = r["statestore"]["scaling"]["ids"]
    a2.plot([s["ids"] for s in ids], [s["applied_per_s"] for s in ids], marker="o")
    a2.set_xscale("log"), a2.set_xlabel("ids")
    fig.suptitle("statestore scaling"), fig.tight_layout(), fig.savefig(docs / "bench-scaling.png", dpi=100), plt.close(fig)
