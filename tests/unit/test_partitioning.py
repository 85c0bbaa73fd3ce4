"""The publisher's partition choice agrees with Dapr's Kafka publisher (sarama's hash
partitioner), and packed messages never mix partitions."""

import itertools
import json

import pytest

from statestore.publisher.pipeline import PublishPipeline, QueuedEvent, pack
from statestore.core.errors import SidecarUnavailableError
from statestore.core.partitioning import partition_for, topic_partitions
from statestore.core.settings import Settings
from tests.strategies import field_updated
from tests.unit.test_pipeline import FakeTransport

# Computed with Go's hash/fnv the way sarama's hashPartitioner does:
# p := int32(fnv32a(key)) % n; if p < 0 { p = -p }.
SARAMA = [
    ("workflows/wf-1", 3, 6),
    ("workflows/a", 5, 1),
    ("credentials/0b7f", 5, 4),
    ("acme/workflows/x", 3, 6),
    ("", 3, 2),
    ("workflows/fault-995d5839-19", 4, 5),
    ("é", 9, 2),
]


@pytest.mark.parametrize(("key", "of_12", "of_7"), SARAMA)
def test_partition_matches_sarama(key, of_12, of_7):
    assert (partition_for(key, 12), partition_for(key, 7)) == (of_12, of_7)


def events_for(states: int, per_state: int) -> list[QueuedEvent]:
    return [
        QueuedEvent.of(field_updated("f", r, seq=r + 1, hlc=(r, 0), state_id=f"wf-{s}"))
        for r in range(per_state)
        for s in range(states)
    ]


def test_packed_messages_hold_one_partitions_events_in_order():
    batch = events_for(states=40, per_state=5)
    messages = pack(batch, max_events=100, max_bytes=1 << 20, ids=itertools.count(), partitions=12)
    for _, events in messages.values():
        assert len({partition_for(q.event.key, 12) for q in events}) == 1
    assert sorted((q.id for _, events in messages.values() for q in events)) == sorted(q.id for q in batch)
    for state in range(40):  # each state's events keep their publish order
        seqs = [q.event.seq for _, events in messages.values() for q in events if q.event.state_id == f"wf-{state}"]
        assert seqs == sorted(seqs)
    assert len(messages) <= 12


def test_one_partition_packs_everything_together():
    batch = events_for(states=40, per_state=2)
    assert len(pack(batch, max_events=100, max_bytes=1 << 20, ids=itertools.count(), partitions=1)) == 1


async def test_every_message_is_keyed_by_a_state_key_of_its_partition():
    transport = FakeTransport()
    pipeline = PublishPipeline(transport, Settings(batch_max_events=200, batch_window_ms=1, pack_events=100))
    for q in events_for(states=30, per_state=3):
        await pipeline.submit(q)
    await pipeline.flush()
    assert len(transport.keys) == len(transport.bodies) > 1
    for key, body in zip(transport.keys, transport.bodies):
        events = json.loads(body)["data"]["events"]
        keys = {f"{e['state_type']}/{e['state_id']}" for e in events}
        assert key in keys  # keyed by one of its own states
        assert {partition_for(k, 12) for k in keys} == {partition_for(key, 12)}


@pytest.mark.parametrize(
    ("component_type", "packed_by"),
    [("pubsub.redis", 1), ("pubsub.in-memory", 1), ("pubsub.kafka", 12), ("pubsub.pulsar", 12), (None, 12)],
)
def test_only_a_pubsub_known_to_have_no_partitions_packs_regardless(component_type, packed_by):
    assert topic_partitions(component_type, 12) == packed_by


class TypedTransport(FakeTransport):
    """A transport that says which pub/sub component it publishes to (or fails to say)."""

    def __init__(self, component_type, lookup_failures=0):
        super().__init__()
        self.component_type_value = component_type
        self.lookup_failures = lookup_failures
        self.lookups = 0

    async def component_type(self):
        self.lookups += 1
        if self.lookup_failures:
            self.lookup_failures -= 1
            raise SidecarUnavailableError("sidecar down")
        return self.component_type_value


async def publish(transport, states=30):
    pipeline = PublishPipeline(transport, Settings(batch_max_events=200, batch_window_ms=1, pack_events=100))
    for q in events_for(states=states, per_state=3):
        await pipeline.submit(q)
    await pipeline.flush()
    return pipeline


async def test_on_redis_a_batch_travels_in_full_messages_not_one_per_partition():
    transport = TypedTransport("pubsub.redis")
    await publish(transport)
    assert len(transport.bodies) == 1  # 90 events, one message (12 partitions would make up to 12)
    assert len(json.loads(transport.bodies[0])["data"]["events"]) == 90
    assert transport.lookups == 1


async def test_on_kafka_messages_still_hold_one_partition_each():
    transport = TypedTransport("pubsub.kafka")
    await publish(transport)
    assert len(transport.bodies) > 1
    for key, body in zip(transport.keys, transport.bodies):
        keys = {f"{e['state_type']}/{e['state_id']}" for e in json.loads(body)["data"]["events"]}
        assert {partition_for(k, 12) for k in keys} == {partition_for(key, 12)}


async def test_a_sidecar_that_cannot_say_its_pubsub_type_gets_partitioned_messages_and_is_asked_again():
    transport = TypedTransport("pubsub.redis", lookup_failures=1)
    pipeline = await publish(transport)
    assert len(transport.bodies) > 1  # packed by the configured 12 partitions meanwhile
    sent = len(transport.bodies)
    for q in events_for(states=30, per_state=1):
        await pipeline.submit(QueuedEvent.of(q.event.model_copy(update={"seq": q.event.seq + 10})))
    await pipeline.flush()
    assert transport.lookups == 2 and len(transport.bodies) == sent + 1
