"""Issue 2's smoke tests: the real daprd and the profile's servers, wired as the components say."""

import dataclasses
import json
import uuid
from pathlib import Path

import pytest
from dapr.clients import DaprClient
from dapr.conf import settings

from statestore.devstack import Ports, Stack, StackError
from statestore.devstack.multiapp import run_multiapp
from statestore.devstack.processes import port_open, wait_until
from statestore.core.events import encode_cloudevent
from tests.integration.conftest import eventually
from tests.strategies import field_updated


@pytest.fixture
def sdk_client(monkeypatch, stack):
    """The Dapr SDK's own client for a sidecar (its health wait reads dapr.conf)."""

    def connect(spec):
        monkeypatch.setattr(settings, "DAPR_API_TOKEN", stack.tokens.get("DAPR_API_TOKEN"))
        monkeypatch.setattr(settings, "DAPR_HTTP_PORT", spec.http_port)
        monkeypatch.setattr(settings, "DAPR_HEALTH_TIMEOUT", 10)
        return DaprClient(address=f"127.0.0.1:{spec.grpc_port}")

    return connect


def test_sdk_client_saves_and_reads_a_key_visible_from_a_second_app_id(stack, sdk_client):
    key, value = f"smoke-{uuid.uuid4().hex[:8]}", json.dumps({"hello": "sqlite"})
    with sdk_client(stack.ports.caller) as caller:
        caller.save_state("statestore", key, value, state_metadata={"contentType": "application/json"})
        assert json.loads(caller.get_state("statestore", key).data) == {"hello": "sqlite"}
    with sdk_client(stack.ports.subscriber) as subscriber:
        assert json.loads(subscriber.get_state("statestore", key).data) == {"hello": "sqlite"}


async def test_event_published_by_one_app_id_reaches_the_grpc_subscriber_of_another(
    stack, caller_sidecar, sdk_client
):
    state_id = f"smoke-{uuid.uuid4().hex[:8]}"
    event = field_updated("via", "redis", producer=f"smoke-{uuid.uuid4().hex[:6]}", state_id=state_id)
    with sdk_client(stack.ports.caller) as caller:
        caller.publish_event("pubsub", "statestore-events", encode_cloudevent(event),
                             data_content_type="application/cloudevents+json")  # fmt: skip

    async def applied():
        return await caller_sidecar.get_state("statestore", f"workflows/{state_id}")

    stored = await eventually(applied)
    assert json.loads(stored.value)["fields"]["via"][0] == "redis"  # [value, stamp]


async def test_the_subscribers_object_store_writes_an_object_at_its_key(stack, subscriber_objects):
    """Where the profile keeps objects: the folder, or S3Proxy's bucket folder (its
    filesystem backend stores each object at <bucket>/<key>)."""
    key = f"persistent-artifacts/apps/smoke/workflows/{uuid.uuid4().hex[:8]}/config.json"
    await subscriber_objects.put(key, b'{"a": 1}', conditional=True)
    assert (stack.object_root / key).read_bytes() == b'{"a": 1}'
    assert await subscriber_objects.get(key) == b'{"a": 1}'


def test_a_second_up_is_refused_and_names_the_running_stack(stack):
    with pytest.raises(StackError, match="already running"):
        Stack(stack.base, stack.ports, profile=stack.profile).up()


def test_a_port_in_use_is_named(stack, tmp_path):
    server = next(iter(stack.servers.values()))  # Redis, or Kafka on the scale profile
    taken = dataclasses.replace(Ports.free(), redis=stack.ports.redis, kafka=stack.ports.kafka)
    with pytest.raises(StackError, match=f"port {server.main_port} \\({server.label}[^)]*\\) is already in use"):
        Stack(tmp_path, taken, profile=stack.profile).up()


@pytest.mark.profile("local")
def test_a_sidecar_that_fails_names_its_log(tmp_path, monkeypatch):
    broken = Stack(tmp_path, Ports.free())
    broken.caller_sidecar.argv.append("--no-such-flag")
    with pytest.raises(StackError, match="caller-daprd exited; read .*caller-daprd.log"):
        broken.up()
    assert not broken.running()


@pytest.mark.profile("local")  # dapr.yaml runs the local profile
def test_dapr_multi_app_run_starts_both_workflow_apps_and_stops_cleanly(tmp_path):
    log = tmp_path / "dapr-run.log"
    ports = Ports.free()
    with open(log, "wb") as out:
        status = run_multiapp(tmp_path, ports, demo_env={"WORKFLOWS_COUNT": "5", "WORKFLOWS_STEP_MS": "5"},
                              timeout=300, output=out)  # fmt: skip
    text = log.read_text()
    assert status == 0, text
    assert 'Started Dapr with app id "statestore-subscriber"' in text
    assert 'Started Dapr with app id "statestore-workflows"' in text
    assert 'Started Dapr with app id "statestore-workflows-orders"' in text
    assert "workflows completed 5/5" in text  # the live progress line
    # Two caller apps ran the same workflow ids (one tag), each reads back its own states.
    assert "summary of app statestore-workflows:" in text and "summary of app orders:" in text
    assert text.count("workflows completed  5/5") == 2
    assert text.count("5/5 read back by guid") == 2
    assert text.count("final states checked 5/5 as expected") == 2
    # Stopped cleanly: no process of the run is left, and nothing still listens.
    # (placement and scheduler included: they run in the stack's folder)
    assert wait_until(lambda: processes_mentioning(str(tmp_path)) == [], 10), processes_mentioning(str(tmp_path))
    listening = [p for p in (ports.redis, ports.caller.http_port, ports.subscriber.http_port, ports.subscriber.app_port)
                 if port_open(p)]  # fmt: skip
    assert listening == []


def processes_mentioning(text):
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        try:
            cwd = str((proc / "cwd").resolve())
        except OSError:
            cwd = ""
        if proc.name.isdigit() and (text in cmdline or cwd.startswith(text)):
            found.append(cmdline)
    return found
