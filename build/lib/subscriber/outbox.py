"""The snapshot outbox: which states' object-store snapshots are behind, kept in the
state store itself, so a crash never leaves a snapshot permanently behind.

Each batch that changes states marks them dirty in one of ``SLOTS`` outbox documents, in
the same transaction as the states. A flusher (in every subscriber replica; one at a
time holds the lease) reads the slots, writes the snapshots of the marked states, and
unmarks a state only if its mark is unchanged (no batch changed it since), with an
ETag write. A crash anywhere leaves the marks, and the next flusher writes the files.

A state that no longer exists (deleted) has its snapshot removed instead of written.

Snapshots therefore trail the state store by one flush round (tens of milliseconds), and
the batch path costs one extra key in its transaction instead of one object-store write
per state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from statestore.document import StateDocument, decode_document
from statestore.paths import object_key, parse_state_key
from subscriber.ports import EtagMismatchError, ObjectStore, StateRepository, StoredItem, Upsert

__all__ = ["SLOTS", "OutboxSlot", "slot_key", "LEASE_KEY", "mark_dirty", "SnapshotFlusher"]

log = logging.getLogger("statestore.subscriber")

SLOTS = 16
LEASE_KEY = "statestore-outbox/lease"
LEASE_MS = 5_000


def slot_key(n: int) -> str:
    return f"statestore-outbox/{n}"


ALL_SLOTS = [slot_key(n) for n in range(SLOTS)]


class OutboxSlot(BaseModel):
    """State key -> mark (a token that changes whenever the state changes)."""

    model_config = ConfigDict(extra="forbid")

    dirty: dict[str, str] = Field(default_factory=dict)


class Lease(BaseModel):
    owner: str = ""
    expires_ms: int = 0


def read_slot(item: StoredItem | None) -> OutboxSlot:
    return OutboxSlot.model_validate_json(item.value) if item else OutboxSlot()


def mark_dirty(slot: str, item: StoredItem | None, keys: Iterable[str]) -> Upsert:
    """The write that marks ``keys`` dirty in ``slot`` (to commit with the states)."""
    outbox = read_slot(item)
    mark = uuid.uuid4().hex[:12]
    outbox.dirty.update({key: mark for key in keys})
    return Upsert(slot, outbox.model_dump_json().encode(), item.etag if item else None)


def snapshot_bytes(key: str, item: StoredItem) -> bytes:
    """The object-store file: the state as plain JSON, as the reference system stores it."""
    return _snapshot(decode_document(key, item.value))


def _snapshot(document: StateDocument) -> bytes:
    return json.dumps(document.to_state(), indent=2).encode()


class SnapshotFlusher:
    """Writes the snapshots the outbox marks; one replica at a time (a lease)."""

    def __init__(
        self,
        repository: StateRepository,
        objects: ObjectStore,
        interval_s: float = 0.02,
        max_keys_per_round: int = 2000,
        parallel_writes: int = 32,
    ) -> None:
        self._repository = repository
        self._objects = objects
        self._interval_s = interval_s
        self._max_keys = max_keys_per_round
        self._writes = asyncio.Semaphore(parallel_writes)
        self.owner = uuid.uuid4().hex
        self.written = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Flush until ``stop`` is set, then drain; failures are retried next round."""
        while not stop.is_set():
            try:
                flushed = await self.flush_once()
            except Exception as exc:  # store or binding down: the marks stay, try again
                log.warning("snapshot flush failed, will retry: %s", exc)
                flushed = 0
            if not flushed:
                try:
                    await asyncio.wait_for(stop.wait(), self._interval_s)
                except asyncio.TimeoutError:
                    pass
        for _ in range(10):  # what the last batches marked, before we go
            try:
                if not await self.flush_once():
                    break
            except Exception as exc:
                log.warning("final snapshot flush failed (the next start writes them): %s", exc)
                break
        await self.release()

    async def flush_once(self) -> int:
        """One round: take the lease, write marked snapshots, unmark. Returns states written."""
        stored = await self._repository.load([LEASE_KEY, *ALL_SLOTS])
        slots = {key: read_slot(stored.get(key)) for key in ALL_SLOTS}
        marked = {key: mark for slot in slots.values() for key, mark in slot.dirty.items()}
        if not marked or not await self._take_lease(stored.get(LEASE_KEY)):
            return 0
        keys = list(marked)[: self._max_keys]
        documents = await self._repository.load(keys)
        await asyncio.gather(*(self._write(key, documents.get(key)) for key in keys))
        self.written += len(keys)
        await self._unmark({key: marked[key] for key in keys})
        return len(keys)

    async def _write(self, key: str, item: StoredItem | None) -> None:
        if item is None:
            return  # marked but absent: nothing to snapshot
        document = decode_document(key, item.value)
        async with self._writes:
            if document.exists():
                await self._objects.put(object_key(*parse_state_key(key)), _snapshot(document))
            else:  # deleted (or expired): its snapshot goes too
                await self._objects.delete(object_key(*parse_state_key(key)))

    async def _unmark(self, written: dict[str, str]) -> None:
        """Remove each written key from its slot if its mark is unchanged (ETag writes)."""
        for _ in range(20):
            stored = await self._repository.load(ALL_SLOTS)
            upserts = []
            for slot_name in ALL_SLOTS:
                item = stored.get(slot_name)
                slot = read_slot(item)
                kept = {k: m for k, m in slot.dirty.items() if written.get(k) != m}
                if item is not None and len(kept) != len(slot.dirty):
                    upserts.append(Upsert(slot_name, OutboxSlot(dirty=kept).model_dump_json().encode(), item.etag))
            if not upserts:
                return
            try:
                await self._repository.commit(upserts)
                return
            except EtagMismatchError:
                continue  # a batch marked more states meanwhile: read again

    async def _take_lease(self, item: StoredItem | None) -> bool:
        lease = Lease.model_validate_json(item.value) if item else Lease()
        now = int(time.time() * 1000)
        if lease.owner not in ("", self.owner) and lease.expires_ms > now:
            return False
        if lease.owner == self.owner and lease.expires_ms - now > LEASE_MS // 2:
            return True  # ours for a while yet: no write this round
        renewed = Lease(owner=self.owner, expires_ms=now + LEASE_MS)
        try:
            await self._repository.commit([Upsert(LEASE_KEY, renewed.model_dump_json().encode(), item.etag if item else None)])
        except EtagMismatchError:
            return False
        return True

    async def release(self) -> None:
        """Give the lease up at shutdown so another replica takes over at once."""
        try:
            stored = await self._repository.load([LEASE_KEY])
            item = stored.get(LEASE_KEY)
            if item and Lease.model_validate_json(item.value).owner == self.owner:
                await self._repository.commit([Upsert(LEASE_KEY, Lease().model_dump_json().encode(), item.etag)])
        except Exception as exc:
            log.info("lease not released (it expires by itself): %s", exc)
