"""The servicer's per-message answers (issues 9.1, 10.5, 10.7), over in-memory ports."""

import time

from dapr.proto.runtime.v1 import appcallback_pb2 as pb

from statestore.core.events import BATCH_TYPE, encode_event
from statestore.core.settings import Settings
from statestore.subscriber.applier import EventApplier
from statestore.subscriber.ports import InMemoryParking, InMemoryStateRepository
from statestore.subscriber.servicer import DROP, RETRY, SUCCESS, SubscriberServicer
from tests.strategies import field_updated

SETTINGS = Settings(max_clock_skew_s=300)


def entry(entry_id, events):
    data = b'{"schema_version":1,"events":[' + b",".join(encode_event(e) for e in events) + b"]}"
    return pb.TopicEventBulkRequestEntry(entry_id=entry_id, cloud_event=pb.TopicEventCERequest(id=entry_id, type=BATCH_TYPE, data=data))


def now_ms():
    return int(time.time() * 1000)


async def test_events_stamped_too_far_ahead_are_parked_and_their_message_acknowledged(caplog):
    repo, parking = InMemoryStateRepository(), InMemoryParking()
    servicer = SubscriberServicer(EventApplier(repo), SETTINGS, parking)
    ahead = field_updated("f", "ahead", hlc=(now_ms() + 400_000, 0), state_id="ahead")
    fine = field_updated("f", "fine", hlc=(now_ms(), 0), state_id="fine")
    statuses = await servicer.handle(SETTINGS.topic, [entry("m1", [ahead, fine]), entry("m2", [fine])])
    assert statuses == {"m1": SUCCESS, "m2": SUCCESS}  # never a dead letter, never holding the topic
    assert parking.events == [ahead] and "workflows/fine" in repo.items and "workflows/ahead" not in repo.items
    assert sum("this clock looks wrong" in r.getMessage() for r in caplog.records) == 1


async def test_parked_events_apply_once_due_and_a_failed_park_is_retried():
    class BrokenParking(InMemoryParking):
        async def park(self, events):
            raise OSError("sidecar down")

    repo = InMemoryStateRepository()
    servicer = SubscriberServicer(EventApplier(repo), SETTINGS, BrokenParking())
    ahead = field_updated("f", "ahead", hlc=(now_ms() + 400_000, 0), state_id="ahead")
    assert await servicer.handle(SETTINGS.topic, [entry("m1", [ahead])]) == {"m1": RETRY}
    due = field_updated("f", "due", hlc=(now_ms() + 1000, 0), state_id="due")
    assert await servicer.handle(SETTINGS.parked_topic, [entry("p1", [due])]) == {"p1": SUCCESS}
    assert "workflows/due" in repo.items


async def test_a_state_too_large_is_dead_lettered_and_the_rest_of_the_delivery_applies():
    repo = InMemoryStateRepository()
    servicer = SubscriberServicer(EventApplier(repo, max_document_bytes=30_000), SETTINGS)
    big = [field_updated(f"f{n}", "x" * 20_000, seq=n + 1, hlc=(now_ms(), n), state_id="big") for n in range(2)]
    small = field_updated("f", 1, hlc=(now_ms(), 0), state_id="small")
    statuses = await servicer.handle(SETTINGS.topic, [entry("m1", big), entry("m2", [small])])
    assert statuses == {"m1": DROP, "m2": SUCCESS}
    assert "workflows/small" in repo.items


class FailingFor(InMemoryStateRepository):
    """A store whose commits fail while they hold the state ``bad``."""

    async def commit(self, upserts):
        if any(u.key == "workflows/bad" for u in upserts):
            raise OSError("disk I/O error")
        await super().commit(upserts)


async def test_only_messages_with_failed_states_are_redelivered():
    repo = FailingFor()
    servicer = SubscriberServicer(EventApplier(repo, max_states_per_commit=1), SETTINGS)
    good = field_updated("f", 1, hlc=(now_ms(), 0), state_id="good")
    bad = field_updated("f", 1, hlc=(now_ms(), 0), state_id="bad")
    statuses = await servicer.handle(SETTINGS.topic, [entry("m1", [good]), entry("m2", [bad])])
    assert statuses == {"m1": SUCCESS, "m2": RETRY}


def test_the_subscription_asks_for_deliveries_that_fit_and_subscribes_the_parked_topic():
    import asyncio

    servicer = SubscriberServicer(EventApplier(InMemoryStateRepository()), SETTINGS)
    response = asyncio.run(servicer.ListTopicSubscriptions(None, None))
    topics = {s.topic: s for s in response.subscriptions}
    assert set(topics) == {SETTINGS.topic, SETTINGS.parked_topic, SETTINGS.credentials_topic, SETTINGS.deadletter_topic}
    assert all(s.bulk_subscribe.max_messages_count == SETTINGS.subscriber_delivery_messages for s in topics.values())
