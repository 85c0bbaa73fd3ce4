"""The Dapr Workflows example without a sidecar: the orchestrator (driven by hand), the
starter's saves and get_workflow_args on the in-memory store."""

from __future__ import annotations

import ast
import asyncio
import inspect
import textwrap

import pytest

from examples.workflow_args import CredentialBatcher, output_path, save_workflow_args
from examples.workflows.app import WorkflowApp, WorkflowArgsNotFound, final_state
from statestore import SecretStore, StateStore, StateType


class Context:
    """What the orchestrator sees of DaprWorkflowContext: call_activity, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def call_activity(self, name: str, input: object = None, retry_policy: object = None) -> str:
        self.calls.append((name, input))
        return name


ARGS = {"workflow_id": "wf-1", "application_name": "app", "credential_guid": "g-1", "steps": 2,
        "output_prefix": "output", "output_path": "output/app/wf-1"}  # fmt: skip


def test_the_workflow_starts_with_its_id_reads_its_arguments_first_and_passes_only_the_guid_on():
    ctx = Context()
    run = WorkflowApp.workflow(ctx, {"workflow_id": "wf-1"})
    assert next(run) == "get_workflow_args" and ctx.calls[-1] == ("get_workflow_args", "wf-1")
    assert run.send(ARGS) == "run_step"
    assert ctx.calls[-1][1] == {"workflow_id": "wf-1", "credential_guid": "g-1", "step": 1, "steps": 2}
    assert run.send(1) == "run_step" and run.send(2) == "finish"
    assert ctx.calls[-1] == ("finish", ARGS)
    with pytest.raises(StopIteration) as done:
        run.send(final_state(ARGS))
    assert done.value.value == final_state(ARGS)


def test_a_workflow_whose_arguments_are_not_found_fails_at_once():
    run = WorkflowApp.workflow(Context(), {"workflow_id": "wf-1"})
    next(run)
    with pytest.raises(WorkflowArgsNotFound, match="wf-1"):
        run.send(None)


def test_the_orchestrator_calls_no_statestore():
    tree = ast.parse(textwrap.dedent(inspect.getsource(WorkflowApp.workflow)))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"StateStore", "SecretStore", "save_workflow_args", "get_workflow_args"}, names


def test_the_final_state_is_the_arguments_with_the_final_status():
    saved = {k: v for k, v in ARGS.items() if k != "output_path"}
    assert final_state(saved) == final_state(ARGS) == {**ARGS, "status": "completed", "progress": 100, "current_step": "done"}
    assert output_path(saved) == ARGS["output_path"]


async def test_the_starter_saves_credentials_in_one_batch_and_the_activity_reads_the_arguments(memory_state_store):
    batcher = CredentialBatcher()
    jobs = {f"wf-{n}": {"credentials": {"password": f"p{n}"}, "steps": 3} for n in range(5)}
    saved = await asyncio.gather(*(save_workflow_args(i, job, batcher) for i, job in jobs.items()))
    assert batcher.batches == 1 and batcher.saved == 5
    app = WorkflowApp(step_ms=0)
    for workflow_id, args in zip(jobs, saved):
        assert await StateStore.get_state(workflow_id, StateType.WORKFLOWS) == args
        assert await app.get_workflow_args(None, workflow_id) == {**args, "output_path": output_path(args)}
        assert await SecretStore.get_credentials(args["credential_guid"]) == jobs[workflow_id]["credentials"]
    assert await app.get_workflow_args(None, "wf-never-saved") is None
    assert app.args_reads == {**{i: [True] for i in jobs}, "wf-never-saved": [False]}
