"""Expiry markers, and the sweep that removes the snapshots of expired states.

The state store expires a state by itself (``ttlInSeconds``) and tells nobody, so the
snapshot flusher leaves a marker whenever it writes the snapshot of a state that has a
TTL: a tiny object ``statestore-expiry/{bucket}/{state key}`` in the object store, where
``bucket`` (unix seconds, 12 digits) starts the time bucket in which the state is due to
expire (``flush time + ttl_s``; a bucket is ``width`` seconds). Markers are enumerated by
due time, one bucket folder at a time with the binding's ``list``: no shared document, and
a sweep never reads markers that are not due. The flusher files a state at most once per
bucket (it remembers what it filed), so a state rewritten often costs one marker a bucket.

The sweep runs in the snapshot lease holder, between flush rounds (never during one). For
each marker of a due bucket it reads the state from the state store:

- gone (expired): the snapshot goes, then the marker;
- there, with no TTL now (rewritten without one) or not existing (deleted: the flusher
  already removed its snapshot): only the marker goes, the snapshot stays;
- there, with a TTL: if this holder filed a later marker for it (rewritten since), this
  marker goes; otherwise the store has not expired it yet (its clock, or a TTL restarted
  by a later change), and the marker moves to a later bucket: the next one if it is the
  state's latest marker, else ``now + ttl_s`` (the latest the store can expire it).

The cursor ``statestore-expiry/cursor`` (a state-store key, written only by the sweep,
fenced by the lease) holds the first bucket not yet swept and the bucket width, fixed
when the first marker is filed. A marker is never filed below the cursor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel

from statestore.core.cutting import cut
from statestore.core.document import decode_document
from statestore.core.errors import StateDecodeError
from statestore.core.paths import object_key, parse_state_key
from statestore.subscriber.ports import EtagMismatchError, ObjectStore, StateRepository, StoredItem, Upsert, finish_all

__all__ = [
    "PREFIX",
    "CURSOR_KEY",
    "Cursor",
    "ExpiryMarkers",
    "Sweep",
    "bucket_folder",
    "marker_key",
    "parse_marker",
]

log = logging.getLogger("statestore.subscriber")

PREFIX = "statestore-expiry"
CURSOR_KEY = f"{PREFIX}/cursor"


def bucket_folder(bucket: int) -> str:
    """The object-store folder of one bucket's markers (ends with '/')."""
    return f"{PREFIX}/{bucket:012d}/"


def marker_key(bucket: int, state_key: str) -> str:
    """The marker of ``state_key`` in ``bucket``."""
    return bucket_folder(bucket) + state_key


def parse_marker(key: str) -> tuple[int, str] | None:
    """(bucket, state key) of a marker key; None if it is not one."""
    parts = key.split("/", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1].isdigit():
        return None
    try:
        object_key(*parse_state_key(parts[2]))
    except ValueError:
        return None
    return int(parts[1]), parts[2]


def _snapshot_key(state_key: str) -> str:
    return object_key(*parse_state_key(state_key))


def _folders(keys: Iterable[str], stop: str) -> set[str]:
    """The folders holding ``keys``, up to and including ``stop`` (no trailing '/')."""
    folders: set[str] = set()
    for key in keys:
        folder = key.rsplit("/", 1)[0]
        while folder.startswith(stop) and folder not in folders:
            folders.add(folder)
            folder = folder.rsplit("/", 1)[0]
    return folders


class Cursor(BaseModel):
    """The first bucket not yet swept (its start, unix seconds) and the bucket width."""

    next: int
    width: int

    def bucket_of(self, at: float) -> int:
        return int(at // self.width) * self.width


@dataclass
class Sweep:
    """What one sweep did."""

    markers: int = 0  # markers handled (removed or moved)
    expired: list[str] = field(default_factory=list)  # state keys whose snapshot was removed
    cursor: Cursor | None = None  # the cursor to store, when it moved
    more: bool = False  # stopped at its budget: more is due


class ExpiryMarkers:
    """Files markers for the flusher and sweeps due buckets (one lease holder at a time).

    ``window`` (given to ``sweep``) returns how long this replica may still write, the
    deadline of each object-store call (a call cut at it never lands), and raises when
    it may no longer write: as the flusher's snapshot writes, no sweep delete can land
    after a successor started writing.
    """

    def __init__(
        self,
        repository: StateRepository,
        objects: ObjectStore,
        bucket_s: int = 60,
        wall: Callable[[], float] = time.time,
        remembered: int = 100_000,
        parallel: int = 32,
    ) -> None:
        self._repository = repository
        self._objects = objects
        self._bucket_s = bucket_s
        self._wall = wall
        self._remembered = remembered
        self._parallel = asyncio.Semaphore(parallel)
        self._cursor: Cursor | None = None
        self._cursor_lock = asyncio.Lock()
        self._filed: dict[str, int] = {}  # state key -> bucket of the latest marker this holder filed
        self._width_warned = False
        self.filed = 0
        self.removed = 0

    # -- the flusher's side ----------------------------------------------------------

    def observe_cursor(self, item: StoredItem | None) -> None:
        """The cursor as just read from the state store (None: none yet)."""
        self._cursor = Cursor.model_validate_json(item.value) if item else None
        if self._cursor and self._cursor.width != self._bucket_s and not self._width_warned:
            log.warning(
                "expiry buckets stay %d s wide (fixed when the first marker was filed); "
                "STATESTORE_EXPIRY_BUCKET_S=%d is not used", self._cursor.width, self._bucket_s,
            )  # fmt: skip
            self._width_warned = True

    def forget(self) -> None:
        """The lease changed hands: what this replica filed before may have been swept."""
        self._filed.clear()

    async def mark(self, state_key: str, ttl_s: int, timeout: float | None = None) -> None:
        """File ``state_key`` under the bucket in which it is due (its snapshot was just
        written); ``timeout``: the put's deadline."""
        cursor = self._cursor or await self._create_cursor()
        due = self._wall() + ttl_s
        bucket = max(cursor.bucket_of(due), cursor.next)
        if self._filed.get(state_key) == bucket:
            return  # filed there already (a state rewritten within one bucket)
        await self._file(bucket, state_key, due, timeout)

    async def _file(self, bucket: int, state_key: str, due: float, timeout: float | None) -> None:
        body = json.dumps({"state": state_key, "due": round(due, 3)}).encode()
        await self._objects.put(marker_key(bucket, state_key), body, timeout=timeout)
        self._filed.pop(state_key, None)
        self._filed[state_key] = bucket
        if len(self._filed) > self._remembered:  # the oldest go; a sweep then moves, not drops
            del self._filed[next(iter(self._filed))]
        self.filed += 1

    async def _create_cursor(self) -> Cursor:
        async with self._cursor_lock:
            while self._cursor is None:
                cursor = Cursor(next=0, width=self._bucket_s)
                cursor = cursor.model_copy(update={"next": cursor.bucket_of(self._wall())})
                try:
                    await self._repository.commit([Upsert(CURSOR_KEY, cursor.model_dump_json().encode(), None)])
                    self._cursor = cursor
                except EtagMismatchError:  # another replica created it: use that one
                    self.observe_cursor((await self._repository.load([CURSOR_KEY])).get(CURSOR_KEY))
            return self._cursor

    # -- the sweep -------------------------------------------------------------------

    async def sweep(self, window: Callable[[], float], result: Sweep, max_markers: int = 1000, max_buckets: int = 1000) -> None:
        """Handle the markers of due buckets, from the cursor on, into ``result``; the
        caller stores ``result.cursor`` (fenced). Buckets are due once they have ended."""
        cursor = self._cursor
        if cursor is None:
            return  # no marker was ever filed
        now = self._wall()
        bucket, buckets = cursor.next, 0
        while bucket + cursor.width <= now:
            folder = bucket_folder(bucket)
            keys = sorted(await self._objects.list(folder))
            todo = keys[: max_markers - result.markers]
            await self._handle(bucket, todo, now, window, result)
            if len(todo) < len(keys):
                result.more = True
                break
            if keys:  # local files: the bucket's emptied folders go too
                await self._objects.remove_folders(_folders(keys, folder.rstrip("/")))
            bucket += cursor.width
            buckets += 1
            if result.markers >= max_markers or buckets >= max_buckets:
                result.more = bucket + cursor.width <= now
                break
        if bucket != cursor.next:
            result.cursor = cursor.model_copy(update={"next": bucket})

    @staticmethod
    def cursor_next(item: StoredItem) -> int:
        """The first unswept bucket of a stored cursor."""
        return Cursor.model_validate_json(item.value).next

    def swept(self, cursor: Cursor) -> None:
        """The sweep's cursor was stored."""
        self._cursor = cursor

    async def _handle(self, bucket: int, keys: list[str], now: float, window: Callable[[], float], result: Sweep) -> None:
        markers: list[tuple[str, str]] = []
        for key in keys:
            parsed = parse_marker(key)
            if parsed is None:
                log.error("%s is not an expiry marker; removed", key)
                await self._objects.delete(key, timeout=window())
                continue
            markers.append((key, parsed[1]))
        for piece in cut(markers, lambda m: len(m[1]), 1 << 20, 250):
            documents = await self._repository.load([state for _, state in piece])
            # Every one finishes before a failure is raised: what was deleted is in ``result``.
            await finish_all(self._one(bucket, key, state, documents.get(state), now, window, result) for key, state in piece)

    async def _one(
        self, bucket: int, key: str, state: str, item: StoredItem | None, now: float, window: Callable[[], float], result: Sweep
    ) -> None:
        async with self._parallel:
            if item is None:  # expired (or never there): its snapshot goes
                snapshot = _snapshot_key(state)
                await self._objects.delete(snapshot, timeout=window())
                result.expired.append(state)
                self.removed += 1
                await self._objects.remove_folders([snapshot.rsplit("/", 1)[0]])
            else:
                try:
                    document = decode_document(state, item.value)
                except StateDecodeError as exc:  # not ours to fix here; the marker goes
                    log.error("expiry marker %s dropped: %s", key, exc)
                    document = None
                if document is not None and document.exists() and document.ttl_s is not None:
                    await self._move(bucket, state, document.ttl_s, now, window())
            await self._objects.delete(key, timeout=window())
            if self._filed.get(state) == bucket:
                del self._filed[state]
            result.markers += 1

    async def _move(self, bucket: int, state: str, ttl_s: int, now: float, timeout: float) -> None:
        """The state still exists with a TTL: keep a marker where it will be found."""
        cursor = self._cursor
        assert cursor is not None
        latest = self._filed.get(state)
        if latest is not None and latest != bucket:
            return  # a later marker names it (filed when it was rewritten)
        soon = cursor.bucket_of(now) + cursor.width
        # Our latest marker: the store has not expired it yet, look again soon. Unknown (a
        # new lease holder): at the latest the store expires it ttl_s from now.
        target = soon if latest == bucket else max(soon, cursor.bucket_of(now + ttl_s))
        await self._file(target, state, now + ttl_s, timeout)
