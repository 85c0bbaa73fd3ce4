"""The workflow and its activities.

Each workflow takes a credential from its input, saves it with SecretStore (batched with
the other workflows' credentials), passes only the guid on, runs ``steps`` activities
that report progress fire-and-forget, and ends with an activity that writes the final
state with ``save_state_object`` and waits for it with ``sync``. Only activities touch
statestore: the orchestrator is replayed from its history and must stay deterministic.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from dapr.ext.workflow import DaprWorkflowContext, RetryPolicy, WorkflowActivityContext, WorkflowRuntime

from statestore import SecretStore, StateStore, StateType

__all__ = ["WORKFLOW_NAME", "StateWriter", "StateStoreWriter", "CredentialBatcher", "WorkflowApp", "final_state"]

W = StateType.WORKFLOWS
WORKFLOW_NAME = "report_workflow"
# An activity that fails (or whose worker dies) runs again; statestore writes are safe to
# repeat (see README.md, "StateStore from workflow code").
RETRY = RetryPolicy(first_retry_interval=timedelta(milliseconds=200), max_number_of_attempts=5,
                    backoff_coefficient=2.0, max_retry_interval=timedelta(seconds=5))  # fmt: skip


class StateWriter(Protocol):
    """How activities write the workflow's state (the bench swaps in a synchronous one)."""

    async def progress(self, workflow_id: str, fields: dict[str, Any]) -> None: ...
    async def final(self, workflow_id: str, value: dict[str, Any]) -> None: ...


class StateStoreWriter:
    """statestore: progress fire-and-forget; the final state durable before returning."""

    def __init__(self) -> None:
        self.events = 0  # workflow-state events queued by this process

    async def progress(self, workflow_id: str, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            await StateStore.save_state(key, value, workflow_id, W)
            self.events += 1

    async def final(self, workflow_id: str, value: dict[str, Any]) -> None:
        await StateStore.save_state_object(workflow_id, value, W)
        self.events += 1
        # Durable before the activity (and so the workflow) reports completion.
        await StateStore.sync(workflow_id, W, timeout=120)


class CredentialBatcher:
    """Collects credentials from concurrent activities and saves them in one
    ``SecretStore.save_secrets`` call per ``window_s`` (at most ``max_batch`` each)."""

    def __init__(self, window_s: float = 0.025, max_batch: int = 50) -> None:
        self.window_s, self.max_batch = window_s, max_batch
        self.batches = self.saved = 0
        self._pending: list[tuple[dict[str, Any], asyncio.Future[str]]] = []
        self._flusher: asyncio.Task | None = None

    async def save(self, config: dict[str, Any]) -> str:
        """The guid the credential is stored under, once it is saved."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((config, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon())
        return await future

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.window_s)  # let other workflows' credentials join
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                guids = await SecretStore.save_secrets([config for config, _ in batch])
            except Exception as exc:  # every waiting activity fails (and is retried)
                for _, future in batch:
                    future.set_exception(exc)
                continue
            self.batches += 1
            self.saved += len(batch)
            for (_, future), guid in zip(batch, guids):
                future.set_result(guid)


def final_state(workflow_id: str, guid: str, steps: int) -> dict[str, Any]:
    """What a workflow's state is once it completed: a function of its input only."""
    return {"workflow_id": workflow_id, "status": "completed", "progress": 100, "current_step": "done",
            "steps": steps, "credential_guid": guid}  # fmt: skip


@dataclass
class WorkflowApp:
    """The workflow and activities, with what the run reports (activity times, batches)."""

    writer: StateWriter = field(default_factory=StateStoreWriter)
    credentials: CredentialBatcher = field(default_factory=CredentialBatcher)
    step_ms: float = 20.0
    crash_marker: Path | None = None
    activity_s: dict[str, list[float]] = field(default_factory=dict)  # activity name -> durations
    executions: dict[str, int] = field(default_factory=dict)  # activity name -> runs
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def close(self, timeout: float = 30.0) -> None:
        """Before the worker stops: publish what activities queued, and end statestore's
        publisher task on the worker's loop (the SDK closes that loop without cancelling
        its tasks, which asyncio would report as a task destroyed while pending)."""
        if self._loop is not None and not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._drain(), self._loop).result(timeout)

    @staticmethod
    async def _drain() -> None:
        await StateStore.flush()
        for task in asyncio.all_tasks():
            if task.get_name() == "statestore-publisher":
                task.cancel()

    def register(self, runtime: WorkflowRuntime) -> None:
        """Register the workflow and its activities with ``runtime``."""

        # Fresh functions for each runtime: the SDK marks what it registers and refuses
        # the same function twice (the bench starts one runtime per run).
        def report_workflow(ctx: DaprWorkflowContext, job: dict[str, Any]):
            return (yield from self.workflow(ctx, job))

        def activity(method: Callable[[WorkflowActivityContext, Any], Awaitable[Any]]):
            async def run(ctx: WorkflowActivityContext, value: Any) -> Any:
                return await method(ctx, value)

            return run

        runtime.register_workflow(report_workflow, name=WORKFLOW_NAME)
        for name in ("save_credential", "run_step", "finish"):
            runtime.register_activity(activity(getattr(self, name)), name=name)

    # -- the orchestrator: deterministic, no I/O ---------------------------------------

    @staticmethod
    def workflow(ctx: DaprWorkflowContext, job: dict[str, Any]):
        workflow_id, steps = job["workflow_id"], job["steps"]
        # The credential stays in this first activity's input; from here on only its guid travels.
        guid = yield ctx.call_activity("save_credential", input=job["credentials"], retry_policy=RETRY)
        for step in range(1, steps + 1):
            yield ctx.call_activity("run_step", input={"workflow_id": workflow_id, "credential_guid": guid,
                                                       "step": step, "steps": steps}, retry_policy=RETRY)  # fmt: skip
        result = yield ctx.call_activity("finish", input={"workflow_id": workflow_id, "credential_guid": guid,
                                                          "steps": steps}, retry_policy=RETRY)  # fmt: skip
        return result

    # -- activities: all statestore I/O happens here -----------------------------------

    async def save_credential(self, ctx: WorkflowActivityContext, credentials: dict[str, Any]) -> str:
        with self._timed("save_credential"):
            return await self.credentials.save(credentials)

    async def run_step(self, ctx: WorkflowActivityContext, task: dict[str, Any]) -> int:
        with self._timed("run_step"):
            step, steps = task["step"], task["steps"]
            await self.writer.progress(task["workflow_id"], {
                "status": "running", "current_step": f"step-{step}", "progress": round(100 * step / steps),
                "credential_guid": task["credential_guid"],
            })  # fmt: skip
            await asyncio.sleep(self.step_ms / 1000)  # the step's own work
            if self.crash_marker is not None and step == 2:
                first = not self.crash_marker.exists()
                with self.crash_marker.open("a") as marker:  # one line per execution of step 2
                    marker.write(f"{os.getpid()}\n")
                if first:
                    await StateStore.flush()  # this attempt's progress is out; now "crash"
                    await asyncio.sleep(3600)  # the test kills the app here
            return step

    async def finish(self, ctx: WorkflowActivityContext, task: dict[str, Any]) -> dict[str, Any]:
        with self._timed("finish"):
            value = final_state(task["workflow_id"], task["credential_guid"], task["steps"])
            await self.writer.final(task["workflow_id"], value)
            return value

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        """Count the execution and record how long the activity body took."""
        self._loop = asyncio.get_running_loop()  # the worker's loop, for close()
        self.executions[name] = self.executions.get(name, 0) + 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self.activity_s.setdefault(name, []).append(time.perf_counter() - start)
