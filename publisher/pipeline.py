"""The publish pipeline: batches events, publishes them in bulk, retries, never drops.

``submit`` only queues (fire-and-forget). A background task sends what is queued as one
bulk publish when ``batch_max_events`` are waiting or when the oldest has waited
``batch_window_ms``. A batch that still fails after ``publish_attempts`` tries is kept
and raised as PublishError (with the events) on the next ``submit`` or ``flush``.
"""

from __future__ import annotations

import asyncio
import logging
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from statestore.errors import PublishError, SidecarUnavailableError
from statestore.events import (
    FieldUpdated,
    ObjectReplaced,
    cloudevent_id,
    encode_batch_cloudevent,
    encode_cloudevent,
    encode_event,
)
from statestore.partitioning import partition_for
from statestore.settings import Settings

__all__ = ["PublishPipeline", "Transport", "QueuedEvent"]

log = logging.getLogger("statestore.publisher")


class Transport(Protocol):
    """Sends CloudEvents; returns the ids that failed, with the reason."""

    async def publish_batch(self, cloudevents: Sequence[tuple[str, bytes, str]]) -> dict[str, str]:
        """``(entry id, body, partition key)`` each."""
        ...


@dataclass(frozen=True)
class QueuedEvent:
    event: FieldUpdated | ObjectReplaced
    data: bytes  # the encoded event

    @property
    def id(self) -> str:
        return cloudevent_id(self.event)

    @classmethod
    def of(cls, event: FieldUpdated | ObjectReplaced) -> QueuedEvent:
        return cls(event, encode_event(event))


def pack(
    batch: list[QueuedEvent], max_events: int, max_bytes: int, ids: Iterator[int], partitions: int = 1
) -> dict[str, tuple[bytes, list[QueuedEvent]]]:
    """Messages for ``batch``: message id -> (CloudEvent body, the events it carries).

    With ``max_events`` 1 each event is its own CloudEvent (type per kind); otherwise
    events travel in io.statestore.event_batch.v1 CloudEvents of at most ``max_events``
    events and about ``max_bytes``, each holding events of one topic partition only
    (``partitions``), so its partition key (the first event's state key) sends every
    event of a state to its own partition. Order within a partition is kept.
    """
    if partitions > 1 and max_events > 1:
        groups: dict[int, list[QueuedEvent]] = {}
        for queued in batch:
            groups.setdefault(partition_for(queued.event.key, partitions), []).append(queued)
        if len(groups) > 1:
            return {mid: m for group in groups.values() for mid, m in pack(group, max_events, max_bytes, ids).items()}
    if max_events == 1:
        return {q.id: (encode_cloudevent(q.event, q.data), [q]) for q in batch}
    messages: dict[str, tuple[bytes, list[QueuedEvent]]] = {}
    group: list[QueuedEvent] = []
    size = 0

    def close() -> None:
        if group:
            batch_id = f"{group[0].event.producer}:batch:{next(ids)}"
            messages[batch_id] = (encode_batch_cloudevent(batch_id, [q.data for q in group]), list(group))
            group.clear()

    for queued in batch:
        if len(group) >= max_events or (group and size + len(queued.data) > max_bytes):
            close()
            size = 0
        group.append(queued)
        size += len(queued.data)
    close()
    return messages


class PublishPipeline:
    """One process's queue of events to publish, for one event loop."""

    def __init__(self, transport: Transport, settings: Settings, max_pending: int = 100_000) -> None:
        self._transport = transport
        self._settings = settings
        self._max_pending = max_pending
        self._pending: list[QueuedEvent] = []
        self._current: list[QueuedEvent] = []  # the batch being published
        self._failed: list[QueuedEvent] = []
        self._failure_reason = ""
        self._in_flight = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None
        self._message_ids = itertools.count(1)
        self.published = 0

    @property
    def pending(self) -> int:
        """Events queued or being published."""
        return len(self._pending) + self._in_flight

    def take_unpublished(self) -> list[QueuedEvent]:
        """Remove and return every event not yet known published (for a last-chance drain).

        That includes events that failed and were not yet reported, and a batch whose
        publish was cut off: it may have reached the broker, and sending it again is
        harmless (the merge is idempotent).
        """
        events = self._failed + self._current + self._pending
        self._failed, self._current, self._pending = [], [], []
        return events

    def raise_failures(self) -> None:
        """Raise PublishError for events that failed since the last call (then forget them)."""
        if self._failed:
            failed, self._failed = self._failed, []
            raise PublishError(
                f"{len(failed)} state events could not be published ({self._failure_reason}). "
                "They were not applied; the error's .events holds them, "
                "StateStore.republish(error.events) sends them again.",
                [queued.event for queued in failed],
            )

    async def submit(self, queued: QueuedEvent) -> None:
        """Queue one event; wait only when ``max_pending`` events are already queued.

        Raises PublishError for earlier events that failed, after queuing this one (so
        the error never costs the caller the write it was making).
        """
        while len(self._pending) >= self._max_pending:
            self._wakeup.set()
            await self._idle.wait()
        self._pending.append(queued)
        self._idle.clear()
        self._ensure_task()
        self._wakeup.set()
        self.raise_failures()

    async def flush(self) -> None:
        """Wait until everything submitted so far is published, then raise failures."""
        if self._pending or self._in_flight:
            self._ensure_task()
            self._wakeup.set()
            await self._idle.wait()
        self.raise_failures()

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="statestore-publisher")

    async def _run(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                if len(self._pending) < self._settings.batch_max_events:
                    await asyncio.sleep(self._settings.batch_window_ms / 1000)
                while self._pending:
                    self._current = self._pending[: self._settings.batch_max_events]
                    del self._pending[: len(self._current)]
                    await self._publish(self._current)
                    self._current = []
                self._idle.set()
        except asyncio.CancelledError:
            # The loop is shutting down (asyncio.run ends): publish what is left.
            left = self.take_unpublished()
            if left:
                await self._publish(left, attempts=2)
            self._idle.set()
            if self._failed:
                log.error(
                    "%d state events were not published before shutdown (%s); event ids: %s",
                    len(self._failed), self._failure_reason, [q.id for q in self._failed][:20],
                )  # fmt: skip
            raise

    async def _publish(self, batch: list[QueuedEvent], attempts: int | None = None) -> None:
        self._in_flight = len(batch)
        attempts = attempts or self._settings.publish_attempts
        delay = self._settings.publish_backoff_ms / 1000
        remaining = pack(
            batch, self._settings.pack_events, self._settings.pack_max_bytes, self._message_ids, self._settings.partitions
        )
        reason = ""
        try:
            for attempt in range(attempts):
                try:
                    failed = await self._transport.publish_batch(
                        [(mid, body, events[0].event.key) for mid, (body, events) in remaining.items()]
                    )
                except SidecarUnavailableError as exc:
                    failed, reason = {mid: str(exc) for mid in remaining}, str(exc)
                else:
                    reason = next(iter(failed.values()), reason)
                self.published += sum(len(events) for mid, (_, events) in remaining.items() if mid not in failed)
                remaining = {mid: remaining[mid] for mid in failed if mid in remaining}
                if not remaining:
                    return
                if attempt + 1 < attempts:
                    log.warning("publish of %d messages failed, retrying: %s", len(remaining), reason)
                    await asyncio.sleep(delay)
                    delay *= 2
            self._failed.extend(q for _, events in remaining.values() for q in events)
            self._failure_reason = reason
        finally:
            self._in_flight = 0
