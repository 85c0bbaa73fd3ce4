"""Issue 26: code written for the reference works unchanged.

``save_state_object`` returns once the object is stored (any process, and `statestore
get`, reads it at once), ordered with every other write by its stamp; a process reads its
own fire-and-forget writes at once. On the real stack, both profiles.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import uuid

import pytest

from statestore import StateNotStoredError, StateStore, StateType
from statestore.core.document import replay_in_order
from statestore.core.events import cloudevent_type, decode_event
from statestore.core.paths import object_key, state_key
from statestore.devstack.stack import PROJECT_ROOT
from statestore.publisher.store import StateStore as Store
from tests.integration.conftest import eventually, python_env
from tests.integration.test_cli import statestore as statestore_command
from tests.integration.test_credentials import start_subscribers, stop_subscribers
from tests.integration.test_statestore import assert_snapshot_matches

W = StateType.WORKFLOWS


def new_ids(prefix: str, n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"{prefix}-{tag}-{i}" for i in range(n)]


def workflow_args(workflow_id: str) -> dict:
    """What the reference's start_workflow saves: the arguments, application_name and workflow_id."""
    return {"workflow_id": workflow_id, "workflow_run_id": f"run-{workflow_id}", "application_name": "default",
            "output_prefix": "out", "output_path": f"/data/{workflow_id}", "credential_guid": f"guid-{workflow_id}"}  # fmt: skip


class Reader:
    """Another process (tests/integration/state_reader.py), started ahead, that reads on cue."""

    def __init__(self, stack) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.integration.state_reader"], cwd=PROJECT_ROOT,
                                     env=python_env(stack), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip

    async def ready(self) -> None:
        assert (await asyncio.to_thread(self.proc.stdout.readline)).strip() == "ready"

    async def read(self, ids: list[str]) -> dict:
        self.proc.stdin.write(json.dumps(ids) + "\n")
        self.proc.stdin.flush()
        line = await asyncio.to_thread(self.proc.stdout.readline)
        self.proc.wait(timeout=30)
        return json.loads(line)["states"]


async def save_args(ids: list[str]) -> None:
    """save_state_object of each workflow's arguments, 8 at once, as a starter would."""
    gate = asyncio.Semaphore(8)

    async def save(workflow_id: str) -> None:
        async with gate:
            assert await StateStore.save_state_object(workflow_id, workflow_args(workflow_id), W) == workflow_args(workflow_id)

    await asyncio.gather(*(save(i) for i in ids))


@pytest.mark.parametrize("queued_ahead", [0, 20_000])
async def test_workflow_args_saved_by_one_process_are_read_by_another_at_once(stack, queued_ahead):
    """The reference's start_workflow / get_workflow_args: save_state_object here, get_state
    in another process right after, no sync; also behind 20,000 progress updates queued in
    this process (they stay queued: the replace does not wait for them)."""
    ids = new_ids("args", 100)
    reader = Reader(stack)
    await reader.ready()
    progress = new_ids("progress", 200)  # 200 other workflows, 100 updates each
    for n in range(queued_ahead):
        await StateStore.save_state("progress", n, progress[n % len(progress)], W)
    pending_before = StateStore.stats()["pending"]
    await save_args(ids)
    if queued_ahead:
        # The replaces were stored ahead of the queue: most of it is still unpublished.
        assert pending_before > queued_ahead / 2 and StateStore.stats()["pending"] > 0
    states = await reader.read(ids)
    assert states == {i: workflow_args(i) for i in ids}  # 100 of 100, not None
    # The `statestore` command reads it too, and so does this process.
    result = statestore_command(stack, "get", ids[0])
    assert result.returncode == 0 and json.loads(result.stdout) == workflow_args(ids[0]), result.stderr
    assert await StateStore.get_state(ids[-1], W) == workflow_args(ids[-1])
    await StateStore.sync_many(progress, W, timeout=120)  # and the queued progress is applied after all


async def test_the_subscriber_applying_a_stored_replace_writes_its_snapshot_and_lists_it(stack):
    """The caller's document is provisional until the subscriber applies the event: that
    changes nothing of the state, but writes the snapshot and the listing index."""
    (state_id,) = new_ids("snap", 1)
    query = Store._runtime().query
    await StateStore.save_state_object(state_id, {"status": "started"}, W)

    async def final():
        document = await query.get_document(state_id, W)
        return document if document is not None and not document.provisional else None

    document = await eventually(final)
    assert document.to_state() == {"status": "started"}
    await assert_snapshot_matches(state_id)
    page = await StateStore.list_states(W, prefix=state_id)
    assert page.ids == [state_id]


async def test_a_burst_of_confirmed_replaces_shares_its_publishes(stack):
    """Their events wait STATESTORE_HANDOVER_WINDOW_MS for company (the states are stored
    already): far fewer publishes than replaces, and each still reaches the subscriber."""
    ids = new_ids("burst", 100)
    handover = Store._pipeline_of(StateType.CREDENTIALS)
    before = handover.stats.batches
    for i in ids:
        await StateStore.save_state_object(i, workflow_args(i), W)
    await StateStore.flush()
    assert handover.stats.batches - before <= 30
    for i in ids[::20]:
        await assert_snapshot_matches(i)


async def test_a_process_reads_its_own_writes_at_once_even_with_no_subscriber(stack):
    """save_state, a fire-and-forget replace and deletes, then get_state in the same
    process: with every subscriber stopped nothing is applied, yet the writer reads
    them all, merged over what is stored; another process sees only what is stored."""
    ids = new_ids("own", 50)
    stored = await asyncio.gather(*(StateStore.save_state_object(i, {"base": 1, "drop": 1}, W) for i in ids))
    assert stored == [{"base": 1, "drop": 1}] * 50
    apps = await stop_subscribers(stack)
    try:
        for i in ids:
            await StateStore.save_state("status", "running", i, W)
            assert await StateStore.get_state(i, W) == {"base": 1, "drop": 1, "status": "running"}
        await StateStore.delete_field("drop", ids[0], W)
        await StateStore.save_state_object(ids[1], {"replaced": True}, W, wait=False)
        await StateStore.save_state("after", 2, ids[1], W)
        await StateStore.delete_state(ids[2], W)
        assert await StateStore.get_state(ids[0], W) == {"base": 1, "status": "running"}
        assert await StateStore.get_state(ids[1], W) == {"replaced": True, "after": 2}
        assert await StateStore.get_state(ids[2], W) is None
        await StateStore.flush()
        reader = Reader(stack)
        await reader.ready()
        assert (await reader.read(ids[:3])) == {i: {"base": 1, "drop": 1} for i in ids[:3]}  # not applied yet
    finally:
        await start_subscribers(apps)
    await StateStore.sync_many(ids, W, timeout=60)
    reader = Reader(stack)
    await reader.ready()
    assert (await reader.read(ids[:3])) == {ids[0]: {"base": 1, "status": "running"},
                                            ids[1]: {"replaced": True, "after": 2}, ids[2]: None}  # fmt: skip


async def test_past_the_own_writes_bound_a_read_waits_for_the_subscriber_not_the_queue(stack):
    """More published own writes than STATESTORE_OWN_WRITES_MAX_EVENTS: the newest are
    still read at once with no subscriber; a read of a state whose write the bound
    dropped waits until the subscriber applied it (never returns it missing), and
    queued writes are never dropped, however long the queue."""
    from statestore.publisher.runtime import get_runtime

    own_writes = get_runtime().own_writes
    bound, own_writes.max_events = own_writes.max_events, 10
    ids = new_ids("bound", 200)
    apps = await stop_subscribers(stack)
    try:
        for n, i in enumerate(ids):
            await StateStore.save_state("n", n, i, W)
        await StateStore.flush()  # all published: the bound drops 190 of them
        held = {i: own_writes.pending(state_key(i, W)) for i in ids}
        kept = [n for n, i in enumerate(ids) if held[i][0]]
        assert len(kept) == 10 and sum(1 for events, marks in held.values() if marks) == 190
        assert [await StateStore.get_state(ids[n], W) for n in kept] == [{"n": n} for n in kept]  # at once
        first_dropped = next(n for n, i in enumerate(ids) if held[i][1])
        dropped = asyncio.create_task(StateStore.get_state(ids[first_dropped], W))
        with pytest.raises(asyncio.TimeoutError):  # not applied, so the read waits: never {} or None
            await asyncio.wait_for(asyncio.shield(dropped), 2)
    finally:
        await start_subscribers(apps)
        own_writes.max_events = bound
    assert await dropped == {"n": first_dropped}
    assert [await StateStore.get_state(i, W) for i in ids] == [{"n": n} for n in range(200)]


async def test_confirmed_replaces_expire_with_their_ttl_and_deletes_apply(stack):
    gone, deleted = new_ids("ttl", 2)
    reader = Reader(stack)
    await reader.ready()
    await StateStore.save_state_object(gone, {"short": "lived"}, W, ttl_seconds=5)
    await StateStore.save_state_object(deleted, {"to": "delete"}, W)
    assert await reader.read([gone]) == {gone: {"short": "lived"}}
    await StateStore.delete_state(deleted, W)
    assert await StateStore.get_state(deleted, W) is None  # own write: at once
    await StateStore.sync(deleted, W)

    async def expired():
        return await StateStore.get_state(gone, W) is None

    await eventually(expired, timeout=15)

    async def swept():  # the expiry sweep removes its snapshot too (1 s buckets in the tests)
        return not (stack.object_root / object_key(gone, W)).exists()

    await eventually(swept, timeout=30)


async def test_each_app_has_its_own_confirmed_state(stack):
    (state_id,) = new_ids("apps", 1)
    script = (
        "import asyncio\nfrom statestore import StateStore, StateType\n"
        f"asyncio.run(StateStore.save_state_object('{state_id}', {{'app': 'orders'}}, StateType.WORKFLOWS))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, timeout=60,
                          env={**python_env(stack), "STATESTORE_APP_NAME": "orders"})  # fmt: skip
    assert done.returncode == 0
    assert await StateStore.get_state(state_id, W) is None  # the app "default" has no such state
    result = statestore_command(stack, "get", state_id, "--app", "orders")
    assert result.returncode == 0 and json.loads(result.stdout) == {"app": "orders"}, result.stderr


def read_events(path) -> list:
    events = []
    for line in path.read_bytes().splitlines():
        data = json.loads(line)
        events.append(decode_event(cloudevent_type(data["kind"]), data))
    return events


@pytest.mark.parametrize("kill_subscriber", [False, True], ids=["steady", "subscriber-killed"])
async def test_confirmed_replaces_and_updates_from_several_processes_end_as_the_stamps_say(stack, tmp_path, kill_subscriber):
    """Four writer processes mix confirmed replaces, field updates and field deletes of six
    shared states; the stored states and snapshots equal the sequential oracle of every
    event written, each producer's events applied once (its record shows each seq)."""
    ids, writers, rounds = new_ids("mixed", 6), 4, 250
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.integration.mixed_writer", ",".join(ids), str(n), str(rounds),
                          str(random.randrange(10**6)), str(tmp_path / f"events-{n}.jsonl")],
                         cwd=PROJECT_ROOT, env=python_env(stack), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for n in range(writers)
    ]  # fmt: skip
    if kill_subscriber:
        await asyncio.sleep(0.5)
        stack.subscriber_app.kill()
        stack.subscriber_sidecar.kill()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(stack.start_subscriber)
    outputs = [(await asyncio.to_thread(p.communicate, timeout=300))[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    events = [e for n in range(writers) for e in read_events(tmp_path / f"events-{n}.jsonl")]
    assert len(events) == writers * rounds
    query = Store._runtime().query

    async def all_applied():  # the confirmed replaces too (stored at once, applied later)
        documents = await query.get_documents(ids, W)
        return all(
            not documents[i].provisional
            and all(documents[i].producers[e.producer].processed(e.seq) for e in events if e.state_id == i)
            for i in ids
        )

    await eventually(all_applied, timeout=120)
    documents = await query.get_documents(ids, W)
    for state_id in ids:
        mine = [e for e in events if e.state_id == state_id]
        oracle = replay_in_order(mine)
        assert (documents[state_id].to_state() if documents[state_id].exists() else None) == oracle
        for producer in {e.producer for e in mine}:  # every seq of every producer: processed, no gap
            seqs = sorted(e.seq for e in mine if e.producer == producer)
            assert seqs == list(range(1, len(seqs) + 1)) and documents[state_id].processed_upto(producer) == len(seqs)
        await assert_snapshot_matches(state_id)


async def test_a_confirmed_write_in_a_sidecar_outage_raises_and_leaves_the_state(stack):
    """The caller's sidecar is down: the replace waits out its timeout, then says that
    nothing was stored; the state is as before, and the next replace works (no gap)."""
    (state_id,) = new_ids("outage", 1)
    await StateStore.save_state_object(state_id, {"before": True}, W)
    runtime = Store.runtime()
    failing_producer = runtime.confirmed_producer_id
    stack.caller_sidecar.kill()
    try:
        start = time.perf_counter()
        with pytest.raises(StateNotStoredError, match="The stored state is unchanged") as info:
            await StateStore.save_state_object(state_id, {"after": True}, W, timeout=3)
        took = time.perf_counter() - start
    finally:
        await asyncio.to_thread(stack.start_sidecar, stack.caller_sidecar, stack.ports.caller)
    assert info.value.stored is False and info.value.state_id == state_id
    assert 3 <= took < 6, took
    assert await StateStore.get_state(state_id, W) == {"before": True}
    await StateStore.save_state("progress", 1, state_id, W)
    assert await StateStore.save_state_object(state_id, {"again": True}, W) == {"again": True}
    await StateStore.sync(state_id, W, timeout=30)  # nothing of this process is left waiting
    assert await StateStore.get_state(state_id, W) == {"again": True}
    # The failed replace's producer id is retired (its event was never queued) and no
    # event of it reached the store: it is not applied later either.
    assert runtime.confirmed_producer_id != failing_producer
    document = await Store._runtime().query.get_document(state_id, W)
    assert failing_producer in document.producers and document.processed_upto(failing_producer) == 1


@pytest.mark.profile("local")  # the sqlite store
async def test_a_confirmed_write_waits_out_a_locked_store_then_returns_stored(stack):
    """Another writer holds the store locked past daprd's busy timeout: the replace does
    not return while it cannot be stored, and once the lock ends it is."""
    import sqlite3

    (state_id,) = new_ids("locked", 1)
    lock = sqlite3.connect(stack.local / "dapr" / "statestore.db", timeout=30, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        write = asyncio.create_task(StateStore.save_state_object(state_id, {"a": 1}, W))
        with pytest.raises(asyncio.TimeoutError):  # locked: not stored, so not returned
            await asyncio.wait_for(asyncio.shield(write), 2)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert await write == {"a": 1}
    assert (await Store._runtime().query.get_document(state_id, W)).to_state() == {"a": 1}


async def test_a_confirmed_write_in_a_broker_outage_is_stored_and_its_snapshot_follows(stack):
    """The broker is down, the state store is not: the object is stored at once (the call
    does not wait for its event), and its event goes out when the broker is back."""
    (state_id,) = new_ids("broker", 1)
    await StateStore.save_state_object(state_id, {"before": True}, W)
    await assert_snapshot_matches(state_id)
    broker = stack.servers.get("redis") or stack.servers["kafka"]
    await asyncio.to_thread(broker.stop)
    try:
        start = time.perf_counter()
        assert await StateStore.save_state_object(state_id, {"after": True}, W, timeout=3) == {"after": True}
        assert time.perf_counter() - start < 3  # stored: it does not wait out the outage
        reader = Reader(stack)
        await reader.ready()
        assert await reader.read([state_id]) == {state_id: {"after": True}}  # stored: any process reads it
    finally:
        await asyncio.to_thread(broker.start)
    await assert_snapshot_matches(state_id)  # the queued event was published, then applied


async def test_sigterm_during_confirmed_writes_loses_nothing_that_was_confirmed(stack):
    """A process saving workflow args in a loop is sent SIGTERM: every id it printed as
    saved (save_state_object returned) is stored."""
    tag = uuid.uuid4().hex[:8]
    script = (
        "import asyncio, itertools\nfrom statestore import StateStore, StateType\n"
        "async def main():\n"
        "    for n in itertools.count():\n"
        f"        await StateStore.save_state_object(f'term-{tag}-{{n}}', {{'n': n}}, StateType.WORKFLOWS)\n"
        "        print(n, flush=True)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=python_env(stack),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    confirmed = []
    while len(confirmed) < 200:
        confirmed.append(int(await asyncio.to_thread(proc.stdout.readline)))
    proc.terminate()
    rest, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    confirmed += [int(line) for line in rest.split()]
    assert proc.returncode != 0  # it was terminated mid-loop
    states = await Store._runtime().query.get_documents([f"term-{tag}-{n}" for n in confirmed], W)
    assert {i: d.to_state() for i, d in states.items()} == {f"term-{tag}-{n}": {"n": n} for n in confirmed}


async def test_the_successors_interface_on_the_real_stack(stack):
    """StateStoreClient (the application SDK 3.x protocol) over the same confirmed writes:
    another process reads what save stored, delete is seen everywhere on return."""
    from statestore import StateStoreClient

    tag = uuid.uuid4().hex[:8]
    store = StateStoreClient(StateType.WORKFLOWS)
    await store.save(f"succ-{tag}-1", {"args": 1})
    await store.save(f"succ-{tag}-2", {"args": 2})
    reader = Reader(stack)
    await reader.ready()
    assert await reader.read([f"succ-{tag}-1"]) == {f"succ-{tag}-1": {"args": 1}}
    assert await store.load(f"succ-{tag}-2") == {"args": 2}

    async def listed():
        return await store.list_keys(f"succ-{tag}") == [f"succ-{tag}-1", f"succ-{tag}-2"]

    await eventually(listed)  # the subscriber indexes them when it applies their events
    assert await store.delete(f"succ-{tag}-1") is True and await store.delete(f"succ-{tag}-9") is False
    reader = Reader(stack)
    await reader.ready()
    assert await reader.read([f"succ-{tag}-1"]) == {f"succ-{tag}-1": None}
