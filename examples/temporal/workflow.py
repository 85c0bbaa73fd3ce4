"""The workflow: ``get_workflow_args``, ``steps`` step activities, then the finish activity.

Workflow code must be deterministic: Temporal replays it from its history (after a worker
restart, or to rebuild an evicted workflow) and runs it in a sandbox. A StateStore call
here would publish again on every replay, and its result (a clock, a network read) could
differ between replays. So the workflow calls no StateStore: every write is in an
activity, whose result Temporal records once and replays from history.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from examples.temporal.shared import (
        FinishInput,
        FinishResult,
        StepInput,
        StepResult,
        WorkflowArgs,
        WorkflowInput,
        WorkflowResult,
    )

__all__ = ["StateStoreWorkflow", "ACTIVITY_TIMEOUT", "RETRY"]

# An attempt lost on the way (a worker killed, an overloaded server) is retried after this.
ACTIVITY_TIMEOUT = timedelta(seconds=30)
# Short first back-off: the example and the retry test see a retry within a second.
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5))


@workflow.defn
class StateStoreWorkflow:
    @workflow.run
    async def run(self, start: WorkflowInput) -> WorkflowResult:
        # Started with its id only; the arguments are in state, saved by the starter. A
        # read that finds nothing fails the workflow (not retried: the run counts it).
        args = await workflow.execute_activity(
            "get_workflow_args", start, result_type=WorkflowArgs,
            start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=RETRY,
        )  # fmt: skip
        result = WorkflowResult(args.workflow_id, args)
        for step in range(1, args.steps + 1):
            step_input = StepInput(
                args.workflow_id, args.credential_guid, step, args.steps, args.mode,
                fail_first_attempt=args.fail_once_at_step == step,
            )  # fmt: skip
            # Activities by name: the workflow never imports the activity code (and so
            # neither StateStore nor the Dapr client) into its sandbox.
            result.steps.append(
                await workflow.execute_activity(
                    "run_step", step_input, result_type=StepResult,
                    start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=RETRY,
                )  # fmt: skip
            )
        result.finish = await workflow.execute_activity(
            "finish", FinishInput(args.workflow_id, args.steps, args.mode), result_type=FinishResult,
            start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=RETRY,
        )  # fmt: skip
        return result
