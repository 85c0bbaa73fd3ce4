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
    processes = ["caller", "caller-daprd", "subscriber", "subscriber-daprd"]
    cpu = [[f"{f['ids']:,} x {f['fields']}", name, *(f["cpu_us_per_update"].get(p, "") for p in processes)]
           for row in rows for name, f in row.items() if f and "cpu_us_per_update" in f]  # fmt: skip
    return [_table(["workload", "peer", "applied/s", "vs plain-dapr", "visible p50 ms", "visible p99 ms",
                    "subscriber MiB", "subscriber sidecar MiB", "caller sidecar MiB", "snapshots after s",
                    "complete"], table),
            "", "CPU µs per update of each process, from the first update until all are visible (snapshots"
            " still being written count too; the bench process is the caller):", "",
            _table(["workload", "peer", *processes], cpu) if cpu else "(not measured in this run)"]  # fmt: skip


def _credential_seconds(rows: list[dict], peer_prefix: str, count: int, scenario_prefix: str) -> float | None:
    return next((row["seconds"] for row in rows if row["peer"].startswith(peer_prefix) and row["credentials"] == count
                 and row["scenario"].startswith(scenario_prefix)), None)  # fmt: skip


def _targets(record: dict) -> list[str]:
    """The issues' targets (9 and 17) against this run, the misses first."""
    r = record["results"]
    rows: list[tuple[str, str, str, bool]] = []
    fleet = [row for row in r.get("fleet", []) if row.get("plain-dapr")]
    if fleet:
        big = max(fleet, key=lambda row: row["statestore"]["ids"])
        ss, plain = big["statestore"], big["plain-dapr"]
        name = f"fleet {ss['ids']:,} x {ss['fields']}"
        rows.append((f"{name}: applied updates/s", f"{ss['applied_per_s']:,}", ">= 12,000", ss["applied_per_s"] >= 12_000))
        ratio = ss["applied_per_s"] / plain["applied_per_s"]
        rows.append((f"{name}: vs plain Dapr RMW", f"{ratio:.1f}x", ">= 12x", ratio >= 12))
    all_fleet = r.get("fleet", [])
    if all_fleet:
        after = [(row["statestore"], row["statestore"]["snapshots_after_s"]) for row in all_fleet]
        shown = "; ".join(f"{a} s at {f['ids']:,} x {f['fields']}" if a is not None else f"not all at {f['ids']:,}" for f, a in after)
        rows.append(("every snapshot written, after the last update (each fleet row)", shown, "<= 30 s",
                     all(a is not None and a <= 30 for _, a in after)))  # fmt: skip
        rss = [(row["statestore"]["ids"], row["statestore"]["peak_rss_mb"].get("subscriber", 0)) for row in all_fleet]
        peak = max(mb for _, mb in rss)
        shown = ", ".join(f"{mb} MiB at {ids:,}" for ids, mb in rss)
        rows.append(("subscriber peak RSS during the fleet rows", shown, "<= 200 MiB, flat", peak <= 200))
    tp = r["statestore"]["throughput"]["applied_per_s"]
    rows.append(("hot keys (1,000 ids x 10 fields, 16 producers): applied/s", f"{tp:,}", ">= 25,000", tp >= 25_000))
    latency = r[BASELINE]["latency"]["p50_ms"] / r["statestore"]["latency"]["p50_ms"]
    rows.append(("caller `save_state` p50 vs plain Dapr RMW", f"{latency:.0f}x", ">= 50x", latency >= 50))
    at_2000 = next((s for s in r["statestore"]["staleness"] if s["offered_per_s"] == 2000), None)
    if at_2000:
        rows.append(("staleness p99 at 2,000 updates/s offered", f"{at_2000['p99_ms']:.0f} ms", "< 100 ms", at_2000["p99_ms"] < 100))
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
        "## Against the targets (issues 9, 17 and 26), misses first",
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
