"""`make bench`: statestore vs plain Dapr state vs the reference design, one stack, one run.

    python -m bench            # quick mode (quick sizes of every workload)
    python -m bench --full     # the sizes the issue names (about 20 minutes)
    python -m bench --profile scale   # Kafka + PostgreSQL + S3 with 1, 2, 3 replicas (bench/scale.py)

Results: bench/results/<time>.json, docs/benchmarks.md and docs/bench-*.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from statestore.devstack import Ports, Stack
from statestore.devstack.stack import PROJECT_ROOT
from bench.cleanup import stop

SIZES = {
    "quick": dict(latency_calls=2000, tp_repeats=1, tp_ids=1000, tp_fields=10, tp_producers=16, rates=[500, 2000, 8000],
                  stale_s=4, lost_ids=20, lost_fields=5, read_ids=2000, reads=2000,
                  scale_producers=[1, 4, 16, 64], scale_ids=[1000, 10_000],
                  fleet=[(10_000, 2)], fleet_plain_max_ids=10_000),
    "full": dict(latency_calls=20_000, tp_repeats=3, tp_ids=1000, tp_fields=10, tp_producers=16, rates=[500, 1000, 2000, 4000, 8000],
                 stale_s=15, lost_ids=100, lost_fields=10, read_ids=10_000, reads=10_000,
                 scale_producers=[1, 4, 16, 64], scale_ids=[1000, 10_000, 100_000],
                 fleet=[(100_000, 2), (1_000_000, 1)], fleet_plain_max_ids=100_000),
}  # fmt: skip



def daprd_version() -> str:
    """The dapr version runtime/build.sh builds daprd from (runtime/daprd/go.mod)."""
    for line in (PROJECT_ROOT / "runtime" / "daprd" / "go.mod").read_text().splitlines():
        if line.split()[:1] == ["github.com/dapr/dapr"]:
            return line.split()[1]
    return "unknown"

def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def measure(stack: Stack, size: dict) -> dict:
    from bench import cloudevents_sdk
    from bench import measures as m
    from bench.peers import PlainDaprPeer, ReferencePeer, StateStorePeer
    from statestore.core.settings import SidecarSettings
    from statestore.core.sidecar import SidecarClient

    subscriber_sidecar = SidecarClient(SidecarSettings(dapr_grpc_port=stack.ports.subscriber.grpc_port))
    peers = [
        StateStorePeer(),
        PlainDaprPeer(stack.ports.caller.http_port, stack.ports.caller.grpc_port, None),
        ReferencePeer(subscriber_sidecar),
    ]
    subscriber = m.ProcessMeter(stack.subscriber_app.pid)
    subscriber_sidecar_meter = m.ProcessMeter(stack.subscriber_sidecar.pid)
    results: dict = {name: {} for name in (p.name for p in peers)}

    for peer in peers:  # warm up connections and the store
        await m.caller_latency(peer, 200)

    for peer in peers:
        say(f"{peer.name}: caller latency of one field update ({size['latency_calls']} calls)")
        results[peer.name]["latency"] = await m.caller_latency(peer, size["latency_calls"])

    for peer in peers:
        say(f"{peer.name}: throughput, {size['tp_ids']} ids x {size['tp_fields']} fields, {size['tp_producers']} producers")
        cpu0, sidecar_cpu0 = subscriber.cpu_s(), subscriber_sidecar_meter.cpu_s()
        runs = [await m.throughput(peer, size["tp_ids"], size["tp_fields"], size["tp_producers"])
                for _ in range(size["tp_repeats"])]  # fmt: skip
        tp = sorted(runs, key=lambda run: run["applied_per_s"])[len(runs) // 2]  # the median run
        tp["runs_applied_per_s"] = [run["applied_per_s"] for run in runs]
        tp["updates_all_runs"] = tp["updates"] * len(runs)
        if peer.name == "statestore":
            tp["subscriber_cpu_s_per_1000"] = round(1000 * (subscriber.cpu_s() - cpu0) / tp["updates_all_runs"], 3)
            tp["subscriber_sidecar_cpu_s_per_1000"] = round(
                1000 * (subscriber_sidecar_meter.cpu_s() - sidecar_cpu0) / tp["updates_all_runs"], 3
            )
        results[peer.name]["throughput"] = tp

    for peer in peers:
        say(f"{peer.name}: lost updates, {size['tp_producers']} producers on {size['lost_ids']} shared ids")
        results[peer.name]["lost"] = await m.lost_updates(peer, size["lost_ids"], size["tp_producers"], size["lost_fields"])

    for peer in peers:
        say(f"{peer.name}: get_state latency on {size['read_ids']} warm ids")
        results[peer.name]["read"] = await m.read_latency(peer, size["read_ids"], size["reads"])

    statestore = peers[0]
    results["statestore"]["staleness"] = []
    for rate in size["rates"]:
        say(f"statestore: staleness at {rate} updates/s for {size['stale_s']} s")
        results["statestore"]["staleness"].append(await m.staleness(statestore, rate, size["stale_s"]))
    results["plain-dapr"]["staleness"] = [await m.staleness(peers[1], size["rates"][0], size["stale_s"])]

    results["statestore"]["scaling"] = {"producers": [], "ids": []}
    for producers in size["scale_producers"]:
        say(f"statestore: scaling, {producers} producers")
        results["statestore"]["scaling"]["producers"].append(await m.throughput(statestore, 1000, 5, producers, probe=True))
    for ids in size["scale_ids"]:
        say(f"statestore: scaling, {ids} ids")
        results["statestore"]["scaling"]["ids"].append(await m.throughput(statestore, ids, 2, 16, probe=True))

    # Many states, few updates each (issue 9): statestore and plain Dapr RMW side by side.
    pids = {"subscriber": stack.subscriber_app.pid, "subscriber-daprd": stack.subscriber_sidecar.pid,
            "caller-daprd": stack.caller_sidecar.pid, "broker": stack.redis.pid}  # fmt: skip
    done = m.snapshot_checker(os.environ["STATESTORE_TMP_ROOT"])
    metrics_url = f"http://127.0.0.1:{stack.ports.subscriber.app_metrics_port}/metrics"

    def writes() -> float | None:
        return m.scrape(metrics_url, "statestore_snapshot_write_cpu_seconds")

    results["fleet"] = []
    for ids, fields in size["fleet"]:
        row = {}
        say(f"statestore: fleet, {ids} ids x {fields} fields from one caller")
        row["statestore"] = await m.fleet(statestore, ids, fields, pids, snapshots_done=done, snapshot_write_cpu_s=writes)
        if ids <= size["fleet_plain_max_ids"]:
            say(f"plain-dapr: fleet, {ids} ids x {fields} fields (read-modify-write, 16 at once)")
            row["plain-dapr"] = await m.fleet(peers[1], ids, fields, pids, concurrency=16)
        results["fleet"].append(row)

    from bench import credentials

    results["credentials"] = await credentials.measure(stack, say)
    from bench import confirmed

    results["confirmed"] = await confirmed.measure(stack, say)
    results["memory"] = {
        "subscriber_peak_rss_mb": subscriber.peak_rss_mb(),
        "producer_peak_rss_mb": m.ProcessMeter(os.getpid()).peak_rss_mb(),
    }
    say("CloudEvents SDK vs hand-written envelopes on our payloads")
    results["cloudevents_sdk"] = cloudevents_sdk.measure()
    results["plain-dapr"]["etag_conflicts"] = peers[1].conflicts
    results["reference"]["torn_reads"] = peers[2].torn_reads
    for peer in peers:
        await peer.close()
    await subscriber_sidecar.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--full", action="store_true", help="the full sizes (about 20 minutes)")
    parser.add_argument("--profile", choices=["local", "scale"], default=os.environ.get("PROFILE") or "local")
    args = parser.parse_args(argv)
    mode = "full" if args.full else "quick"
    if args.profile == "scale":
        from bench import scale

        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        return scale.main(mode)
    size = SIZES[mode]
    # SIGTERM unwinds like Ctrl-C, so the stack below is always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Path(tempfile.mkdtemp(prefix="statestore-bench-"))
    from bench.peers import with_reference_binding

    stack = Stack(base, Ports.free(), profile=with_reference_binding("local"))
    say(f"starting the stack in {base} ({mode} mode)")
    stack.up()
    os.environ.update(stack.caller_env())
    started = time.time()
    try:
        results = asyncio.run(measure(stack, size))
        from bench.workflows import measure_workflows  # Dapr Workflows, healthy and locked store

        try:
            results["workflows"] = asyncio.run(measure_workflows(stack, mode, say))
        except Exception as exc:  # the last section: keep the measured rest, say what failed
            say(f"workflows section failed, the rest is reported: {type(exc).__name__}: {exc}")
            results["workflows_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        stop(stack)
    from bench.report import write_report

    record = {
        "mode": mode, "parameters": size, "seconds": round(time.time() - started),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "daprd": daprd_version(), "dapr_python_sdk": version("dapr")},
        "results": results,
    }  # fmt: skip
    out_dir = PROJECT_ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{mode}.json"
    out.write_text(json.dumps(record, indent=2))
    write_report(record, PROJECT_ROOT / "docs")
    say(f"done in {record['seconds']} s: {out}, docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
