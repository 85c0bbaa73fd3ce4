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
from examples.workflows.app import WORKFLOW_NAME, StateStoreWriter, WorkflowApp

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


# Dapr's workflow engine refuses a new instance while its own sqlite file (workflowstate)
# stays locked past the component's busyTimeout, as under 32 concurrent starts on a slow
# moment of this 2-core machine; the bench starts it again rather than losing the run.
SCHEDULE_ATTEMPTS = 5


def schedule(client: DaprWorkflowClient, retries: list[int], instance_id: str, **kwargs: Any) -> None:
    """``client.schedule_new_workflow``, again on a busy workflow store (counted in ``retries``)."""
    for attempt in range(SCHEDULE_ATTEMPTS):
        try:
            client.schedule_new_workflow(WORKFLOW_NAME, instance_id=instance_id, **kwargs)
            return
        except Exception as exc:  # grpc.RpcError, from the SDK's sync client
            details = str(exc)
            if attempt and "already exists" in details:
                return  # the earlier attempt did start it
            if "database is locked" not in details or attempt == SCHEDULE_ATTEMPTS - 1:
                raise
            retries[0] += 1
            time.sleep(0.5 * (attempt + 1))


async def run_once(spec: SidecarSpec, writer: Any, size: dict, db: Path | None) -> dict:
    """``size['workflows']`` workflows with ``writer``; the store locked when ``db`` is given."""
    app = WorkflowApp(writer=writer, step_ms=size["step_ms"])
    runtime = WorkflowRuntime(host="127.0.0.1", port=str(spec.grpc_port), maximum_concurrent_activity_work_items=200)
    app.register(runtime)
    runtime.start()
    client = DaprWorkflowClient(host="127.0.0.1", port=str(spec.grpc_port))
    tag = uuid.uuid4().hex[:6]
    ids = [f"bench-wf-{tag}-{n}" for n in range(size["workflows"])]
    stop, locker, locks, retries = threading.Event(), None, [0], [0]
    if db is not None:
        locker = threading.Thread(target=lambda: locks.__setitem__(0, hold_lock(db, size["lock_s"], size["gap_s"], stop)))
        locker.start()
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    try:
        with ThreadPoolExecutor(32) as pool:
            await asyncio.gather(*(loop.run_in_executor(pool, partial(
                schedule, client, retries, i,
                input={"workflow_id": i, "steps": size["steps"], "credentials": {"user": f"svc-{i}", "password": tag}},
            )) for i in ids))  # fmt: skip
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
        "store_locks": locks[0],
        "schedule_retries": retries[0],
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
        f"{p['workflows']} Dapr Workflows at once (`examples/workflows`: a credential saved with SecretStore, "
        f"{p['steps']} progress steps of {p['step_ms']} ms work, a final state), run by one worker. Each step "
        "writes 4 progress fields; the last activity writes the final state. **statestore**: `save_state` "
        "fire-and-forget, then `save_state_object` + `sync` in the last activity. **read-modify-write**: "
        "each field a synchronous get + ETag save through `DaprClient`, the final state one more. "
        f"**Locked**: the state store's sqlite file held under `BEGIN EXCLUSIVE` for {p['lock_s']:g} s, "
        f"released for {p['gap_s']:g} s, over and over while the workflows run (busy timeout 5 s). The "
        "workflow engine's own store (`workflowstate`) is a separate file and is not locked.",
        f"Load average when the runs started: {results.get('load_average_1m', '?')} on {results.get('cpus', '?')} cores.",
        "",
        "| writer / store | progress step p50 / p99 (ms) | final activity p50 / p99 (ms) | workflow p50 / p99 (s) | all done (s) | activities retried |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run_name, run in results["runs"].items():
        step, final, wf = run["activity_ms"].get("run_step", {}), run["activity_ms"].get("finish", {}), run["workflow_ms"]
        lines.append(
            f"| {run_name} | {_ms(step, 'p50_ms')} / {_ms(step, 'p99_ms')} | {_ms(final, 'p50_ms')} / {_ms(final, 'p99_ms')} "
            f"| {wf.get('p50_ms', 0) / 1000:.2f} / {wf.get('p99_ms', 0) / 1000:.2f} "
            f"| {run['wall_s']} ({run['completed']}/{run['workflows']} completed) | {run['retried']} |"
        )
    lines += [
        "",
        "A progress step's time is its own work plus queueing the events: it stays the same while",
        "the store is locked. The read-modify-write step waits for the store, and fails when",
        "sqlite answers `SQLITE_BUSY` (the workflow's retry policy runs it again; failed runs",
        "count in the activity times). The final activity",
        "waits in both cases, on purpose: `sync()` makes the result durable before the workflow",
        "completes, so the workflow's total time still follows the store's health; only the",
        "activities that report progress are freed from it.",
        "",
    ]
    return lines


def _ms(figures: dict, key: str) -> str:
    return f"{figures[key]:.1f}" if key in figures else "-"


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
        stack.down()
    out = PROJECT_ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{time.strftime('%Y%m%d-%H%M%S')}-workflows-{mode}.json").write_text(json.dumps(results, indent=2))
    update_docs(results, PROJECT_ROOT / "docs")
    print("\n".join(report_section(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
