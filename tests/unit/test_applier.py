"""The applier and the snapshot flusher over in-memory ports: batches, replicas racing,
crashes between steps."""

import asyncio
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statestore.core.document import decode_document, replay_in_order
from statestore.core.paths import object_key
from statestore.subscriber.applier import EventApplier, TransientError
from statestore.subscriber.outbox import SnapshotFlusher, pending_keys
from statestore.subscriber.ports import EtagMismatchError, InMemoryObjectStore, InMemoryStateRepository
from tests.strategies import event_histories, field_updated


async def snapshot(objects, state_id="s1"):
    raw = await objects.get(object_key(state_id, "workflows"))
    return None if raw is None else json.loads(raw)


async def marked(repo):
    return await pending_keys(repo)


def state(repo, key="workflows/s1"):
    if key not in repo.items:
        return None
    document = decode_document(key, repo.items[key].value)
    return document.to_state() if document.exists() else None


class SlowRepository(InMemoryStateRepository):
    """Yields between read and write so that two replicas interleave."""

    async def load(self, keys):
        found = await super().load(keys)
        await asyncio.sleep(random.random() / 1000)
        return found


@settings(max_examples=60, deadline=None)
@given(history=event_histories(max_events=30), seed=st.integers(0, 10_000))
def test_two_replicas_applying_and_flushing_at_once_match_the_oracle(history, seed):
    async def run():
        rng = random.Random(seed)
        repo, objects = SlowRepository(), InMemoryObjectStore()
        appliers = [EventApplier(repo), EventApplier(repo)]
        flushers = [SnapshotFlusher(repo, objects), SnapshotFlusher(repo, objects)]
        delivered = history + rng.sample(history, k=min(3, len(history)))
        rng.shuffle(delivered)
        batches = [delivered[i : i + 4] for i in range(0, len(delivered), 4)]
        await asyncio.gather(
            *(appliers[i % 2].apply(batch) for i, batch in enumerate(batches)),
            *(flushers[i % 2].flush_once() for i in range(len(batches))),
        )
        while await marked(repo):  # the lease holder finishes what is left
            await asyncio.gather(*(f.flush_once() for f in flushers))
        return repo, objects

    repo, objects = asyncio.run(run())
    expected = replay_in_order(history)
    if not history:
        assert repo.items == {}
        return
    assert state(repo) == expected
    assert asyncio.run(snapshot(objects)) == expected  # a deleted state has no snapshot (None)


class FlakyObjects(InMemoryObjectStore):
    def __init__(self, failures):
        super().__init__()
        self.failures = failures

    async def put(self, key, data, timeout=None, conditional=False):
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        await super().put(key, data, conditional=conditional)


async def test_states_are_marked_in_the_same_commit_and_unmarked_after_their_snapshot():
    repo, objects = InMemoryStateRepository(), InMemoryObjectStore()
    await EventApplier(repo).apply([field_updated("a", 1), field_updated("b", 2, seq=2, hlc=(2, 0))])
    assert await marked(repo) == {"workflows/s1"} and await snapshot(objects) is None
    assert await SnapshotFlusher(repo, objects).flush_once() == 1
    assert await marked(repo) == set() and await snapshot(objects) == {"a": 1, "b": 2}


async def test_a_failed_snapshot_write_keeps_the_mark_until_a_later_round_succeeds():
    repo, objects = InMemoryStateRepository(), FlakyObjects(failures=1)
    await EventApplier(repo).apply([field_updated("a", 1)])
    flusher = SnapshotFlusher(repo, objects)
    with pytest.raises(OSError):
        await flusher.flush_once()  # a crash here leaves the mark in the state store
    assert await marked(repo) == {"workflows/s1"}
    assert await SnapshotFlusher(repo, objects).flush_once() == 0  # lease still held by the first
    assert await flusher.flush_once() == 1
    assert await snapshot(objects) == {"a": 1} and await marked(repo) == set()


async def test_a_state_changed_during_a_flush_stays_marked():
    repo = InMemoryStateRepository()
    applier = EventApplier(repo)
    await applier.apply([field_updated("a", 1)])

    class RacingObjects(InMemoryObjectStore):
        async def put(self, key, data, timeout=None, conditional=False):
            await super().put(key, data, conditional=conditional)
            if not hasattr(self, "raced"):
                self.raced = True
                await applier.apply([field_updated("a", 2, seq=2, hlc=(2, 0))])

    racing = RacingObjects()
    flusher = SnapshotFlusher(repo, racing)
    await flusher.flush_once()
    assert await marked(repo) == {"workflows/s1"}  # the newer version still needs its snapshot
    await flusher.flush_once()
    assert await snapshot(racing) == {"a": 2} and await marked(repo) == set()


async def test_redelivered_batches_change_nothing():
    repo = InMemoryStateRepository()
    batch = [field_updated("a", 1), field_updated("b", 2, seq=2, hlc=(2, 0))]
    assert (await EventApplier(repo).apply(batch)).written == 1
    before = dict(repo.items)
    assert (await EventApplier(repo).apply(batch)).written == 0
    assert repo.items == before


class ConflictingRepository(InMemoryStateRepository):
    async def commit(self, upserts):
        raise EtagMismatchError("always")


async def test_endless_conflicts_give_up_with_a_transient_error():
    applier = EventApplier(ConflictingRepository(), max_conflict_retries=3)
    result = await applier.apply([field_updated("a", 1)])
    assert "ETag conflicts" in result.failed["workflows/s1"]
    with pytest.raises(TransientError, match="ETag conflicts"):
        result.raise_for_failures()


async def test_one_batch_touching_many_states_is_one_commit():
    class CountingRepository(InMemoryStateRepository):
        commits = 0

        async def commit(self, upserts):
            CountingRepository.commits += 1
            await super().commit(upserts)

    repo = CountingRepository()
    events = [field_updated("a", i, state_id=f"s{i}", hlc=(i, 0)) for i in range(50)]
    result = await EventApplier(repo).apply(events)
    # one commit for the states and their outbox entry (plus one registering the outbox)
    assert (result.states, result.written, CountingRepository.commits) == (50, 50, 2)


async def test_batches_touching_more_states_than_a_commit_holds_are_split():
    class BoundedRepository(InMemoryStateRepository):
        largest = 0

        async def load(self, keys):
            keys = list(keys)
            BoundedRepository.largest = max(BoundedRepository.largest, len(keys))
            return await super().load(keys)

    repo = BoundedRepository()
    events = [field_updated("a", i, state_id=f"s{i}", hlc=(i, 0)) for i in range(250)]
    result = await EventApplier(repo, max_states_per_commit=100).apply(events)
    assert (result.states, result.written) == (250, 250)
    assert BoundedRepository.largest == 100  # no shared outbox document is read with them
    assert all(state(repo, f"workflows/s{i}") == {"a": i} for i in range(250))
