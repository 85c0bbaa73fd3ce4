"""The snapshot outbox: which states' object-store snapshots are behind, kept in the
state store itself, so a crash never leaves a snapshot permanently behind.

No document is shared by the hot path. Each subscriber replica appends to its own
outbox: every commit that changes states also writes, in the same transaction, a new
immutable entry ``statestore-outbox/{replica}/{n}`` listing the keys it changed (``n``
counts up from 0, one replica commits one transaction at a time, so entries are
contiguous). The registry ``statestore-outbox/replicas`` maps each replica to its head,
the first entry not yet flushed; a replica writes it once, when it starts committing.

A flusher (in every replica; one at a time holds the lease) reads the registry, the
entries at each head and the ones after it, writes the snapshots of the states they
name, then in one transaction moves the heads past them, deletes them and rewrites the
lease record (the fence: if another flusher took the lease meanwhile, the transaction
fails and nothing moves). A crash anywhere leaves the entries, and the next flusher
writes the files again: snapshots trail the state store by one flush round.

The lease holder also files an expiry marker for each snapshot of a state with a TTL,
and sweeps the due ones every ``sweep_interval_s`` between rounds: the snapshots of
states the store expired go too (statestore.subscriber.expiry).

The lease does not depend on clocks agreeing. Its record carries a nonce that the holder
rewrites at least every quarter lease period while it works. Another flusher takes over
only after it has seen the same record, unchanged, for a whole lease period on its own
monotonic clock; the holder stops writing half a lease period after its last renewal
began.

Snapshots never go backwards, by two fences:

- every snapshot put is conditional (statestore.subscriber.objectstore): it lands only if
  the object is still the version this flusher last wrote or saw there, else
  ObjectChangedError and nothing is written. The flusher reads a state's document after
  its previous put of that snapshot (or after the store told it the current version), so
  a put of an older document can never replace a snapshot another flusher wrote from a
  newer one: a deposed or paused holder's late put is refused, whatever the clocks did.
  On ObjectChangedError the flusher reads the document again and puts it again;
- every put and delete carries the holder's remaining write window as its deadline (a
  file write checks it just before its rename, an S3 call is cancelled at it), so no
  write starts landing after the window closed. A successor starts writing at least half
  a lease period after that (it waited a whole period; the holder's window ends half a
  period after its last renewal began), as long as the two monotonic clocks run at rates
  within a factor of two (the assumption of every lease). Deletes (a deleted state's
  snapshot, the expiry sweep) have only this fence: S3 has no conditional delete.

A write cut at its deadline fails the round and is written again by the next. As a third
line, a holder deposed mid-round (its fenced commit fails, or its round fails once its
window has closed: a process stopped mid-round, issue 27) marks its states again in its
own outbox and the successor rewrites them from the current documents. The window is a
quarter to half a lease period (STATESTORE_SNAPSHOT_LEASE_S, 5 s): an object store
slower than that per write needs a longer lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from statestore.core.cutting import cut
from statestore.core.document import snapshot_of
from statestore.core.errors import StateDecodeError
from statestore.core.paths import object_key, parse_state_key
from statestore.core.tracing import MAX_KEYS_SHOWN, current_traceparent, linked_span
from statestore.subscriber.expiry import CURSOR_KEY, ExpiryMarkers, Sweep
from statestore.subscriber.metrics import SubscriberMetrics
from statestore.subscriber.ports import (
    Delete,
    EtagMismatchError,
    ObjectChangedError,
    ObjectStore,
    StateRepository,
    StoredItem,
    Upsert,
)

__all__ = [
    "OUTBOX",
    "REGISTRY_KEY",
    "LEASE_KEY",
    "entry_key",
    "OutboxEntry",
    "Registry",
    "Lease",
    "OutboxWriter",
    "SnapshotFlusher",
    "pending_keys",
]

log = logging.getLogger("statestore.subscriber")

OUTBOX = "statestore-outbox"
REGISTRY_KEY = f"{OUTBOX}/replicas"
LEASE_KEY = f"{OUTBOX}/lease"


# Before the per-replica outbox, marks lived in 16 shared slot documents; a flusher turns
# any it finds (an upgraded deployment, or an old replica still running) into entries.
LEGACY_SLOTS = [f"{OUTBOX}/{n}" for n in range(16)]


def entry_key(replica: str, n: int) -> str:
    """The key of entry ``n`` of ``replica``'s outbox."""
    return f"{OUTBOX}/{replica}/{n}"


class OutboxEntry(BaseModel):
    """The state keys one commit changed (immutable once written)."""

    model_config = ConfigDict(extra="forbid")

    keys: list[str]
    # The apply span that committed it (W3C traceparent), only while the subscriber
    # traces: the snapshot span links to it. Written only when set, so a replica of an
    # earlier version (no such field) still reads the entries of an untraced subscriber.
    trace: str | None = None


class Registry(BaseModel):
    """Replica -> its head: the first entry not yet flushed."""

    heads: dict[str, int] = Field(default_factory=dict)


class Lease(BaseModel):
    """Who flushes snapshots. ``nonce`` changes on every write (renewal, fence)."""

    owner: str = ""
    nonce: str = ""
    epoch: int = 0


def _parse(model: type[BaseModel], item: StoredItem | None):
    return model.model_validate_json(item.value) if item else model()


def snapshot_bytes(key: str, item: StoredItem) -> bytes:
    """The object-store file: the state as plain JSON, as the reference system stores it."""
    return _snapshot(snapshot_of(key, item.value)[0] or {})


def _snapshot(state: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(state, option=orjson.OPT_INDENT_2)
    except TypeError:  # an integer beyond 64 bits: only the standard library writes it
        return json.dumps(state, indent=2, ensure_ascii=False).encode()


class OutboxWriter:
    """This replica's append-only outbox, and its one commit lane.

    sqlite has one writer: commits of one replica never run concurrently (they would
    only wait for each other inside the store, or fail with SQLITE_BUSY).
    """

    def __init__(self, repository: StateRepository, replica: str = "", traced: bool = False) -> None:
        self.replica = replica or uuid.uuid4().hex[:12]
        self._repository = repository
        self._traced = traced  # name the current (apply) span in each entry
        self._next = 0
        self._registered = False
        self._lane = asyncio.Lock()

    async def commit(self, operations: Sequence[Upsert], keys: list[str]) -> None:
        """Commit ``operations`` and an outbox entry naming ``keys``, in one transaction.

        EtagMismatchError when one of ``operations`` lost a race (read again, merge again).
        """
        async with self._lane:
            if not self._registered:
                await self._register()
            key = entry_key(self.replica, self._next)
            trace = current_traceparent() if self._traced else None
            entry_json = OutboxEntry(keys=keys, trace=trace).model_dump_json(exclude_none=True)
            entry = Upsert(key, entry_json.encode(), None)
            try:
                await self._repository.commit([*operations, entry])
            except EtagMismatchError:
                # An earlier commit reported as failed may have landed after all: its
                # entry number is taken, so the next commit uses the one after it.
                if key in await self._repository.load([key]):
                    self._next += 1
                raise
            except BaseException:
                # Outcome unknown (the sidecar died mid-call): the entry may have landed,
                # and a flusher may even have consumed and deleted it since. Reusing its
                # number would put the next entry behind the head, never flushed: find
                # the tail from the registry's head before the next commit.
                self._registered = False
                raise
            self._next += 1

    async def _register(self) -> None:
        for _ in range(100):
            item = (await self._repository.load([REGISTRY_KEY])).get(REGISTRY_KEY)
            registry = _parse(Registry, item)
            if self.replica in registry.heads:  # a fixed replica id, restarted
                self._next = await self._find_tail(registry.heads[self.replica])
                self._registered = True
                return
            registry.heads[self.replica] = self._next
            try:
                await self._repository.commit(
                    [Upsert(REGISTRY_KEY, registry.model_dump_json().encode(), item.etag if item else None)]
                )
            except EtagMismatchError:
                continue  # another replica registered, or a flusher moved a head
            self._registered = True
            return
        raise EtagMismatchError("the outbox registry kept changing; will try again")

    async def _find_tail(self, head: int) -> int:
        """The first free entry number at or after ``head`` (entries are contiguous)."""
        n = head
        while True:
            window = [entry_key(self.replica, n + i) for i in range(64)]
            found = await self._repository.load(window)
            for key in window:
                if key not in found:
                    return n
                n += 1

    async def deregister(self) -> bool:
        """At a clean stop: leave the registry if every entry was flushed. True if left."""
        for _ in range(20):
            item = (await self._repository.load([REGISTRY_KEY])).get(REGISTRY_KEY)
            registry = _parse(Registry, item)
            if item is None or registry.heads.get(self.replica) != self._next:
                return False  # not registered, or entries left: the other replicas flush them
            del registry.heads[self.replica]
            try:
                await self._repository.commit([Upsert(REGISTRY_KEY, registry.model_dump_json().encode(), item.etag)])
                self._registered = False
                return True
            except EtagMismatchError:
                continue
        return False


async def pending_keys(repository: StateRepository) -> set[str]:
    """Every state key some outbox entry still names (for tests and tools)."""
    registry = _parse(Registry, (await repository.load([REGISTRY_KEY])).get(REGISTRY_KEY))
    keys: set[str] = set()
    for replica, head in registry.heads.items():
        n = head
        while True:
            item = (await repository.load([entry_key(replica, n)])).get(entry_key(replica, n))
            if item is None:
                break
            keys.update(OutboxEntry.model_validate_json(item.value).keys)
            n += 1
    return keys


class _LeaseLost(Exception):
    """Another flusher holds the lease now: stop writing."""


class SnapshotFlusher:
    """Writes the snapshots the outboxes name; one replica at a time (a fenced lease)."""

    def __init__(
        self,
        repository: StateRepository,
        objects: ObjectStore,
        interval_s: float = 0.02,
        coalesce_s: float = 0.0,
        max_keys_per_round: int = 2000,
        lease_s: float = 5.0,
        outbox: OutboxWriter | None = None,
        keys_per_read: int = 250,
        entries_per_read: int = 64,
        clock: Callable[[], float] = time.monotonic,
        metrics: SubscriberMetrics | None = None,
        expiry: ExpiryMarkers | None = None,
        sweep_interval_s: float = 60.0,
        tracer: Any = None,
    ) -> None:
        self._repository = repository
        self._objects = objects
        self.expiry = expiry or ExpiryMarkers(repository, objects)
        self._sweep_interval_s = sweep_interval_s
        self._tracer = tracer  # an OpenTelemetry tracer (statestore.subscriber.tracing), None: no spans
        self.metrics = metrics or SubscriberMetrics()
        self._interval_s = interval_s
        self._coalesce_s = coalesce_s
        self._max_keys = max_keys_per_round
        self._lease_s = lease_s
        self._outbox = outbox or OutboxWriter(repository)
        self._keys_per_read = keys_per_read
        self._entries_per_read = entries_per_read
        self._clock = clock
        self.owner = uuid.uuid4().hex
        self._nonce: str | None = None  # the nonce we last wrote, while we hold the lease
        self._renewed_at = -math.inf
        self._seen: tuple[str, float] | None = None  # another holder's record: (etag, first seen)
        self._lease_lock = asyncio.Lock()
        self._rounds = 0
        self._sweep_error = ""
        self.written = 0
        # When run()'s loop last finished a round, a sweep or a back-off (the health check
        # watches it: statestore.subscriber.health).
        self.turned_at = clock()

    # -- the lease -------------------------------------------------------------------

    def holding(self) -> bool:
        """True while this flusher may write: half a lease period after its last renewal began."""
        return self.write_window() > 0

    def write_window(self) -> float:
        """Seconds this flusher may still write (<= 0: not the holder). Every snapshot
        write carries this as its deadline, so none can land after the window closes."""
        if self._nonce is None:
            return 0.0
        return self._renewed_at + self._lease_s / 2 - self._clock()

    async def _hold(self) -> bool:
        """Take the lease, or renew it when a quarter period has passed; True if held."""
        async with self._lease_lock:
            if self.holding() and self._clock() < self._renewed_at + self._lease_s / 4:
                return True
            started = self._clock()
            item = (await self._repository.load([LEASE_KEY])).get(LEASE_KEY)
            lease = _parse(Lease, item)
            ours = self._nonce is not None and lease.nonce == self._nonce
            if item is not None and lease.owner and not ours:
                self._nonce = None
                if self._seen is None or self._seen[0] != item.etag:
                    self._seen = (item.etag, started)  # start watching this record
                    return False
                if started - self._seen[1] < self._lease_s:
                    return False
                log.info("taking over the snapshot lease from %s (its record did not change for %.1f s)",
                         lease.owner, started - self._seen[1])  # fmt: skip
            nonce = uuid.uuid4().hex
            renewed = Lease(owner=self.owner, nonce=nonce, epoch=lease.epoch + (0 if ours else 1))
            try:
                await self._repository.commit(
                    [Upsert(LEASE_KEY, renewed.model_dump_json().encode(), item.etag if item else None)]
                )
            except EtagMismatchError:
                self._nonce = None
                return False
            if not ours:  # what we filed before may have been swept by another holder since
                self.expiry.forget()
            self._nonce, self._renewed_at, self._seen = nonce, started, None
            return True

    def _window(self) -> float:
        """``write_window()``, the deadline of an object-store write; _LeaseLost when closed."""
        window = self.write_window()
        if window <= 0:
            raise _LeaseLost
        return window

    async def _keep_lease(self) -> None:
        """Renew while a round works (a slow object store must not let the lease lapse)."""
        while True:
            await asyncio.sleep(self._lease_s / 8)
            with contextlib.suppress(Exception):  # a failed renewal only shortens what we may write
                await self._hold()

    async def release(self) -> None:
        """Give the lease up at shutdown so another replica takes over at once."""
        try:
            item = (await self._repository.load([LEASE_KEY])).get(LEASE_KEY)
            if item and self._nonce and _parse(Lease, item).nonce == self._nonce:
                epoch = _parse(Lease, item).epoch
                await self._repository.commit([Upsert(LEASE_KEY, Lease(epoch=epoch).model_dump_json().encode(), item.etag)])
        except Exception as exc:
            log.info("lease not released (another replica takes over after %g s): %s", self._lease_s, exc)
        self._nonce = None

    # -- rounds ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Flush until ``stop`` is set, then drain. A failing round backs off (doubling to
        5 s) and a failure is logged once until it changes or the flusher recovers."""
        backoff = self._interval_s
        last_error = ""
        next_sweep = self._clock() + self._sweep_interval_s  # the sidecar may still be starting
        while not stop.is_set():
            self.turned_at = self._clock()
            if self._clock() >= next_sweep:
                more = await self._sweep_logged()
                next_sweep = self._clock() + (0 if more else self._sweep_interval_s)
            try:
                if self._rounds % 50 == 0:
                    await self.migrate_legacy_slots()
                self._rounds += 1
                flushed = await self.flush_once()
            except Exception as exc:  # store or binding down: the entries stay, try again
                error = f"{type(exc).__name__}: {exc}"
                if error != last_error:
                    log.warning("snapshot flush failed, backing off and retrying (logged once): %s", error)
                    last_error = error
                backoff = min(5.0, max(backoff * 2, 0.1))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                continue
            if last_error:
                log.info("snapshot flush recovered")
                last_error, backoff = "", self._interval_s
            if pause := self.pause_after(flushed):
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
        for _ in range(10):  # what the last batches marked, before we go
            try:
                if not await self.flush_once():
                    break
            except Exception as exc:
                log.warning("final snapshot flush failed (the next start writes them): %s", exc)
                break
        await self.release()

    def pause_after(self, flushed: int) -> float:
        """Seconds to wait after a round that wrote ``flushed`` snapshots: none while
        behind (a full round), ``coalesce_s`` once caught up, the poll interval when idle."""
        if flushed >= self._max_keys:
            return 0.0
        return max(self._coalesce_s, self._interval_s) if flushed else self._interval_s

    async def _sweep_logged(self) -> bool:
        """``sweep_once``, a failure logged once until it changes (the markers stay)."""
        try:
            more = await self.sweep_once()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if error != self._sweep_error:
                log.warning("expiry sweep failed, trying again next interval (logged once): %s", error)
                self._sweep_error = error
            return False
        if self._sweep_error:
            log.info("expiry sweep recovered")
            self._sweep_error = ""
        return more

    async def sweep_once(self) -> bool:
        """Remove the snapshots of states whose expiry markers are due and that the store
        expired (statestore.subscriber.expiry); lease holder only. True when more is due already."""
        if not await self._hold():
            return False
        self.expiry.observe_cursor((await self._repository.load([CURSOR_KEY])).get(CURSOR_KEY))
        result = Sweep()
        renewing = asyncio.create_task(self._keep_lease())
        try:
            await self.expiry.sweep(self._window, result)
            if result.cursor is not None or result.expired:
                await self._fenced_commit([CURSOR_KEY], lambda stored: self._cursor_write(stored, result))
        except _LeaseLost:
            await self._lost(result.expired)  # the new holder rewrites any that exist again
            return False
        finally:
            renewing.cancel()
        if result.cursor is not None:
            self.expiry.swept(result.cursor)
        if result.expired:
            self.metrics.expired_snapshots_removed.inc(len(result.expired))
            log.info("expiry sweep: removed the snapshots of %d expired states", len(result.expired))
        return result.more

    def _cursor_write(self, stored: dict[str, StoredItem], result: Sweep) -> list[Upsert | Delete]:
        if result.cursor is None:
            return []  # only the fence: we held the lease while deleting
        item = stored.get(CURSOR_KEY)
        if item is None or self.expiry.cursor_next(item) >= result.cursor.next:
            raise _LeaseLost  # another holder swept meanwhile
        return [Upsert(CURSOR_KEY, result.cursor.model_dump_json().encode(), item.etag)]

    async def flush_once(self) -> int:
        """One round: read the outboxes, write the named snapshots, move the heads.
        Returns the number of states written (0 when idle or not the lease holder)."""
        stored = await self._repository.load([REGISTRY_KEY, CURSOR_KEY])
        registry = _parse(Registry, stored.get(REGISTRY_KEY))
        self.expiry.observe_cursor(stored.get(CURSOR_KEY))
        heads = await self._repository.load([entry_key(r, h) for r, h in registry.heads.items()])
        if not heads:
            self.metrics.snapshot_backlog.set(0)
            return 0
        if not await self._hold():
            self.metrics.snapshot_backlog.set(0)  # the lease holder reports it
            return 0
        started = time.monotonic()
        consumed, keys, traces = await self._collect(registry, heads)
        self.metrics.snapshot_backlog.set(len(keys))
        with self._snapshot_span(consumed, keys, traces) as span:
            renewing = asyncio.create_task(self._keep_lease())
            begun: list[str] = []  # keys whose snapshots may have been written
            try:
                await self._write_pieces(keys, begun)
                await self._advance(consumed)
            except _LeaseLost:
                if span is not None:
                    span.set_attribute("statestore.lease_lost", True)
                await self._lost(keys if begun else [])
                return 0
            except Exception:
                # A round that fails once its window has closed (the process was stopped,
                # say) may have a delete landing after the new holder's write (deletes are
                # not conditional): as when deposed, its states are named again.
                if not self.holding() and begun:
                    await self._lost(keys)
                raise
            finally:
                renewing.cancel()
        self.written += len(keys)
        self.metrics.snapshots_written.inc(len(keys))
        self.metrics.snapshot_flush.observe(time.monotonic() - started)
        return len(keys)

    def _snapshot_span(
        self, consumed: dict[str, tuple[int, int]], keys: list[str], traces: list[str]
    ) -> contextlib.AbstractContextManager[Any]:
        """One span per round, linked to (or, with one, continuing) the apply spans that
        committed its outbox entries."""
        if self._tracer is None:
            return contextlib.nullcontext()
        attributes = {
            "statestore.states": len(keys),
            "statestore.entries": sum(new - head for head, new in consumed.values()),
            "statestore.state_keys": keys[:MAX_KEYS_SHOWN],
        }
        return linked_span(self._tracer, "statestore.snapshot", traces, attributes=attributes)

    async def migrate_legacy_slots(self) -> int:
        """Move the marks of old shared slot documents into this replica's outbox (each
        slot is deleted, with its ETag, in the same transaction as its last entry).
        Returns the number of keys moved."""
        moved = 0
        for key, item in (await self._repository.load(LEGACY_SLOTS)).items():
            try:
                marked = list(json.loads(item.value).get("dirty", {}))
            except (ValueError, AttributeError):
                log.error("outbox slot %s is not an outbox slot; left as it is", key)
                continue
            pieces = list(cut(marked, len, 1 << 20, 250)) or [[]]
            try:
                for piece in pieces[:-1]:
                    await self._outbox.commit([], piece)
                await self._outbox.commit([Delete(key, item.etag)], pieces[-1])
            except EtagMismatchError:
                continue  # an old replica marked more meanwhile: the next pass takes it
            moved += len(marked)
        if moved:
            log.info("moved %d snapshot marks from the old shared outbox slots", moved)
        return moved

    async def _collect(
        self, registry: Registry, heads: dict[str, StoredItem]
    ) -> tuple[dict[str, tuple[int, int]], list[str], list[str]]:
        """Entries to flush this round, from each head on: replica -> (head, new head),
        the distinct keys they name (at most max_keys_per_round, unless one entry has
        more), and the trace contexts of the apply spans that wrote them."""
        ready = {r: h for r, h in registry.heads.items() if entry_key(r, h) in heads}
        after = await self._repository.load(
            [entry_key(r, h + i) for r, h in ready.items() for i in range(1, self._entries_per_read)]
        )
        found = {**heads, **after}
        consumed: dict[str, tuple[int, int]] = {}
        keys: dict[str, None] = {}
        traces: list[str] = []
        for replica, head in ready.items():
            n = head
            while (item := found.get(entry_key(replica, n))) is not None and (n == head or len(keys) < self._max_keys):
                entry = OutboxEntry.model_validate_json(item.value)
                keys.update(dict.fromkeys(entry.keys))
                if entry.trace:
                    traces.append(entry.trace)
                n += 1
            consumed[replica] = (head, n)
            if len(keys) >= self._max_keys:
                break
        return consumed, list(keys), traces

    async def _write_pieces(self, keys: list[str], begun: list[str]) -> None:
        """Write the snapshots of ``keys``, a piece (``keys_per_read``) at a time: one bulk
        read, then the piece's puts at once (``put_many``, conditional). The next piece's
        documents are read while the previous piece is written; a piece's puts start after
        the previous piece's finished, and a failed round ends only once every write it
        started has finished (none lands after the retry's newer one)."""
        writing: asyncio.Task | None = None
        try:
            for piece in cut(keys, len, 1 << 20, self._keys_per_read):
                prepared = await self._prepare_piece(piece)
                if writing is not None:
                    await writing
                begun.extend(piece)
                writing = asyncio.create_task(self._put_piece(prepared))
            if writing is not None:
                await writing
        finally:
            if writing is not None:
                if not writing.done():
                    await asyncio.wait([writing])
                if not writing.cancelled():
                    writing.exception()  # retrieved: the round fails with the first failure

    async def _prepare_piece(self, keys: list[str]) -> dict[str, tuple[str, bytes, int | None]]:
        """Read the documents of ``keys`` now; delete the snapshots of deleted states; the
        puts to make: state key -> (object key, snapshot, ttl_s)."""
        if not self.holding():
            raise _LeaseLost
        documents = await self._repository.load(keys)
        puts: dict[str, tuple[str, bytes, int | None]] = {}
        for key in keys:
            item = documents.get(key)
            if item is None:
                continue  # named but absent: nothing to snapshot
            try:
                state, ttl_s = snapshot_of(key, item.value)
            except StateDecodeError as exc:  # not ours to fix here; never block the others
                log.error("no snapshot for %s: %s", key, exc)
                continue
            name = object_key(*parse_state_key(key))
            if state is None:  # deleted: its snapshot goes too
                await self._objects.delete(name, timeout=self._window())
            else:
                puts[key] = (name, _snapshot(state), ttl_s)
        return puts

    async def _put_piece(self, puts: dict[str, tuple[str, bytes, int | None]], rereads: int = 3) -> None:
        """The conditional puts of one piece. A snapshot another writer changed since this
        flusher last wrote it (refused) is written again from its document read again, up
        to ``rereads`` times. A write cut at its deadline never lands: the round fails like
        any store error, its entries stay, and the next round writes those states again."""
        while puts:
            items = [(name, data) for name, data, _ in puts.values()]
            refused = set(await self._objects.put_many(items, self._window()))
            for key, (name, _, ttl_s) in puts.items():
                if ttl_s is not None and name not in refused:  # the sweep removes it once expired
                    await self.expiry.mark(key, ttl_s, timeout=self._window())
            changed = [key for key, (name, _, _) in puts.items() if name in refused]
            if changed and rereads == 0:
                raise ObjectChangedError(f"{len(changed)} snapshots kept changing under this flusher (first: {changed[0]})")
            puts, rereads = (await self._prepare_piece(changed) if changed else {}), rereads - 1

    async def _advance(self, consumed: dict[str, tuple[int, int]]) -> None:
        """Move the heads past the flushed entries and delete them, fenced by the lease."""
        deletes = [Delete(entry_key(r, n)) for r, (head, new) in consumed.items() for n in range(head, new)]

        def heads_moved(stored: dict[str, StoredItem]) -> list[Upsert | Delete]:
            registry_item = stored.get(REGISTRY_KEY)
            registry = _parse(Registry, registry_item)
            for replica, (head, new) in consumed.items():
                if registry.heads.get(replica) != head:
                    raise _LeaseLost  # another flusher moved this head
                registry.heads[replica] = new
            etag = registry_item.etag if registry_item else None
            return [Upsert(REGISTRY_KEY, registry.model_dump_json().encode(), etag), *deletes]

        await self._fenced_commit([REGISTRY_KEY], heads_moved)

    async def _fenced_commit(
        self, keys: list[str], operations: Callable[[dict[str, StoredItem]], list[Upsert | Delete]]
    ) -> None:
        """Commit ``operations(stored keys)`` with a rewrite of the lease record, in one
        transaction that fails if the lease is no longer ours (_LeaseLost)."""
        for _ in range(20):
            started = self._clock()
            stored = await self._repository.load([*keys, LEASE_KEY])
            lease_item = stored.get(LEASE_KEY)
            lease = _parse(Lease, lease_item)
            if lease_item is None or lease.nonce != self._nonce:
                raise _LeaseLost
            writes = operations(stored)
            nonce = uuid.uuid4().hex
            fence = Lease(owner=self.owner, nonce=nonce, epoch=lease.epoch)
            try:
                await self._repository.commit([*writes, Upsert(LEASE_KEY, fence.model_dump_json().encode(), lease_item.etag)])
            except EtagMismatchError:
                continue  # a replica registered meanwhile, or we lost the lease: read again
            self._nonce, self._renewed_at = nonce, started
            return
        raise EtagMismatchError("the outbox registry kept changing during a flush; will try again")

    async def _lost(self, keys: list[str]) -> None:
        """Deposed mid-round: our puts may land after the new holder's, so name those
        states again; the new holder rewrites them from the current documents."""
        log.warning("lost the snapshot lease during a round; %d states marked again for the new holder", len(keys))
        self._nonce = None
        for piece in cut(keys, len, 1 << 20, 250):
            await self._outbox.commit([], piece)
