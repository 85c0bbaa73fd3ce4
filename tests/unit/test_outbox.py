"""The per-replica outbox and the fenced snapshot lease (issues 9.2 and 10.6), over
in-memory ports with a controllable clock and a slow object store."""

import asyncio
import contextlib
import json

import pytest

from statestore.core.paths import object_key
from statestore.subscriber.applier import EventApplier
from statestore.subscriber.outbox import LEASE_KEY, REGISTRY_KEY, Lease, OutboxWriter, Registry, SnapshotFlusher, pending_keys
from statestore.subscriber.ports import InMemoryObjectStore, InMemoryStateRepository, put_each
from tests.strategies import field_updated


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class SlowObjects(InMemoryObjectStore):
    """Puts take ``delay`` seconds; ``gate`` (if set) holds them until released."""

    def __init__(self, delay=0.0):
        super().__init__()
        self.delay = delay
        self.gate: asyncio.Event | None = None
        self.log: list[tuple[str, bytes]] = []
        self.honour_deadlines = True
        self.cut = 0  # writes cancelled at their deadline

    async def put(self, key, data, timeout=None, conditional=False):
        # As an S3 call is cancelled at its deadline: a write not done by then never lands.
        try:
            await asyncio.wait_for(self._slow_put(key, data, conditional), timeout if self.honour_deadlines else None)
        except asyncio.TimeoutError:
            self.cut += 1
            raise

    async def _slow_put(self, key, data, conditional):
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay)
        await super().put(key, data, conditional=conditional)
        self.log.append((key, data))  # landed


async def snapshot(objects, state_id="s1"):
    raw = await objects.get(object_key(state_id, "workflows"))
    return None if raw is None else json.loads(raw)


async def test_commits_append_entries_and_no_hot_path_document_is_shared():
    repo = InMemoryStateRepository()
    a, b = EventApplier(repo), EventApplier(repo)
    for n in range(5):
        await a.apply([field_updated("f", n, state_id=f"a{n}")])
        await b.apply([field_updated("f", n, state_id=f"b{n}")])
    registry = Registry.model_validate_json(repo.items[REGISTRY_KEY].value)
    assert registry.heads == {a.outbox.replica: 0, b.outbox.replica: 0}
    etag = repo.items[REGISTRY_KEY].etag
    await a.apply([field_updated("g", 1, state_id="a0", seq=2, hlc=(2, 0))])
    assert repo.items[REGISTRY_KEY].etag == etag  # commits never rewrite the registry
    assert await pending_keys(repo) == {f"workflows/{x}{n}" for x in "ab" for n in range(5)}


async def test_a_flush_consumes_every_replicas_entries_and_deletes_them():
    repo, objects = InMemoryStateRepository(), InMemoryObjectStore()
    a, b = EventApplier(repo), EventApplier(repo)
    await a.apply([field_updated("f", 1, state_id="x")])
    await b.apply([field_updated("f", 2, state_id="y")])
    flusher = SnapshotFlusher(repo, objects)
    assert await flusher.flush_once() == 2
    assert await snapshot(objects, "x") == {"f": 1} and await snapshot(objects, "y") == {"f": 2}
    assert await pending_keys(repo) == set()
    assert not [key for key in repo.items if key.startswith("statestore-outbox/") and key[-1].isdigit()]
    assert await flusher.flush_once() == 0


async def test_a_replica_that_stops_cleanly_leaves_the_registry_once_flushed():
    repo = InMemoryStateRepository()
    applier = EventApplier(repo)
    await applier.apply([field_updated("f", 1)])
    assert not await applier.outbox.deregister()  # an entry is still pending
    await SnapshotFlusher(repo, InMemoryObjectStore()).flush_once()
    assert await applier.outbox.deregister()
    assert Registry.model_validate_json(repo.items[REGISTRY_KEY].value).heads == {}


async def test_a_restarted_replica_with_a_fixed_id_continues_after_its_last_entry():
    repo = InMemoryStateRepository()
    await EventApplier(repo, outbox=OutboxWriter(repo, "fixed")).apply([field_updated("f", 1, state_id="a")])
    await EventApplier(repo, outbox=OutboxWriter(repo, "fixed")).apply([field_updated("f", 1, state_id="b")])
    assert await pending_keys(repo) == {"workflows/a", "workflows/b"}


async def test_the_lease_passes_only_after_its_record_is_unchanged_for_a_lease_period():
    repo, objects, clock = InMemoryStateRepository(), InMemoryObjectStore(), Clock()
    applier = EventApplier(repo)
    first = SnapshotFlusher(repo, objects, lease_s=5.0, clock=clock)
    second = SnapshotFlusher(repo, objects, lease_s=5.0, clock=clock)
    await applier.apply([field_updated("f", 1)])
    assert await first.flush_once() == 1
    await applier.apply([field_updated("f", 2, seq=2, hlc=(2, 0))])
    assert await second.flush_once() == 0  # starts watching the record
    clock.now += 4.9
    assert await second.flush_once() == 0  # wall clocks play no part: 4.9 s on its own clock
    clock.now += 0.2
    assert not first.holding()  # the holder stopped long before (half a period)
    assert await second.flush_once() == 1
    assert await snapshot(objects) == {"f": 2}
    assert Lease.model_validate_json(repo.items[LEASE_KEY].value).epoch == 2


async def test_a_holder_that_keeps_renewing_keeps_the_lease():
    repo, objects, clock = InMemoryStateRepository(), InMemoryObjectStore(), Clock()
    applier = EventApplier(repo)
    first = SnapshotFlusher(repo, objects, lease_s=5.0, clock=clock)
    second = SnapshotFlusher(repo, objects, lease_s=5.0, clock=clock)
    for n in range(1, 8):
        await applier.apply([field_updated("f", n, seq=n, hlc=(n, 0))])
        assert await first.flush_once() == 1
        assert await second.flush_once() == 0
        clock.now += 2.0  # > a quarter period: the holder renews, the watcher starts over
    assert await snapshot(objects) == {"f": 7}


async def test_a_released_lease_is_taken_at_once():
    repo, objects = InMemoryStateRepository(), InMemoryObjectStore()
    applier = EventApplier(repo)
    first, second = SnapshotFlusher(repo, objects), SnapshotFlusher(repo, objects)
    await applier.apply([field_updated("f", 1)])
    assert await first.flush_once() == 1
    await first.release()
    await applier.apply([field_updated("f", 2, seq=2, hlc=(2, 0))])
    assert await second.flush_once() == 1


async def test_a_slow_object_store_does_not_lose_the_lease_while_working():
    repo, objects = InMemoryStateRepository(), SlowObjects(delay=0.05)
    applier = EventApplier(repo)
    await applier.apply([field_updated("f", n, state_id=f"s{n}") for n in range(40)])
    holder = SnapshotFlusher(repo, objects, lease_s=0.4)  # one put at a time: the round takes 2 s = 5 leases
    watcher = SnapshotFlusher(repo, objects, lease_s=0.4)
    round_ = asyncio.create_task(holder.flush_once())
    await asyncio.sleep(0.01)  # the holder takes the lease first
    taken = 0
    while not round_.done():
        taken += await watcher.flush_once()
        await asyncio.sleep(0.02)
    assert await round_ == 40 and taken == 0  # renewed while working: never two flushers
    assert await pending_keys(repo) == set()


async def test_a_deposed_holder_cannot_leave_a_snapshot_behind_for_good():
    """Two flushers and a slow object store: the old holder's put lands last, yet the
    final snapshot is the newest state."""
    repo, clock = InMemoryStateRepository(), Clock()
    objects = SlowObjects()
    applier = EventApplier(repo)
    old = SnapshotFlusher(repo, objects, lease_s=5.0, clock=clock)
    new = SnapshotFlusher(repo, objects, lease_s=5.0, clock=clock)
    await applier.apply([field_updated("f", "v1")])
    objects.gate = asyncio.Event()
    # The second line of defence: a put that lands late although its deadline passed
    # (this test's clock is not the one the deadline runs on).
    objects.honour_deadlines = False
    stalled = asyncio.create_task(old.flush_once())  # reads v1, its put is held
    await asyncio.sleep(0.01)
    await applier.apply([field_updated("f", "v2", seq=2, hlc=(2, 0))])
    assert await new.flush_once() == 0
    clock.now += 5.1  # the old holder stalled for more than a lease period
    objects.gate.set()
    objects.gate = None
    assert await new.flush_once() >= 1  # takes over, writes v2
    await stalled  # the old put (v1) may land after v2; its fenced advance fails
    while await pending_keys(repo):
        clock.now += 1.0
        await new.flush_once()
    assert await snapshot(objects) == {"f": "v2"}
    assert repo.items[LEASE_KEY] and not old.holding()


async def test_a_deposed_holders_late_put_never_replaces_a_newer_snapshot():
    """The conditional put fences without any clock: the old holder's put of v2 is held up
    past every deadline (none honoured here) and reaches the store after the successor
    wrote v3 from a newer document. It is refused; the snapshot stays v3."""
    repo, clock = InMemoryStateRepository(), Clock()
    slow = SlowObjects()
    slow.honour_deadlines = False
    applier = EventApplier(repo)
    old = SnapshotFlusher(repo, slow, lease_s=5.0, clock=clock)
    new = SnapshotFlusher(repo, slow.writer(), lease_s=5.0, clock=clock)  # another replica
    await applier.apply([field_updated("f", "v1")])
    assert await old.flush_once() == 1
    await applier.apply([field_updated("f", "v2", seq=2, hlc=(2, 0))])
    slow.gate = asyncio.Event()
    stalled = asyncio.create_task(old.flush_once())  # reads v2, its put is held
    await asyncio.sleep(0.01)
    await applier.apply([field_updated("f", "v3", seq=3, hlc=(3, 0))])
    assert await new.flush_once() == 0  # starts watching the lease record
    clock.now += 5.1  # the old holder stalled for more than a lease period
    assert await new.flush_once() == 1  # takes over, writes v3 (reading it again after the store said "changed")
    assert await snapshot(slow) == {"f": "v3"}
    slow.gate.set()
    assert await stalled == 0  # its put of v2 was refused, then it saw the lease was gone
    assert await snapshot(slow) == {"f": "v3"}
    assert [json.loads(data) for _, data in slow.log] == [{"f": "v1"}]  # v2 never landed
    while await pending_keys(repo):  # the old holder marked its states again: rewritten, still v3
        await new.flush_once()
    assert await snapshot(slow) == {"f": "v3"}


async def test_a_snapshot_write_is_cut_when_the_holders_window_closes_and_never_lands_later():
    """Issue 10.6: snapshots never go backwards. The old holder's put of v1 is held up
    past its write window: it is cancelled at its deadline (as daprd cancels the binding
    call), so when the store is fast again only the successor's v2 is ever written."""
    repo, objects = InMemoryStateRepository(), SlowObjects()
    applier = EventApplier(repo)
    old = SnapshotFlusher(repo, objects, lease_s=0.4)
    new = SnapshotFlusher(repo, objects, lease_s=0.4)
    await applier.apply([field_updated("f", "v1")])
    objects.gate = asyncio.Event()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(old.flush_once(), 5)  # its put waited past the window: cut, the round fails
    assert objects.cut == 1
    await applier.apply([field_updated("f", "v2", seq=2, hlc=(2, 0))])
    objects.gate.set()
    objects.gate = None
    for _ in range(200):  # the successor takes over after a lease period unchanged
        if await new.flush_once():
            break
        await asyncio.sleep(0.01)
    assert await snapshot(objects) == {"f": "v2"}
    assert [json.loads(data) for _, data in objects.log] == [{"f": "v2"}]  # v1 never landed, not even late
    assert await pending_keys(repo) == set()


async def test_a_flush_that_fails_the_same_way_backs_off_and_logs_once(caplog):
    class Broken(InMemoryObjectStore):
        puts = 0

        async def put(self, key, data, timeout=None, conditional=False):
            Broken.puts += 1
            raise OSError("binding down")

    repo = InMemoryStateRepository()
    await EventApplier(repo).apply([field_updated("f", 1)])
    flusher = SnapshotFlusher(repo, Broken(), interval_s=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(flusher.run(stop))
    await asyncio.sleep(1.0)
    stop.set()
    await task
    warnings = [r for r in caplog.records if "backing off" in r.getMessage()]
    assert len(warnings) == 1
    assert Broken.puts <= 6  # 10 ms doubling: no spin (a spin makes hundreds)


async def test_marks_in_the_old_shared_slots_are_moved_and_flushed():
    from statestore.subscriber.outbox import LEGACY_SLOTS
    from statestore.subscriber.ports import Upsert

    repo, objects = InMemoryStateRepository(), InMemoryObjectStore()
    await EventApplier(repo).apply([field_updated("f", 1, state_id=f"s{n}") for n in range(300)])
    marks = {f"workflows/s{n}": "abc" for n in range(300)}
    await repo.commit([Upsert(LEGACY_SLOTS[3], json.dumps({"dirty": marks}).encode(), None)])
    flusher = SnapshotFlusher(repo, objects)
    assert await flusher.migrate_legacy_slots() == 300
    assert LEGACY_SLOTS[3] not in repo.items
    while await flusher.flush_once():
        pass
    assert await snapshot(objects, "s299") == {"f": 1} and await pending_keys(repo) == set()


class OneFailingPut(SlowObjects):
    """The put of ``failing`` raises at once (``failed`` set); every other put waits for ``gate``."""

    def __init__(self, failing: str) -> None:
        super().__init__()
        self.failing = failing
        self.failed = asyncio.Event()
        self.gate = asyncio.Event()

    async def put(self, key, data, timeout=None, conditional=False):
        if key == self.failing and not self.failed.is_set():
            self.failed.set()
            raise RuntimeError("object store down for this write")
        await super().put(key, data, timeout, conditional)

    async def put_many(self, items, timeout=None):  # several in flight, as S3's adapter keeps them
        return await put_each(self, items, timeout, lanes=8)


async def test_a_failed_round_ends_only_after_its_other_writes_so_none_lands_after_the_retry():
    """A write of a failed round still running could land after the retry wrote a newer
    version of the same state: its snapshot would stay stale (the retry consumed the entry)."""
    repo = InMemoryStateRepository()
    objects = OneFailingPut(failing=object_key("x", "workflows"))
    applier = EventApplier(repo)
    await applier.apply([field_updated("v", 1, state_id="x"), field_updated("v", 1, state_id="y")])
    flusher = SnapshotFlusher(repo, objects)
    first = asyncio.create_task(flusher.flush_once())
    await objects.failed.wait()
    for _ in range(20):  # let the round react to the failure
        await asyncio.sleep(0)
    assert not first.done(), "the round ended while its write of y was still in flight"
    await applier.apply([field_updated("v", 2, state_id="y", seq=2, hlc=(2, 0))])
    objects.gate.set()
    with pytest.raises(RuntimeError):
        await first
    assert await flusher.flush_once() == 2  # the retry
    assert await snapshot(objects, "y") == {"v": 2} and await snapshot(objects, "x") == {"v": 1}


class LostReply(InMemoryStateRepository):
    """The next commit lands, then fails as if the sidecar died before it answered."""

    lose_next = False

    async def commit(self, upserts):
        await super().commit(upserts)
        if self.lose_next:
            self.lose_next = False
            raise ConnectionError("the sidecar died before it answered")


async def test_an_entry_whose_commit_outcome_was_unknown_is_never_reused_behind_the_head():
    """Found under `make test` (scale profile, subscriber sidecar SIGKILL): the entry of a
    commit that landed unacknowledged was flushed and deleted, the next commit reused its
    number behind the head, and that state's snapshot stayed stale for good."""
    repo, objects = LostReply(), InMemoryObjectStore()
    applier = EventApplier(repo)
    flusher = SnapshotFlusher(repo, objects)
    await applier.apply([field_updated("v", 1, state_id="x")])
    repo.lose_next = True
    failed = await applier.apply([field_updated("v", 2, state_id="x", seq=2, hlc=(2, 0))])
    assert failed.failed  # reported as failed (to be redelivered), yet it landed
    assert await flusher.flush_once() == 1  # both entries, the unacknowledged one too
    await applier.apply([field_updated("v", 3, state_id="x", seq=3, hlc=(3, 0))])
    assert await flusher.flush_once() == 1
    assert await snapshot(objects, "x") == {"v": 3}


def test_the_flusher_pauses_to_coalesce_only_once_it_has_caught_up():
    flusher = SnapshotFlusher(InMemoryStateRepository(), InMemoryObjectStore(), max_keys_per_round=100, coalesce_s=0.25)
    assert flusher.pause_after(100) == 0.0  # behind: the next round at once
    assert flusher.pause_after(7) == 0.25  # caught up: let updates of the same states gather
    assert flusher.pause_after(0) == 0.02  # idle: look again soon


async def test_updates_during_the_pause_share_one_snapshot_write():
    repo, objects = InMemoryStateRepository(), SlowObjects()
    applier = EventApplier(repo)
    flusher = SnapshotFlusher(repo, objects, coalesce_s=2.0)
    stop = asyncio.Event()
    running = asyncio.create_task(flusher.run(stop))
    try:
        await applier.apply([field_updated("n", 1, state_id="hot", seq=1, hlc=(1, 0))])
        while await snapshot(objects, "hot") != {"n": 1}:
            await asyncio.sleep(0.005)
        for n in range(2, 11):  # 9 updates 30 ms apart: 9 rounds without the pause
            await asyncio.sleep(0.03)
            await applier.apply([field_updated("n", n, state_id="hot", seq=n, hlc=(n, 0))])
        while await snapshot(objects, "hot") != {"n": 10}:
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await running
    writes = [key for key, _ in objects.log if key == object_key("hot", "workflows")]
    assert 2 <= len(writes) <= 3, writes  # the first, then the rest together (a stalled machine: one more)


class StoppedMidRound(InMemoryObjectStore):
    """The object store as a flusher sees it when its process is stopped (SIGSTOP) in the
    middle of a round and resumed after a successor took the lease (issue 27). ``late``:
    the put that was about to start when it stopped; it starts on resume, counts its
    deadline from then (a gRPC timeout is relative) and lands, after ``meanwhile`` ran.
    ``failing``: a put that was in flight; its deadline passed during the stop."""

    def __init__(self, late: str, failing: str, meanwhile):
        super().__init__()
        self.late, self.failing, self.meanwhile = late, failing, meanwhile
        self.log: list[tuple[str, bytes]] = []

    async def put(self, key, data, timeout=None, conditional=False):
        from statestore.core.errors import SidecarUnavailableError

        if key == self.failing:
            raise SidecarUnavailableError("the object store did not answer (DEADLINE_EXCEEDED)")
        if key == self.late:
            self.late = None  # once: the successor's own put of it goes through
            await self.meanwhile()
        await super().put(key, data, conditional=conditional)
        self.log.append((key, data))  # landed

    async def put_many(self, items, timeout=None):
        from statestore.subscriber.ports import put_each

        return await put_each(self, items, timeout, lanes=2)  # both puts in flight, as with S3's lanes


@pytest.mark.parametrize("late, failing", [("s1", "s2"), ("s2", "s1")])
async def test_a_holder_stopped_mid_round_cannot_leave_an_older_snapshot_after_it_resumes(late, failing):
    """Issue 27: the holder stops just before a put; a successor takes the lease and writes
    v2; the holder resumes and its put of v1 is refused (conditional: the object changed
    since it last saw it, issue 29), and its round ends deposed (its other write finds the
    window closed) or failed (its other put was cut at its deadline). The snapshot ends at
    the newest state, and nothing stays named."""
    repo, clock = InMemoryStateRepository(), Clock()
    applier = EventApplier(repo)
    new = SnapshotFlusher(repo, InMemoryObjectStore(), lease_s=5.0, clock=clock)
    failing_key = object_key(failing, "workflows")

    async def stopped():
        assert await new.flush_once() == 0  # the successor sees the holder's lease record
        clock.now += 60.0  # the stop (SIGSTOP 60 s): the record stayed unchanged all along
        await applier.apply([field_updated("f", "v2", seq=2, hlc=(2, 0), state_id=late)])
        objects.failing = None  # the successor's puts go through
        assert await new.flush_once() >= 1  # takes over, writes v2
        objects.failing = failing_key  # the holder's put in flight, cut at its deadline

    objects = StoppedMidRound(object_key(late, "workflows"), failing_key, stopped)
    new._objects = objects.writer()  # the same objects, its own memory of their versions (another replica)
    old = SnapshotFlusher(repo, objects, lease_s=5.0, clock=clock)
    await applier.apply([field_updated("f", "v1", state_id="s1"), field_updated("f", "v1", state_id="s2")])
    with contextlib.suppress(Exception):  # deposed (0 written) or failed: both happen
        assert await old.flush_once() == 0
    assert (object_key(late, "workflows"), json.dumps({"f": "v1"}, indent=2).encode()) not in objects.log  # refused
    objects.failing = None
    for _ in range(5):
        if not await pending_keys(repo):
            break
        clock.now += 1.0
        await new.flush_once()
    assert await snapshot(objects, late) == {"f": "v2"}  # the newest again
    assert await pending_keys(repo) == set()


async def test_a_holder_stopped_while_encoding_a_snapshot_does_not_start_its_put(monkeypatch):
    """Issue 27: the write window is read after the snapshot is encoded, right before the
    put: a stop while encoding (the window closes meanwhile) ends the round without a put."""
    import statestore.subscriber.outbox as outbox

    repo, clock, objects = InMemoryStateRepository(), Clock(), SlowObjects()
    flusher = SnapshotFlusher(repo, objects, lease_s=5.0, clock=clock)
    await EventApplier(repo).apply([field_updated("f", "v1")])
    encode = outbox._snapshot

    def stopped_while_encoding(document):
        clock.now += 60.0
        return encode(document)

    monkeypatch.setattr(outbox, "_snapshot", stopped_while_encoding)
    assert await flusher.flush_once() == 0  # lease lost: nothing written
    assert objects.log == []
    assert await pending_keys(repo)  # still named: the next holder writes it


async def test_a_round_that_fails_reading_the_next_piece_ends_only_after_the_previous_pieces_writes():
    """Pieces overlap (the next piece's documents are read while the previous piece is
    written): a failure of the read must still wait for the writes in flight."""
    repo = InMemoryStateRepository()
    await EventApplier(repo).apply([field_updated("v", 1, state_id=f"s{n}") for n in range(2)])
    objects = SlowObjects()
    objects.gate = asyncio.Event()
    flusher = SnapshotFlusher(repo, objects, keys_per_read=1)
    loads = 0
    real_load = repo.load

    async def load(keys):
        nonlocal loads
        if any(key.startswith("workflows/") for key in keys):
            loads += 1
            if loads == 2:  # the second piece's documents
                raise OSError("store busy")
        return await real_load(keys)

    repo.load = load
    round_ = asyncio.create_task(flusher.flush_once())
    for _ in range(50):
        await asyncio.sleep(0)
    assert loads == 2 and not round_.done(), "the round ended while the first piece's write was still in flight"
    objects.gate.set()
    with pytest.raises(OSError):
        await round_
    assert len(objects.log) == 1  # the first piece's write finished (and landed) before the round failed
