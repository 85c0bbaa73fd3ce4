"""`python -m bench.temporal` (run by `make bench`): the measured point on Temporal.

The Temporal example's workflows (examples/temporal), their activities writing state in
two ways, each on a healthy store and while the sqlite state store is locked:

- **statestore**: ``save_state`` (fire-and-forget) in the step activities, a final
  ``save_state_object`` (returns once stored) in the finish activity;
- **rmw**: a synchronous read-modify-write with ETag through the worker's sidecar
  (``bench.peers.PlainDaprPeer``) for every update.

In both, the starter saves each workflow's arguments with ``save_state_object`` and the
first activity reads them with ``get_state`` (the reference's pattern). "Slow store": an
exclusive sqlite transaction held for ``--lock-s`` seconds (below the store's 5 s busy
timeout) from the moment the workflows start (the arguments are saved by then). Results
go to bench/results/<time>-temporal.json and the Temporal section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from statestore.devstack import Ports, Stack
from statestore.devstack.stack import PROJECT_ROOT
from statestore.devstack.temporal import TemporalPorts, TemporalStack, running

__all__ = ["main", "measure", "section"]

APP_NAME = "bench-temporal"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def hold_lock(db: Path, started: asyncio.Event, seconds: float) -> None:
    """Once the workflows start, hold an exclusive sqlite transaction for ``seconds``."""
    await started.wait()
    conn = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(conn.execute, "BEGIN EXCLUSIVE")
        await asyncio.sleep(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def measure(db: Path, workflows: int, steps: int, lock_s: float) -> list[dict]:
    from examples.temporal.run import run_workflows
    from examples.temporal.worker import connect

    client = await connect()
    for mode in ("statestore", "rmw"):  # warm up the worker, its clients, the sidecars and the store
        await run_workflows(client, 5, steps, mode)
    rows = []
    for slow in (False, True):
        for mode in ("statestore", "rmw"):
            say(f"{mode}: {workflows} workflows x {steps} steps, store {'locked %g s' % lock_s if slow else 'healthy'}")
            started = asyncio.Event()
            lock = asyncio.create_task(hold_lock(db, started, lock_s)) if slow else None
            report = await run_workflows(client, workflows, steps, mode, started=started)
            if lock is not None:
                await lock
            rows.append({**report.summary(), "store": f"locked {lock_s:g} s" if slow else "healthy"})
            if report.failures:
                say(f"  {len(report.failures)} failed, e.g. {next(iter(report.failures.values()))}")
    return rows


def section(record: dict) -> str:
    """The Temporal section of docs/benchmarks.md."""
    p = record["parameters"]
    lines = [
        "## On Temporal: StateStore vs a synchronous read-modify-write in the activities",
        "",
        f"`python -m bench.temporal` (part of `make bench`): {p['workflows']} workflows of the Temporal example "
        f"(`examples/temporal`): the starter saves their arguments with `save_state_object`, then each runs "
        f"`get_workflow_args` (`get_state`), {p['steps']} step activities (3 progress updates and a credential read "
        "by guid per step) and a finish activity, on one worker process with its own sidecar. "
        "**statestore**: `save_state` in the steps, `save_state_object` (returns once stored) in the finish. "
        "**rmw**: every update a read-modify-write with ETag through the sidecar (`bench.peers.PlainDaprPeer`). "
        f"Locked: an exclusive sqlite transaction on the state store held for {p['lock_s']:g} s from the "
        "moment the workflows start (below the 5 s busy timeout; the arguments are saved by then).",
        "",
        f"{record['machine']['cpus']} cores, Python {record['machine']['python']}, temporal CLI "
        f"{record['machine']['temporal']} dev server; run at {record['time']}, took {record['seconds']} s.",
        "",
        "| activities write with | store | step activity p50 / p99 ms | finish activity p50 / p99 ms "
        "| workflow completion p50 / p99 ms | all done (s) | step attempts retried | final states as written "
        "| args read back (at the first attempt) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in record["results"]:
        def pair(name: str, r: dict = r) -> str:
            return " / ".join(f"{r[name][q]:.1f}" if q in r[name] else "n/a" for q in ("p50_ms", "p99_ms"))

        lines.append(
            f"| {r['mode']} | {r['store']} | {pair('activity_ms')} | {pair('finish_activity_ms')} "
            f"| {pair('workflow_completion_ms')} | {r['wall_s']} | {r.get('retried_step_attempts', 'n/a')} "
            f"| {r['final_states_as_written']}/{r['workflows']} | {r.get('args_read_back', 'n/a')}/{r['workflows']} ({r.get('args_read_at_first_attempt', 'n/a')}) |"
        )
    lines += [
        "",
        "A step activity that uses StateStore returns once its events are queued, so a slow store",
        "does not hold the activity (or the worker's activity slots); if the store is still slow",
        "when the workflow ends, the wait is in the one `save_state_object` of the finish activity,",
        "which returns once the final state is stored. With a read-modify-write every update waits",
        "for the lock, so every activity running meanwhile does, and the workflows finish later.",
        f"Workflow completion includes Temporal's own scheduling of {p['steps'] + 2} activities per workflow,",
        "which on a loaded 2-core machine is most of it (compare the healthy rows).",
        "Figures from a 2-core machine shared with other work are noisy: compare rows of one run.",
        "Retried attempts there are Temporal's: when the dev server's own sqlite times out under",
        "load, an activity's completion is lost and the attempt runs again after its 30 s timeout.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.temporal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    # A run about as long as the lock, so that the lock covers the activities and the finish.
    parser.add_argument("--workflows", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--lock-s", type=float, default=4.0, help="how long the store stays locked (keep below 5)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the stack is stopped
    base = Path(tempfile.mkdtemp(prefix="statestore-bench-temporal-"))
    stack = Stack(base, Ports.free())
    temporal = TemporalStack(stack, TemporalPorts.free(), worker_env={"STATESTORE_APP_NAME": APP_NAME})
    say(f"starting the stack, a Temporal dev server and the example worker in {base}")
    began = time.time()
    with running(stack, temporal, APP_NAME):
        rows = asyncio.run(measure(stack.local / "dapr" / "statestore.db", args.workflows, args.steps, args.lock_s))
    from bench.report import replace_section

    record = {
        "parameters": vars(args), "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": round(time.time() - began), "results": rows,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "temporal": (PROJECT_ROOT / "runtime" / "temporal" / "VERSION").read_text().strip()},
    }  # fmt: skip
    out_dir = PROJECT_ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-temporal.json"
    out.write_text(json.dumps(record, indent=2))
    doc = PROJECT_ROOT / "docs" / "benchmarks.md"
    doc.write_text(replace_section(doc.read_text(), "temporal", section(record)))
    say(f"done in {record['seconds']} s: {out}, docs/benchmarks.md (Temporal section)")
    return 0 if all(r["final_states_as_written"] == r["workflows"] and r["args_not_found"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
