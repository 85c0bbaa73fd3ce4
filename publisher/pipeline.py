"""The publish pipeline: batches events, publishes them in bulk, rides out outages, never drops.

``submit`` only queues (fire-and-forget). A background task sends what is queued as one
bulk publish when ``batch_max_events`` are waiting or when the oldest has waited
``batch_window_ms`` (at once when ``flush`` is awaited: somebody waits for them); a bulk
request is cut at ``bulk_publish_max_bytes``.

Outages: a batch that cannot be published is retried with capped exponential backoff and
jitter, probing the sidecar's readiness in between (so publishing resumes as soon as the
sidecar answers), for ``outage_budget_s``. Meanwhile ``submit`` keeps queuing up to
``max_pending_events`` and then waits (backpressure). Past the budget, what is still
unpublished is kept and raised as PublishError (with the events) on the next ``submit``
or ``flush``. One log line when an outage starts, one when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from statestore.core.errors import PublishError
from statestore.core.events import (
    AnyEvent,
    cloudevent_id,
    encode_batch_cloudevent,
    encode_cloudevent,
    encode_event,
)
from statestore.core.partitioning import partition_for, topic_partitions
from statestore.core.settings import Settings
from statestore.core.tracing import mark_error, publisher_span

__all__ = ["PublishPipeline", "PipelineStats", "Transport", "QueuedEvent", "pack", "cut_by_bytes"]

log = logging.getLogger("statestore.publisher")


class Transport(Protocol):
    """Sends CloudEvents; returns the ids that failed, with the reason."""

    async def publish_batch(self, cloudevents: Sequence[tuple[str, bytes, str]]) -> dict[str, str]:
        """``(entry id, body, partition key)`` each."""
        ...

    async def wait_ready(self, timeout: float) -> bool:
        """True once the sidecar accepts calls, False after ``timeout`` seconds."""
        ...

    # Optional: ``async def component_type(self) -> str | None``, the type of the pub/sub
    # component it publishes to. Without it, messages are packed by the configured partitions.


@dataclass(frozen=True)
class QueuedEvent:
    event: AnyEvent
    data: bytes  # the encoded event

    @property
    def id(self) -> str:
        return cloudevent_id(self.event)

    @classmethod
    def of(cls, event: AnyEvent) -> QueuedEvent:
        return cls(event, encode_event(event))


@dataclass
class PipelineStats:
    """Counters a caller can read (``StateStore.stats()``)."""

    published: int = 0
    outages: int = 0  # outages that started
    outages_ended: int = 0
    outage_seconds: float = 0.0  # total length of ended outages
    last_outage_s: float = 0.0
    in_outage_since: float | None = None  # time.monotonic() when the current outage began
    failed_events: int = 0  # events handed back by PublishError
    backpressure_waits: int = 0  # times a save_state call waited on a full queue
    retries: int = 0
    batches: int = 0  # bulk-publish requests sent to the sidecar
    publish_seconds: float = 0.0  # their total time
    publish_errors: int = 0  # messages a request failed to publish (each attempt)


def pack(
    batch: list[QueuedEvent], max_events: int, max_bytes: int, ids: Iterator[int], partitions: int = 1
) -> dict[str, tuple[bytes, list[QueuedEvent]]]:
    """Messages for ``batch``: message id -> (CloudEvent body, the events it carries).

    With ``max_events`` 1 each event is its own CloudEvent (type per kind); otherwise
    events travel in io.statestore.event_batch.v1 CloudEvents of at most ``max_events``
    events and about ``max_bytes`` (an event larger than that, or alone in its group,
    travels as its own CloudEvent), each
    holding events of one topic partition only (``partitions``), so its partition key
    (the first event's state key) sends every event of a state to its own partition.
    Order within a partition is kept.
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
        if len(group) == 1:  # alone: its own CloudEvent, without a batch envelope to build
            messages[group[0].id] = (encode_cloudevent(group[0].event, group[0].data), list(group))
        elif group:
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


def cut_by_bytes(entries: list[tuple[str, bytes, str]], max_bytes: int) -> list[list[tuple[str, bytes, str]]]:
    """``entries`` in consecutive requests of at most ``max_bytes`` of bodies (a larger one alone)."""
    requests: list[list[tuple[str, bytes, str]]] = []
    size = 0
    for entry in entries:
        if not requests or (requests[-1] and size + len(entry[1]) > max_bytes):
            requests.append([])
            size = 0
        requests[-1].append(entry)
        size += len(entry[1])
    return requests


class PublishPipeline:
    """One event loop's queue of events to publish to one topic."""

    def __init__(
        self,
        transport: Transport,
        settings: Settings,
        max_pending: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        batch_max_events: int | None = None,
        batch_window_ms: float | None = None,
        handed_back: Callable[[list[AnyEvent]], None] | None = None,
        published: Callable[[list[AnyEvent]], None] | None = None,
    ) -> None:
        self._transport = transport
        # Told of the events a PublishError hands back (they are not applied unless republished),
        # and of those the broker took (read-your-writes keeps them until seen applied).
        self._handed_back = handed_back
        self._published = published
        self._settings = settings
        self._batch_max_events = batch_max_events or settings.batch_max_events
        self._batch_window_s = (settings.batch_window_ms if batch_window_ms is None else batch_window_ms) / 1000
        self._max_pending = max_pending or settings.max_pending_events
        self._clock = clock
        self._partitions: int | None = None  # by the pub/sub component's type, once known
        self._pending: list[QueuedEvent] = []
        self._current: list[QueuedEvent] = []  # the batch being published
        self._failed: list[QueuedEvent] = []
        self._failure_reason = ""
        self._wakeup = asyncio.Event()
        self._hurry = asyncio.Event()  # set by flush: somebody waits, so no batch window
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()  # set while the queue has room
        self._room.set()
        self._task: asyncio.Task | None = None
        self._message_ids = itertools.count(1)
        self._backpressure_logged_at = -math.inf
        self.stats = PipelineStats()

    @property
    def published(self) -> int:
        return self.stats.published

    @property
    def pending(self) -> int:
        """Events queued or being published."""
        return len(self._pending) + len(self._current)

    @property
    def in_outage(self) -> bool:
        return self.stats.in_outage_since is not None

    def take_unpublished(self) -> list[QueuedEvent]:
        """Remove and return every event not yet known published (for a last-chance drain).

        That includes events that failed and were not yet reported, and a batch whose
        publish was cut off: it may have reached the broker, and sending it again is
        harmless (the merge is idempotent).
        """
        failed, current, pending = self._failed, self._current, self._pending
        self._failed, self._current, self._pending = [], [], []
        return failed + current + pending

    def raise_failures(self, belongs: Callable[[QueuedEvent], bool] | None = None) -> None:
        """Raise PublishError for events that failed since the last call (then forget them).

        With ``belongs``, only the failed events it selects are raised; the others stay
        for a later call (they belong to someone else, who must hear of them).
        """
        if not self._failed:
            return
        if belongs is None:
            failed, self._failed = self._failed, []
        else:
            failed = [q for q in self._failed if belongs(q)]
            if not failed:
                return
            self._failed = [q for q in self._failed if not belongs(q)]
        if self._handed_back is not None:
            self._handed_back([queued.event for queued in failed])
        raise PublishError(
            f"{len(failed)} state events could not be published ({self._failure_reason}). "
            "They were not applied; the error's .events holds them, "
            "StateStore.republish(error.events) sends them again.",
            [queued.event for queued in failed],
        )

    async def submit(self, queued: QueuedEvent) -> None:
        """Queue one event; wait only while ``max_pending`` events are already queued.

        Raises PublishError for earlier events that failed, after queuing this one (so
        the error never costs the caller the write it was making).
        """
        while len(self._pending) >= self._max_pending:
            if self._clock() - self._backpressure_logged_at > 60:  # say it once, not per call
                log.warning(
                    "statestore publish queue is full (%d events, STATESTORE_MAX_PENDING_EVENTS): "
                    "save_state waits until the sidecar takes events again (%d waits so far)",
                    len(self._pending), self.stats.backpressure_waits,
                )  # fmt: skip
                self._backpressure_logged_at = self._clock()
            self.stats.backpressure_waits += 1
            self._room.clear()
            self._ensure_task()
            self._wakeup.set()
            await self._room.wait()
        self._pending.append(queued)
        self._idle.clear()
        self._ensure_task()
        self._wakeup.set()
        self.raise_failures()

    async def flush(self, belongs: Callable[[QueuedEvent], bool] | None = None) -> None:
        """Wait until everything submitted so far is published, then raise failures
        (only those ``belongs`` selects, when given)."""
        if self._pending or self._current:
            self._ensure_task()
            self._hurry.set()
            self._wakeup.set()
            await self._idle.wait()
        self.raise_failures(belongs)

    async def aclose(self) -> None:
        """Stop the background task, publishing what is left first (loop shutdown)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        left = self.take_unpublished()
        if left:
            await self._publish(left, budget_s=self._settings.shutdown_grace_s)
            self._report_lost_at_shutdown()

    async def publish_all(self, events: list[QueuedEvent]) -> int:
        """Publish ``events`` now, without the queue (a last-chance drain); returns how many failed."""
        # No span: the drain may run in a signal handler that interrupted the app inside
        # its tracing SDK (a lock held there would deadlock the drain).
        await self._publish_batch(events, None)
        lost, self._failed = len(self._failed), []
        return lost

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="statestore-publisher")

    def _room_check(self) -> None:
        if len(self._pending) < self._max_pending:
            self._room.set()

    async def _run(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                if len(self._pending) < self._batch_max_events and not self._hurry.is_set():
                    # Wait for company, unless a flush wants the events now (a credential save, sync).
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._hurry.wait(), self._batch_window_s)
                self._hurry.clear()
                while self._pending:
                    self._current = self._pending[: self._batch_max_events]
                    del self._pending[: len(self._current)]
                    self._room_check()
                    try:
                        await self._publish(self._current)
                    except Exception as exc:  # a bug, not an outage: hand the batch back, never drop it
                        log.exception("statestore publisher failed on a batch of %d events", len(self._current))
                        self._failed.extend(self._current)
                        self.stats.failed_events += len(self._current)
                        self._failure_reason = f"{type(exc).__name__}: {exc}"
                    self._current = []
                self._idle.set()
        except asyncio.CancelledError:
            # The loop is shutting down (asyncio.run ends): publish what is left, within
            # the shutdown grace period.
            left = self.take_unpublished()
            if left:
                await self._publish(left, budget_s=self._settings.shutdown_grace_s)
            self._idle.set()
            self._room.set()
            self._report_lost_at_shutdown()
            raise

    def _report_lost_at_shutdown(self) -> None:
        if self._failed:
            log.error(
                "%d state events were not published before shutdown (%s); event ids: %s",
                len(self._failed), self._failure_reason, [q.id for q in self._failed][:20],
            )  # fmt: skip

    async def _publish(self, batch: list[QueuedEvent], budget_s: float | None = None) -> None:
        """Publish ``batch``; retry through an outage of up to the budget, then keep what failed.

        When the batch's events carry trace contexts, a producer span ``statestore.publish``
        covers it (retries included), linked to them."""
        traced = [q.event.traceparent for q in batch if q.event.traceparent]
        with publisher_span("statestore.publish", traced, {"statestore.events": len(batch)}) as span:
            failed_before = self.stats.failed_events
            await self._publish_batch(batch, budget_s)
            held = self.stats.failed_events - failed_before
            if span is not None:
                span.set_attribute("statestore.events_held", held)
                if held:
                    mark_error(span, f"{held} events not published within the outage budget (PublishError)")

    async def _publish_batch(self, batch: list[QueuedEvent], budget_s: float | None) -> None:
        s = self._settings
        budget = s.outage_budget_s if budget_s is None else budget_s
        remaining = pack(batch, s.pack_events, s.pack_max_bytes, self._message_ids, await self._topic_partitions())
        delay = s.publish_backoff_ms / 1000
        started = self._clock()
        reason = ""
        while True:
            failed: dict[str, str] = {}
            entries = [(mid, body, events[0].event.key) for mid, (body, events) in remaining.items()]
            for request in cut_by_bytes(entries, s.bulk_publish_max_bytes):
                sent = time.monotonic()
                try:
                    request_failed = await self._transport.publish_batch(request)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # whatever it is, the batch is kept and retried
                    reason = f"{type(exc).__name__}: {exc}"
                    request_failed = {mid: reason for mid, *_ in request}
                failed.update(request_failed)
                self.stats.batches += 1
                self.stats.publish_seconds += time.monotonic() - sent
                self.stats.publish_errors += len(request_failed)
            if failed and not reason:
                reason = next(iter(failed.values()))
            taken = [events for mid, (_, events) in remaining.items() if mid not in failed]
            self.stats.published += sum(map(len, taken))
            if self._published is not None and taken:
                self._published([queued.event for events in taken for queued in events])
            if len(failed) < len(remaining):
                self._outage_ended()
            remaining = {mid: remaining[mid] for mid in failed if mid in remaining}
            if not remaining:
                return
            self._outage_started(reason, sum(len(events) for _, events in remaining.values()))
            # The budget counts from the outage's start (a shutdown drain: from its own).
            since = started if budget_s is not None else min(started, self.stats.in_outage_since or started)
            outage_for = self._clock() - since
            left = budget - outage_for
            if left <= 0:
                held = [q for _, events in remaining.values() for q in events]
                self._failed.extend(held)
                self.stats.failed_events += len(held)
                self._failure_reason = f"{reason}; gave up after {outage_for:.1f} s"
                return
            self.stats.retries += 1
            # Capped exponential backoff with jitter; a sidecar that answers ends the wait.
            wait = min(delay, s.publish_backoff_max_ms / 1000, left) * random.uniform(0.5, 1.0)
            delay *= 2
            pause = self._clock()
            if await self._transport.wait_ready(wait) and self._clock() - pause < 0.005:
                # The sidecar answers but refused the batch (its broker is down): back off
                # the full delay. One that came back during the wait is retried at once.
                await asyncio.sleep(wait)

    async def _topic_partitions(self) -> int:
        """Partitions to pack by: asked of the sidecar once (statestore.core.partitioning.topic_partitions)."""
        if self._partitions is None:
            lookup = getattr(self._transport, "component_type", None)
            if lookup is None:
                self._partitions = self._settings.partitions
            else:
                try:
                    self._partitions = topic_partitions(await lookup(), self._settings.partitions)
                except Exception:  # the sidecar is not answering: pack as configured, ask again next batch
                    return self._settings.partitions
        return self._partitions

    def _outage_started(self, reason: str, events: int) -> None:
        if self.stats.in_outage_since is None:
            self.stats.in_outage_since = self._clock()
            self.stats.outages += 1
            log.warning(
                "statestore: publishing failed (%s); retrying for up to %g s (STATESTORE_OUTAGE_BUDGET_S), "
                "%d events held", reason, self._settings.outage_budget_s, events + len(self._pending),
            )  # fmt: skip

    def _outage_ended(self) -> None:
        since = self.stats.in_outage_since
        if since is not None:
            lasted = self._clock() - since
            self.stats.in_outage_since = None
            self.stats.outages_ended += 1
            self.stats.outage_seconds += lasted
            self.stats.last_outage_s = lasted
            log.warning(
                "statestore: publishing resumed after %.1f s of outage; %d events were held",
                lasted, len(self._pending) + len(self._current),
            )  # fmt: skip
