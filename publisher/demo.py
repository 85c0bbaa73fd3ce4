"""The demo publisher app (`make run`): behaves like statestore's real users.

- many concurrent workflows: each saves its arguments with ``save_state_object`` at
  start, reads them back as the reference's ``get_workflow_args`` does, then sends
  fire-and-forget progress updates and a final status;
- a batch of credential saves;
- a probe that measures publish-to-visible delay while the load runs.

It prints progress while it runs and ends with a summary read back through
``get_state``. Exit status 0 when every final state is as expected.

Sizes come from DEMO_WORKFLOWS, DEMO_UPDATES (per workflow) and DEMO_CREDENTIALS. Ids
end in DEMO_TAG (default: random): `make run` gives two demo apps the same tag, so both
write the same ids, each in its own app namespace, and each checks it reads back its own.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from statestore import StateStore, StateType
from statestore.publisher.store import StateStore as _Store
from statestore.core.paths import caller_app_name

WORKFLOWS = int(os.environ.get("DEMO_WORKFLOWS", "100"))
UPDATES = int(os.environ.get("DEMO_UPDATES", "50"))
CREDENTIALS = int(os.environ.get("DEMO_CREDENTIALS", "100"))


async def probe_visible_delays(probe_id: str, stop: asyncio.Event, delays_ms: list[float]) -> int:
    """Publish-to-visible delay while a load runs: write, then poll until the write is
    readable by every process, until ``stop`` is set. Appends each delay (ms); returns the
    last value written."""
    k = 0
    query = _Store._runtime().query
    while not stop.is_set():
        k += 1
        start = time.perf_counter()
        await StateStore.save_state("seq", k, probe_id, StateType.WORKFLOWS)
        # The stored state, as another process reads it (this process's get_state returns
        # its own write at once).
        while ((document := await query.get_document(probe_id, StateType.WORKFLOWS)) is None
               or document.to_state().get("seq") != k):  # fmt: skip
            await asyncio.sleep(0.002)
        delays_ms.append((time.perf_counter() - start) * 1000)
    return k


async def applied_events(states: list[tuple[str, StateType]]) -> int:
    """How many of this process's events the subscriber has applied to ``states`` (its
    fire-and-forget writes and its confirmed replaces: two producer ids)."""
    runtime = _Store.runtime()
    producers = (runtime.producer_id, runtime.confirmed_producer_id)
    query = _Store._runtime().query
    documents = [await query.get_document(i, t) for i, t in states]
    return sum(doc.processed_upto(producer) for doc in documents if doc for producer in producers)


async def settled_count(count: Callable[[], Awaitable[int]], target: int, timeout: float = 60.0) -> int:
    """``count()`` once it reached ``target`` (e.g. events applied: the subscriber caught up),
    else its value after ``timeout`` seconds."""
    deadline = time.perf_counter() + timeout
    delay = 0.01
    while (value := await count()) < target and time.perf_counter() < deadline:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
    return value


def p50_p99(samples: list[float]) -> tuple[float, float]:
    """The median and 99th percentile (nan when there are no samples)."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan"), float("nan")
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class Demo:
    def __init__(self) -> None:
        self.tag = os.environ.get("DEMO_TAG") or uuid.uuid4().hex[:6]
        self.app = caller_app_name()
        self.expected: dict[tuple[str, StateType], dict[str, Any]] = {}
        self.delays_ms: list[float] = []
        self.load_done = asyncio.Event()

    async def workflow(self, n: int) -> None:
        wf_id = f"demo-wf-{self.tag}-{n}"
        args = {
            "workflow_id": wf_id,
            "workflow_run_id": uuid.uuid4().hex,
            "application_name": self.app,
            "output_prefix": f"demo/{wf_id}",
            "output_path": f"/data/output/{wf_id}",
        }
        await StateStore.save_state_object(wf_id, args, StateType.WORKFLOWS)
        # get_workflow_args: the activity reads the arguments the starter saved.
        await StateStore.sync(wf_id, StateType.WORKFLOWS, timeout=30)
        read_back = await StateStore.get_state(wf_id, StateType.WORKFLOWS)
        if read_back != args:
            raise AssertionError(f"{wf_id}: workflow args read back as {read_back}")
        await StateStore.save_state("status", "running", wf_id, StateType.WORKFLOWS)
        for step in range(1, UPDATES + 1):
            await StateStore.save_state("progress", round(100 * step / UPDATES), wf_id, StateType.WORKFLOWS)
            await StateStore.save_state("current_step", f"step-{step}", wf_id, StateType.WORKFLOWS)
            await asyncio.sleep(0.01 * (1 + n % 10))  # the workflow's own work
        await StateStore.save_state("status", "completed", wf_id, StateType.WORKFLOWS)
        self.expected[(wf_id, StateType.WORKFLOWS)] = {
            **args, "status": "completed", "progress": 100, "current_step": f"step-{UPDATES}",
        }  # fmt: skip

    async def credentials(self) -> None:
        async def save(n: int) -> None:
            cred_id = f"demo-cred-{self.tag}-{n}"
            config = {"app": self.app, "host": f"db{n}.internal", "port": 5432, "username": f"svc{n}", "database": "analytics"}
            self.expected[(cred_id, StateType.CREDENTIALS)] = await StateStore.save_state_object(
                cred_id, config, StateType.CREDENTIALS
            )

        await asyncio.gather(*(save(n) for n in range(CREDENTIALS)))

    async def probe(self) -> None:
        probe_id = f"demo-probe-{self.tag}"
        k = await probe_visible_delays(probe_id, self.load_done, self.delays_ms)
        self.expected[(probe_id, StateType.WORKFLOWS)] = {"seq": k}

    async def progress(self, start: float) -> None:
        stats = _Store.stats
        while not self.load_done.is_set():
            await asyncio.sleep(0.5)
            print(
                f"  {time.perf_counter() - start:5.1f}s  published {stats().get('published', 0):6d} events, "
                f"{len(self.expected):4d} states finished, probe delay samples {len(self.delays_ms)}",
                flush=True,
            )

    async def run(self) -> bool:
        print(f"demo {self.tag} (app {self.app}): {WORKFLOWS} workflows x {UPDATES} progress steps, {CREDENTIALS} credentials", flush=True)
        start = time.perf_counter()
        reporter = asyncio.create_task(self.progress(start))
        prober = asyncio.create_task(self.probe())
        await asyncio.gather(*(self.workflow(n) for n in range(WORKFLOWS)), self.credentials())
        self.load_done.set()
        await prober
        await reporter
        await StateStore.flush()
        published = _Store.stats().get("published", 0)  # every topic: progress and credentials
        publish_s = time.perf_counter() - start
        for state_type in StateType:
            await StateStore.sync_many([i for i, t in self.expected if t is state_type], state_type, timeout=60)
        visible_s = time.perf_counter() - start

        applied = await applied_events(list(self.expected))
        wrong = 0
        for (state_id, state_type), expected in self.expected.items():
            actual = await StateStore.get_state(state_id, state_type)
            if actual != expected:
                wrong += 1
                print(f"  MISMATCH {state_type.value}/{state_id}: {actual} != {expected}", flush=True)
        p50, p99 = p50_p99(self.delays_ms)
        print(f"summary of app {self.app}:")
        print(f"  events published     {published} in {publish_s:.2f} s")
        print(f"  events applied       {applied}, all visible after {visible_s:.2f} s ({applied / visible_s:.0f} events/s)")
        print(f"  publish-to-visible   p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(self.delays_ms)} probes")
        print(f"  final states checked {len(self.expected) - wrong}/{len(self.expected)} as expected")
        return wrong == 0 and applied == published


def main() -> int:
    ok = False
    try:
        ok = asyncio.run(Demo().run())
    finally:
        done = os.environ.get("STATESTORE_DEMO_DONE_FILE")
        if done:
            Path(done).write_text("0" if ok else "1")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
