"""The publisher's partition choice agrees with Dapr's Kafka publisher (sarama's hash
partitioner), and packed messages never mix partitions."""

import itertools
import json

import pytest

from statestore.publisher.pipeline import PublishPipeline, QueuedEvent, pack
from statestore.core.partitioning import partition_for
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
