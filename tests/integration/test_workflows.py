"""Issue 14: Dapr Workflows (placement, scheduler, a workflow sidecar) driving statestore.
Issue 26: each workflow's arguments saved by the starter with save_state_object and read by
its first activity with get_state, with no sync() in between."""

from __future__ import annotations

import json
import uuid

import pytest
from dapr.ext.workflow import DaprWorkflowClient, WorkflowStatus

from statestore.devstack.processes import free_port, pid_alive, wait_until
from statestore.devstack.stack import SidecarSpec
from statestore.devstack.workflow_engine import WORKFLOW_APP_IDS, EnginePorts, WorkflowEngine, workflow_app, workflow_sidecar
from examples.workflow_args import CredentialBatcher, save_workflow_args
from examples.workflows.app import WORKFLOW_NAME, WorkflowApp, final_state
from statestore import SecretStore, StateStore, StateType
from statestore.publisher.store import StateStore as _Store
from tests.integration.conftest import eventually

W = StateType.WORKFLOWS


@pytest.fixture(scope="module")
def engine(stack):
    engine = WorkflowEngine(stack.local, EnginePorts.free())
    engine.start()
    yield engine
    engine.stop()
    assert not any(proc.alive() for proc in engine.processes())


@pytest.fixture(scope="module")
def wf_spec(stack, engine):
    """The workflow app's sidecar, with placement and scheduler."""
    spec = SidecarSpec(WORKFLOW_APP_IDS[0], free_port(), free_port(), free_port(), free_port())
    sidecar = workflow_sidecar(stack, engine, spec)
    stack.start_sidecar(sidecar, spec)
    yield spec
    sidecar.stop()


async def test_twenty_workflows_complete_with_the_state_they_wrote_and_their_credentials(stack, wf_spec, tmp_path):
    results = tmp_path / "results.json"
    app = workflow_app(stack, wf_spec, "run", {"WORKFLOWS_COUNT": "20", "WORKFLOWS_RESULTS_FILE": str(results),
                                               "WORKFLOWS_STEP_MS": "5"})  # fmt: skip
    app.start()
    try:
        assert wait_until(lambda: not app.alive(), 180, 0.2), app.log_tail(40)
    finally:
        app.stop()
    log = app.log_path.read_text()
    assert app.popen.returncode == 0, log[-4000:]
    assert "workflows completed  20/20" in log and "final states checked 20/20 as expected" in log
    assert "20/20 read back by guid" in log
    assert "read back 20/20 at the first attempt (0 reads found nothing" in log
    # Checked again from another process (the test's own StateStore and SecretStore).
    workflows = json.loads(results.read_text())["workflows"]
    assert len(workflows) == 20
    guids = set()
    for workflow_id, result in workflows.items():
        guid = result["credential_guid"]
        guids.add(guid)
        state = await StateStore.get_state(workflow_id, W)
        assert state == result["state"] and state["status"] == "completed"
        assert (state["workflow_id"], state["credential_guid"], state["steps"]) == (workflow_id, guid, 3)
        assert "credentials" not in state
        assert await SecretStore.get_credentials(guid) == result["credentials"]
    assert len(guids) == 20


@pytest.fixture
def workflow_client(wf_spec, stack, monkeypatch):
    from dapr.conf import settings

    monkeypatch.setattr(settings, "DAPR_API_TOKEN", stack.tokens.get("DAPR_API_TOKEN"))
    client = DaprWorkflowClient(host="127.0.0.1", port=str(wf_spec.grpc_port))
    yield client
    client.close()


async def test_an_activity_retried_after_the_app_crashed_leaves_the_state_of_one_successful_run(
    stack, wf_spec, workflow_client, tmp_path
):
    marker = tmp_path / "step-2-executions"
    env = {"WORKFLOWS_CRASH_MARKER": str(marker), "WORKFLOWS_STEP_MS": "5"}
    first = workflow_app(stack, wf_spec, "worker", env)
    first.start()
    workflow_id = f"wf-crash-{uuid.uuid4().hex[:6]}"
    credentials = {"host": "db.internal", "username": "svc-crash", "password": uuid.uuid4().hex}
    args = await save_workflow_args(workflow_id, {"credentials": credentials, "steps": 3}, CredentialBatcher())
    workflow_client.schedule_new_workflow(WORKFLOW_NAME, input={"workflow_id": workflow_id}, instance_id=workflow_id)
    try:
        assert wait_until(marker.exists, 60, 0.05), first.log_tail(40)

        async def first_attempt_applied():  # step 2's progress from the attempt that dies
            return ((await StateStore.get_state(workflow_id, W)) or {}).get("current_step") == "step-2"

        await eventually(first_attempt_applied)
        first.kill()  # SIGKILL in the middle of step 2
    finally:
        first.stop()
    second = workflow_app(stack, wf_spec, "worker", env)
    second.start()
    try:
        state = workflow_client.wait_for_workflow_completion(workflow_id, timeout_in_seconds=180)
    finally:
        second.stop()
    assert state is not None and state.runtime_status == WorkflowStatus.COMPLETED, second.log_tail(40)
    pids = marker.read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1], "step 2 ran once in each app process"
    output = json.loads(state.serialized_output)
    assert output == final_state(args)
    assert await StateStore.get_state(workflow_id, W) == output
    assert await SecretStore.get_credentials(args["credential_guid"]) == credentials


async def test_workflows_started_by_another_process_read_their_arguments_at_once(stack, wf_spec, workflow_client):
    """The reference's pattern across processes and sidecars: this test process saves each
    workflow's arguments (through the caller sidecar) and starts it at once; the worker app
    reads them through the workflow app's sidecar. No sync() anywhere: a read that found
    nothing would fail the workflow (WorkflowArgsNotFound)."""
    worker = workflow_app(stack, wf_spec, "worker", {"WORKFLOWS_STEP_MS": "5"})
    worker.start()
    tag = uuid.uuid4().hex[:6]
    batcher = CredentialBatcher()
    try:
        for n in range(20):  # one at a time: each read follows its save as closely as it can
            workflow_id = f"wf-args-{tag}-{n}"
            await save_workflow_args(workflow_id, {"credentials": {"password": f"p{n}"}, "steps": 1}, batcher)
            workflow_client.schedule_new_workflow(WORKFLOW_NAME, input={"workflow_id": workflow_id}, instance_id=workflow_id)
        states = {i: workflow_client.wait_for_workflow_completion(i, timeout_in_seconds=180)
                  for i in (f"wf-args-{tag}-{n}" for n in range(20))}  # fmt: skip
    finally:
        worker.stop()
    failed = {i: (s.runtime_status.name, s.failure_details and s.failure_details.message) if s else "timed out"
              for i, s in states.items() if s is None or s.runtime_status != WorkflowStatus.COMPLETED}  # fmt: skip
    assert failed == {}, worker.log_tail(40)
    for workflow_id, state in states.items():
        output = json.loads(state.serialized_output)
        assert output["workflow_id"] == workflow_id and output["status"] == "completed"
        assert await StateStore.get_state(workflow_id, W) == output


async def test_a_repeated_activity_resends_its_progress_with_newer_stamps_and_the_same_values(stack):
    """What docs/examples.md promises for retries: each run of an activity sends its events
    again with new stamps; the fields end with the values one run writes."""
    app = WorkflowApp(step_ms=0)
    workflow_id = f"wf-retry-{uuid.uuid4().hex[:6]}"
    task = {"workflow_id": workflow_id, "credential_guid": "guid-1", "step": 2, "steps": 4}
    query = _Store._runtime().query

    await app.run_step(None, task)
    await StateStore.sync(workflow_id, W)
    first = await query.get_document(workflow_id, W)
    await app.run_step(None, task)  # the retry
    await StateStore.sync(workflow_id, W)
    second = await query.get_document(workflow_id, W)

    one_run = {"status": "running", "current_step": "step-2", "progress": 50, "credential_guid": "guid-1"}
    assert first.to_state() == second.to_state() == one_run
    assert all(second.fields[key].stamp > first.fields[key].stamp for key in one_run)
    assert second.processed_upto(_Store.runtime().producer_id) == 2 * len(one_run)  # both runs applied


def listening_addresses(port: int) -> set[str]:
    """The local addresses that listen on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in list(fh)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port_hex = local.rsplit(":", 1)
                if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


def test_placement_and_scheduler_listen_on_loopback_only(engine):
    loopback = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it
    ports = engine.ports
    for port in ports.named().values():  # gRPC, raft, healthz, metrics, etcd client and peer
        assert listening_addresses(port) == {loopback}, (port, engine.ports)


def test_an_engine_left_behind_is_found_by_its_pid_files_and_stopped(tmp_path):
    """What `make down` does after a `make run` that was killed before it could stop the engine."""
    left = WorkflowEngine(tmp_path, EnginePorts.free())
    left.start()
    pids = [proc.pid for proc in left.processes()]
    try:
        assert sorted(WorkflowEngine(tmp_path).stop()) == ["placement", "scheduler"]  # a new process's view
        assert wait_until(lambda: not any(pid_alive(pid) for pid in pids), 10)
        assert WorkflowEngine(tmp_path).stop() == []
    finally:
        left.stop()
