"""Issue 13 on the real stack: delete_state / delete_field, ordered like writes; expiry
(the store's TTL, then the sweep of expired snapshots); listing."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import uuid
from pathlib import Path

from statestore.devstack.servers.postgres import bindir
from statestore import StateStore, StateType, build_state_store_path
from statestore.publisher.query import StateQueryClient
from statestore.core.document import replay_in_order
from statestore.subscriber.dapr_ports import DaprStateRepository
from statestore.subscriber.outbox import pending_keys
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


def stored_rows(stack, key: str) -> int:
    """Rows the state store's table holds for ``key``, expired or not: reads hide an
    expired row at once; the store's cleanup (cleanupInterval, 1 s here) deletes it."""
    full = f"statestore||{key}"  # keyPrefix: name
    postgres = stack.servers.get("postgres")
    if postgres is None:
        with sqlite3.connect(f"file:{stack.local / 'dapr' / 'statestore.db'}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM state WHERE key = ?", (full,)).fetchone()[0]
    query = f"SELECT count(*) FROM state WHERE key = '{full}'"
    psql = [str(bindir() / "psql"), "-h", "127.0.0.1", "-p", str(postgres.main_port), "-U", "postgres", "-d", "postgres"]
    return int(subprocess.run([*psql, "-tAc", query], capture_output=True, text=True, check=True).stdout.strip())


def expiry_markers(stack, state_id: str) -> list[Path]:
    """The expiry markers of a workflow state in the object store (statestore.subscriber.expiry)."""
    return list((stack.object_root / "statestore-expiry").glob(f"*/workflows/{state_id}"))


async def marker_filed(stack, state_id: str) -> None:
    async def filed():  # right after the snapshot
        return bool(expiry_markers(stack, state_id))

    await eventually(filed, timeout=10)


async def test_a_state_written_with_ttl_expires_from_get_state_the_store_and_the_object_store_and_a_later_write_recreates(
    caller_sidecar, stack
):
    wf = new_id("ttl")
    await StateStore.save_state_object(wf, {"status": "done"}, W, ttl_seconds=2)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == {"status": "done"}
    await snapshot_is(wf, {"status": "done"})
    await marker_filed(stack, wf)
    query = StateQueryClient(caller_sidecar, "statestore")

    async def expired():
        return await StateStore.get_state(wf, W) is None and await query.get_document(wf, W) is None

    await eventually(expired, timeout=15)  # the store's own TTL: the entry is gone, not emptied

    async def removed_everywhere():
        return stored_rows(stack, f"workflows/{wf}") == 0 and snapshot(wf) is None and not expiry_markers(stack, wf)

    await eventually(removed_everywhere, timeout=30)  # the store's cleanup, then the expiry sweep
    if "s3" not in stack.servers:  # local files: the emptied folder went too (S3 has none)
        assert not Path(build_state_store_path(wf, W)).parent.exists()
    await StateStore.save_state("status", "again", wf, W)
    await StateStore.sync(wf, W, timeout=20)
    assert await StateStore.get_state(wf, W) == {"status": "again"}
    await snapshot_is(wf, {"status": "again"})


async def test_a_state_rewritten_without_ttl_before_its_marker_is_due_keeps_its_snapshot(stack):
    wf = new_id("ttl")
    await StateStore.save_state("a", 1, wf, W, ttl_seconds=3)
    await StateStore.sync(wf, W)
    await snapshot_is(wf, {"a": 1})
    await marker_filed(stack, wf)
    await StateStore.save_state("b", 2, wf, W)  # no TTL: the state is permanent again
    await StateStore.sync(wf, W)

    async def marker_swept():
        return not expiry_markers(stack, wf)

    await eventually(marker_swept, timeout=30)  # due and swept: the state was still there
    assert await StateStore.get_state(wf, W) == {"a": 1, "b": 2}
    assert snapshot(wf) == {"a": 1, "b": 2}
    assert stored_rows(stack, f"workflows/{wf}") == 1


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


async def test_listing_ten_thousand_ids_paged(subscriber_sidecar):
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
    # Leave no snapshot backlog to the tests that follow (they wait on snapshots).
    repository = DaprStateRepository(subscriber_sidecar, "statestore")

    async def snapshots_caught_up():
        return not await pending_keys(repository)

    await eventually(snapshots_caught_up, timeout=300, interval=0.5)


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
