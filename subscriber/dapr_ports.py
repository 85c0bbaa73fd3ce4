"""The subscriber's ports over its Dapr sidecar: the sqlite state store and the
object-store binding."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import uuid

from statestore.cutting import cut
from statestore.errors import SidecarUnavailableError
from statestore.events import AnyEvent, encode_batch_cloudevent, encode_event
from statestore.sidecar import Delete, SidecarClient, StoredItem, Upsert

__all__ = ["DaprStateRepository", "DaprObjectStore", "DaprParking"]


class DaprStateRepository:
    """StateRepository on a Dapr state store (one transaction per commit)."""

    def __init__(self, sidecar: SidecarClient, store: str) -> None:
        self._sidecar = sidecar
        self._store = store

    async def load(self, keys: Iterable[str]) -> dict[str, StoredItem]:
        return await self._sidecar.get_bulk_state(self._store, keys)

    async def commit(self, upserts: Sequence[Upsert | Delete]) -> None:
        await self._sidecar.transact(self._store, upserts)


class DaprObjectStore:
    """ObjectStore on a Dapr output binding with create/get (bindings.localstorage, S3)."""

    def __init__(self, sidecar: SidecarClient, binding: str) -> None:
        self._sidecar = sidecar
        self._binding = binding

    async def put(self, key: str, data: bytes, timeout: float | None = None) -> None:
        await self._sidecar.invoke_binding(self._binding, "create", data, {"fileName": key, "key": key}, timeout)

    async def get(self, key: str) -> bytes | None:
        try:
            return await self._sidecar.invoke_binding(self._binding, "get", b"", {"fileName": key, "key": key})
        except SidecarUnavailableError as exc:
            if "no such file" in str(exc).lower() or "not found" in str(exc).lower():
                return None
            raise

    async def delete(self, key: str, timeout: float | None = None) -> None:
        try:
            await self._sidecar.invoke_binding(self._binding, "delete", b"", {"fileName": key, "key": key}, timeout)
        except SidecarUnavailableError as exc:
            if not _absent(exc):  # already gone (a redelivered delete): done
                raise


def _absent(exc: Exception) -> bool:
    """Whether a binding error says the object does not exist (localstorage, S3)."""
    text = str(exc).lower()
    return "no such file" in text or "not found" in text or "nosuchkey" in text


class DaprParking:
    """Parking on a pub/sub topic: events travel packed, as the publisher sends them."""

    def __init__(self, sidecar: SidecarClient, pubsub: str, topic: str, pack_events: int, pack_max_bytes: int) -> None:
        self._sidecar = sidecar
        self._pubsub = pubsub
        self._topic = topic
        self._pack_events = pack_events
        self._pack_max_bytes = pack_max_bytes

    async def park(self, events: Sequence[AnyEvent]) -> None:
        encoded = [encode_event(event) for event in events]
        messages = [
            (f"parked-{uuid.uuid4().hex}", encode_batch_cloudevent(f"parked-{uuid.uuid4().hex}", piece))
            for piece in cut(encoded, len, self._pack_max_bytes - 1024, self._pack_events)
        ]
        for batch in cut(messages, lambda m: len(m[1]), 2 << 20, 100):  # well under the sidecar's limit
            failed = await self._sidecar.bulk_publish(self._pubsub, self._topic, batch)
            if failed:
                raise SidecarUnavailableError(f"parking {len(failed)} messages failed: {next(iter(failed.values()))}")
