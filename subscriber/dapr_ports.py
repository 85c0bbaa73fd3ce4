"""The subscriber's ports over its Dapr sidecar: the state store and the pub/sub topic
where events wait (the object store is written directly: statestore.subscriber.objectstore)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from statestore.core.cutting import cut
from statestore.core.errors import SidecarUnavailableError
from statestore.core.events import AnyEvent, encode_batch_cloudevent, encode_event
from statestore.core.sidecar import Delete, SidecarClient, StoredItem, Upsert

__all__ = ["DaprStateRepository", "DaprParking"]


class DaprStateRepository:
    """StateRepository on a Dapr state store (one transaction per commit)."""

    def __init__(self, sidecar: SidecarClient, store: str) -> None:
        self._sidecar = sidecar
        self._store = store

    async def load(self, keys: Iterable[str]) -> dict[str, StoredItem]:
        return await self._sidecar.get_bulk_state(self._store, keys)

    async def commit(self, upserts: Sequence[Upsert | Delete]) -> None:
        await self._sidecar.transact(self._store, upserts)


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
