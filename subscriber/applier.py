"""Apply a batch of events to the state store, and mark their snapshots as due.

Knows nothing of Dapr: it works on the ports in statestore.subscriber.ports.

A batch is grouped by state and cut into chunks of at most ``max_states_per_commit``
states. Per chunk:

1. load the documents of its states (one bulk read);
2. merge each state's events into its document (statestore.core.document.apply_events);
3. write the changed documents in transactions cut by bytes (``request_max_bytes``),
   each with the ETags read in step 1 (first-write for new states) and an entry of this
   replica's outbox naming them (statestore.subscriber.outbox.OutboxWriter); on an ETag conflict
   (another replica wrote in between) load and merge the rest again, so no update is lost.

Commits go through one lane per replica (sqlite has one writer), and the next chunk's
load and merge run while the current chunk commits. A state whose merged document would
exceed ``max_document_bytes`` is refused (its events go to the dead-letter topic with the
reason) and never blocks the others; a chunk that fails for a passing reason (store
busy, sidecar restarting) reports its states as failed, and only the messages holding
their events are redelivered. The merge is idempotent, so a re-application changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from statestore.core.cutting import cut
from statestore.core.document import apply_events, decode_document, encode_document
from statestore.core.errors import StateDecodeError
from statestore.core.events import AnyEvent
from statestore.core.index import ENABLED_KEY, IndexShard, shard_key
from statestore.subscriber.metrics import SubscriberMetrics
from statestore.subscriber.outbox import OutboxWriter
from statestore.subscriber.ports import EtagMismatchError, StateRepository, Upsert

__all__ = ["EventApplier", "TransientError", "BatchResult"]

log = logging.getLogger("statestore.subscriber")

Event = AnyEvent


class TransientError(Exception):
    """Part of a batch could not be applied now (store busy, conflict storm, binding down)."""


@dataclass(frozen=True)
class BatchResult:
    events: int
    states: int
    written: int  # documents the transactions changed
    failed: dict[str, str] = field(default_factory=dict)  # state key -> why (retry later)
    refused: dict[str, str] = field(default_factory=dict)  # state key -> why (dead letter)

    def raise_for_failures(self) -> None:
        """TransientError naming the first failure, if any state failed."""
        if self.failed:
            key, reason = next(iter(self.failed.items()))
            raise TransientError(f"{len(self.failed)} states not applied (first: {key}: {reason})")


@dataclass
class _Prepared:
    upserts: list[Upsert]
    refused: dict[str, str]
    # state key -> (an event of it, True if it began to exist / False if it ceased): the
    # id index (statestore.core.index) changes with it, in the same transaction
    existence: dict[str, tuple[AnyEvent, bool]] = field(default_factory=dict)


class EventApplier:
    """Applies batches of decoded events through a StateRepository."""

    def __init__(
        self,
        repository: StateRepository,
        max_conflict_retries: int = 20,
        max_states_per_commit: int = 250,
        outbox: OutboxWriter | None = None,
        request_max_bytes: int = 2 << 20,
        max_document_bytes: int = 12 << 20,
        keep_index: bool = False,
        metrics: SubscriberMetrics | None = None,
    ) -> None:
        self._repository = repository
        self._keep_index = keep_index  # the id index of list_states (statestore.core.index)
        self.metrics = metrics or SubscriberMetrics()
        self._max_conflict_retries = max_conflict_retries
        self._max_states = max_states_per_commit
        self._index_lock = asyncio.Lock()
        self.outbox = outbox or OutboxWriter(repository)
        self._request_max_bytes = request_max_bytes
        self._max_document_bytes = max_document_bytes

    async def apply(self, events: Sequence[Event]) -> BatchResult:
        """Apply ``events`` (any order, duplicates allowed). Failed and refused states are
        reported in the result, never raised: every other state is applied."""
        by_key: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_key[event.key].append(event)
        keys = list(by_key)
        chunks = [{key: by_key[key] for key in keys[i : i + self._max_states]} for i in range(0, len(keys), self._max_states)]
        written = 0
        failed: dict[str, str] = {}
        refused: dict[str, str] = {}
        committing: asyncio.Task | None = None
        committing_chunk: dict[str, list[Event]] = {}

        async def finish() -> None:
            nonlocal written
            if committing is None:
                return
            try:
                done, chunk_refused = await committing
                written += done
                refused.update(chunk_refused)
            except Exception as exc:
                failed.update(dict.fromkeys(committing_chunk, str(exc)))

        for chunk in chunks:
            try:
                prepared = await self._prepare(chunk)
            except Exception as exc:  # the load failed: this chunk waits for a redelivery
                failed.update(dict.fromkeys(chunk, f"state store read failed: {exc}"))
                continue
            await finish()  # the lane is one deep: merge the next chunk while this commits
            committing = asyncio.create_task(self._commit(chunk, prepared))
            committing_chunk = chunk
        await finish()
        for key, reason in failed.items():
            log.debug("state %s not applied: %s", key, reason)
        return BatchResult(len(events), len(by_key), written, failed, refused)

    async def _prepare(self, by_key: dict[str, list[Event]]) -> _Prepared:
        """Load and merge: the upserts that bring every state of ``by_key`` up to date."""
        stored = await self._repository.load(by_key)
        upserts: list[Upsert] = []
        refused: dict[str, str] = {}
        existence: dict[str, tuple[AnyEvent, bool]] = {}
        for key, key_events in by_key.items():
            item = stored.get(key)
            try:
                current = decode_document(key, item.value) if item else None
            except StateDecodeError as exc:
                refused[key] = str(exc)
                continue
            merged = apply_events(current, key_events)
            if merged is current:
                self.metrics.duplicates_ignored.inc(len(key_events))
                continue  # all duplicates: already applied (and marked) before
            encoded = encode_document(merged)
            if len(encoded) > self._max_document_bytes:
                refused[key] = (
                    f"the state's document would be {len(encoded)} bytes, over the limit of"
                    f" {self._max_document_bytes} (STATESTORE_MAX_DOCUMENT_BYTES): store fewer or"
                    " smaller fields in one state"
                )
                continue
            upserts.append(Upsert(key, encoded, item.etag if item else None, merged.ttl_s))
            # A provisional document (statestore.core.document) was never indexed: count it as absent.
            indexed = current is not None and current.exists() and not current.provisional
            if self._keep_index and merged.exists() != indexed:
                existence[key] = (key_events[0], merged.exists())
        return _Prepared(upserts, refused, existence)

    async def _commit(self, by_key: dict[str, list[Event]], prepared: _Prepared) -> tuple[int, dict[str, str]]:
        """Commit ``prepared`` in byte-bounded transactions; on a conflict, load and merge
        what is left again. Returns (documents written, refused states)."""
        written = 0
        refused = dict(prepared.refused)
        for attempt in range(self._max_conflict_retries + 1):
            try:
                for piece in cut(prepared.upserts, Upsert.request_bytes, self._request_max_bytes, self._max_states):
                    changes = [prepared.existence[u.key] for u in piece if u.key in prepared.existence]
                    if changes:
                        # Pieces that change the index take turns: they would conflict on its shards.
                        async with self._index_lock:
                            index = await self._index_changes(changes)
                            await self.outbox.commit([*piece, *index], [upsert.key for upsert in piece])
                    else:
                        await self.outbox.commit(piece, [upsert.key for upsert in piece])
                    written += len(piece)
                    self.metrics.states_written.inc(len(piece))
                    for upsert in piece:
                        by_key.pop(upsert.key, None)  # done: not merged again after a conflict
                return written, refused
            except EtagMismatchError:
                self.metrics.etag_conflicts.inc()
                # Another replica wrote one of these states since we read it: merge again.
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
                for key in refused:
                    by_key.pop(key, None)
                prepared = await self._prepare(by_key)
                refused.update(prepared.refused)
        raise TransientError(f"gave up after {self._max_conflict_retries} ETag conflicts in a row")


    async def enable_index(self) -> None:
        """Say in the store that this subscriber keeps the id index (list_states checks)."""
        if not self._keep_index:
            return
        stored = await self._repository.load([ENABLED_KEY])
        if ENABLED_KEY not in stored:
            try:
                await self._repository.commit([Upsert(ENABLED_KEY, b"{}", None)])
            except EtagMismatchError:
                pass  # another replica wrote it first

    async def _index_changes(self, changes: list[tuple[AnyEvent, bool]]) -> list[Upsert]:
        """The index shard writes (statestore.core.index) for states that began or ceased to exist."""
        keyed = [(shard_key(e.app, e.state_type, e.state_id), e.state_id, add) for e, add in changes]
        stored = await self._repository.load({key for key, _, _ in keyed})
        shards = {key: IndexShard.model_validate_json(item.value) for key, item in stored.items()}
        touched = set()
        for key, id, add in keyed:
            shard = shards.setdefault(key, IndexShard())
            if shard.add(id) if add else shard.remove(id):
                touched.add(key)
        return [
            Upsert(key, shards[key].model_dump_json().encode(), stored[key].etag if key in stored else None)
            for key in sorted(touched)
        ]
