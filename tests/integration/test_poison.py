"""Issue 5's poison corpus: every bad input is refused by the API before publishing, and
reaches the dead-letter topic when sent raw, while later good events still apply."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis

from statestore import InvalidStateIdError, InvalidValueError, StateStore, StateType
from statestore.publisher.query import StateQueryClient
from statestore.core.events import encode_cloudevent
from tests.integration.conftest import eventually
from tests.integration.test_statestore import raw_publish, wait_applied
from tests.strategies import field_updated

# The corpus is written to and the dead letters are counted in Redis streams directly
# (listing and re-driving them through Dapr, on every profile: test_deadletters.py).
pytestmark = pytest.mark.profile("local")

W = StateType.WORKFLOWS
MB = 1 << 20


def good_data(**changes):
    data = json.loads(encode_cloudevent(field_updated("f", 1, producer=f"poison-{uuid.uuid4().hex[:6]}")))["data"]
    data.update(changes)
    return data


def nested(depth):
    value = 1
    for _ in range(depth):
        value = {"n": value}
    return value


def cloudevent(data, ce_type="io.statestore.field_updated.v2"):
    return {"specversion": "1.0", "id": f"poison-{uuid.uuid4().hex}", "source": "test", "type": ce_type,
            "datacontenttype": "application/json", "data": data}  # fmt: skip


# name -> (how, body); each must be dead-lettered. "redis" writes straight to the stream
# (Dapr refuses to publish malformed CloudEvents); the rest go through the caller's sidecar.
RAW_CORPUS = {
    "malformed JSON": ("redis", b'{"specversion": "1.0", "type": '),
    "not a CloudEvent": ("redis", b'{"hello": "world"}'),
    "not a statestore event": ("application/json", b'{"hello": "world"}'),
    "unknown event type": ("application/cloudevents+json", cloudevent(good_data(), "io.statestore.deleted.v1")),
    "unknown schema version": ("application/cloudevents+json", cloudevent(good_data(), "io.statestore.field_updated.v3")),
    "version 1 naming an app": ("application/cloudevents+json",
                                cloudevent(good_data(schema_version=1), "io.statestore.field_updated.v1")),
    "app name with /": ("application/cloudevents+json", cloudevent(good_data(app="a/b"))),
    "missing fields": ("application/cloudevents+json", cloudevent({"state_id": "x", "field": "f"})),
    "wrong types": ("application/cloudevents+json", cloudevent(good_data(seq="seven", hlc="now"))),
    "id with ..": ("application/cloudevents+json", cloudevent(good_data(state_id="../../etc"))),
    "id with /": ("application/cloudevents+json", cloudevent(good_data(state_id="a/b"))),
    "id with NUL": ("application/cloudevents+json", cloudevent(good_data(state_id="a\x00b"))),
    "id of 10 KB": ("application/cloudevents+json", cloudevent(good_data(state_id="a" * 10_240))),
}  # fmt: skip
# A stamp far in the future is not poison (issue 10.7): the subscriber's own clock may be
# the wrong one, so such events are parked and retried, never dead-lettered; see
# test_events_stamped_beyond_the_skew_bound_are_parked_then_applied below.


@pytest.fixture(scope="module")
def deadletters(stack):
    return redis.Redis(port=stack.ports.redis)


def dlq_len(client):
    return client.xlen("statestore-deadletter") if client.exists("statestore-deadletter") else 0


@pytest.mark.parametrize("name", list(RAW_CORPUS))
async def test_raw_poison_is_dead_lettered_and_later_events_apply(name, caller_sidecar, deadletters, stack):
    how, body = RAW_CORPUS[name]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    before = dlq_len(deadletters)
    if how == "redis":
        deadletters.xadd("statestore-events", {"data": raw})
    else:
        await caller_sidecar.publish("pubsub", "statestore-events", raw, how)
    good = field_updated("after", name, producer=f"good-{uuid.uuid4().hex[:6]}", state_id=f"poison-{uuid.uuid4().hex[:8]}")
    await raw_publish(caller_sidecar, [good])

    async def dead_lettered():
        return dlq_len(deadletters) > before

    await eventually(dead_lettered)
    await wait_applied(StateQueryClient(caller_sidecar, "statestore"), good.state_id, [good])
    assert await StateStore.get_state(good.state_id, W) == {"after": name}
    assert stack.subscriber_app.alive()


async def test_too_deeply_nested_values_are_dead_lettered_not_fatal(caller_sidecar, deadletters, stack):
    # Deeper than the decoder takes, yet valid JSON: built by hand, as the API refuses it.
    data = good_data(field="deep", value=nested(400), state_id=f"deep-{uuid.uuid4().hex[:6]}")
    before = dlq_len(deadletters)
    await caller_sidecar.publish("pubsub", "statestore-events", json.dumps(cloudevent(data)).encode(), "application/cloudevents+json")
    good = field_updated("after", 1, producer=f"good-{uuid.uuid4().hex[:6]}", state_id=f"poison-{uuid.uuid4().hex[:8]}")
    await raw_publish(caller_sidecar, [good])
    await wait_applied(StateQueryClient(caller_sidecar, "statestore"), good.state_id, [good])

    async def dead_lettered():
        return dlq_len(deadletters) > before

    await eventually(dead_lettered)
    assert await StateStore.get_state(data["state_id"], W) is None
    assert stack.subscriber_app.alive()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: StateStore.save_state("f", 1, "../etc", W), InvalidStateIdError, "safe set"),
        (lambda: StateStore.save_state("f", 1, "a/b", W), InvalidStateIdError, "safe set"),
        (lambda: StateStore.save_state("f", 1, "a\x00b", W), InvalidStateIdError, "safe set"),
        (lambda: StateStore.save_state("f", 1, "a" * 10_240, W), InvalidStateIdError, "limit is 128"),
        (lambda: StateStore.save_state("f", {1, 2}, "ok-id", W), InvalidValueError, "not JSON-serialisable"),
        (lambda: StateStore.save_state("f", "x" * (10 * MB), "ok-id", W), InvalidValueError, "limit is 1048576"),
        (lambda: StateStore.save_state("f", nested(65), "ok-id", W), InvalidValueError, "limit is 64 levels"),
        (lambda: StateStore.save_state("f", nested(100_000), "ok-id", W), InvalidValueError, "nested too deeply"),
        (lambda: StateStore.save_state_object("ok-id", {"a": float("inf")}, W), InvalidValueError, "not JSON"),
    ],
    ids=["..", "/", "NUL", "10 KB id", "not JSON", "10 MB value", "65 levels", "100k levels", "infinity"],
)
async def test_the_api_refuses_bad_input_before_publishing(call, error, message):
    from statestore.publisher.store import StateStore as Store

    published = Store.runtime().pipeline().published
    pending = Store.runtime().pipeline().pending
    with pytest.raises(error, match=message):
        await call()
    assert (Store.runtime().pipeline().published, Store.runtime().pipeline().pending) == (published, pending)


async def test_values_at_the_nesting_limit_round_trip():
    from statestore.publisher.values import MAX_NESTING

    state_id = f"deep-ok-{uuid.uuid4().hex[:6]}"
    value = nested(MAX_NESTING - 1)  # dicts: MAX_NESTING levels with the outer one
    await StateStore.save_state("deep", value, state_id, W)
    await StateStore.sync(state_id, W)
    assert await StateStore.get_state(state_id, W) == {"deep": value}


async def test_a_batch_with_a_bad_event_applies_the_good_ones_and_is_dead_lettered(caller_sidecar, deadletters, stack):
    from statestore.core.events import encode_batch_cloudevent, encode_event

    state_id = f"batch-{uuid.uuid4().hex[:8]}"
    producer = f"batch-{uuid.uuid4().hex[:6]}"
    good = [field_updated("a", 1, producer=producer, state_id=state_id),
            field_updated("b", 2, producer=producer, seq=2, hlc=(2, 0), state_id=state_id)]  # fmt: skip
    bad = json.dumps(good_data(state_id="../escape")).encode()
    batch_id = f"{producer}:batch:1"
    body = encode_batch_cloudevent(batch_id, [encode_event(good[0]), bad, encode_event(good[1])])
    before = dlq_len(deadletters)
    assert await caller_sidecar.bulk_publish("pubsub", "statestore-events", [(batch_id, body)]) == {}
    await wait_applied(StateQueryClient(caller_sidecar, "statestore"), state_id, good)
    assert await StateStore.get_state(state_id, W) == {"a": 1, "b": 2}

    async def dead_lettered():
        return dlq_len(deadletters) > before

    await eventually(dead_lettered)
    assert f"rejected part of {batch_id}" in (stack.logs / "subscriber.log").read_text()


async def all_delivered_and_acknowledged(client):
    """Every message now in the topic's stream was delivered and acknowledged."""
    last = client.xinfo_stream("statestore-events")["last-generated-id"]

    async def done():
        group = next(g for g in client.xinfo_groups("statestore-events") if g["name"] == b"statestore-subscriber")
        return group["last-delivered-id"] >= last and group["pending"] == 0

    await eventually(done)


async def test_same_producer_and_sequence_with_different_bodies_converge_in_every_order(caller_sidecar, deadletters):
    """Duplicate event ids with different bodies: one winner, whatever the delivery order."""
    producer = f"twin-{uuid.uuid4().hex[:6]}"
    ids = [f"twin-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for state_id, order in zip(ids, (("one", "two"), ("two", "one"))):
        twins = [field_updated("v", body, producer=producer, seq=1, hlc=(5, 0), state_id=state_id) for body in order]
        for twin in twins:  # separate messages, in this order
            await caller_sidecar.publish("pubsub", "statestore-events", encode_cloudevent(twin), "application/cloudevents+json")
    await all_delivered_and_acknowledged(deadletters)
    winner = max(twins, key=lambda e: e.stamp).value
    assert [await StateStore.get_state(i, W) for i in ids] == [{"v": winner}, {"v": winner}]


async def test_events_stamped_beyond_the_skew_bound_are_parked_then_applied(caller_sidecar, deadletters, stack, settings):
    """As if this subscriber's clock were 15 s behind: the event is retried, not refused,
    other events keep applying meanwhile, and it applies once within the bound."""
    ahead_ms = int(settings.max_clock_skew_s * 1000) + 15_000
    early = field_updated("when", "early", producer=f"ahead-{uuid.uuid4().hex[:6]}",
                          hlc=(int(time.time() * 1000) + ahead_ms, 0), state_id=f"clock-{uuid.uuid4().hex[:8]}")  # fmt: skip
    before = dlq_len(deadletters)
    await raw_publish(caller_sidecar, [early])
    query = StateQueryClient(caller_sidecar, "statestore")
    log = stack.logs / "subscriber.log"

    async def parked():
        return "this clock looks wrong" in log.read_text()

    await eventually(parked)
    good = field_updated("after", 1, producer=f"good-{uuid.uuid4().hex[:6]}", state_id=f"poison-{uuid.uuid4().hex[:8]}")
    await raw_publish(caller_sidecar, [good])
    await wait_applied(query, good.state_id, [good])  # not blocked by the parked one
    assert await StateStore.get_state(early.state_id, W) is None
    await wait_applied(query, early.state_id, [early])  # within the bound now (about 15 s)
    assert await StateStore.get_state(early.state_id, W) == {"when": "early"}
    assert dlq_len(deadletters) == before
