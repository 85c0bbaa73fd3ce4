"""An in-memory state store for application tests: no Dapr, no sidecar, no broker.

    from statestore.testing import memory_state_store

    with memory_state_store() as store:
        await StateStore.save_state("status", "done", "wf-1", StateType.WORKFLOWS)
        await StateStore.sync("wf-1", StateType.WORKFLOWS)
        assert await StateStore.get_state("wf-1", StateType.WORKFLOWS) == {"status": "done"}

or, with pytest (the plugin is registered by installing statestore), the fixture
``memory_state_store``. Only the sidecar is replaced: ``StateStore`` and ``SecretStore``
run their real code (validation, sequence numbers, the publish pipeline, ``flush`` and
``sync``), and what they publish is decoded and applied by the subscriber's real applier
and snapshot flusher (statestore.core.document's merge) over in-memory ports, so the memory
store cannot drift from the real one: delete, ordering, TTL and listing behave alike.
Events are applied as they are published, so ``sync`` returns at once.

Expiry uses a clock you can move: ``store.advance(seconds)``; ``await store.sweep_expired()``
then runs the subscriber's expiry sweep (the snapshots of expired states go).
"""

from __future__ import annotations

from statestore.core.index import ENABLED_KEY

import base64
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from statestore.publisher.runtime import Runtime, set_runtime
from statestore.core.events import decode_events
from statestore.core.sidecar import StoredItem, Upsert
from statestore.core.settings import get_settings
from statestore.subscriber.applier import EventApplier
from statestore.subscriber.expiry import ExpiryMarkers
from statestore.subscriber.outbox import SnapshotFlusher
from statestore.subscriber.ports import InMemoryObjectStore, InMemoryStateRepository

__all__ = ["MemoryStateStore", "memory_state_store"]


class _ExpiringRepository(InMemoryStateRepository):
    """The in-memory repository with the state store's TTL (``Upsert.ttl_s``)."""

    def __init__(self, clock: MemoryStateStore) -> None:
        super().__init__()
        self._clock = clock
        self.expires: dict[str, float] = {}

    def _expire(self) -> None:
        now = self._clock.now()
        for key in [k for k, at in self.expires.items() if at <= now]:
            self.items.pop(key, None)
            del self.expires[key]

    async def load(self, keys: Iterable[str]) -> dict[str, StoredItem]:
        self._expire()
        return await super().load(keys)

    async def commit(self, upserts: Sequence[Any]) -> None:
        self._expire()
        await super().commit(upserts)
        for operation in upserts:  # upserts, and the outbox's deletes (no ttl)
            ttl_s = getattr(operation, "ttl_s", None)
            if ttl_s is None:
                self.expires.pop(operation.key, None)
            else:
                self.expires[operation.key] = self._clock.now() + ttl_s


class _MemorySidecar:
    """What the publisher runtime asks of a sidecar, answered in memory."""

    def __init__(self, store: MemoryStateStore) -> None:
        self._store = store

    async def bulk_publish(
        self, pubsub: str, topic: str, cloudevents: Sequence[tuple[Any, ...]], timeout: float | None = None
    ) -> dict[str, str]:
        events = []
        for entry in cloudevents:  # (entry id, body[, partition key])
            envelope = json.loads(entry[1])
            decoded, reasons = decode_events(envelope["type"], envelope["data"])
            if reasons:  # the real subscriber would dead-letter them: a test should fail
                raise AssertionError(f"malformed events published: {reasons}")
            events.extend(decoded)
        await self._store.applier.apply(events)
        while await self._store.flusher.flush_once():
            pass
        self._store.published += len(events)
        return {}

    async def is_ready(self, timeout: float) -> bool:
        return True

    async def get_state(self, store: str, key: str) -> StoredItem | None:
        return (await self._store.repository.load([key])).get(key)

    async def get_bulk_state(self, store: str, keys: Iterable[str]) -> dict[str, StoredItem]:
        return await self._store.repository.load(list(keys))

    async def transact(self, store: str, operations: Sequence[Upsert], timeout: float | None = None) -> None:
        await self._store.repository.commit(operations)  # a credential written ahead of its event

    async def save_state(self, store: str, upsert: Upsert, timeout: float | None = None) -> None:
        await self._store.repository.commit([upsert])  # a confirmed replace

    async def get_secret(self, store: str, name: str) -> dict[str, str]:
        if name != get_settings().keyring_secret:
            raise KeyError(f"no secret {name!r} in the memory secret store")
        return dict(self._store.keyring)

    async def close(self) -> None:
        pass


class MemoryStateStore:
    """The in-memory backend: its state store, object store, keyring and clock."""

    def __init__(self) -> None:
        self._offset = 0.0
        self.repository = _ExpiringRepository(self)
        self.objects = InMemoryObjectStore()
        self.applier = EventApplier(self.repository, keep_index=True)
        self.repository.items[ENABLED_KEY] = StoredItem(b"{}", "index")  # list_states works in memory
        # Expiry markers on the memory clock, in 1-second buckets: sweep_expired() after
        # advance() removes the snapshots of expired states, as the subscriber's sweep does.
        expiry = ExpiryMarkers(self.repository, self.objects, bucket_s=1, wall=self.wall)
        self.flusher = SnapshotFlusher(self.repository, self.objects, expiry=expiry)
        self.keyring = {"active": "k1", "k1": base64.b64encode(os.urandom(32)).decode()}
        self.published = 0

    def now(self) -> float:
        """The memory store's clock (seconds): real time plus ``advance``."""
        return time.monotonic() + self._offset

    def wall(self) -> float:
        """Unix time on the memory store's clock."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock on: states whose TTL passed expire (their snapshots stay until
        ``sweep_expired``)."""
        self._offset += seconds

    async def sweep_expired(self) -> int:
        """Run the subscriber's expiry sweep now: the snapshots of expired states go.
        Returns how many were removed."""
        removed = self.flusher.expiry.removed
        while await self.flusher.sweep_once():
            pass
        return self.flusher.expiry.removed - removed

    def snapshot(self, key: str) -> Any:
        """The object-store snapshot at ``key`` (statestore.core.paths.object_key) as JSON, or None."""
        raw = self.objects.objects.get(key)
        return None if raw is None else json.loads(raw)


@contextmanager
def memory_state_store() -> Iterator[MemoryStateStore]:
    """Run StateStore and SecretStore in memory inside the ``with`` block (process-wide)."""
    from statestore.publisher.secrets import SecretStore

    store = MemoryStateStore()
    previous = set_runtime(Runtime(sidecar_factory=lambda: _MemorySidecar(store)))
    keyring = SecretStore._keyring
    SecretStore._keyring = None  # read the memory keyring, not a cached real one
    try:
        yield store
    finally:
        set_runtime(previous)
        SecretStore._keyring = keyring
