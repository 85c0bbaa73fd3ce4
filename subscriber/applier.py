"""Apply a batch of events to the state store, then bring the snapshots up to date.

Knows nothing of Dapr: it works on the ports in subscriber.ports.

For one batch:
1. load the documents of every state the batch touches (one bulk read);
2. merge each state's events into its document (statestore.document.apply_events);
3. write every changed document in one transaction, with the ETag read in step 1
   (first-write for new states); on an ETag conflict (another replica wrote in
   between) start again from 1, so no update is lost;
4. write each touched state's snapshot to the object store, then re-read the ETags:
   a state that changed meanwhile gets its snapshot written again, so the object store
   ends equal to the state store whichever replica writes last.

A failure in 3 or 4 raises TransientError: the batch is answered "retry", redelivered,
and re-applied; the merge is idempotent, so a second application changes nothing but
completes the snapshot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from statestore.document import apply_events, decode_document, encode_document
from statestore.events import FieldUpdated, ObjectReplaced
from statestore.paths import object_key
from subscriber.ports import EtagMismatchError, ObjectStore, StateRepository, StoredItem, Upsert

__all__ = ["EventApplier", "TransientError", "BatchResult"]

log = logging.getLogger("statestore.subscriber")

Event = FieldUpdated | ObjectReplaced


class TransientError(Exception):
    """The batch could not be applied now (store busy, conflict storm, binding down)."""


@dataclass(frozen=True)
class BatchResult:
    events: int
    states: int
    written: int  # documents the transaction changed


class EventApplier:
    """Applies batches of decoded events through a StateRepository and an ObjectStore."""

    def __init__(
        self,
        repository: StateRepository,
        objects: ObjectStore,
        max_conflict_retries: int = 20,
        snapshot_rounds: int = 5,
    ) -> None:
        self._repository = repository
        self._objects = objects
        self._max_conflict_retries = max_conflict_retries
        self._snapshot_rounds = snapshot_rounds

    async def apply(self, events: Sequence[Event]) -> BatchResult:
        """Apply ``events`` (any order, duplicates allowed); raise TransientError to retry."""
        by_key: dict[str, list[Event]] = defaultdict(list)
        ids: dict[str, Event] = {}
        for event in events:
            by_key[event.key].append(event)
            ids[event.key] = event
        if not by_key:
            return BatchResult(0, 0, 0)
        written = await self._commit(by_key)
        await self._snapshot({key: (event.state_id, event.state_type) for key, event in ids.items()})
        return BatchResult(len(events), len(by_key), written)

    async def _commit(self, by_key: dict[str, list[Event]]) -> int:
        for attempt in range(self._max_conflict_retries + 1):
            try:
                stored = await self._repository.load(by_key)
                upserts = []
                for key, key_events in by_key.items():
                    item = stored.get(key)
                    current = decode_document(key, item.value) if item else None
                    merged = apply_events(current, key_events)
                    if merged != current:
                        upserts.append(Upsert(key, encode_document(merged), item.etag if item else None))
                if upserts:
                    await self._repository.commit(upserts)
                return len(upserts)
            except EtagMismatchError:
                # Another replica wrote one of these states since we read it: merge again.
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
            except Exception as exc:  # store busy, sidecar restarting: let Dapr redeliver
                raise TransientError(f"state store write failed: {exc}") from exc
        raise TransientError(f"gave up after {self._max_conflict_retries} ETag conflicts in a row")

    async def _snapshot(self, states: dict[str, tuple]) -> None:
        try:
            pending = dict(states)
            for _ in range(self._snapshot_rounds):
                before = await self._repository.load(pending)
                await asyncio.gather(
                    *(
                        self._objects.put(object_key(*states[key]), snapshot_bytes(key, item))
                        for key, item in before.items()
                    )
                )
                after = await self._repository.load(pending)
                pending = {
                    key: states[key]
                    for key in pending
                    if (after.get(key).etag if key in after else None)
                    != (before.get(key).etag if key in before else None)
                }
                if not pending:
                    return
        except Exception as exc:
            raise TransientError(f"object store write failed: {exc}") from exc
        raise TransientError(f"states kept changing while writing snapshots: {sorted(pending)}")


def snapshot_bytes(key: str, item: StoredItem) -> bytes:
    """The object-store file: the state as plain JSON, as the reference system stores it."""
    return json.dumps(decode_document(key, item.value).to_state(), indent=2).encode()
