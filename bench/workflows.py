"""What fire-and-forget buys a workflow activity: the same Dapr Workflows, writing their
progress through statestore or through a synchronous read-modify-write with DaprClient,
on a healthy state store and on one whose sqlite file is locked for seconds at a time.

    python -m bench.workflows           # on a stack of its own; updates docs/benchmarks.md
    python -m bench.workflows --full

`make bench` runs it too (``measure_workflows``), after the other measurements.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime, WorkflowStatus

from bench.measures import percentiles
from bench.peers import PlainDaprPeer
from statestore.devstack.processes import free_port
from statestore.devstack.stack import PROJECT_ROOT, Ports, SidecarSpec, Stack
from statestore.devstack.workflow_engine import WORKFLOW_APP_IDS, EnginePorts, WorkflowEngine, workflow_sidecar
from examples.workflow_args import CredentialBatcher, save_workflow_args
from examples.workflows.app import StateStoreWriter, WorkflowApp
from examples.workflows.starter import schedule_all
from bench.cleanup import stop

__all__ = ["SIZES", "measure_workflows", "report_section"]

SIZES = {
    "quick": dict(workflows=30, steps=3, step_ms=20, lock_s=3.0, gap_s=0.5),
    "full": dict(workflows=200, steps=5, step_ms=20, lock_s=3.0, gap_s=0.5),
}
SECTION = "## Workflows: progress from activities while the state store is slow"


class ReadModifyWriteWriter:
    """What an activity does without statestore: each save_state is a synchronous
    read-modify-write of the state's JSON through DaprClient (with ETag retry)."""

    def __init__(self, http_port: int, grpc_port: int) -> None:
        self._ports = (http_port, grpc_port)
        self._peer: PlainDaprPeer | None = None

    def _client(self) -> PlainDaprPeer:
        if self._peer is None:  # created on the worker's event loop, where activities run
            self._peer = PlainDaprPeer(*self._ports, None)
        return self._peer

    async def progress(self, workflow_id: str, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            await self._client().update(workflow_id, {key: value})

    async def final(self, workflow_id: str, value: dict[str, Any]) -> None:
        await self._client().update(workflow_id, value)  # durable when it returns


def hold_lock(db: Path, lock_s: float, gap_s: float, stop: threading.Event) -> int:
    """Lock the sqlite file (BEGIN EXCLUSIVE) for ``lock_s``, release for ``gap_s``, until
    ``stop``; returns how many times it was locked."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    locks = 0
    try:
        while not stop.is_set():
            conn.execute("BEGIN EXCLUSIVE")
            locks += 1
            stop.wait(lock_s)
            conn.execute("COMMIT")
            stop.wait(gap_s)
    finally:
        conn.close()
    return locks


async def run_once(spec: SidecarSpec, writer: Any, size: dict, db: Path | None) -> dict:
    """``size['workflows']`` workflows with ``writer``; the store locked when ``db`` is given.

    The starter saves every workflow's arguments first (with statestore, whatever the
    writer: the activities' writes are what is compared), then the store is locked and
    the workflows are started with their ids."""
    app = WorkflowApp(writer=writer, step_ms=size["step_ms"])
    runtime = WorkflowRuntime(host="127.0.0.1", port=str(spec.grpc_port), maximum_concurrent_activity_work_items=200)
    app.register(runtime)
    runtime.start()
    client = DaprWorkflowClient(host="127.0.0.1", port=str(spec.grpc_port))
    tag = uuid.uuid4().hex[:6]
    ids = [f"bench-wf-{tag}-{n}" for n in range(size["workflows"])]
    saving = time.perf_counter()
    batcher = CredentialBatcher()
    await asyncio.gather(*(save_workflow_args(i, {"steps": size["steps"], "credentials": {"user": f"svc-{i}", "password": tag}},
                                              batcher) for i in ids))  # fmt: skip
    args_saved_s = time.perf_counter() - saving
    stop, locker, locks = threading.Event(), None, [0]
    if db is not None:
        locker = threading.Thread(target=lambda: locks.__setitem__(0, hold_lock(db, size["lock_s"], size["gap_s"], stop)))
        locker.start()
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    try:
        schedule_retries = await schedule_all(client, ids, 32)
        with ThreadPoolExecutor(32) as pool:
            states = await asyncio.gather(*(loop.run_in_executor(pool, partial(
                client.wait_for_workflow_completion, i, timeout_in_seconds=600)) for i in ids))  # fmt: skip
        wall_s = time.perf_counter() - start
    finally:
        stop.set()
        if locker is not None:
            locker.join()
        app.close()
        runtime.shutdown()
        client.close()
    done = [s for s in states if s is not None and s.runtime_status == WorkflowStatus.COMPLETED]
    return {
        "workflows": len(ids),
        "completed": len(done),
        "wall_s": round(wall_s, 2),
        "args_saved_s": round(args_saved_s, 2),
        # workflows whose get_workflow_args found the arguments at its first execution
        "args_read_first": sum(1 for i in ids if app.args_reads.get(i, [False])[0]),
        "store_locks": locks[0],
        "schedule_retries": schedule_retries,
        "workflow_ms": percentiles([(s.last_updated_at - s.created_at).total_seconds() for s in done]),
        "activity_ms": {name: percentiles(times) for name, times in app.activity_s.items()},
        # runs beyond one per activity: failed attempts retried by the workflow's retry policy
        "retried": sum(app.executions.values()) - len(ids) * (size["steps"] + 2),
    }


async def measure_workflows(stack: Stack, mode: str = "quick", say=print) -> dict:
    """Both writers, on a healthy and on a locked store; placement, scheduler and the
    workflow app's sidecar are started here and stopped afterwards."""
    size = SIZES[mode]
    engine = WorkflowEngine(stack.local, EnginePorts.free())
    engine.start()
    spec = SidecarSpec(WORKFLOW_APP_IDS[0], free_port(), free_port(), free_port(), free_port())
    sidecar = workflow_sidecar(stack, engine, spec)
    results: dict[str, Any] = {"parameters": size, "runs": {}, "load_average_1m": round(os.getloadavg()[0], 1),
                               "cpus": os.cpu_count()}  # fmt: skip
    try:
        stack.start_sidecar(sidecar, spec)
        caller = stack.ports.caller
        db = stack.local / "dapr" / "statestore.db"
        for health, locked in (("healthy", None), ("locked", db)):
            for name, make in (("statestore", StateStoreWriter),
                               ("read-modify-write", partial(ReadModifyWriteWriter, caller.http_port, caller.grpc_port))):  # fmt: skip
                say(f"workflows: {size['workflows']} x {size['steps']} steps, {name}, store {health}")
                results["runs"][f"{name}/{health}"] = await run_once(spec, make(), size, locked)
    finally:
        sidecar.stop()
        engine.stop()
    return results


def report_section(results: dict) -> list[str]:
    """The docs/benchmarks.md section for ``measure_workflows``'s results."""
    p = results["parameters"]
    lines = [
        SECTION,
        "",
        f"{p['workflows']} Dapr Workflows at once (`examples/workflows`: arguments saved by the starter, "
        f"{p['steps']} progress steps of {p['step_ms']} ms work, a final state), run by one worker. The starter "
        "saves each workflow's arguments with `save_state_object` (its credential replaced by a guid, in "
        "batches) before the store is locked, then starts the workflows with their ids; the first activity "
        "reads the arguments with `get_state`, with either writer. Each step writes 4 progress fields; the "
        "last activity writes the final state. **statestore**: `save_state` fire-and-forget, then "
        "`save_state_object` (returns once stored) in the last activity. **read-modify-write**: "
        "each field a synchronous get + ETag save through `DaprClient`, the final state one more. "
        f"**Locked**: the state store's sqlite file held under `BEGIN EXCLUSIVE` for {p['lock_s']:g} s, "
        f"released for {p['gap_s']:g} s, over and over while the workflows run (busy timeout 5 s). The "
        "workflow engine's own store (`workflowstate`) is a separate file and is not locked.",
        f"Load average when the runs started: {results.get('load_average_1m', '?')} on {results.get('cpus', '?')} cores.",
        "",
        "| writer / store | args read p50 / p99 (ms) | progress step p50 / p99 (ms) | final activity p50 / p99 (ms) "
        "| workflow p50 / p99 (s) | all done (s) | activities retried | args found at the first read |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run_name, run in results["runs"].items():
        activity_ms = run["activity_ms"]
        args, step, final = (activity_ms.get(name, {}) for name in ("get_workflow_args", "run_step", "finish"))
        wf = run["workflow_ms"]
        lines.append(
            f"| {run_name} | {_pair(args)} | {_pair(step)} | {_pair(final)} "
            f"| {wf.get('p50_ms', 0) / 1000:.2f} / {wf.get('p99_ms', 0) / 1000:.2f} "
            f"| {run['wall_s']} ({run['completed']}/{run['workflows']} completed) | {run['retried']} "
            f"| {run.get('args_read_first', '-')}/{run['workflows']} |"
        )
    lines += [
        "",
        "A progress step's time is its own work plus queueing the events: it stays the same while",
        "the store is locked. The read-modify-write step waits for the store, and fails when",
        "sqlite answers `SQLITE_BUSY` (the workflow's retry policy runs it again; failed runs",
        "count in the activity times). The final activity",
        "waits in both cases, on purpose: `save_state_object` returns once the final state is",
        "stored, so the workflow completes only once every process reads it, and the workflow's",
        "total time still follows the store's health; only the activities that report progress",
        "are freed from it. The starter's `save_state_object` waits for the store too: the",
        "arguments are saved before the lock starts, so the table shows the workflows only.",
        "",
    ]
    return lines


def _pair(figures: dict) -> str:
    """'p50 / p99' in ms, '-' for a figure that is missing."""
    return " / ".join(f"{figures[key]:.1f}" if key in figures else "-" for key in ("p50_ms", "p99_ms"))


def update_docs(results: dict, docs: Path) -> None:
    """Replace (or append) the workflow section of docs/benchmarks.md."""
    path = docs / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = "\n".join(report_section(results))
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workflows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args(argv)
    mode = "full" if args.full else "quick"
    stack = Stack(Path(tempfile.mkdtemp(prefix="statestore-bench-wf-")), Ports.free())
    stack.up()
    os.environ.update(stack.caller_env())
    try:
        results = asyncio.run(measure_workflows(stack, mode))
    finally:
        stop(stack)
    out = PROJECT_ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{time.strftime('%Y%m%d-%H%M%S')}-workflows-{mode}.json").write_text(json.dumps(results, indent=2))
    update_docs(results, PROJECT_ROOT / "docs")
    print("\n".join(report_section(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
