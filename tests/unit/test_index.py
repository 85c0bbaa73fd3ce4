"""The id index behind list_states: shards, paging, and the applier keeping it."""

import asyncio

from statestore.core.index import INDEX_SHARDS, IndexShard, all_shard_keys, page_of, shard_key
from statestore.subscriber.applier import EventApplier
from statestore.subscriber.ports import InMemoryStateRepository
from tests.strategies import field_deleted, field_updated, state_deleted


def test_ids_spread_over_the_shards_and_pages_are_sorted_and_complete():
    ids = [f"wf-{n:04d}" for n in range(2000)]
    shards: dict[str, IndexShard] = {}
    for id in reversed(ids):
        shards.setdefault(shard_key("default", "workflows", id), IndexShard()).add(id)
    assert len(shards) == INDEX_SHARDS and set(shards) == set(all_shard_keys("default", "workflows"))
    assert max(len(s.ids) for s in shards.values()) < 3 * 2000 / INDEX_SHARDS  # no hot shard
    listed, after, more = [], "", True
    while more:
        page, more = page_of(list(shards.values()), "wf-1", after, 300)
        listed += page
        after = page[-1] if page else after
    assert listed == [i for i in ids if i.startswith("wf-1")]


def test_the_applier_indexes_a_state_when_it_starts_and_stops_existing():
    repo = InMemoryStateRepository()
    applier = EventApplier(repo, keep_index=True)

    def indexed():
        key = shard_key("default", "workflows", "s1")
        return IndexShard.model_validate_json(repo.items[key].value).ids if key in repo.items else []

    async def run():
        await applier.apply([field_deleted("a", hlc=(1, 0))])  # a field delete creates nothing
        assert indexed() == []
        await applier.apply([field_updated("a", 1, seq=2, hlc=(2, 0))])
        assert indexed() == ["s1"]
        etag = repo.items[shard_key("default", "workflows", "s1")].etag
        await applier.apply([field_updated("a", 2, seq=3, hlc=(3, 0))])  # plain writes leave it alone
        assert repo.items[shard_key("default", "workflows", "s1")].etag == etag
        await applier.apply([state_deleted(seq=4, hlc=(4, 0))])
        assert indexed() == []
        await applier.apply([field_updated("a", 3, seq=5, hlc=(5, 0))])
        assert indexed() == ["s1"]

    asyncio.run(run())


def test_without_keep_index_the_applier_writes_no_index_at_all():
    """The index is opt-in (STATESTORE_LIST_INDEX): it costs the many-new-states load."""
    repo = InMemoryStateRepository()
    asyncio.run(EventApplier(repo).apply([field_updated("a", 1)]))
    asyncio.run(EventApplier(repo).enable_index())
    assert not [key for key in repo.items if key.startswith("statestore-index/")]


def test_a_state_written_ahead_of_its_event_is_indexed_and_snapshotted_when_the_event_is_applied():
    from statestore.core.document import encode_document, provisional_document
    from statestore.subscriber.outbox import pending_keys
    from statestore.subscriber.ports import Upsert
    from tests.strategies import object_replaced

    repo = InMemoryStateRepository()
    event = object_replaced({"password": "x"})

    async def run():
        await repo.commit([Upsert(event.key, encode_document(provisional_document(event)), None, overwrite=True)])
        assert await pending_keys(repo) == set()  # written by the caller: not marked, not indexed
        result = await EventApplier(repo, keep_index=True).apply([event])
        assert result.written == 1 and await pending_keys(repo) == {event.key}
        key = shard_key("default", "workflows", "s1")
        assert IndexShard.model_validate_json(repo.items[key].value).ids == ["s1"]
        assert (await EventApplier(repo, keep_index=True).apply([event])).written == 0  # now a duplicate

    asyncio.run(run())
