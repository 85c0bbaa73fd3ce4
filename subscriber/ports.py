"""What the subscriber needs from storage, as small ports with in-memory adapters.

The Dapr adapters (statestore.subscriber.dapr_ports) and the in-memory ones here pass the same
contract tests (tests/contract), so the applier can be tested without a sidecar.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Protocol, TypeVar

from statestore.core.events import AnyEvent
from statestore.core.sidecar import Delete, EtagMismatchError, StoredItem, Upsert

__all__ = [
    "finish_all",
    "in_lanes",
    "put_each",
    "StateRepository",
    "ObjectStore",
    "ObjectChangedError",
    "ObjectStoreError",
    "RememberedVersions",
    "InMemoryStateRepository",
    "InMemoryObjectStore",
    "Parking",
    "InMemoryParking",
    "EtagMismatchError",
    "StoredItem",
    "Upsert",
    "Delete",
]


T = TypeVar("T")


class StateRepository(Protocol):
    """Documents by key, written atomically with optimistic concurrency."""

    async def load(self, keys: Iterable[str]) -> dict[str, StoredItem]:
        """The stored value and ETag of each key that exists."""

    async def commit(self, upserts: Sequence[Upsert | Delete]) -> None:
        """Write all or nothing; EtagMismatchError when any key changed since it was read
        (or, for an Upsert with ``etag=None``, already exists)."""


class ObjectStoreError(Exception):
    """The object store refused or failed an operation; the message says what to do."""


class ObjectChangedError(ObjectStoreError):
    """A conditional put found the object changed since this store last wrote or saw it:
    another writer (a snapshot lease holder before or after this one) wrote it since.

    The store now knows the version that is there: read what the object should hold
    again, after this error, and put it again (conditionally)."""


class ObjectStore(Protocol):
    """Files by key (the state snapshots, the expiry markers)."""

    async def put(self, key: str, data: bytes, timeout: float | None = None, conditional: bool = False) -> None:
        """Create or overwrite the object at ``key``.

        ``timeout``: the write never lands if it has not finished by then (it is refused
        or cancelled: TimeoutError or ObjectStoreError). ``conditional``: write only if
        the object is still the version this store last wrote or saw there (absent, if it
        saw none); else ObjectChangedError, and nothing is written. A writer that read its
        source after its last conditional put of a key can never overwrite a newer
        object written from a later source by another writer (the snapshot fence)."""

    async def put_many(self, items: Sequence[tuple[str, bytes]], timeout: float | None = None) -> list[str]:
        """Conditional puts of many objects (a flush round's snapshots): each as
        ``put(key, data, timeout, conditional=True)``, as many at once as the store does
        well. Returns the keys refused because another writer changed them (each an
        ObjectChangedError); raises the first other failure, once every write it started
        has finished. An object that still holds exactly ``data`` as this store wrote it
        may be left untouched."""

    async def get(self, key: str) -> bytes | None:
        """The object at ``key``, or None."""

    async def delete(self, key: str, timeout: float | None = None) -> None:
        """Remove the object at ``key``; nothing happens when there is none (``timeout``: as put;
        unconditional)."""

    async def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a folder, ending with '/'); [] when there is none."""

    async def remove_folders(self, folders: Iterable[str]) -> None:
        """Remove these folders where they are empty, deepest first. Only a store with real
        folders (local files) has any: elsewhere this does nothing."""


class Parking(Protocol):
    """Where events stamped too far ahead wait, durably, without blocking the others."""

    async def park(self, events: Sequence[AnyEvent]) -> None:
        """Keep ``events`` to be delivered again later; raise if they could not be kept."""


class InMemoryParking:
    """A Parking in a list."""

    def __init__(self) -> None:
        self.events: list[AnyEvent] = []

    async def park(self, events: Sequence[AnyEvent]) -> None:
        self.events.extend(events)


class InMemoryStateRepository:
    """A StateRepository in a dict, with the same ETag rules as the sqlite store."""

    def __init__(self) -> None:
        self.items: dict[str, StoredItem] = {}
        self._etags = itertools.count(1)

    async def load(self, keys: Iterable[str]) -> dict[str, StoredItem]:
        return {key: self.items[key] for key in keys if key in self.items}

    async def commit(self, upserts: Sequence[Upsert | Delete]) -> None:
        for op in upserts:
            current = self.items.get(op.key)
            if isinstance(op, Delete):
                if op.etag is not None and (current is None or current.etag != op.etag):
                    raise EtagMismatchError(f"etag mismatch for {op.key!r}")
            elif (current.etag if current else None) != op.etag and not (op.etag is None and op.overwrite):
                raise EtagMismatchError(f"etag mismatch for {op.key!r}")
        for op in upserts:
            if isinstance(op, Delete):
                self.items.pop(op.key, None)
            else:
                self.items[op.key] = StoredItem(op.value, str(next(self._etags)))


class RememberedVersions:
    """The version of each object a store last wrote or saw (for conditional puts),
    at most ``limit`` of them: the oldest are forgotten, and a forgotten object counts
    as never seen (its next conditional put expects it absent, fails once if it is not,
    and then knows its version)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._versions: dict[str, Hashable] = {}
        self._lock = threading.Lock()  # a store may write from a worker thread too

    def get(self, key: str) -> Hashable | None:
        return self._versions.get(key)

    def saw(self, key: str, version: Hashable | None) -> None:
        """``key`` holds ``version`` now (None: absent)."""
        with self._lock:
            self._versions.pop(key, None)
            if version is None:
                return
            self._versions[key] = version
            if len(self._versions) > self._limit:
                del self._versions[next(iter(self._versions))]

    def __len__(self) -> int:
        return len(self._versions)


class InMemoryObjectStore:
    """An ObjectStore in a dict. ``writer()`` gives another writer over the same objects
    (its own memory of versions), as a second replica has over the same bucket."""

    def __init__(self, objects: dict[str, bytes] | None = None, versions: dict[str, object] | None = None) -> None:
        self.objects: dict[str, bytes] = {} if objects is None else objects
        self._versions: dict[str, object] = {} if versions is None else versions  # shared, as the store's ETags
        self._seen = RememberedVersions()

    def writer(self) -> InMemoryObjectStore:
        return InMemoryObjectStore(self.objects, self._versions)

    async def put(self, key: str, data: bytes, timeout: float | None = None, conditional: bool = False) -> None:
        _check_window(timeout, key)
        current = self._versions.get(key) if key in self.objects else None
        if conditional and current != self._seen.get(key):
            self._seen.saw(key, current)
            raise ObjectChangedError(f"{key} changed since this writer last saw it")
        version = object()  # unique, as an ETag
        self.objects[key] = data
        self._versions[key] = version
        self._seen.saw(key, version)

    async def put_many(self, items: Sequence[tuple[str, bytes]], timeout: float | None = None) -> list[str]:
        return await put_each(self, items, timeout, lanes=1)

    async def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    async def delete(self, key: str, timeout: float | None = None) -> None:
        _check_window(timeout, key)
        self.objects.pop(key, None)
        self._versions.pop(key, None)
        self._seen.saw(key, None)

    async def list(self, prefix: str) -> list[str]:
        return sorted(key for key in self.objects if key.startswith(prefix))

    async def remove_folders(self, folders: Iterable[str]) -> None:
        pass  # keys, no folders


async def put_each(store: ObjectStore, items: Sequence[tuple[str, bytes]], timeout: float | None, lanes: int) -> list[str]:
    """``put_many`` as ``lanes`` concurrent runs of conditional ``put``s."""
    refused: list[str] = []

    async def put(item: tuple[str, bytes]) -> None:
        try:
            await store.put(item[0], item[1], timeout, conditional=True)
        except ObjectChangedError:
            refused.append(item[0])

    await in_lanes(items, put, lanes)
    return refused


def _check_window(timeout: float | None, key: str) -> None:
    if timeout is not None and timeout <= 0:
        raise TimeoutError(f"the write window closed before {key} was written (not written)")


async def in_lanes(items: Iterable[T], work: Callable[[T], Awaitable[None]], lanes: int) -> None:
    """``work`` on every item, at most ``lanes`` at once: one task per lane, not per item.
    After a failure no lane starts another item, and every item started finishes before
    the first failure is raised (a write of a failed round must not land after its retry)."""
    queue = iter(items)
    failures: list[BaseException] = []

    async def lane() -> None:
        for item in queue:
            try:
                await work(item)
            except BaseException as exc:  # noqa: BLE001 - raised below, after the others finished
                failures.append(exc)
            if failures:
                return

    await asyncio.gather(*(lane() for _ in range(lanes)))
    if failures:
        raise failures[0]


async def finish_all(writes: Iterable[Awaitable[None]]) -> None:
    """Run ``writes`` at once; every one finishes before the first failure is raised.
    (asyncio.gather would raise at once and leave the others running: a write of a
    failed round could then land after its retry's newer one.)"""
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    if failed := next((o for o in outcomes if isinstance(o, BaseException)), None):
        raise failed
