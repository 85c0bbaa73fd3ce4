import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statestore.core.events import (
    FieldUpdated,
    EVENT_TYPES,
    InvalidEventError,
    cloudevent_id,
    cloudevent_type,
    decode_event,
    encode_cloudevent,
)
from tests.strategies import event_histories, field_updated, object_replaced


def envelope(event):
    return json.loads(encode_cloudevent(event))


def test_cloudevent_envelope_names_kind_and_version():
    event = field_updated("progress", 75)
    ce = envelope(event)
    assert ce["type"] == "io.statestore.field_updated.v2" and ce["specversion"] == "1.0"
    assert ce["id"] == cloudevent_id(event) == "p1:workflows/s1:1"
    assert EVENT_TYPES == {
        cloudevent_type(kind, version) for kind in ("field_updated", "object_replaced") for version in (1, 2)
    } | {"io.statestore.state_deleted.v2", "io.statestore.field_deleted.v2"}


def test_deletes_are_new_version_2_types_with_no_version_1():
    from statestore.core.events import InvalidEventError, decode_event
    from tests.strategies import field_deleted, state_deleted

    for event in (state_deleted(), field_deleted("a")):
        ce = envelope(event)
        assert ce["type"] == f"io.statestore.{event.kind}.v2"
        assert decode_event(ce["type"], json.dumps(ce["data"])) == event
        with pytest.raises(InvalidEventError, match="unknown event type"):
            decode_event(f"io.statestore.{event.kind}.v1", json.dumps(ce["data"]))
        old = {k: v for k, v in ce["data"].items() if k != "app"} | {"schema_version": 1}
        with pytest.raises(InvalidEventError, match="came with schema_version 2"):
            decode_event(ce["type"], json.dumps(old))


def test_the_app_name_travels_with_the_event_and_namespaces_its_key():
    event = field_updated("progress", 75, app="orders")
    ce = envelope(event)
    assert ce["data"]["app"] == "orders"
    assert event.key == "orders/workflows/s1" and ce["id"] == "p1:orders/workflows/s1:1"
    assert decode_event(ce["type"], ce["data"]) == event


def version_1(event):
    """What a publisher from before app names sent for ``event``."""
    data = {k: v for k, v in envelope(event)["data"].items() if k != "app"}
    return f"io.statestore.{event.kind}.v1", {**data, "schema_version": 1}


@pytest.mark.parametrize("event", [field_updated("progress", 75), object_replaced({"a": [1, {"b": None}]})])
def test_version_1_events_are_upcast_to_the_default_app(event):
    ce_type, data = version_1(event)
    upcast = decode_event(ce_type, json.dumps(data))
    assert upcast == event and upcast.app == "default" and upcast.key == "workflows/s1"
    assert upcast.stamp == event.stamp  # the same event: a redelivered old copy is a duplicate


def test_a_version_1_event_cannot_name_an_app():
    ce_type, data = version_1(field_updated("progress", 75))
    with pytest.raises(InvalidEventError, match="no 'app' field"):
        decode_event(ce_type, {**data, "app": "orders"})


@pytest.mark.parametrize("app", ["", "a/b", "..", "a" * 129, 7])
def test_unsafe_app_names_are_rejected(app):
    with pytest.raises(InvalidEventError, match="app"):
        decode_event("io.statestore.field_updated.v2", {**envelope(field_updated("a", 1))["data"], "app": app})


@settings(max_examples=100, deadline=None)
@given(history=event_histories(max_events=10))
def test_events_round_trip(history):
    for event in history:
        ce = envelope(event)
        assert decode_event(ce["type"], json.dumps(ce["data"])) == event
        assert decode_event(ce["type"], ce["data"]) == event


@pytest.mark.parametrize(
    ("ce_type", "reason"),
    [("io.statestore.field_updated.v3", "unknown event type or schema version"),
     ("io.statestore.renamed.v1", "unknown event type"),
     ("com.example.other", "not a statestore event")],
)  # fmt: skip
def test_unknown_types_and_versions_are_rejected(ce_type, reason):
    with pytest.raises(InvalidEventError, match=reason):
        decode_event(ce_type, envelope(field_updated("a", 1))["data"])


def mutate(data, **changes):
    data = dict(data)
    for key, value in changes.items():
        if value is KeyError:
            data.pop(key)
        else:
            data[key] = value
    return data


GOOD = envelope(field_updated("password", "s3cret-value"))["data"]


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"[]", mutate(GOOD, state_id=KeyError), mutate(GOOD, seq="one"), mutate(GOOD, seq=0),
     mutate(GOOD, state_id="../etc"), mutate(GOOD, state_id="a" * 10_000), mutate(GOOD, state_type="secrets"),
     mutate(GOOD, schema_version=3), mutate(GOOD, hlc=[1]), mutate(GOOD, extra="x"), mutate(GOOD, kind="object_replaced"),
     mutate(GOOD, field="")],
)  # fmt: skip
def test_malformed_events_are_rejected_with_a_reason_that_leaks_no_value(data):
    raw = data if isinstance(data, bytes) else json.dumps(data)
    with pytest.raises(InvalidEventError) as info:
        decode_event("io.statestore.field_updated.v2", raw)
    assert "s3cret-value" not in str(info.value)
    assert str(info.value).startswith(("malformed", "CloudEvent type"))


def test_object_replace_needs_an_object():
    data = envelope(object_replaced({"a": 1}))["data"]
    with pytest.raises(InvalidEventError, match="value"):
        decode_event("io.statestore.object_replaced.v1", json.dumps({**data, "value": [1, 2]}))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)), st.sampled_from(sorted(EVENT_TYPES)))
def test_the_decoder_never_fails_other_than_with_a_reason(raw, ce_type):
    try:
        decode_event(ce_type, raw)
    except InvalidEventError:
        pass


def test_a_batch_with_bad_events_keeps_the_good_ones_and_names_the_bad():
    from statestore.core.events import BATCH_TYPE, decode_events, encode_batch_cloudevent, encode_event

    good = [field_updated("a", 1), field_updated("b", 2, seq=2, hlc=(2, 0))]
    parts = [encode_event(good[0]), b'{"kind": "field_updated", "seq": "x"}', encode_event(good[1]), b'[1]']
    ce = json.loads(encode_batch_cloudevent("p1:batch:1", parts))
    events, reasons = decode_events(BATCH_TYPE, ce["data"])
    assert events == good
    assert len(reasons) == 2 and reasons[0].startswith("event 1: malformed") and reasons[1].startswith("event 3:")


@pytest.mark.parametrize("data", [b"{", b"[]", b'{"schema_version": 2, "events": []}', b'{"schema_version": 1}'])
def test_a_malformed_batch_is_rejected_whole(data):
    from statestore.core.events import BATCH_TYPE, decode_events

    with pytest.raises(InvalidEventError, match="malformed"):
        decode_events(BATCH_TYPE, data)


TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_trace_context_travels_with_the_event_but_is_not_its_content():
    from statestore.core.events import FieldUpdated, encode_event

    plain = field_updated("progress", 75)
    traced = FieldUpdated(**{**plain.model_dump(), "traceparent": TRACE})
    assert b"traceparent" not in encode_event(plain)  # absent, not null, when there is none
    assert decode_event("io.statestore.field_updated.v2", encode_event(traced)).traceparent == TRACE
    assert traced.stamp == plain.stamp  # the same write: the trace does not change its order


@pytest.mark.parametrize("bad", ["", "00-xyz", TRACE.upper(), TRACE + "-extra"])
def test_a_malformed_traceparent_is_refused(bad):
    with pytest.raises(InvalidEventError, match="traceparent"):
        decode_event("io.statestore.field_updated.v2", {**envelope(field_updated("a", 1))["data"], "traceparent": bad})


def test_reading_an_event_key_never_waits_for_another_thread_computing_one(monkeypatch):
    """Issue 10: the SIGTERM drain reads event keys while the interrupted main thread may be
    half way through computing one; functools.cached_property (one lock per attribute for
    the whole class on Python 3.11) deadlocked the drain there and lost every queued event."""
    import threading

    import statestore.core.events as events_module

    inside, release = threading.Event(), threading.Event()
    real = events_module.format_state_key

    def slow_first(*args):
        if not inside.is_set():
            inside.set()
            release.wait(10)
        return real(*args)

    monkeypatch.setattr(events_module, "format_state_key", slow_first)
    first = FieldUpdated(state_id="wf-a", state_type="workflows", field="f", value=1, producer="p", seq=1, hlc=(1, 0))
    second = FieldUpdated(state_id="wf-b", state_type="workflows", field="f", value=1, producer="p", seq=1, hlc=(1, 0))
    computing = threading.Thread(target=lambda: first.key)
    computing.start()
    assert inside.wait(5)
    try:
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(second.key))
        reader.start()
        reader.join(2)
        assert got == ["workflows/wf-b"], "a key read waited for another event's key"
    finally:
        release.set()
        computing.join(5)
    assert first.key == "workflows/wf-a" and first.key is first.key  # computed once, then kept
