"""The subscriber's ports over its Dapr sidecar: the sqlite state store and the
object-store binding."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Sequence

from statestore.core.cutting import cut
from statestore.core.errors import SidecarUnavailableError
from statestore.core.events import AnyEvent, encode_batch_cloudevent, encode_event
from statestore.core.objectlist import list_object_keys
from statestore.core.sidecar import Delete, SidecarClient, StoredItem, Upsert

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
    """ObjectStore on a Dapr output binding with create/get/delete/list
    (bindings.localstorage, bindings.aws.s3)."""

    def __init__(self, sidecar: SidecarClient, binding: str) -> None:
        self._sidecar = sidecar
        self._binding = binding
        self._has_folders: bool | None = None

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

    async def list(self, prefix: str) -> list[str]:
        return await list_object_keys(self._sidecar, self._binding, prefix)

    async def remove_folders(self, folders: Iterable[str]) -> None:
        # bindings.localstorage's delete is os.Remove: it removes an empty folder and
        # refuses a full one. S3 has no folders (nothing to send).
        if self._has_folders is None:
            kind = await self._sidecar.component_type(self._binding)
            if kind is None:
                return  # not known yet: ask again next time
            self._has_folders = kind == "bindings.localstorage"
        if not self._has_folders:
            return
        for folder in sorted(set(folders), key=lambda f: f.count("/"), reverse=True):
            with contextlib.suppress(SidecarUnavailableError):  # not empty (or gone): it stays
                await self._sidecar.invoke_binding(self._binding, "delete", b"", {"fileName": folder})


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
