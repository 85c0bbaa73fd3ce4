"""Issue 13 on the real stack: delete_state / delete_field, ordered like writes."""

from __future__ import annotations

import asyncio
import random
import uuid

from publisher import StateStore, StateType
from publisher.query import StateQueryClient
from statestore.document import replay_in_order
from tests.integration.conftest import eventually
from tests.integration.test_statestore import raw_publish, snapshot, wait_applied
from tests.strategies import field_deleted, field_updated, object_replaced, state_deleted

W = StateType.WORKFLOWS


def new_id(prefix: str = "del") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def snapshot_is(state_id: str, expected) -> None:
    async def matches():
        return snapshot(state_id) == expected

    await eventually(matches, timeout=10)


async def test_delete_state_is_gone_everywhere_and_a_later_write_recreates(caller_sidecar):
    wf = new_id()
    await StateStore.save_state_object(wf, {"status": "done", "result": [1, 2]}, W)
    await StateStore.sync(wf, W)
    await snapshot_is(wf, {"status": "done", "result": [1, 2]})

    await StateStore.delete_state(wf, W)
    await StateStore.sync(wf, W)  # sync works across a delete: the document keeps its records
    assert await StateStore.get_state(wf, W) is None
    document = await StateQueryClient(caller_sidecar, "statestore").get_document(wf, W)
    assert document is not None and not document.exists() and document.fields == {}  # only the watermark stays
    await snapshot_is(wf, None)

    await StateStore.save_state("status", "again", wf, W)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == {"status": "again"}  # nothing from before the delete
    await snapshot_is(wf, {"status": "again"})


async def test_delete_field_removes_one_field_and_a_later_write_recreates_it():
    wf = new_id()
    await StateStore.save_state_object(wf, {"a": 1, "b": 2}, W)
    await StateStore.delete_field("a", wf, W)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == {"b": 2}
    await snapshot_is(wf, {"b": 2})
    await StateStore.delete_field("b", wf, W)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == {}  # the state stays, with no field
    await StateStore.save_state("a", 3, wf, W)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == {"a": 3}
    await snapshot_is(wf, {"a": 3})


async def test_deleting_a_state_that_never_existed_leaves_none():
    wf = new_id()
    await StateStore.delete_state(wf, W)
    await StateStore.delete_field("x", wf, W)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) is None
    assert snapshot(wf) is None


async def test_deletes_racing_writes_from_eight_producers_give_the_oracles_answer(caller_sidecar):
    """Eight producers' events (writes, replaces, field and state deletes, stamps that
    interleave) published at once from eight tasks, shuffled and partly redelivered."""
    rng = random.Random(13)
    wf = new_id("race")
    producers = [f"race-{i}-{wf[-6:]}" for i in range(8)]
    clocks = {p: 1_700_000_000_000 for p in producers}
    seqs = {p: 0 for p in producers}
    streams: dict[str, list] = {p: [] for p in producers}
    for n in range(400):
        producer = rng.choice(producers)
        clocks[producer] += rng.randrange(0, 3)
        seqs[producer] += 1
        stamp = dict(producer=producer, seq=seqs[producer], hlc=(clocks[producer], seqs[producer]), state_id=wf)
        roll = rng.random()
        if roll < 0.05:
            event = state_deleted(**stamp)
        elif roll < 0.15:
            event = field_deleted(rng.choice("abcdef"), **stamp)
        elif roll < 0.22:
            event = object_replaced({"base": n, rng.choice("abc"): n}, **stamp)
        else:
            event = field_updated(rng.choice("abcdef"), n, **stamp)
        streams[producer].append(event)
    events = [e for stream in streams.values() for e in stream]

    async def producer_task(stream):
        delivered = stream + rng.sample(stream, len(stream) // 4)
        rng.shuffle(delivered)
        for start in range(0, len(delivered), 10):
            await raw_publish(caller_sidecar, delivered[start : start + 10])

    await asyncio.gather(*(producer_task(s) for s in streams.values()))
    await wait_applied(StateQueryClient(caller_sidecar, "statestore"), wf, events)
    expected = replay_in_order(events)
    assert await StateStore.get_state(wf, W) == expected
    await snapshot_is(wf, expected)


# -- expiry ------------------------------------------------------------------------------


async def test_a_state_written_with_ttl_expires_from_get_state_and_the_store_and_a_later_write_recreates(caller_sidecar):
    wf = new_id("ttl")
    await StateStore.save_state_object(wf, {"status": "done"}, W, ttl_seconds=2)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == {"status": "done"}
    query = StateQueryClient(caller_sidecar, "statestore")

    async def expired():
        return await StateStore.get_state(wf, W) is None and await query.get_document(wf, W) is None

    await eventually(expired, timeout=15)  # the store's own TTL: the entry is gone, not emptied
    await StateStore.save_state("status", "again", wf, W)
    await StateStore.sync(wf, W, timeout=20)
    assert await StateStore.get_state(wf, W) == {"status": "again"}


async def test_a_later_write_without_ttl_makes_the_state_permanent_again(caller_sidecar):
    wf = new_id("ttl")
    await StateStore.save_state("a", 1, wf, W, ttl_seconds=1)
    await StateStore.save_state("b", 2, wf, W)
    await StateStore.sync(wf, W)
    item = await caller_sidecar.get_state("statestore", f"workflows/{wf}")
    assert item is not None
    document = await StateQueryClient(caller_sidecar, "statestore").get_document(wf, W)
    assert document.ttl_s is None


# -- listing -----------------------------------------------------------------------------


async def test_listing_ten_thousand_ids_paged():
    run = uuid.uuid4().hex[:6]
    ids = [f"list-{run}-{n:05d}" for n in range(10_000)]
    for id in ids:
        await StateStore.save_state("n", 1, id, W)
    await StateStore.save_state("n", 1, f"other-{run}", W)  # another prefix: not listed
    await StateStore.sync_many(ids, W, timeout=120)
    await StateStore.delete_state(ids[7], W)  # deleted: not listed
    await StateStore.sync(ids[7], W)

    listed, token, pages = [], None, 0
    while True:
        page = await StateStore.list_states(W, prefix=f"list-{run}-", page_size=1000, page_token=token)
        listed.extend(page.ids)
        pages += 1
        token = page.next_page_token
        if token is None:
            break
    assert listed == [id for id in ids if id != ids[7]]  # sorted, each once
    assert pages == 10


async def test_a_listing_drops_deleted_states_and_a_recreated_state_is_listed_again():
    run = uuid.uuid4().hex[:6]
    wf = f"relist-{run}"
    await StateStore.save_state("a", 1, wf, W)
    await StateStore.sync(wf, W)
    assert (await StateStore.list_states(W, prefix="relist-" + run)).ids == [wf]
    await StateStore.delete_state(wf, W)
    await StateStore.sync(wf, W)
    assert (await StateStore.list_states(W, prefix="relist-" + run)).ids == []
    await StateStore.save_state("a", 2, wf, W)
    await StateStore.sync(wf, W)
    assert await StateStore.list_states(W, prefix="relist-" + run) == ([wf], None)
