"""Issue 20: every message the publisher emits is a CloudEvent the SDK reads back."""

import json

import pytest
from cloudevents.core.formats.json import JSONFormat
from hypothesis import given, settings

from statestore.publisher.pipeline import QueuedEvent, pack
from statestore.core.envelope import EnvelopeError, read_structured, write_envelope, write_envelope_fast
from statestore.core.events import BATCH_TYPE, decode_events, encode_cloudevent, encode_event
from tests.strategies import event_histories, field_updated, object_replaced

REQUIRED = {"id", "source", "type", "specversion"}


def sdk_read(body: bytes):
    """The SDK's own reader, not ours."""
    return JSONFormat().read(None, body)


def messages(events, pack_events):
    from itertools import count

    return [body for body, _ in pack([QueuedEvent.of(e) for e in events], pack_events, 1 << 20, count(1)).values()]


@settings(max_examples=50, deadline=None)
@given(history=event_histories(max_events=12))
def test_every_message_the_publisher_emits_reads_back_through_the_sdk(history):
    for pack_events in (1, 100):  # one CloudEvent per event, and packed batches
        decoded = []
        for body in messages(history, pack_events):
            event = sdk_read(body)
            assert REQUIRED <= set(event.get_attributes())
            assert event.get_specversion() == "1.0" and event.get_datacontenttype() == "application/json"
            assert event.get_source() == "statestore" and event.get_type().startswith("io.statestore.")
            events, reasons = decode_events(event.get_type(), event.get_data())
            assert reasons == []
            decoded.extend(events)
        assert decoded == history


@pytest.mark.parametrize("event", [field_updated("progress", 75, app="orders"), object_replaced({"a": {"b": [1]}})])
def test_single_event_kinds_carry_their_type_and_id(event):
    ce = sdk_read(encode_cloudevent(event))
    assert ce.get_type() == f"io.statestore.{event.kind}.v2"
    assert ce.get_id() == f"p1:{event.key}:1"
    assert ce.get_data() == json.loads(encode_event(event)) and "traceparent" not in ce.get_data()


def test_the_fast_envelope_and_the_sdk_envelope_say_the_same():
    data = b'{"schema_version":1,"events":[]}'
    fast, sdk = (read_structured(write(f"id-1", BATCH_TYPE, data)) for write in (write_envelope_fast, write_envelope))
    assert fast == sdk == ("id-1", BATCH_TYPE, {"schema_version": 1, "events": []})


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"{", "not a structured CloudEvent"), (b"[1]", "not an object"), (b'"text"', "not an object"),
     (b'{"hello": "world"}', "Missing required attribute"),
     (b'{"specversion": "0.3", "id": "a", "source": "s", "type": "t", "data": {}}', "spec version '0.3'")],
)  # fmt: skip
def test_what_is_not_a_cloudevent_is_named(body, reason):
    with pytest.raises(EnvelopeError, match=reason):
        read_structured(body)
