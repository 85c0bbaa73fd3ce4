"""The hot paths that skip pydantic's general machinery give exactly what pydantic gives:
construction without validation (statestore.core.construct), event JSON (orjson), the
native id rules of the decoder, and a snapshot read straight from a stored document."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from statestore.core.document import StateDocument, apply_events, decode_document, encode_document, snapshot_of
from statestore.core.events import (
    FieldDeleted,
    FieldUpdated,
    InvalidEventError,
    ObjectReplaced,
    StateDeleted,
    decode_event,
    encode_event,
)
from statestore.core.paths import SAFE_ID_PATTERN, StateType, validate_id
from tests.strategies import event_histories, field_updated, json_values

STAMP = dict(app="default", state_id="s1", state_type=StateType.WORKFLOWS, producer="p1", seq=3, hlc=(5, 1))
EVENTS = [
    (FieldUpdated, dict(STAMP, field="f", value={"a": [1, None]}, ttl_seconds=None, kind="field_updated")),
    (FieldUpdated, dict(STAMP, field="f", value=2, ttl_seconds=60, traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")),
    (ObjectReplaced, dict(STAMP, value={"x": 1})),
    (StateDeleted, dict(STAMP)),
    (FieldDeleted, dict(STAMP, field="f")),
]


@pytest.mark.parametrize(("cls", "values"), EVENTS)
def test_model_construct_builds_what_pydantics_builds(cls, values):
    fast, general = cls.model_construct(**values), BaseModel.model_construct.__func__(cls, **values)
    assert fast.__dict__ == general.__dict__ and fast.model_fields_set == general.model_fields_set
    assert fast == general and fast.model_dump_json() == general.model_dump_json()
    assert fast.__pydantic_extra__ is None and fast.__pydantic_private__ is None
    assert fast.key == "workflows/s1" and fast.stamp == general.stamp


def test_a_documents_default_factories_give_each_document_its_own_dicts():
    a, b = StateDocument.model_construct(), StateDocument.model_construct()
    assert a == BaseModel.model_construct.__func__(StateDocument) and a.fields is not b.fields


@pytest.mark.parametrize(("cls", "values"), EVENTS)
def test_encode_event_writes_the_json_pydantic_writes(cls, values):
    event = cls.model_construct(**values)
    absent = {name for name in ("traceparent", "ttl_seconds") if getattr(event, name, None) is None}
    assert encode_event(event) == event.model_dump_json(exclude=absent or None).encode()
    assert decode_event(f"io.statestore.{event.kind}.v2", encode_event(event)) == event


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value_travels_as_pydantic_writes_it(value):
    event = field_updated("f", value)
    assert json.loads(encode_event(event)) == json.loads(event.model_dump_json(exclude={"traceparent", "ttl_seconds"}))


def test_an_integer_beyond_64_bits_is_still_written():
    event = field_updated("f", 2**70)
    assert json.loads(encode_event(event))["value"] == 2**70


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab.-_/ \x00é", max_size=10) | st.text(max_size=3))
def test_the_decoders_id_rule_is_validate_ids(state_id):
    data = json.loads(encode_event(field_updated("f", 1)))
    try:
        validate_id(state_id)
        valid = True
    except ValueError:
        valid = False
    try:
        decode_event("io.statestore.field_updated.v2", {**data, "state_id": state_id})
        decoded = True
    except InvalidEventError as exc:
        decoded = False
        assert "state id" in str(exc)  # validate_id's own message
    assert decoded == valid == bool(SAFE_ID_PATTERN.fullmatch(state_id) and ".." not in state_id)


@settings(max_examples=200, deadline=None)
@given(event_histories())
def test_a_snapshot_read_from_the_stored_document_is_the_documents_state(events):
    document = apply_events(None, events) if events else StateDocument()
    raw = encode_document(document)
    state, ttl_s = snapshot_of("workflows/s1", raw)
    decoded = decode_document("workflows/s1", raw)
    assert state == (decoded.to_state() if decoded.exists() else None) and ttl_s == decoded.ttl_s


def test_a_snapshot_of_a_document_from_before_deletes_falls_back_to_the_full_decode():
    old = b'{"version":1,"replaced":null,"fields":{"f":[1,[1,0,"p",1,"d"]]},"producers":{},"deleted":{}}'
    assert snapshot_of("workflows/s1", old) == ({"f": 1}, None)

