"""Apply a batch of events to the state store, and mark their snapshots as due.

Knows nothing of Dapr: it works on the ports in subscriber.ports.

For one batch:
1. load the documents of every state the batch touches and one outbox slot (one bulk
   read);
2. merge each state's events into its document (statestore.document.apply_events);
3. write every changed document, and the outbox slot marking them dirty, in one
   transaction with the ETags read in step 1, with the id index shards of states that
   began or ceased to exist (statestore.index) (first-write for new states); on an ETag
   conflict (another replica wrote in between) start again from 1, so no update is lost.

The object-store snapshots follow from the outbox (subscriber.outbox.SnapshotFlusher).
A failure raises TransientError: the batch is answered "retry", redelivered and
re-applied; the merge is idempotent, so a second application changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from statestore.document import apply_events, decode_document, encode_document
from statestore.events import AnyEvent
from statestore.index import IndexShard, shard_key
from subscriber.outbox import SLOTS, mark_dirty, slot_key
from subscriber.ports import EtagMismatchError, StateRepository, Upsert

__all__ = ["EventApplier", "TransientError", "BatchResult"]

log = logging.getLogger("statestore.subscriber")

Event = AnyEvent


class TransientError(Exception):
    """The batch could not be applied now (store busy, conflict storm, binding down)."""


@dataclass(frozen=True)
class BatchResult:
    events: int
    states: int
    written: int  # documents the transaction changed


class EventApplier:
    """Applies batches of decoded events through a StateRepository."""

    def __init__(
        self, repository: StateRepository, max_conflict_retries: int = 20, max_states_per_commit: int = 250
    ) -> None:
        self._repository = repository
        self._max_conflict_retries = max_conflict_retries
        self._max_states = max_states_per_commit
        self._index_lock = asyncio.Lock()

    async def apply(self, events: Sequence[Event]) -> BatchResult:
        """Apply ``events`` (any order, duplicates allowed); raise TransientError to retry."""
        by_key: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_key[event.key].append(event)
        if not by_key:
            return BatchResult(0, 0, 0)
        # A packed delivery can touch tens of thousands of states; the store reads a
        # bounded number of keys at once (sqlite: 32,766 parameters), so commit in chunks.
        keys = list(by_key)
        chunks = [{key: by_key[key] for key in keys[i : i + self._max_states]} for i in range(0, len(keys), self._max_states)]
        # Chunks touch different states and different outbox slots, so they commit
        # concurrently: one chunk's merge overlaps another's write in the sidecar.
        first_slot = random.randrange(SLOTS)
        outcomes = await asyncio.gather(
            *(self._commit(chunk, slot_key((first_slot + n) % SLOTS)) for n, chunk in enumerate(chunks)),
            return_exceptions=True,  # let every chunk finish before one failure answers
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            raise failures[0]
        return BatchResult(len(events), len(by_key), sum(outcomes))

    async def _commit(self, by_key: dict[str, list[Event]], slot: str) -> int:
        for attempt in range(self._max_conflict_retries + 1):
            try:
                stored = await self._repository.load([*by_key, slot])
                upserts = []
                appeared: list[Event] = []  # states that start or stop existing: the index changes
                vanished: list[Event] = []
                for key, key_events in by_key.items():
                    item = stored.get(key)
                    current = decode_document(key, item.value) if item else None
                    merged = apply_events(current, key_events)
                    if merged is not current:
                        upserts.append(Upsert(key, encode_document(merged), item.etag if item else None, merged.ttl_s))
                        existed = current is not None and current.exists()
                        if merged.exists() != existed:
                            (appeared if merged.exists() else vanished).append(key_events[0])
                if not upserts:
                    return 0  # all duplicates: already applied (and marked) before
                changed = len(upserts)
                upserts.append(mark_dirty(slot, stored.get(slot), [u.key for u in upserts[:changed]]))
                if appeared or vanished:
                    # Chunks of one delivery commit concurrently; those that change the
                    # index take turns, or they would all conflict on the same shards.
                    async with self._index_lock:
                        await self._repository.commit(upserts + await self._index_changes(appeared, vanished))
                else:
                    await self._repository.commit(upserts)
                return changed
            except EtagMismatchError:
                # Another replica wrote one of these states since we read it: merge again.
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
            except Exception as exc:  # store busy, sidecar restarting: let Dapr redeliver
                raise TransientError(f"state store write failed: {exc}") from exc
        raise TransientError(f"gave up after {self._max_conflict_retries} ETag conflicts in a row")

    async def _index_changes(self, appeared: list[Event], vanished: list[Event]) -> list[Upsert]:
        """The index shard writes (statestore.index) for states that began or ceased to exist."""
        changes = [(shard_key(e.app, e.state_type, e.state_id), e.state_id, True) for e in appeared]
        changes += [(shard_key(e.app, e.state_type, e.state_id), e.state_id, False) for e in vanished]
        stored = await self._repository.load({key for key, _, _ in changes})
        shards = {key: IndexShard.model_validate_json(item.value) for key, item in stored.items()}
        touched = set()
        for key, id, add in changes:
            shard = shards.setdefault(key, IndexShard())
            if shard.add(id) if add else shard.remove(id):
                touched.add(key)
        return [
            Upsert(key, shards[key].model_dump_json().encode(), stored[key].etag if key in stored else None)
            for key in sorted(touched)
        ]
