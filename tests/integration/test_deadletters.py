"""Issue 12: dead letters through Dapr, on every profile (Redis Streams and Kafka): the
subscriber keeps what reaches the dead-letter topic in the state store; `statestore
deadletter list` shows it and `redrive` publishes it again once the cause is fixed."""

from __future__ import annotations

import json
import uuid

from statestore import StateStore, StateType
from statestore.publisher.query import StateQueryClient
from statestore.core.events import encode_cloudevent
from statestore.core.sidecar import Delete, Upsert
from statestore.subscriber.dapr_ports import DaprStateRepository
from statestore.subscriber.deadletter import DeadLetterBox, redrive
from tests.integration.conftest import eventually
from tests.integration.test_cli import statestore
from tests.integration.test_statestore import raw_publish, wait_applied
from tests.strategies import field_updated

W = StateType.WORKFLOWS


async def kept(caller_sidecar, marker: str):
    """The dead letters (read through the caller's sidecar) whose message holds ``marker``."""
    box = DeadLetterBox(DaprStateRepository(caller_sidecar, "statestore"))

    async def found():
        return [letter for letter in await box.stored() if marker.encode() in letter.body]

    return box, await eventually(found, timeout=60)


async def test_a_refused_state_is_dead_lettered_listed_and_redriven_after_the_cause_is_fixed(stack, caller_sidecar):
    """The cause: the stored document of the state is corrupt (the applier refuses to merge
    into it). The fix: delete it. Then `statestore deadletter redrive ID` applies the event."""
    state_id = f"dl-fix-{uuid.uuid4().hex[:8]}"
    key = f"workflows/{state_id}"
    await caller_sidecar.transact("statestore", [Upsert(key, b'{"corrupt": true}', None)])
    event = field_updated("recovered", True, producer=f"dl-{uuid.uuid4().hex[:6]}", state_id=state_id)
    await raw_publish(caller_sidecar, [event])
    box, (letter,) = await kept(caller_sidecar, state_id)
    assert letter.topic == "statestore-events" and letter.pubsub == "pubsub"
    assert "refused" in letter.reason

    listed = statestore(stack, "deadletter", "list")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith(letter.id))
    assert "pubsub/statestore-events" in line and "type=io.statestore.field_updated.v2" in line
    assert '"recovered"' not in listed.stdout  # never a value

    await caller_sidecar.transact("statestore", [Delete(key)])  # the fix
    again = statestore(stack, "deadletter", "redrive", letter.id)
    assert again.returncode == 0, again.stderr
    assert "re-drove 1 dead letters to pubsub/statestore-events" in again.stdout
    await wait_applied(StateQueryClient(caller_sidecar, "statestore"), state_id, [event])
    assert await StateStore.get_state(state_id, W) == {"recovered": True}
    assert letter.id not in {d.id for d in await box.stored()}


async def test_a_poison_event_is_kept_with_its_reason_and_a_repaired_one_redrives(caller_sidecar):
    """A message the decoder refuses (an unknown schema version); "the fix" here repairs
    the message itself before re-driving it."""
    state_id = f"dl-repair-{uuid.uuid4().hex[:8]}"
    event = field_updated("repaired", True, producer=f"rd-{uuid.uuid4().hex[:6]}", state_id=state_id)
    body = json.loads(encode_cloudevent(event))
    broken = dict(body, type="io.statestore.field_updated.v9")
    await caller_sidecar.publish("pubsub", "statestore-events", json.dumps(broken).encode(), "application/cloudevents+json")
    box, (letter,) = await kept(caller_sidecar, state_id)
    assert letter.reason.startswith("invalid event: unknown event type or schema version")
    assert "type=io.statestore.field_updated.v9" in letter.describe()

    fixed = letter.model_copy(update={"body": json.dumps(dict(json.loads(letter.body), type=body["type"])).encode()})
    assert await redrive(box, [fixed], caller_sidecar) == 1
    await wait_applied(StateQueryClient(caller_sidecar, "statestore"), state_id, [event])
    assert await StateStore.get_state(state_id, W) == {"repaired": True}
    assert letter.id not in {d.id for d in await box.stored()}


async def test_redrive_with_an_unknown_id_says_so_and_changes_nothing(stack):
    result = statestore(stack, "deadletter", "redrive", "0" * 32)
    assert result.returncode == 2 and "no dead letter 000" in result.stderr and "Traceback" not in result.stderr


def test_the_dead_letter_tool_says_when_the_sidecar_is_down(stack):
    result = statestore(stack, "deadletter", "list", env={"DAPR_GRPC_PORT": "1", "DAPR_API_TIMEOUT_SECONDS": "2"})
    assert result.returncode == 2 and "did not answer" in result.stderr and "Traceback" not in result.stderr
