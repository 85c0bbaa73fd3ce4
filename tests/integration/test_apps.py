"""Issue 15: several caller apps share one pipeline; the app name travels with every event."""

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

from statestore.devstack.stack import PROJECT_ROOT
from statestore import StateStore, StateType
from statestore.publisher.query import StateQueryClient
from statestore.core.paths import state_key
from tests.integration.conftest import eventually, python_env

W = StateType.WORKFLOWS


async def run_app(stack, env: dict[str, str], state_id: str, value: str) -> dict:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.app_process", state_id, value,
        cwd=PROJECT_ROOT, env={**python_env(stack), **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


async def snapshot_of(path: str):
    file = Path(path)
    return json.loads(file.read_text()) if file.exists() else None


async def test_two_apps_writing_the_same_id_each_read_back_their_own(stack):
    wf = f"wf-{uuid.uuid4().hex[:10]}"  # the same id in both apps, as workflow ids often are
    orders, billing = await asyncio.gather(
        run_app(stack, {"STATESTORE_APP_NAME": "orders"}, wf, "orders"),
        run_app(stack, {"APP_ID": "billing"}, wf, "billing"),  # the Dapr app id is the default name
    )
    assert orders["state"] == {"owner": "orders", "progress": 100}
    assert billing["state"] == {"owner": "billing", "progress": 100}
    assert "/apps/orders/workflows/" in orders["path"] and "/apps/billing/workflows/" in billing["path"]
    # The subscriber writes each snapshot exactly where build_state_store_path told its app.
    for app in (orders, billing):
        assert await eventually(lambda app=app: snapshot_of(app["path"]), timeout=15) == app["state"]
    # And the default app (this process) has no such state.
    assert await StateStore.get_state(wf, W) is None


async def test_a_redelivered_version_1_event_applies_to_the_default_app(caller_sidecar, settings):
    """An event published before app names existed (schema 1, no app) still applies."""
    wf = f"wf-{uuid.uuid4().hex[:10]}"
    data = {"schema_version": 1, "state_id": wf, "state_type": "workflows", "producer": f"old-{wf}", "seq": 1,
            "hlc": [1, 0], "kind": "field_updated", "field": "status", "value": "from v1"}  # fmt: skip
    envelope = {"specversion": "1.0", "id": f"old-{wf}:workflows/{wf}:1", "source": "statestore",
                "type": "io.statestore.field_updated.v1", "datacontenttype": "application/json", "data": data}  # fmt: skip
    body = json.dumps(envelope).encode()
    for _ in range(2):  # redelivered: applied once in effect
        await caller_sidecar.publish(settings.pubsub_name, settings.topic, body, "application/cloudevents+json")

    async def applied():
        return await StateStore.get_state(wf, W)

    assert await eventually(applied) == {"status": "from v1"}
    assert state_key(wf, W, app="default") == f"workflows/{wf}"  # the key documents had before
    document = await StateQueryClient(caller_sidecar, settings.statestore_name).get_document(wf, W)
    assert document.processed_upto(f"old-{wf}") == 1
