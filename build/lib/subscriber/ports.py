"""What the subscriber needs from storage, as small ports with in-memory adapters.

The Dapr adapters (subscriber.dapr_ports) and the in-memory ones here pass the same
contract tests (tests/contract), so the applier can be tested without a sidecar.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Protocol

from statestore.sidecar import EtagMismatchError, StoredItem, Upsert

__all__ = [
    "StateRepository",
    "ObjectStore",
    "InMemoryStateRepository",
    "InMemoryObjectStore",
    "EtagMismatchError",
    "StoredItem",
    "Upsert",
]


class StateRepository(Protocol):
    """Documents by key, written atomically with optimistic concurrency."""

    async def load(self, keys: Iterable[str]) -> dict[str, StoredItem]:
        """The stored value and ETag of each key that exists."""

    async def commit(self, upserts: Sequence[Upsert]) -> None:
        """Write all or nothing; EtagMismatchError when any key changed since it was read
        (or, for ``etag=None``, already exists)."""


class ObjectStore(Protocol):
    """Files by key (the state snapshots)."""

    async def put(self, key: str, data: bytes) -> None:
        """Create or overwrite the object at ``key``."""

    async def get(self, key: str) -> bytes | None:
        """The object at ``key``, or None."""

    async def delete(self, key: str) -> None:
        """Remove the object at ``key``; nothing happens when there is none."""


class InMemoryStateRepository:
    """A StateRepository in a dict, with the same ETag rules as the sqlite store."""

    def __init__(self) -> None:
        self.items: dict[str, StoredItem] = {}
        self._etags = itertools.count(1)

    async def load(self, keys: Iterable[str]) -> dict[str, StoredItem]:
        return {key: self.items[key] for key in keys if key in self.items}

    async def commit(self, upserts: Sequence[Upsert]) -> None:
        for upsert in upserts:
            current = self.items.get(upsert.key)
            if (current.etag if current else None) != upsert.etag:
                raise EtagMismatchError(f"etag mismatch for {upsert.key!r}")
        for upsert in upserts:
            self.items[upsert.key] = StoredItem(upsert.value, str(next(self._etags)))


class InMemoryObjectStore:
    """An ObjectStore in a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put(self, key: str, data: bytes) -> None:
        self.objects[key] = data

    async def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)
