"""The applier over in-memory ports: batches, replicas racing, crashes between steps."""

import asyncio
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statestore.document import replay_in_order
from statestore.paths import object_key
from subscriber.applier import EventApplier, TransientError
from subscriber.ports import InMemoryObjectStore, InMemoryStateRepository
from tests.strategies import event_histories, field_updated


async def snapshot(objects, state_id="s1"):
    raw = await objects.get(object_key(state_id, "workflows"))
    return None if raw is None else json.loads(raw)


class SlowRepository(InMemoryStateRepository):
    """Yields between read and write so that two appliers interleave."""

    async def load(self, keys):
        found = await super().load(keys)
        await asyncio.sleep(random.random() / 1000)
        return found


@settings(max_examples=60, deadline=None)
@given(history=event_histories(max_events=30), seed=st.integers(0, 10_000))
def test_two_replicas_applying_interleaved_batches_match_the_oracle(history, seed):
    async def run():
        rng = random.Random(seed)
        repo, objects = SlowRepository(), InMemoryObjectStore()
        replicas = [EventApplier(repo, objects), EventApplier(repo, objects)]
        delivered = history + rng.sample(history, k=min(3, len(history)))
        rng.shuffle(delivered)
        batches = [delivered[i : i + 4] for i in range(0, len(delivered), 4)]
        await asyncio.gather(*(replicas[i % 2].apply(batch) for i, batch in enumerate(batches)))
        return repo, objects

    repo, objects = asyncio.run(run())
    expected = replay_in_order(history)
    if expected is None:
        assert repo.items == {}
        return
    from statestore.document import decode_document

    assert decode_document("k", repo.items["workflows/s1"].value).to_state() == expected
    assert asyncio.run(snapshot(objects)) == expected


class FlakyObjects(InMemoryObjectStore):
    def __init__(self, failures):
        super().__init__()
        self.failures = failures

    async def put(self, key, data):
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        await super().put(key, data)


async def test_a_crash_between_state_and_snapshot_is_repaired_by_redelivery():
    repo, objects = InMemoryStateRepository(), FlakyObjects(failures=1)
    applier = EventApplier(repo, objects)
    batch = [field_updated("a", 1), field_updated("b", 2, seq=2, hlc=(2, 0))]
    with pytest.raises(TransientError, match="object store"):
        await applier.apply(batch)
    assert await snapshot(objects) is None  # state written, snapshot behind
    result = await applier.apply(batch)  # the broker redelivers the batch
    assert result.written == 0  # nothing changes twice
    assert await snapshot(objects) == {"a": 1, "b": 2}


class ConflictingRepository(InMemoryStateRepository):
    async def commit(self, upserts):
        from subscriber.ports import EtagMismatchError

        raise EtagMismatchError("always")


async def test_endless_conflicts_give_up_with_a_transient_error():
    applier = EventApplier(ConflictingRepository(), InMemoryObjectStore(), max_conflict_retries=3)
    with pytest.raises(TransientError, match="ETag conflicts"):
        await applier.apply([field_updated("a", 1)])


async def test_one_batch_touching_many_states_is_one_commit():
    class CountingRepository(InMemoryStateRepository):
        commits = 0

        async def commit(self, upserts):
            CountingRepository.commits += 1
            await super().commit(upserts)

    repo = CountingRepository()
    events = [field_updated("a", i, state_id=f"s{i}", hlc=(i, 0)) for i in range(50)]
    result = await EventApplier(repo, InMemoryObjectStore()).apply(events)
    assert (result.states, result.written, CountingRepository.commits) == (50, 50, 1)
