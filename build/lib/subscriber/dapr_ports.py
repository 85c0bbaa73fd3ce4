"""The subscriber's ports over its Dapr sidecar: the sqlite state store and the
object-store binding."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from statestore.errors import SidecarUnavailableError
from statestore.sidecar import SidecarClient, StoredItem, Upsert

__all__ = ["DaprStateRepository", "DaprObjectStore"]


class DaprStateRepository:
    """StateRepository on a Dapr state store (one transaction per commit)."""

    def __init__(self, sidecar: SidecarClient, store: str) -> None:
        self._sidecar = sidecar
        self._store = store

    async def load(self, keys: Iterable[str]) -> dict[str, StoredItem]:
        return await self._sidecar.get_bulk_state(self._store, keys)

    async def commit(self, upserts: Sequence[Upsert]) -> None:
        await self._sidecar.transact(self._store, upserts)


class DaprObjectStore:
    """ObjectStore on a Dapr output binding with create/get (bindings.localstorage, S3)."""

    def __init__(self, sidecar: SidecarClient, binding: str) -> None:
        self._sidecar = sidecar
        self._binding = binding

    async def put(self, key: str, data: bytes) -> None:
        await self._sidecar.invoke_binding(self._binding, "create", data, {"fileName": key, "key": key})

    async def get(self, key: str) -> bytes | None:
        try:
            return await self._sidecar.invoke_binding(self._binding, "get", b"", {"fileName": key, "key": key})
        except SidecarUnavailableError as exc:
            if _absent(exc):
                return None
            raise

    async def delete(self, key: str) -> None:
        try:
            await self._sidecar.invoke_binding(self._binding, "delete", b"", {"fileName": key, "key": key})
        except SidecarUnavailableError as exc:
            if not _absent(exc):  # already gone (a redelivered delete): done
                raise


def _absent(exc: Exception) -> bool:
    """Whether a binding error says the object does not exist (localstorage, S3)."""
    text = str(exc).lower()
    return "no such file" in text or "not found" in text or "nosuchkey" in text
