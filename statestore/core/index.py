"""The id index that ``StateStore.list_states`` reads. Pure: no I/O, no Dapr.

Each (app, type) has ``INDEX_SHARDS`` index documents in the state store,
``statestore-index/{app}/{type}/{shard}``; a state's id lives in the shard its id hashes
to. The subscriber changes a shard only when a state starts to exist (created, or
written again after a delete) or stops (deleted), in the same transaction as the state,
so the index never disagrees with the states it was written with; plain writes of an
existing state never touch it. Spreading ids over shards keeps any one shard from being
a hot shared document: concurrent creations mostly land in different shards.

Expired states (the store's TTL) are not removed from their shard: a listing drops ids
whose state no longer exists when it reads the page (``StateStore.list_states``).
"""

from __future__ import annotations

import bisect
import hashlib

from pydantic import BaseModel, ConfigDict, Field

from statestore.core.paths import StateType

__all__ = ["ENABLED_KEY", "INDEX_SHARDS", "IndexShard", "shard_key", "all_shard_keys", "page_of"]

INDEX_SHARDS = 64
ENABLED_KEY = "statestore-index/enabled"
"""Written by a subscriber that keeps the index (STATESTORE_LIST_INDEX), read by list_states."""


def _shard(id: str) -> int:
    return int.from_bytes(hashlib.blake2b(id.encode(), digest_size=4).digest(), "big") % INDEX_SHARDS


def shard_key(app: str, state_type: StateType | str, id: str) -> str:
    """The index document that holds ``id``."""
    return f"statestore-index/{app}/{StateType(state_type).value}/{_shard(id):02d}"


def all_shard_keys(app: str, state_type: StateType | str) -> list[str]:
    """Every index document of (app, type)."""
    return [f"statestore-index/{app}/{StateType(state_type).value}/{n:02d}" for n in range(INDEX_SHARDS)]


class IndexShard(BaseModel):
    """The sorted ids of one shard."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(default_factory=list)

    def add(self, id: str) -> bool:
        """Insert ``id`` (kept sorted); False if it was there."""
        at = bisect.bisect_left(self.ids, id)
        if at < len(self.ids) and self.ids[at] == id:
            return False
        self.ids.insert(at, id)
        return True

    def remove(self, id: str) -> bool:
        """Remove ``id``; False if it was not there."""
        at = bisect.bisect_left(self.ids, id)
        if at < len(self.ids) and self.ids[at] == id:
            del self.ids[at]
            return True
        return False


def page_of(shards: list[IndexShard], prefix: str, after: str, size: int) -> tuple[list[str], bool]:
    """The next ``size`` ids (sorted) with ``prefix`` that sort after ``after``, and
    whether more follow."""
    ids = sorted(i for shard in shards for i in shard.ids if i.startswith(prefix) and i > after)
    return ids[:size], len(ids) > size
