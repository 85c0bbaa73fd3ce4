"""What the subscriber needs from storage, as small ports with in-memory adapters.

The Dapr adapters (statestore.subscriber.dapr_ports) and the in-memory ones here pass the same
contract tests (tests/contract), so the applier can be tested without a sidecar.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Iterable, Sequence
from typing import Protocol

from statestore.core.events import AnyEvent
from statestore.core.sidecar import Delete, EtagMismatchError, StoredItem, Upsert

__all__ = [
    "finish_all",
    "StateRepository",
    "ObjectStore",
    "InMemoryStateRepository",
    "InMemoryObjectStore",
    "Parking",
    "InMemoryParking",
    "EtagMismatchError",
    "StoredItem",
    "Upsert",
    "Delete",
]


class StateRepository(Protocol):
    """Documents by key, written atomically with optimistic concurrency."""

    async def load(self, keys: Iterable[str]) -> dict[str, StoredItem]:
        """The stored value and ETag of each key that exists."""

    async def commit(self, upserts: Sequence[Upsert | Delete]) -> None:
        """Write all or nothing; EtagMismatchError when any key changed since it was read
        (or, for an Upsert with ``etag=None``, already exists)."""


class ObjectStore(Protocol):
    """Files by key (the state snapshots)."""

    async def put(self, key: str, data: bytes, timeout: float | None = None) -> None:
        """Create or overwrite the object at ``key``; with ``timeout``, the write is
        cancelled (never lands) if it has not finished by then."""

    async def get(self, key: str) -> bytes | None:
        """The object at ``key``, or None."""

    async def delete(self, key: str, timeout: float | None = None) -> None:
        """Remove the object at ``key``; nothing happens when there is none (``timeout``: as put)."""

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


class InMemoryObjectStore:
    """An ObjectStore in a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put(self, key: str, data: bytes, timeout: float | None = None) -> None:
        self.objects[key] = data

    async def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    async def delete(self, key: str, timeout: float | None = None) -> None:
        self.objects.pop(key, None)

    async def list(self, prefix: str) -> list[str]:
        return sorted(key for key in self.objects if key.startswith(prefix))

    async def remove_folders(self, folders: Iterable[str]) -> None:
        pass  # keys, no folders


async def finish_all(writes: Iterable[Awaitable[None]]) -> None:
    """Run ``writes`` at once; every one finishes before the first failure is raised.
    (asyncio.gather would raise at once and leave the others running: a write of a
    failed round could then land after its retry's newer one.)"""
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    if failed := next((o for o in outcomes if isinstance(o, BaseException)), None):
        raise failed
