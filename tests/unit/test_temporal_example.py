"""The Temporal example's pure parts: the state a run must leave, the checks of a run's
report, the workflow's imports, get_workflow_args (on the in-memory store), and the
benchmark report's sections."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from bench.report import keep_sections, replace_section
from examples.temporal.activities import get_workflow_args
from examples.temporal.run import RunReport
from examples.temporal.shared import (
    FinishResult,
    StepResult,
    WorkflowArgs,
    WorkflowInput,
    WorkflowResult,
    credential_fingerprint,
    expected_state,
    step_record,
)
from examples.workflow_args import ARGS_NOT_FOUND, CredentialBatcher, save_workflow_args
from statestore import SecretStore

ROOT = Path(__file__).resolve().parents[2]


def test_expected_state_holds_every_step_and_the_final_status():
    state = expected_state("wf-1", 3)
    assert state == {
        "step_1": step_record("wf-1", 1), "step_2": step_record("wf-1", 2), "step_3": step_record("wf-1", 3),
        "progress": 100, "current_step": "step-3", "status": "completed",
    }  # fmt: skip


def test_a_step_record_depends_on_its_inputs_only():
    assert step_record("wf-1", 2) == step_record("wf-1", 2) != step_record("wf-2", 2)


def test_with_statestore_the_expected_state_holds_the_saved_arguments_too():
    args = {"workflow_id": "wf-1", "credential_guid": "g", "steps": 2}
    assert expected_state("wf-1", 2, args) == {**args, **expected_state("wf-1", 2)}


ARGS = {"workflow_id": "wf-1", "application_name": "app", "credential_guid": "g", "output_prefix": "output", "steps": 2}


def report_of(final_state: dict | None, fingerprint: str, attempts=(1, 1), mode="rmw", read_attempt=1) -> RunReport:
    creds = {"username": "svc", "password": "p"}
    steps = [StepResult(n, a, 2.0, 3, fingerprint) for n, a in enumerate(attempts, 1)]
    report = RunReport(mode, len(attempts), ["wf-1"], {"wf-1": credential_fingerprint(creds)}, args={"wf-1": ARGS})
    args = WorkflowArgs(**ARGS, read_attempt=read_attempt)
    report.results["wf-1"] = WorkflowResult("wf-1", args, steps, FinishResult(5.0, 1.0, 1))
    report.completion_s["wf-1"] = 0.1
    report.final_states["wf-1"] = final_state
    return report


def test_the_report_finds_a_wrong_state_and_a_wrong_credential():
    good = credential_fingerprint({"username": "svc", "password": "p"})
    ok = report_of(expected_state("wf-1", 2), good)
    assert ok.states_as_written() == [] and ok.credentials_read_back() == []
    assert report_of({**expected_state("wf-1", 2), "progress": 50}, good).states_as_written() == ["wf-1"]
    assert report_of(None, good).states_as_written() == ["wf-1"]
    assert report_of(expected_state("wf-1", 2), "0" * 16).credentials_read_back() == ["wf-1"]
    # With statestore the arguments must still be in the final state.
    assert report_of(expected_state("wf-1", 2), good, mode="statestore").states_as_written() == ["wf-1"]
    assert report_of(expected_state("wf-1", 2, ARGS), good, mode="statestore").states_as_written() == []


def test_the_report_counts_the_arguments_read_and_those_read_at_the_first_attempt():
    good = credential_fingerprint({"username": "svc", "password": "p"})
    first = report_of(expected_state("wf-1", 2), good).summary()
    assert (first["args_read_back"], first["args_read_at_first_attempt"], first["args_not_found"]) == (1, 1, 0)
    again = report_of(expected_state("wf-1", 2), good, read_attempt=2).summary()
    assert (again["args_read_back"], again["args_read_at_first_attempt"]) == (1, 0)
    missed = report_of(expected_state("wf-1", 2), good)
    missed.results.clear()
    missed.args_not_found.append("wf-1")
    assert (missed.summary()["args_read_back"], missed.summary()["args_not_found"]) == (0, 1)


def test_the_summary_counts_events_re_sent_by_retried_attempts():
    good = credential_fingerprint({"username": "svc", "password": "p"})
    summary = report_of(expected_state("wf-1", 2), good, attempts=(1, 3)).summary()
    # 2 steps x 3 events + 1 final, and attempts 1 and 2 of step 2 sent 3 each before failing.
    assert summary["progress_events_resent_by_retries"] == 6
    assert summary["progress_events_published"] == 2 * 3 + 1 + 6
    assert summary["step_records_applied"] == summary["step_records_expected"] == 2
    assert summary["final_states_as_written"] == summary["credentials_read_back"] == 1


def test_events_certainly_sent_count_the_recorded_attempts_and_the_injected_failures():
    good = credential_fingerprint({"username": "svc", "password": "p"})
    lost = report_of(expected_state("wf-1", 2), good, attempts=(1, 3))  # Temporal lost 2 attempts: sent or not
    assert (lost.progress_events_certain(), lost.progress_events_published()) == (2 * 3 + 1, 2 * 3 + 1 + 6)
    injected = report_of(expected_state("wf-1", 2), good, attempts=(1, 2))
    injected.results["wf-1"].args.fail_once_at_step = 2  # its first attempt wrote, then failed
    assert injected.progress_events_certain() == injected.progress_events_published() == 2 * 3 + 1 + 3


def test_the_workflow_code_imports_no_statestore_dapr_or_activity_code():
    tree = ast.parse((ROOT / "examples" / "temporal" / "workflow.py").read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    forbidden = ("statestore", "dapr", "examples.temporal.activities", "examples.workflow_args")
    assert not [m for m in modules if m and m.startswith(forbidden)], modules


async def test_get_workflow_args_reads_what_the_starter_saved_with_the_credentials_by_guid(memory_state_store):
    saved = await save_workflow_args("wf-1", {"credentials": {"password": "p"}, "steps": 3}, CredentialBatcher())
    assert "credentials" not in saved and saved["workflow_id"] == "wf-1" and saved["steps"] == 3
    args = await ActivityEnvironment().run(get_workflow_args, WorkflowInput("wf-1"))
    assert args.credential_guid == saved["credential_guid"] and args.application_name == saved["application_name"]
    assert args.output_path == f"output/{saved['application_name']}/wf-1" and args.read_attempt == 1
    assert args.workflow_run_id  # the activity's, as the reference's get_workflow_args adds it
    assert await SecretStore.get_credentials(args.credential_guid) == {"password": "p"}


async def test_get_workflow_args_that_finds_nothing_fails_without_retry(memory_state_store):
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(get_workflow_args, WorkflowInput("wf-never-saved"))
    assert raised.value.type == ARGS_NOT_FOUND and raised.value.non_retryable


def test_a_report_section_is_added_once_and_then_replaced():
    text = replace_section("# Benchmarks\n\nbody\n", "temporal", "first")
    assert text.count("<!-- temporal:begin -->") == 1 and "first" in text
    again = replace_section(text, "temporal", "second")
    assert "first" not in again and "second" in again and again.startswith("# Benchmarks\n\nbody\n")


def test_a_rewritten_benchmark_report_keeps_the_temporal_section():
    old = replace_section("# Benchmarks\n\nold figures\n", "temporal", "temporal figures")
    new = keep_sections("# Benchmarks\n\nnew figures\n", old)
    assert "new figures" in new and "old figures" not in new and "temporal figures" in new
    assert keep_sections("# Benchmarks\n", "# Benchmarks\n") == "# Benchmarks\n"
