"""Issue 20: a producer in another language, written from docs/events.md alone, on the
real stack; and events of every older schema version still apply."""

import asyncio
import json
import os
import subprocess
import uuid

import pytest

from statestore.devstack.stack import PROJECT_ROOT
from statestore import StateStore, StateType
from statestore.publisher.query import StateQueryClient
from statestore.core.events import BATCH_TYPE
from tests.integration.conftest import dead_letter_bodies, eventually, subscriber_logs

W = StateType.WORKFLOWS
GO_PUBLISHER = PROJECT_ROOT / "examples" / "go-publisher"


@pytest.fixture(scope="module")
def go_publisher(tmp_path_factory):
    binary = tmp_path_factory.mktemp("go") / "go-publisher"
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    build = subprocess.run(["go", "build", "-o", str(binary), "."], cwd=GO_PUBLISHER, env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert build.returncode == 0, build.stderr
    return binary


async def test_the_go_publishers_events_apply_and_its_poison_is_dead_lettered(stack, go_publisher, caller_sidecar):
    state_id = f"go-wf-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DAPR_HTTP_PORT": str(stack.ports.caller.http_port), "STATESTORE_APP_NAME": "go-app",
           "DAPR_API_TOKEN": stack.tokens.get("DAPR_API_TOKEN", "")}  # fmt: skip
    run = subprocess.run([str(go_publisher), "-id", state_id, "-fields", "6", "-poison"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    query = StateQueryClient(caller_sidecar, "statestore", app="go-app")

    async def applied():
        document = await query.get_document(state_id, W)
        return document if document and document.processed_upto(report["producer"]) == 8 else None

    document = await eventually(applied)  # 1 replace + 6 updates (3 of them packed) + 1 update
    assert document.to_state() == report["state"] == {"status": "done", "owner": "go", "progress": 6}
    assert await StateStore.get_state(state_id, W) is None  # the app "default" has no such state

    # The malformed event and the unsafe id went to the dead-letter topic, with a reason in
    # the subscriber's log, and did not stop the events after them.
    async def both_dead_lettered():
        ours = [body for body in await asyncio.to_thread(dead_letter_bodies, stack) if report["producer"].encode() in body]
        return len(ours) == 2

    await eventually(both_dead_lettered)
    log = subscriber_logs(stack)
    reasons = [line for line in log.splitlines() if report["producer"] in line and "rejected" in line]
    assert any("seq: Field required" in line for line in reasons), reasons
    assert any("state_id" in line and "safe set" in line for line in reasons), reasons


def version_1(data: dict) -> dict:
    return {**{k: v for k, v in data.items() if k != "app"}, "schema_version": 1}


@pytest.mark.parametrize("how", ["field_updated", "object_replaced", "in a batch"])
async def test_events_of_every_older_schema_version_still_apply(how, caller_sidecar, settings):
    state_id = f"v1-{uuid.uuid4().hex[:8]}"
    producer = f"v1-producer-{uuid.uuid4().hex[:6]}"
    base = {"state_id": state_id, "state_type": "workflows", "producer": producer, "seq": 1, "hlc": [1, 0]}
    if how == "object_replaced":
        data, expected = {**base, "kind": how, "value": {"a": 1}}, {"a": 1}
    else:
        data, expected = {**base, "kind": "field_updated", "field": "f", "value": "v1"}, {"f": "v1"}
    data = version_1(data)
    ce_type = BATCH_TYPE if how == "in a batch" else f"io.statestore.{data['kind']}.v1"
    body = {"schema_version": 1, "events": [data]} if how == "in a batch" else data
    cloudevent = {"specversion": "1.0", "id": f"{producer}:1", "source": "old", "type": ce_type,
                  "datacontenttype": "application/json", "data": body}  # fmt: skip
    await caller_sidecar.publish(settings.pubsub_name, settings.topic, json.dumps(cloudevent).encode(),
                                 "application/cloudevents+json")  # fmt: skip

    async def applied():
        return await StateStore.get_state(state_id, W)

    assert await eventually(applied) == expected
