"""The read path: a lightweight query client over the caller's own sidecar.

Reads skip the event pipeline: they fetch the stored document from the state store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from statestore.core.document import StateDocument, decode_document
from statestore.core.errors import SidecarUnavailableError
from statestore.core.index import ENABLED_KEY, IndexShard, all_shard_keys, page_of
from statestore.core.paths import StateType, caller_app_name, state_key
from statestore.core.sidecar import RECONNECT_WITHIN_S, SidecarClient

__all__ = ["StateQueryClient"]

T = TypeVar("T")


class StateQueryClient:
    """Reads states from a Dapr state store.

    ``app`` names the caller app whose states it reads (default: this process's own,
    ``statestore.core.paths.caller_app_name``).
    """

    def __init__(self, sidecar: SidecarClient, store: str, app: str | None = None) -> None:
        self._sidecar = sidecar
        self._store = store
        self._app = app

    async def get_document(self, id: str, state_type: StateType) -> StateDocument | None:
        """The stored document (with stamps and producer progress), or None."""
        key = state_key(id, state_type, self._app)
        item = await self._read(lambda: self._sidecar.get_state(self._store, key))
        return decode_document(key, item.value) if item else None

    async def get_documents(self, ids: list[str], state_type: StateType) -> dict[str, StateDocument]:
        """The stored documents of ``ids`` that exist, in one bulk read."""
        keys = {state_key(i, state_type, self._app): i for i in ids}
        found = await self._read(lambda: self._sidecar.get_bulk_state(self._store, keys))
        return {keys[key]: decode_document(key, item.value) for key, item in found.items()}

    async def index_enabled(self) -> bool:
        """Whether a subscriber keeps the id index (statestore.core.index.ENABLED_KEY)."""
        return await self._read(lambda: self._sidecar.get_state(self._store, ENABLED_KEY)) is not None

    async def index_page(self, state_type: StateType, prefix: str, after: str, size: int) -> tuple[list[str], bool]:
        """Ids of the index (statestore.core.index): the next ``size`` after ``after``, and
        whether more follow. One bulk read of every shard of (app, type)."""
        shard_keys = all_shard_keys(self._app or caller_app_name(), state_type)
        found = await self._read(lambda: self._sidecar.get_bulk_state(self._store, shard_keys))
        shards = [IndexShard.model_validate_json(item.value) for item in found.values()]
        return page_of(shards, prefix, after, size)

    async def _read(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except SidecarUnavailableError:
            # A sidecar that just came back may still be behind the channel's reconnect
            # backoff: wait for it once, then fail.
            if not await self._sidecar.is_ready(RECONNECT_WITHIN_S):
                raise
            return await call()

    async def get_state(self, id: str, state_type: StateType) -> dict[str, Any] | None:
        """The state as a dict, or None when none exists."""
        document = await self.get_document(id, state_type)
        return document.to_state() if document and document.exists() else None
