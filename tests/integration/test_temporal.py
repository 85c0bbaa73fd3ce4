"""Issue 19: StateStore inside Temporal, on the real stack: a Temporal dev server, the
example worker (its own process, with its own Dapr sidecar), the subscriber, Redis and
sqlite. This test process is the starter: it saves each workflow's arguments (credentials
replaced by a guid) with save_state_object and starts the workflow with its id; the
worker's first activity reads them with get_state, with no sync() in between (issue 26)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from temporalio.worker import Replayer

from statestore.devstack import Ports, Stack
from statestore.devstack.processes import port_open
from statestore.devstack.temporal import TemporalPorts, TemporalStack
from examples.temporal.run import run_workflows
from examples.temporal.workflow import StateStoreWorkflow
from statestore import StateQueryClient, StateType, build_state_store_path
from statestore.core.paths import caller_app_name
from tests.integration.conftest import eventually

W = StateType.WORKFLOWS
# The Temporal example exercises the caller side (a workflow engine of its own); it runs
# on the local profile only, which `make up TEMPORAL=1` also starts.
pytestmark = pytest.mark.profile("local")


@pytest.fixture(scope="module")
def temporal(stack, caller_environment):
    # The worker shares this process's app name (to read the arguments and credentials saved here) and
    # takes tasks from a queue of its own.
    queue = f"statestore-test-{uuid.uuid4().hex[:8]}"
    temporal = TemporalStack(
        stack, TemporalPorts.free(),
        worker_env={"STATESTORE_APP_NAME": caller_app_name(), "TEMPORAL_TASK_QUEUE": queue},
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**temporal.client_env(), "TEMPORAL_TASK_QUEUE": queue}.items():
            patch.setenv(name, value)
        temporal.up()
        try:
            yield temporal
        finally:
            temporal.down()
    assert not any(proc.alive() for proc in temporal.processes())


@pytest.fixture(scope="module")
async def client(temporal):
    from examples.temporal.worker import connect

    return await connect()


async def test_twenty_workflows_complete_with_the_state_they_wrote_and_their_credentials(client):
    report = await run_workflows(client, 20, steps=3)
    assert report.failures == {} and report.args_not_found == []
    assert sorted(report.results) == sorted(report.ids)
    # Every workflow read the arguments saved for it, in the worker (a miss is not
    # retried: it fails the workflow).
    assert report.args_read_back() == 20
    for workflow_id, result in report.results.items():
        saved = report.args[workflow_id]
        assert (result.args.workflow_id, result.args.credential_guid, result.args.steps) == (
            workflow_id, saved["credential_guid"], 3)  # fmt: skip
        assert result.args.application_name == caller_app_name() and result.args.workflow_run_id
    # Every final state equals what the workflow wrote (read through get_state) ...
    assert report.states_as_written() == [], {i: report.final_states[i] for i in report.states_as_written()}
    # ... every step read back, by guid inside the activity, the credentials saved for it ...
    assert report.credentials_read_back() == []
    assert all(len(result.steps) == 3 and result.finish for result in report.results.values())
    # ... and the snapshots land at the reference's path of this app.
    for workflow_id in report.ids:
        path = Path(build_state_store_path(workflow_id, W))

        async def snapshot_written(path=path, workflow_id=workflow_id):
            return path.exists() and json.loads(path.read_text()) == report.expected_state(workflow_id)

        await eventually(snapshot_written)
    summary = report.summary()
    assert summary["step_records_applied"] == summary["step_records_expected"] == 60
    # 3 per step and 1 final per workflow, and 3 more for any attempt Temporal ran again
    # (none unless the machine is so loaded that an activity's completion got lost); the
    # starter's replaces of the arguments are not counted.
    expected_events = 20 * (3 * 3 + 1) + 3 * summary["retried_step_attempts"]
    assert summary["progress_events_published"] == summary["progress_events_applied"] == expected_events
    # The workflow code is deterministic: its recorded histories replay without a worker,
    # a sidecar or any StateStore call.
    replayer = Replayer(workflows=[StateStoreWorkflow])
    for workflow_id in report.ids[:5]:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        await replayer.replay_workflow(history)


async def test_an_activity_that_fails_once_leaves_the_state_of_one_successful_run(client, caller_sidecar, settings):
    retried = await run_workflows(client, 3, steps=3, fail_once_at_step=2)
    clean = await run_workflows(client, 3, steps=3)
    for report in (retried, clean):
        assert report.failures == {} and report.states_as_written() == []
        assert report.args_read_back() == 3
    # Temporal ran step 2 again in every retried workflow.
    assert all(r.steps[1].attempt >= 2 for r in retried.results.values())
    # The failed attempt's events were applied too (3 more per state than a clean run):
    # the state is equal anyway, because they set the same fields to the same values.
    query = StateQueryClient(caller_sidecar, settings.statestore_name)

    async def events_applied(state_id: str) -> int:
        document = await query.get_document(state_id, W)
        assert document is not None and all(not p.ahead for p in document.producers.values())
        return sum(p.upto for p in document.producers.values())

    for report in (clean, retried):
        for state_id, result in report.results.items():
            # The arguments (1), and every attempt sent its 3 events: one more attempt per retry.
            assert await events_applied(state_id) == 1 + 3 * 3 + 1 + 3 * sum(s.attempt - 1 for s in result.steps)
    assert sum(s.attempt - 1 for r in retried.results.values() for s in r.steps) >= 3

    def progress(report, workflow_id):  # the final state without the arguments (a guid of its own each)
        return {k: v for k, v in report.final_states[workflow_id].items() if k not in report.args[workflow_id]}

    retried_states = [progress(retried, i) for i in retried.ids]
    clean_states = [progress(clean, i) for i in clean.ids]
    # Equal up to the id each record names.
    assert [json.loads(json.dumps(s).replace(i, "ID")) for s, i in zip(retried_states, retried.ids)] == [
        json.loads(json.dumps(s).replace(i, "ID")) for s, i in zip(clean_states, clean.ids)
    ]


def test_make_up_with_the_temporal_flag_starts_it_and_make_down_stops_it(tmp_path, monkeypatch, capsys):
    """`make up TEMPORAL=1` / `make down` (python -m statestore.devstack), on a stack of its own."""
    import statestore.devstack.__main__ as cli

    ports, temporal_ports = Ports.free(), TemporalPorts.free()
    monkeypatch.setattr(cli, "Stack", lambda base, **kw: Stack(tmp_path, ports, **kw))
    monkeypatch.setattr(cli, "TemporalStack", lambda stack: TemporalStack(stack, temporal_ports))
    monkeypatch.setattr(cli.signal, "signal", lambda *args: None)  # keep pytest's SIGTERM handler
    assert cli.main(["up", "--temporal"]) == 0
    assert f"Temporal dev server 127.0.0.1:{temporal_ports.grpc}" in capsys.readouterr().out
    assert port_open(temporal_ports.grpc) and (tmp_path / "local" / "temporal" / "temporal.db").exists()
    assert cli.main(["status"]) == 0
    assert "temporal-worker    running" in capsys.readouterr().out
    assert cli.main(["down"]) == 0
    stopped = capsys.readouterr().out
    assert all(name in stopped for name in ("temporal", "temporal-worker", "temporal-worker-daprd", "redis"))
    assert not port_open(temporal_ports.grpc) and not port_open(ports.redis)
