"""Expiry markers and the sweep (issue 13.2): the snapshot of a state the store expired is
removed, a state rewritten since keeps it; over in-memory ports with controllable clocks
(the store's expiry is played by removing the document, as the store's TTL does)."""

import json

from statestore.core.paths import object_key
from statestore.subscriber.applier import EventApplier
from statestore.subscriber.expiry import CURSOR_KEY, PREFIX, Cursor, ExpiryMarkers, Sweep, marker_key, parse_marker
from statestore.subscriber.outbox import LEASE_KEY, Lease, SnapshotFlusher, pending_keys
from statestore.subscriber.ports import InMemoryObjectStore, InMemoryStateRepository
from tests.strategies import field_updated, state_deleted

KEY = "workflows/s1"
SNAPSHOT = object_key("s1", "workflows")


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def with_ttl(event, ttl):
    return event.model_copy(update={"ttl_seconds": ttl})


class CountingObjects(InMemoryObjectStore):
    def __init__(self):
        super().__init__()
        self.puts: list[str] = []

    async def put(self, key, data, timeout=None, conditional=False):
        self.puts.append(key)
        await super().put(key, data, timeout, conditional)


class Setup:
    def __init__(self, bucket_s=10):
        self.repo, self.objects = InMemoryStateRepository(), CountingObjects()
        self.wall = Clock(1_000_000.0)  # unix seconds
        self.expiry = ExpiryMarkers(self.repo, self.objects, bucket_s=bucket_s, wall=self.wall)
        self.flusher = SnapshotFlusher(self.repo, self.objects, expiry=self.expiry, clock=Clock(50.0))
        self.applier = EventApplier(self.repo)
        self.seq = 0

    async def write(self, value, ttl=None, key=KEY):
        self.seq += 1
        event = field_updated("f", value, seq=self.seq, hlc=(self.seq, 0), state_id=key.split("/")[1])
        await self.applier.apply([with_ttl(event, ttl) if ttl else event])
        while await self.flusher.flush_once():
            pass

    def markers(self):
        return sorted(k for k in self.objects.objects if k.startswith(PREFIX + "/"))

    def expire(self, key=KEY):
        """What the state store's TTL does: the whole entry goes."""
        del self.repo.items[key]

    async def sweep(self):
        while await self.flusher.sweep_once():
            pass


async def test_a_snapshot_with_ttl_files_a_marker_in_its_due_bucket_and_the_sweep_removes_it_once_expired():
    s = Setup()
    await s.write(1, ttl=25)
    cursor = Cursor.model_validate_json(s.repo.items[CURSOR_KEY].value)
    assert cursor == Cursor(next=1_000_000, width=10)  # created with the first marker
    assert s.markers() == [marker_key(1_000_020, KEY)]  # due at 1_000_025: bucket [1_000_020, 1_000_030)
    assert json.loads(s.objects.objects[s.markers()[0]])["state"] == KEY

    s.wall.now += 29  # the bucket has not ended: not swept yet
    await s.sweep()
    assert s.markers() and SNAPSHOT in s.objects.objects

    s.wall.now += 1
    s.expire()
    await s.sweep()
    assert s.markers() == [] and SNAPSHOT not in s.objects.objects
    assert Cursor.model_validate_json(s.repo.items[CURSOR_KEY].value).next == 1_000_030
    assert s.flusher.metrics.expired_snapshots_removed._value.get() == 1


async def test_a_state_rewritten_without_ttl_before_its_marker_is_due_keeps_its_snapshot():
    s = Setup()
    await s.write(1, ttl=5)
    await s.write(2)  # permanent again
    s.wall.now += 100
    await s.sweep()
    assert s.markers() == []
    assert json.loads(s.objects.objects[SNAPSHOT]) == {"f": 2}


async def test_a_state_rewritten_with_a_later_ttl_keeps_its_snapshot_until_that_one_expires():
    s = Setup()
    await s.write(1, ttl=5)
    s.wall.now += 3
    await s.write(2, ttl=100)
    assert s.markers() == [marker_key(1_000_000, KEY), marker_key(1_000_100, KEY)]
    s.wall.now += 20
    await s.sweep()
    assert s.markers() == [marker_key(1_000_100, KEY)]  # the early marker went: a later one names it
    assert SNAPSHOT in s.objects.objects
    s.wall.now += 100
    s.expire()
    await s.sweep()
    assert s.markers() == [] and SNAPSHOT not in s.objects.objects


async def test_a_state_the_store_has_not_expired_yet_is_looked_at_again_in_the_next_bucket():
    s = Setup()
    await s.write(1, ttl=5)
    s.wall.now += 15  # the store's clock is behind ours: the entry is still there
    await s.sweep()
    assert s.markers() == [marker_key(1_000_020, KEY)] and SNAPSHOT in s.objects.objects
    s.wall.now += 15
    s.expire()
    await s.sweep()
    assert s.markers() == [] and SNAPSHOT not in s.objects.objects


async def test_a_new_lease_holder_that_does_not_know_the_marker_moves_it_to_now_plus_ttl():
    s = Setup()
    await s.write(1, ttl=50)
    s.expiry.forget()  # as after the lease changed hands
    s.wall.now += 60
    await s.sweep()  # still there (the store's clock, or a TTL restarted by a later change)
    assert s.markers() == [marker_key(1_000_110, KEY)]
    s.wall.now += 60
    s.expire()
    await s.sweep()
    assert s.markers() == [] and SNAPSHOT not in s.objects.objects


async def test_a_deleted_state_loses_its_marker_and_a_state_rewritten_in_one_bucket_is_filed_once():
    s = Setup()
    for n in range(5):
        await s.write(n, ttl=30)
    assert [k for k in s.objects.puts if k.startswith(PREFIX)] == [marker_key(1_000_030, KEY)]
    await s.applier.apply([state_deleted(seq=99, hlc=(99, 0))])
    while await s.flusher.flush_once():
        pass
    assert SNAPSHOT not in s.objects.objects  # the delete removed it
    s.wall.now += 100
    await s.sweep()
    assert s.markers() == []


async def test_markers_are_never_filed_below_the_cursor():
    s = Setup()
    await s.write(1, ttl=5)
    s.wall.now += 100
    s.expire()
    await s.sweep()
    s.wall.now -= 80  # a lease holder whose clock is behind the last sweeper's
    await s.write(2, ttl=5)
    assert s.markers() == [marker_key(1_000_100, KEY)]  # the cursor's bucket, not 1_000_020
    s.wall.now += 90
    s.expire()
    await s.sweep()
    assert s.markers() == [] and SNAPSHOT not in s.objects.objects


async def test_a_sweep_handles_at_most_its_budget_and_continues_from_where_it_stopped():
    s = Setup()
    keys = [f"workflows/s{n}" for n in range(7)]
    for key in keys:
        await s.write(1, ttl=5, key=key)
    s.wall.now += 100
    for key in keys:
        s.expire(key)
    result = Sweep()
    await s.expiry.sweep(lambda: 1.0, result, max_markers=3)
    assert result.more and result.markers == 3 and result.cursor is None
    assert len(s.markers()) == 4
    await s.sweep()
    assert s.markers() == [] and not [k for k in s.objects.objects if k.endswith("config.json")]


async def test_only_the_lease_holder_sweeps_and_a_holder_deposed_mid_sweep_names_the_states_again():
    s = Setup()
    await s.write(1, ttl=5)
    s.wall.now += 100
    s.expire()
    other_replica = SnapshotFlusher(s.repo, s.objects, expiry=ExpiryMarkers(s.repo, s.objects, wall=s.wall))
    assert not await other_replica.sweep_once()  # s.flusher holds the lease
    assert s.markers() and SNAPSHOT in s.objects.objects

    other = Lease(owner="other", nonce="theirs", epoch=9)
    s2 = Setup()
    await s2.write(1, ttl=5)
    s2.wall.now += 100
    s2.expire()

    def deposed():
        s2.repo.items[LEASE_KEY] = s2.repo.items[LEASE_KEY].__class__(other.model_dump_json().encode(), "y")

    async def delete_then_lose(key, timeout=None, _delete=s2.objects.delete):
        await _delete(key, timeout)
        if key == SNAPSHOT:
            deposed()

    s2.objects.delete = delete_then_lose
    await s2.flusher.sweep_once()
    assert KEY in await pending_keys(s2.repo)  # the new holder writes it again if it exists
    assert Cursor.model_validate_json(s2.repo.items[CURSOR_KEY].value).next == 1_000_000  # not moved


def test_marker_keys_parse_back_and_other_keys_do_not():
    assert parse_marker(marker_key(1_000_020, KEY)) == (1_000_020, KEY)
    assert parse_marker(marker_key(20, "orders/workflows/wf-1")) == (20, "orders/workflows/wf-1")
    for key in ("statestore-expiry/x/workflows/s1", "other/000000000020/workflows/s1", f"{PREFIX}/000000000020/nope/s1"):
        assert parse_marker(key) is None


async def test_the_flushers_run_loop_sweeps_every_interval():
    import asyncio

    s = Setup()
    s.flusher = SnapshotFlusher(s.repo, s.objects, expiry=s.expiry, sweep_interval_s=0.05)
    await s.write(1, ttl=5)
    stop = asyncio.Event()
    running = asyncio.create_task(s.flusher.run(stop))
    try:
        s.wall.now += 100
        s.expire()
        for _ in range(200):
            if SNAPSHOT not in s.objects.objects:
                break
            await asyncio.sleep(0.01)
        assert SNAPSHOT not in s.objects.objects and s.markers() == []
    finally:
        stop.set()
        await running
