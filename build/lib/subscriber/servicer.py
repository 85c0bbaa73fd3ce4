"""The gRPC callback Dapr calls: decode, validate, apply, answer success/retry/drop.

Thin on purpose: decoding rules live in statestore.events, the merge in
statestore.document, storage in subscriber.applier.
"""

from __future__ import annotations

import asyncio
import logging
import time

from dapr.proto.runtime.v1 import appcallback_pb2 as pb
from dapr.proto.runtime.v1 import appcallback_pb2_grpc as pb_grpc
from google.protobuf import empty_pb2

from statestore.envelope import EnvelopeError, read_structured
from statestore.events import BATCH_TYPE, AnyEvent, InvalidEventError, decode_events
from statestore.settings import Settings
from subscriber.applier import EventApplier, TransientError

__all__ = ["SubscriberServicer", "decode_entry"]

log = logging.getLogger("statestore.subscriber")

Status = pb.TopicEventResponse.TopicEventResponseStatus
SUCCESS, RETRY, DROP = Status.SUCCESS, Status.RETRY, Status.DROP
YIELD_EVERY = 20  # entries (packed messages of up to 100 events) decoded between turns


def decode_entry(
    entry: pb.TopicEventBulkRequestEntry, max_clock_skew_s: float
) -> tuple[list[AnyEvent], list[str]]:
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
    horizon = time.time() * 1000 + max_clock_skew_s * 1000
    kept = []
    for event in events:
        if event.hlc[0] > horizon:
            reasons.append(f"event seq {event.seq}: timestamp {event.hlc[0]} ms is more than {max_clock_skew_s:g} s in the future")
        else:
            kept.append(event)
    if reasons and ce_type != BATCH_TYPE:
        raise InvalidEventError(reasons[0])
    return kept, reasons


class SubscriberServicer(pb_grpc.AppCallbackServicer, pb_grpc.AppCallbackAlphaServicer):
    """Subscribes to the state topic with bulk delivery and a dead-letter topic."""

    def __init__(self, applier: EventApplier, settings: Settings) -> None:
        self._applier = applier
        self._settings = settings
        self.applied_events = 0
        self.rejected_events = 0

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
                    max_messages_count=s.subscriber_batch_max,
                    max_await_duration_ms=s.subscriber_batch_wait_ms,
                ),
            )
            for pubsub, topic in ((s.pubsub_name, s.topic), (s.credentials_pubsub_name, s.credentials_topic))
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
        """Per-entry status: DROP for invalid events, SUCCESS or RETRY for the rest."""
        statuses: dict[str, int] = {}
        decoded: list[tuple[str, list[AnyEvent], bool]] = []
        if topic not in (self._settings.topic, self._settings.credentials_topic):
            log.warning("dropping %d entries from unexpected topic %r", len(entries), topic)
            return {entry.entry_id: DROP for entry in entries}
        for n, entry in enumerate(entries, 1):
            if n % YIELD_EVERY == 0:
                # A delivery of 1,000 packed messages decodes for a second or more: let a
                # credential delivery, waiting on the same loop, take its turn meanwhile.
                await asyncio.sleep(0)
            # Reasons name fields and types, never values (they may be secrets).
            try:
                events, reasons = decode_entry(entry, self._settings.max_clock_skew_s)
            except InvalidEventError as exc:
                log.warning("rejected event %s to the dead-letter topic: %s", _ce_id(entry), exc)
                statuses[entry.entry_id] = DROP
                self.rejected_events += 1
                continue
            for reason in reasons:
                log.warning("rejected part of %s (the whole message goes to the dead-letter topic): %s",
                            _ce_id(entry), reason)  # fmt: skip
            self.rejected_events += len(reasons)
            decoded.append((entry.entry_id, events, bool(reasons)))
        events = [event for _, entry_events, _ in decoded for event in entry_events]
        try:
            result = await self._applier.apply(events)
        except TransientError as exc:
            log.warning("batch of %d events will be redelivered: %s", len(events), exc)
            failed = True
        else:
            failed = False
            self.applied_events += result.events
            log.debug("applied %d events to %d states", result.events, result.states)
        for entry_id, _, partly_bad in decoded:
            # A message with some bad events: the good ones are applied (re-applying them
            # on a re-drive changes nothing), the message is kept in the dead-letter topic.
            statuses[entry_id] = RETRY if failed else DROP if partly_bad else SUCCESS
        return statuses

    async def OnInvoke(self, request, context):
        return empty_pb2.Empty()


def _ce_id(entry) -> str:
    return entry.cloud_event.id if entry.HasField("cloud_event") else entry.entry_id
