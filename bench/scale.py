"""`make bench PROFILE=scale`: statestore on Kafka + PostgreSQL + S3 with 1, 2 and 3
subscriber replicas, against a plain Dapr read-modify-write on the same PostgreSQL.

Workloads (each through the caller's sidecar, 16 producer tasks in this process):

- fleet: many states, a few updates each (``fleet_ids`` x ``fleet_fields``);
- hot keys: few states, many updates each (``hot_ids`` x ``hot_fields``);
- credential saves (with one replica): ``bench.credentials.SCALE_PLAN`` beside one plain
  read-modify-write per credential, written to docs/scaling.md (section "credentials").

Per run: applied updates/s (counted when every update is visible through reads), the
publish-to-visible delay at a fixed offered rate, CPU seconds per 1,000 updates of every
process (each replica app, its sidecar, Kafka, PostgreSQL with its backends, S3Proxy, the
caller sidecar) and their peak RSS. Results: bench/results/<time>-scale.json and a
markdown table on stdout (docs/scaling.md shows it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from statestore.devstack import Ports, Stack
from statestore.devstack.stack import PROJECT_ROOT

SIZES = {
    "quick": dict(replicas=[1, 2, 3], fleet_ids=2000, fleet_fields=5, hot_ids=10, hot_fields=500, producers=16,
                  rate=1000, stale_s=4),
    "full": dict(replicas=[1, 2, 3], fleet_ids=10_000, fleet_fields=5, hot_ids=10, hot_fields=2000, producers=16,
                 rate=2000, stale_s=15),
}  # fmt: skip

TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, CPU ticks including reaped children, peak RSS kB)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            hwm = next((int(line.split()[1]) for line in (entry / "status").read_text().splitlines()
                        if line.startswith("VmHWM:")), 0)  # fmt: skip
        except (OSError, StopIteration):
            continue
        table[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]), hwm)
    return table


class TreeMeter:
    """CPU and peak RSS of a process and all its descendants (PostgreSQL's backends
    leave the postmaster's process group, so a group is not enough)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _tree(self) -> list[tuple[int, int, int]]:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            if pid in table:
                found.append(table[pid])
            todo.extend(children.get(pid, []))
        return found

    def cpu_s(self) -> float:
        return sum(cpu for _, cpu, _ in self._tree()) / TICK

    def peak_rss_mb(self) -> int:
        return sum(rss for _, _, rss in self._tree()) // 1024


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def workload(stack: Stack, peer, name: str, ids: int, fields: int, producers: int) -> dict:
    from bench import measures as m

    meters = {proc.name: TreeMeter(proc.pid) for proc in stack.processes() if proc.pid}
    before = {name: meter.cpu_s() for name, meter in meters.items()}
    result = await m.throughput(peer, ids, fields, producers)
    updates = result["updates"]
    result["cpu_s_per_1000"] = {n: round(1000 * (meter.cpu_s() - before[n]) / updates, 3) for n, meter in meters.items()}
    result["workload"] = name
    return result


async def measure_replicas(stack: Stack, size: dict, with_plain: bool) -> dict:
    from bench import measures as m
    from bench.peers import PlainDaprPeer, StateStorePeer

    statestore = StateStorePeer()
    await m.caller_latency(statestore, 200)  # warm up
    out: dict = {}
    for name, ids, fields in (("fleet", size["fleet_ids"], size["fleet_fields"]), ("hot keys", size["hot_ids"], size["hot_fields"])):
        say(f"  statestore, {name}: {ids} ids x {fields} fields, {size['producers']} producers")
        out[name] = await workload(stack, statestore, name, ids, fields, size["producers"])
    say(f"  statestore: staleness at {size['rate']} updates/s for {size['stale_s']} s")
    out["staleness"] = await m.staleness(statestore, size["rate"], size["stale_s"])
    if with_plain:
        plain = PlainDaprPeer(stack.ports.caller.http_port, stack.ports.caller.grpc_port, None)
        for name, ids, fields in (("fleet", size["fleet_ids"], size["fleet_fields"]), ("hot keys", size["hot_ids"], size["hot_fields"])):
            say(f"  plain Dapr RMW on PostgreSQL, {name}")
            out[f"plain {name}"] = await workload(stack, plain, name, ids, fields, size["producers"])
        out["plain_etag_conflicts"] = plain.conflicts
        await plain.close()
        from bench import credentials

        out["credentials"] = await credentials.measure(stack, say, credentials.SCALE_PLAN)
        from bench import confirmed

        out["confirmed"] = await confirmed.measure(stack, say, confirmed.SCALE_PLAN)
    out["peak_rss_mb"] = {proc.name: TreeMeter(proc.pid).peak_rss_mb() for proc in stack.processes() if proc.pid}
    await statestore.close()
    return out


def run(mode: str) -> dict:
    size = SIZES[mode]
    results = {}
    for replicas in size["replicas"]:
        base = Path(tempfile.mkdtemp(prefix="statestore-bench-scale-"))
        base.chmod(0o711)  # PostgreSQL runs as its own user and must reach its folder
        stack = Stack(base, Ports.free(), profile="scale", replicas_wanted=replicas)
        say(f"scale profile, {replicas} replica(s): starting the stack in {base}")
        stack.up()
        saved = dict(os.environ)
        os.environ.update(stack.caller_env())
        _reset_statestore()
        try:
            results[replicas] = asyncio.run(measure_replicas(stack, size, with_plain=replicas == size["replicas"][0]))
        finally:
            os.environ.clear()
            os.environ.update(saved)
            stack.down()
            shutil.rmtree(base, ignore_errors=True)
    return results


def _reset_statestore() -> None:
    """Point the process's StateStore at the new stack's sidecar."""
    from statestore.core.settings import get_settings, get_sidecar_settings

    get_settings.cache_clear()
    get_sidecar_settings.cache_clear()


def table(results: dict) -> str:
    """The markdown tables for docs/scaling.md."""
    first = next(iter(results.values()))
    lines = ["| replicas | workload | statestore applied/s | plain Dapr RMW applied/s | ratio | staleness p50 / p99 (ms) |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for replicas, r in results.items():
        for name in ("fleet", "hot keys"):
            plain = first.get(f"plain {name}", {}).get("applied_per_s")
            ratio = f"{r[name]['applied_per_s'] / plain:.1f}x" if plain else "n/a"
            st = r["staleness"]
            lines.append(f"| {replicas} | {name} | {r[name]['applied_per_s']:,} | {plain or 'n/a':,} | {ratio} "
                         f"| {st['p50_ms']:.0f} / {st['p99_ms']:.0f} |")  # fmt: skip
    lines += ["", "| replicas | workload | CPU s per 1,000 updates, by process |", "| --- | --- | --- |"]
    for replicas, r in results.items():
        for name in ("fleet", "hot keys"):
            cpu = ", ".join(f"{k} {v}" for k, v in r[name]["cpu_s_per_1000"].items())
            lines.append(f"| {replicas} | {name} | {cpu} |")
        if "plain fleet" in r:
            cpu = ", ".join(f"{k} {v}" for k, v in r["plain fleet"]["cpu_s_per_1000"].items())
            lines.append(f"| {replicas} | plain Dapr RMW, fleet | {cpu} |")
    lines += ["", "| replicas | peak RSS (MB), by process |", "| --- | --- |"]
    for replicas, r in results.items():
        lines.append(f"| {replicas} | {', '.join(f'{k} {v}' for k, v in r['peak_rss_mb'].items())} |")
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    """docs/scaling.png: applied/s by replica count (both workloads, with the plain peer),
    and the fleet's CPU per 1,000 updates by process."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    replicas = [int(r) for r in results]
    first = next(iter(results.values()))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, colour in (("fleet", "tab:blue"), ("hot keys", "tab:orange")):
        left.plot(replicas, [r[name]["applied_per_s"] for r in results.values()], "o-", color=colour, label=f"statestore, {name}")
        plain = first.get(f"plain {name}", {}).get("applied_per_s")
        if plain:
            left.axhline(plain, color=colour, linestyle="--", label=f"plain Dapr RMW, {name}")
    left.set(xlabel="subscriber replicas", ylabel="applied updates/s", xticks=replicas, title="Throughput on Kafka + PostgreSQL + S3")
    left.set_ylim(bottom=0), left.legend(fontsize=8)
    processes = sorted({_process_group(n) for r in results.values() for n in r["fleet"]["cpu_s_per_1000"]})
    bottom = [0.0] * len(replicas)
    for process in processes:
        values = [sum(v for n, v in r["fleet"]["cpu_s_per_1000"].items() if _process_group(n) == process) for r in results.values()]
        right.bar([str(r) for r in replicas], values, bottom=bottom, label=process)
        bottom = [b + v for b, v in zip(bottom, values)]
    right.set(xlabel="subscriber replicas", ylabel="CPU s per 1,000 updates", title="Fleet: CPU by process (all replicas summed)")
    right.legend(fontsize=8)
    fig.tight_layout(), fig.savefig(out, dpi=100), plt.close(fig)


def _process_group(name: str) -> str:
    """Every replica's process of one kind is one bar segment ('subscriber-2-daprd' -> 'subscriber-daprd')."""
    return re.sub(r"-\d+", "", name)


def main(mode: str) -> int:
    started = time.time()
    results = run(mode)
    record = {"mode": mode, "profile": "scale", "parameters": SIZES[mode], "seconds": round(time.time() - started),
              "machine": {"cpus": os.cpu_count()}, "results": results}  # fmt: skip
    out_dir = PROJECT_ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-scale-{mode}.json"
    out.write_text(json.dumps(record, indent=2))
    print(table(results))
    from bench import credentials
    from bench.report import replace_section

    rows = next((r["credentials"] for r in results.values() if "credentials" in r), None)
    doc = PROJECT_ROOT / "docs" / "scaling.md"
    if rows:  # docs/scaling.md, section "credentials"
        body = "\n".join(credentials.report_section(rows, " on Kafka, PostgreSQL and S3"))
        doc.write_text(replace_section(doc.read_text(), "credentials", body.rstrip("\n")))
    from bench import confirmed

    replaces = next((r["confirmed"] for r in results.values() if "confirmed" in r), None)
    if replaces:  # docs/scaling.md, section "confirmed"
        body = "\n".join(confirmed.report_section(replaces, " on Kafka, PostgreSQL and S3"))
        doc.write_text(replace_section(doc.read_text(), "confirmed", body.rstrip("\n")))
    plot(results, PROJECT_ROOT / "docs" / "scaling.png")
    say(f"done in {record['seconds']} s: {out}")
    return 0
