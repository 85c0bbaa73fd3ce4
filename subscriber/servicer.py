"""The gRPC callback Dapr calls: decode, validate, apply, answer success/retry/drop.

Thin on purpose: decoding rules live in statestore.core.events, the merge in
statestore.core.document, storage in statestore.subscriber.applier.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from dapr.proto.runtime.v1 import appcallback_pb2 as pb
from dapr.proto.runtime.v1 import appcallback_pb2_grpc as pb_grpc
from google.protobuf import empty_pb2
from google.protobuf.json_format import MessageToDict

from statestore.core.envelope import EnvelopeError, read_structured
from statestore.core.events import BATCH_TYPE, AnyEvent, InvalidEventError, decode_events
from statestore.core.settings import Settings
from statestore.core.tracing import MAX_KEYS_SHOWN, linked_span, mark_error
from statestore.subscriber.applier import EventApplier
from statestore.subscriber.deadletter import DeadLetter, DeadLetterBox, dead_letter
from statestore.subscriber.metrics import SubscriberMetrics
from statestore.subscriber.ports import InMemoryParking, InMemoryStateRepository, Parking

__all__ = ["SubscriberServicer", "decode_entry", "refusal", "split_future"]

log = logging.getLogger("statestore.subscriber")

Status = pb.TopicEventResponse.TopicEventResponseStatus
SUCCESS, RETRY, DROP = Status.SUCCESS, Status.RETRY, Status.DROP
YIELD_EVERY = 20  # entries (packed messages of up to 100 events) decoded between turns


def decode_entry(entry: pb.TopicEventBulkRequestEntry) -> tuple[list[AnyEvent], list[str]]:
    """The events in one delivered entry, and a reason per event refused.

    Raises InvalidEventError (with a reason) when the entry carries no statestore event.
    """
    if entry.HasField("cloud_event"):
        ce_type, data = entry.cloud_event.type, entry.cloud_event.data
    else:  # a structured CloudEvent Dapr passed through unparsed: the SDK reads it
        try:
            _, ce_type, data = read_structured(entry.bytes)
        except EnvelopeError as exc:
            raise InvalidEventError(str(exc)) from None
        if data is None:
            raise InvalidEventError("the CloudEvent has no data")
    events, reasons = decode_events(ce_type, data)
    if reasons and ce_type != BATCH_TYPE:
        raise InvalidEventError(reasons[0])
    return events, reasons


REFUSED_STATE = (
    "its events decode: a state it changes was refused (its document would exceed"
    " STATESTORE_MAX_DOCUMENT_BYTES, or the stored one cannot be decoded; the subscriber log names it),"
    " or an older subscriber could not read it"
)


def refusal(entry: pb.TopicEventBulkRequestEntry) -> str:
    """Why this subscriber refuses a dead-lettered message, as its decoder says now (no values)."""
    try:
        reasons = decode_entry(entry)[1]
    except InvalidEventError as exc:
        return f"invalid event: {exc}"
    if reasons:
        return f"invalid event ({len(reasons)} of the message's events): {reasons[0]}"
    return REFUSED_STATE


def split_future(
    events: list[AnyEvent], max_clock_skew_s: float, now_ms: float
) -> tuple[list[AnyEvent], list[AnyEvent]]:
    """(events to apply now, events stamped more than the skew bound ahead of ``now_ms``).

    The second kind is parked, not refused: this subscriber's clock may be the wrong one.
    """
    horizon = now_ms + max_clock_skew_s * 1000
    now, later = [], []
    for event in events:
        (later if event.hlc[0] > horizon else now).append(event)
    return now, later


@dataclass
class _Entry:
    entry_id: str
    keys: set[str]
    bad: bool  # some events were malformed: the message goes to the dead-letter topic
    parked: bool  # some events are stamped too far ahead: parked until due


class SubscriberServicer(pb_grpc.AppCallbackServicer, pb_grpc.AppCallbackAlphaServicer):
    """Subscribes to the state topics with bulk delivery and a dead-letter topic, and to the
    dead-letter topic itself, whose messages it keeps in ``dead_letters``."""

    def __init__(
        self,
        applier: EventApplier,
        settings: Settings,
        parking: Parking | None = None,
        metrics: SubscriberMetrics | None = None,
        dead_letters: DeadLetterBox | None = None,
        tracer: Any = None,
    ) -> None:
        self._applier = applier
        self._tracer = tracer  # an OpenTelemetry tracer (statestore.subscriber.tracing), None: no spans
        self.dead_letters = dead_letters or DeadLetterBox(InMemoryStateRepository())
        self.metrics = metrics or getattr(applier, "metrics", None) or SubscriberMetrics()
        self._settings = settings
        self._parking = parking or InMemoryParking()
        self._budgets: dict[str, asyncio.Semaphore] = {}
        self._clock_warned = False
        self.applied_events = 0
        self.rejected_events = 0
        self.parked_events = 0

    def _budget(self, topic: str) -> asyncio.Semaphore:
        """Deliveries applied at once, per topic: one topic's backlog never makes
        another's deliveries wait, and decoded events in memory stay bounded."""
        if topic not in self._budgets:
            self._budgets[topic] = asyncio.Semaphore(self._settings.subscriber_deliveries_per_topic)
        return self._budgets[topic]

    async def ListTopicSubscriptions(self, request, context):
        # The credentials topic has a subscription (and a pub/sub component, with its own
        # delivery workers) of its own, so a credential never waits behind progress updates.
        s = self._settings
        subscriptions = [
            pb.TopicSubscription(
                pubsub_name=pubsub,
                topic=topic,
                dead_letter_topic=s.deadletter_topic,
                bulk_subscribe=pb.BulkSubscribeConfig(
                    enabled=True,
                    max_messages_count=s.subscriber_delivery_messages,
                    max_await_duration_ms=s.subscriber_batch_wait_ms,
                ),
            )
            for pubsub, topic in ((s.pubsub_name, s.topic), (s.pubsub_name, s.parked_topic),
                                  (s.credentials_pubsub_name, s.credentials_topic))  # fmt: skip
        ]
        # The dead-letter topic of each component, read as raw bytes: a dead letter may
        # not be JSON at all (daprd dead-letters what it cannot parse), and it is kept
        # exactly as it was. No dead-letter topic of its own: a failure is retried.
        subscriptions += [
            pb.TopicSubscription(
                pubsub_name=pubsub,
                topic=s.deadletter_topic,
                metadata={"rawPayload": "true"},
                bulk_subscribe=pb.BulkSubscribeConfig(
                    enabled=True, max_messages_count=s.subscriber_delivery_messages,
                    max_await_duration_ms=s.subscriber_batch_wait_ms,
                ),
            )  # fmt: skip
            for pubsub in dict.fromkeys((s.pubsub_name, s.credentials_pubsub_name))
        ]
        return pb.ListTopicSubscriptionsResponse(subscriptions=subscriptions)

    async def ListInputBindings(self, request, context):
        return pb.ListInputBindingsResponse()

    async def OnBulkTopicEvent(self, request, context):
        statuses = await self.handle(request.topic, list(request.entries))
        return pb.TopicEventBulkResponse(
            statuses=[
                pb.TopicEventBulkResponseEntry(entry_id=entry_id, status=status)
                for entry_id, status in statuses.items()
            ]
        )

    OnBulkTopicEventAlpha1 = OnBulkTopicEvent

    async def OnTopicEvent(self, request, context):
        entry = pb.TopicEventBulkRequestEntry(
            entry_id=request.id or "single",
            cloud_event=pb.TopicEventCERequest(
                id=request.id, type=request.type, data=request.data,
                data_content_type=request.data_content_type,
            ),
        )  # fmt: skip
        statuses = await self.handle(request.topic, [entry])
        return pb.TopicEventResponse(status=next(iter(statuses.values())))

    async def handle(self, topic: str, entries: list) -> dict[str, int]:
        """Per-entry status: DROP for invalid events and refused states, RETRY for events
        not applied (or not parked) now, SUCCESS for the rest."""
        if topic == self._settings.deadletter_topic:
            return await self._keep_dead_letters(entries)
        if topic not in (self._settings.topic, self._settings.parked_topic, self._settings.credentials_topic):
            log.warning("dropping %d entries from unexpected topic %r", len(entries), topic)
            return {entry.entry_id: DROP for entry in entries}
        async with self._budget(topic):
            with self.metrics.delivery():
                return await self._handle(entries, topic)

    async def _handle(self, entries: list, topic: str) -> dict[str, int]:
        reparking = topic == self._settings.parked_topic
        received_ns = time.time_ns() if self._tracer is not None else None
        statuses: dict[str, int] = {}
        decoded: list[_Entry] = []
        ready: list[AnyEvent] = []
        parked: list[AnyEvent] = []
        now_ms = time.time() * 1000
        for n, entry in enumerate(entries, 1):
            if n % YIELD_EVERY == 0:
                # A large delivery decodes for a while: let a credential delivery,
                # waiting on the same loop, take its turn meanwhile.
                await asyncio.sleep(0)
            # Reasons name fields and types, never values (they may be secrets).
            try:
                events, reasons = decode_entry(entry)
            except InvalidEventError as exc:
                log.warning("rejected event %s to the dead-letter topic: %s", _ce_id(entry), exc)
                statuses[entry.entry_id] = DROP
                self.rejected_events += 1
                self.metrics.dead_lettered.labels(reason="invalid_event").inc()
                continue
            for reason in reasons:
                log.warning("rejected part of %s (the whole message goes to the dead-letter topic): %s",
                            _ce_id(entry), reason)  # fmt: skip
            self.rejected_events += len(reasons)
            now, later = split_future(events, self._settings.max_clock_skew_s, now_ms)
            if later and not reparking:
                self._warn_clock(later[0], now_ms)
            parked.extend(later)
            ready.extend(now)
            decoded.append(_Entry(entry.entry_id, {event.key for event in now}, bool(reasons), bool(later)))
        if decoded and not parked and not reparking:
            self._clock_warned = False  # warn again the next time it happens
        parking_failed = False
        if parked:
            # Parked events are published to the parked topic before this message is
            # acknowledged (never lost), and not answered RETRY: daprd delivers one batch
            # of a topic at a time, so a retried message would hold up every later one.
            if reparking:  # not due yet: go round again, at most once a second
                await asyncio.sleep(1.0)
            try:
                await self._parking.park(parked)
                self.parked_events += 0 if reparking else len(parked)
                self.metrics.events_parked.inc(0 if reparking else len(parked))
            except Exception as exc:
                log.warning("could not park %d events, their messages will be redelivered: %s", len(parked), exc)
                parking_failed = True
        with self._apply_span(topic, len(entries), ready, received_ns) as span:
            result = await self._applier.apply(ready)
            if span is not None:
                span.set_attributes({"statestore.states": result.states, "statestore.written": result.written,
                                     "statestore.failed": len(result.failed), "statestore.refused": len(result.refused)})  # fmt: skip
                if result.failed:
                    mark_error(span, f"{len(result.failed)} states not applied now (their messages are redelivered)")
        self.applied_events += result.events - sum(1 for e in ready if e.key in result.failed or e.key in result.refused)
        not_applied = result.failed.keys() | result.refused.keys()
        self.metrics.applied_many((e.kind, e.hlc[0]) for e in ready if e.key not in not_applied)
        for key, reason in result.refused.items():
            log.warning("refused state %s (its messages go to the dead-letter topic): %s", key, reason)
        if result.failed:
            key, reason = next(iter(result.failed.items()))
            log.warning("%d of %d states not applied now, their messages will be redelivered (first: %s: %s)",
                        len(result.failed), result.states, key, reason)  # fmt: skip
        for item in decoded:
            # A message with some bad events: the good ones are applied (re-applying them
            # on a re-drive changes nothing), the message is kept in the dead-letter topic.
            if (item.parked and parking_failed) or any(key in result.failed for key in item.keys):
                statuses[item.entry_id] = RETRY
            elif item.bad or any(key in result.refused for key in item.keys):
                statuses[item.entry_id] = DROP
                reason = "invalid_event" if item.bad else "refused_state"
                self.metrics.dead_lettered.labels(reason=reason).inc()
            else:
                statuses[item.entry_id] = SUCCESS
        return statuses

    async def _keep_dead_letters(self, entries: list) -> dict[str, int]:
        """Keep each dead letter in the state store: SUCCESS once stored, RETRY if the
        store did not take them (redelivered: nothing is lost)."""
        letters = [self._dead_letter(entry) for entry in entries]
        try:
            new = await self.dead_letters.keep(letters)
        except Exception as exc:
            log.warning("could not keep %d dead letters, they will be redelivered: %s", len(letters), exc)
            return {entry.entry_id: RETRY for entry in entries}
        if new:
            log.info("kept %d dead letters (statestore deadletter list)", new)
        return {entry.entry_id: SUCCESS for entry in entries}

    def _dead_letter(self, entry: pb.TopicEventBulkRequestEntry) -> DeadLetter:
        try:
            reason = refusal(entry)
        except Exception as exc:  # a message nothing can read must not hold up the dead-letter topic
            reason = f"unreadable: {type(exc).__name__}"
        return dead_letter(_raw(entry), self._settings, reason)

    def _apply_span(
        self, topic: str, messages: int, events: list[AnyEvent], received_ns: int | None
    ) -> contextlib.AbstractContextManager[Any]:
        """One consumer span per delivery (from its receipt), linked to (or, with one,
        continuing) the trace contexts its events carry; current while the delivery is
        applied, so the outbox entries it commits name it (the snapshot span links to it)."""
        if self._tracer is None:
            return contextlib.nullcontext()
        keys: dict[str, None] = {}
        for event in events:
            if len(keys) >= MAX_KEYS_SHOWN:
                break
            keys[event.key] = None
        attributes = {
            "messaging.destination.name": topic,
            "messaging.batch.message_count": messages,
            "statestore.events": len(events),
            "statestore.state_keys": list(keys),
        }
        return linked_span(self._tracer, "statestore.apply", (e.traceparent for e in events),
                           kind="consumer", attributes=attributes, start_time=received_ns)  # fmt: skip

    def _warn_clock(self, event: AnyEvent, now_ms: float) -> None:
        if self._clock_warned:
            return
        self._clock_warned = True
        log.warning(
            "events are stamped more than %g s ahead of this subscriber's clock (producer %s: %.1f s ahead):"
            " this clock looks wrong (or that producer's is ahead). They are parked on topic %r, not refused,"
            " and applied once within STATESTORE_MAX_CLOCK_SKEW_S; check NTP on both hosts",
            self._settings.max_clock_skew_s, event.producer, (event.hlc[0] - now_ms) / 1000,
            self._settings.parked_topic,
        )  # fmt: skip

    async def OnInvoke(self, request, context):
        return empty_pb2.Empty()


def _raw(entry: pb.TopicEventBulkRequestEntry) -> bytes:
    """The message as it travelled (the dead-letter subscription asks for raw payloads;
    a parsed CloudEvent is written back as structured JSON)."""
    if not entry.HasField("cloud_event"):
        return entry.bytes
    ce = entry.cloud_event
    body = {**MessageToDict(ce.extensions), "specversion": ce.spec_version or "1.0", "id": ce.id,
            "source": ce.source, "type": ce.type, "datacontenttype": ce.data_content_type}  # fmt: skip
    try:
        body["data"] = json.loads(ce.data) if ce.data else None
    except ValueError:
        body["data"] = ce.data.decode("utf-8", "replace")
    return json.dumps(body).encode()


def _ce_id(entry) -> str:
    return entry.cloud_event.id if entry.HasField("cloud_event") else entry.entry_id
