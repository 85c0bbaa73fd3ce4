"""The workflow and its activities.

The starter saved each workflow's arguments (examples.workflow_args: credentials replaced
by their guid) and started it with its id only. The first activity, ``get_workflow_args``,
reads them with ``get_state``; ``steps`` activities report progress fire-and-forget; the
last one writes the final state with ``save_state_object``. Only activities touch
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

from examples.workflow_args import get_workflow_args, output_path
from statestore import StateStore, StateType

__all__ = ["WORKFLOW_NAME", "StateWriter", "StateStoreWriter", "WorkflowArgsNotFound", "WorkflowApp", "final_state"]

W = StateType.WORKFLOWS
WORKFLOW_NAME = "report_workflow"
# An activity that fails (or whose worker dies) runs again; statestore writes are safe to
# repeat (docs/examples.md#retries-and-replays).
RETRY = RetryPolicy(first_retry_interval=timedelta(milliseconds=200), max_number_of_attempts=5,
                    backoff_coefficient=2.0, max_retry_interval=timedelta(seconds=5))  # fmt: skip


class StateWriter(Protocol):
    """How activities write the workflow's state (the bench swaps in a synchronous one)."""

    async def progress(self, workflow_id: str, fields: dict[str, Any]) -> None: ...
    async def final(self, workflow_id: str, value: dict[str, Any]) -> None: ...


class StateStoreWriter:
    """statestore: progress fire-and-forget; the final state durable before returning."""

    def __init__(self) -> None:
        # Workflow-state events queued by this process, per workflow (the engine may also
        # resume workflows an earlier run of the app left unfinished).
        self.events_by_workflow: dict[str, int] = {}

    @property
    def events(self) -> int:
        return sum(self.events_by_workflow.values())

    def _count(self, workflow_id: str) -> None:
        self.events_by_workflow[workflow_id] = self.events_by_workflow.get(workflow_id, 0) + 1

    async def progress(self, workflow_id: str, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            await StateStore.save_state(key, value, workflow_id, W)
            self._count(workflow_id)

    async def final(self, workflow_id: str, value: dict[str, Any]) -> None:
        # Returns once the object is stored: every process reads the final state before
        # the activity (and so the workflow) reports completion. No sync() after it: that
        # would only wait for this worker's progress events to be applied too, and they
        # are stamped before the replace, so they can no longer change the state.
        await StateStore.save_state_object(workflow_id, value, W)
        self._count(workflow_id)


class WorkflowArgsNotFound(LookupError):
    """get_workflow_args found no arguments: the workflow fails (the error type the run counts)."""


def final_state(args: dict[str, Any]) -> dict[str, Any]:
    """What a workflow's state is once it completed: a function of its saved arguments only."""
    return {**args, "output_path": output_path(args), "status": "completed", "progress": 100, "current_step": "done"}


@dataclass
class WorkflowApp:
    """The workflow and activities, with what the run reports (activity times, reads of
    the arguments)."""

    writer: StateWriter = field(default_factory=StateStoreWriter)
    step_ms: float = 20.0
    crash_marker: Path | None = None
    activity_s: dict[str, list[float]] = field(default_factory=dict)  # activity name -> durations
    executions: dict[str, int] = field(default_factory=dict)  # activity name -> runs
    args_reads: dict[str, list[bool]] = field(default_factory=dict)  # workflow id -> found, per read
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
        for name in ("get_workflow_args", "run_step", "finish"):
            runtime.register_activity(activity(getattr(self, name)), name=name)

    # -- the orchestrator: deterministic, no I/O ---------------------------------------

    @staticmethod
    def workflow(ctx: DaprWorkflowContext, job: dict[str, Any]):
        # The input is the workflow id only (as the reference's start_workflow passes it);
        # the arguments, with the credentials' guid, are in state.
        args = yield ctx.call_activity("get_workflow_args", input=job["workflow_id"], retry_policy=RETRY)
        if args is None:  # not retried: a miss is what the run counts (docs/examples.md)
            raise WorkflowArgsNotFound(f"get_state found no arguments for workflow {job['workflow_id']!r}")
        workflow_id, steps = args["workflow_id"], args["steps"]
        for step in range(1, steps + 1):
            yield ctx.call_activity("run_step", input={"workflow_id": workflow_id, "credential_guid": args["credential_guid"],
                                                       "step": step, "steps": steps}, retry_policy=RETRY)  # fmt: skip
        result = yield ctx.call_activity("finish", input=args, retry_policy=RETRY)
        return result

    # -- activities: all statestore I/O happens here -----------------------------------

    async def get_workflow_args(self, ctx: WorkflowActivityContext, workflow_id: str) -> dict[str, Any] | None:
        """The arguments the starter saved, read with get_state and no sync() since the save
        (None when it found nothing: the orchestrator fails the workflow)."""
        with self._timed("get_workflow_args"):
            args = await get_workflow_args(workflow_id)
            self.args_reads.setdefault(workflow_id, []).append(args is not None)
            return args

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

    async def finish(self, ctx: WorkflowActivityContext, args: dict[str, Any]) -> dict[str, Any]:
        with self._timed("finish"):
            value = final_state(args)
            await self.writer.final(args["workflow_id"], value)
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
