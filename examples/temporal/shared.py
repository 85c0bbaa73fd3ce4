"""What the Temporal workflow, its activities and its starter agree on: the task queue,
the inputs and results (plain dataclasses: Temporal's default converter serialises them,
and the workflow sandbox may import this module), and the state a run must leave.

Pure: no Temporal client, no StateStore, no I/O.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "TASK_QUEUE",
    "MODES",
    "WorkflowInput",
    "WorkflowArgs",
    "StepInput",
    "StepResult",
    "FinishInput",
    "FinishResult",
    "WorkflowResult",
    "expected_state",
    "credential_fingerprint",
    "task_queue",
]

TASK_QUEUE = "statestore-example"
# How activities write state: "statestore" (events, fire-and-forget) or "rmw" (a
# synchronous read-modify-write with ETag through the sidecar, the baseline of bench/temporal).
MODES = ("statestore", "rmw")


def task_queue() -> str:
    """The task queue (TEMPORAL_TASK_QUEUE, else TASK_QUEUE): a test or a bench run may use
    a queue of its own so that no other worker takes its tasks."""
    return os.environ.get("TEMPORAL_TASK_QUEUE", TASK_QUEUE)


@dataclass
class WorkflowInput:
    """What a workflow is started with: its id only, as the reference's ``start_workflow``
    passes it. Its arguments are in state (WorkflowArgs)."""

    workflow_id: str


@dataclass
class WorkflowArgs:
    """A workflow's arguments as ``get_workflow_args`` returns them: what the starter saved
    as state ``workflow_id`` (credentials replaced by their guid), plus what the activity
    adds, as the reference's does."""

    workflow_id: str
    application_name: str
    credential_guid: str
    output_prefix: str
    steps: int = 5
    mode: str = "statestore"  # how the activities write progress and the final state
    fail_once_at_step: int | None = None  # that step's first attempt fails after writing
    # Added by get_workflow_args (not stored):
    output_path: str = ""
    workflow_run_id: str = ""
    read_attempt: int = 1  # the attempt of get_workflow_args that found them


@dataclass
class StepInput:
    workflow_id: str
    credential_guid: str
    step: int
    steps: int
    mode: str = "statestore"
    fail_first_attempt: bool = False


@dataclass
class StepResult:
    step: int
    attempt: int
    elapsed_ms: float
    events: int  # progress events sent by this attempt
    credential_fingerprint: str


@dataclass
class FinishInput:
    workflow_id: str
    steps: int
    mode: str = "statestore"


@dataclass
class FinishResult:
    elapsed_ms: float
    visible_ms: float  # from the final write until save_state_object returns (stored, readable by all)
    events: int


@dataclass
class WorkflowResult:
    workflow_id: str
    args: WorkflowArgs | None = None
    steps: list[StepResult] = field(default_factory=list)
    finish: FinishResult | None = None


def step_record(workflow_id: str, step: int) -> dict[str, Any]:
    """What step ``step`` records: derived from the inputs only, so a retried attempt
    writes exactly what the first one wrote."""
    return {"status": "done", "output": f"output/{workflow_id}/part-{step}"}


def expected_state(workflow_id: str, steps: int, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The state a completed workflow leaves, however often its activities were retried:
    the saved ``args`` (statestore mode: the progress joins them in one state), the step
    records and the final status."""
    state: dict[str, Any] = dict(args or {})
    state.update({f"step_{n}": step_record(workflow_id, n) for n in range(1, steps + 1)})
    state.update(progress=100, current_step=f"step-{steps}", status="completed")
    return state


def credential_fingerprint(config: dict[str, Any]) -> str:
    """A digest of a credential configuration, so the starter can check an activity read
    what was saved without the credentials entering Temporal's history."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
