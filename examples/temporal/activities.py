"""The activities: where the workflow's arguments are read and its state is written.

Activities may have side effects: Temporal runs each until one attempt succeeds and
records that attempt's result. An attempt that fails after writing is run again, and its
writes are sent again. Every write here sets a field to a value derived from the
activity's inputs only (no counter, no attempt number, no clock), so a retried attempt
sends the same field values with newer stamps and the state ends equal to one successful
run.
"""

from __future__ import annotations

import os
import time
from dataclasses import fields
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from examples.temporal.shared import (
    FinishInput,
    FinishResult,
    StepInput,
    StepResult,
    WorkflowArgs,
    WorkflowInput,
    credential_fingerprint,
    step_record,
)
from examples.workflow_args import ARGS_NOT_FOUND
from examples.workflow_args import get_workflow_args as read_workflow_args
from statestore import SecretStore, StateStore, StateType

__all__ = ["get_workflow_args", "run_step", "finish", "ACTIVITIES", "rmw_peer"]

W = StateType.WORKFLOWS
ARGS_FIELDS = {f.name for f in fields(WorkflowArgs)}


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


_rmw: Any = None


def rmw_peer() -> Any:
    """The synchronous read-modify-write baseline (bench.peers.PlainDaprPeer) on this
    worker's sidecar, made on first use."""
    global _rmw
    if _rmw is None:
        from bench.peers import PlainDaprPeer

        _rmw = PlainDaprPeer(
            int(os.environ.get("DAPR_HTTP_PORT", "3500")),
            int(os.environ.get("DAPR_GRPC_PORT", "50001")),
            os.environ.get("DAPR_API_TOKEN"),
        )
    return _rmw


async def _save_field(mode: str, workflow_id: str, key: str, value: Any) -> None:
    if mode == "rmw":
        await rmw_peer().save_field(workflow_id, key, value)
    else:
        await StateStore.save_state(key, value, workflow_id, W)  # returns once queued


@activity.defn(name="get_workflow_args")
async def get_workflow_args(start: WorkflowInput) -> WorkflowArgs:
    """The reference's ``get_workflow_args``: the arguments the starter saved, read with
    ``get_state`` through this worker's sidecar, with ``output_path`` and ``workflow_run_id``.

    No sync() anywhere between the starter's save and this read: ``save_state_object``
    returned once they were stored. A read that finds nothing fails the workflow (not
    retried, so that the run counts it rather than a retry hiding it)."""
    info = activity.info()
    args = await read_workflow_args(start.workflow_id)
    if args is None:
        raise ApplicationError(
            f"get_state found no arguments for workflow {start.workflow_id!r} (attempt {info.attempt})",
            type=ARGS_NOT_FOUND, non_retryable=True,
        )  # fmt: skip
    known = {k: v for k, v in args.items() if k in ARGS_FIELDS}
    return WorkflowArgs(**{**known, "workflow_run_id": info.workflow_run_id, "read_attempt": info.attempt})


@activity.defn(name="run_step")
async def run_step(args: StepInput) -> StepResult:
    """One step of work: read the credentials by guid, report progress."""
    started = time.perf_counter()
    credentials = await SecretStore.get_credentials(args.credential_guid)
    # ... the step's real work would use the credentials here ...
    updates = {
        f"step_{args.step}": step_record(args.workflow_id, args.step),
        "progress": round(100 * args.step / args.steps),
        "current_step": f"step-{args.step}",
    }
    for key, value in updates.items():
        await _save_field(args.mode, args.workflow_id, key, value)
    attempt = activity.info().attempt
    if args.fail_first_attempt and attempt == 1:
        # After the writes: the retry sends them again.
        raise ApplicationError(f"{args.workflow_id} step {args.step}: injected failure of attempt 1")
    if args.mode != "rmw":
        # Published (to the broker, not yet applied) before Temporal records the step as
        # done: a worker that dies after this cannot lose them. One publish round trip; a
        # slow state store does not delay it.
        await StateStore.flush()
    return StepResult(args.step, attempt, _ms_since(started), len(updates), credential_fingerprint(credentials))


@activity.defn(name="finish")
async def finish(args: FinishInput) -> FinishResult:
    """Write the final state and return once every process reads it."""
    started = time.perf_counter()
    if args.mode == "rmw":
        written = time.perf_counter()
        await rmw_peer().save_field(args.workflow_id, "status", "completed")
        await rmw_peer().save_field(args.workflow_id, "progress", 100)
        return FinishResult(_ms_since(started), _ms_since(written), 2)
    # The arguments and this worker's progress (get_state returns a process's own writes
    # at once, applied or not: no sync() before it), then the final object replaces the
    # state with them plus the final status.
    state = await StateStore.get_state(args.workflow_id, W) or {}
    written = time.perf_counter()
    # Returns once the object is stored: the workflow completes only once every process
    # reads its final state. No sync() after it: that would only wait for this worker's
    # progress events to be applied too, and they are stamped before the replace, so they
    # can no longer change the state.
    await StateStore.save_state_object(args.workflow_id, {**state, "status": "completed", "progress": 100}, W)
    return FinishResult(_ms_since(started), _ms_since(written), 1)


ACTIVITIES = [get_workflow_args, run_step, finish]
