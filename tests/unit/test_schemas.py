"""Issue 20: the checked-in JSON Schema files are the models' own, and they say what the
decoder says."""

import json

import jsonschema
import pytest
from hypothesis import given, settings

from statestore.core.events import EVENT_TYPES, InvalidEventError, decode_event, encode_event
from statestore.core.schemas import SCHEMA_DIR, data_schemas, main, render
from tests.strategies import event_histories, field_updated

SCHEMAS = data_schemas()


def validator(ce_type):
    return jsonschema.Draft202012Validator(SCHEMAS[ce_type])


def test_the_checked_in_files_are_what_the_models_generate():
    files = {path.name: path.read_text() for path in SCHEMA_DIR.glob("*.json")}
    assert files == {f"{ce_type}.json": render(schema) for ce_type, schema in SCHEMAS.items()}, (
        "docs/schemas drifted from statestore/core/events.py: run `python -m statestore.core.schemas`"
    )
    assert main(["--check"]) == 0


def test_there_is_a_schema_for_every_type_the_subscriber_accepts():
    from statestore.core.events import BATCH_TYPE

    assert set(SCHEMAS) == EVENT_TYPES | {BATCH_TYPE}
    for schema in SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)


@settings(max_examples=50, deadline=None)
@given(history=event_histories(max_events=8))
def test_every_event_the_publisher_emits_is_valid_against_its_schema(history):
    for event in history:
        validator(f"io.statestore.{event.kind}.v2").validate(json.loads(encode_event(event)))
    batch = {"schema_version": 1, "events": [json.loads(encode_event(e)) for e in history]}
    validator("io.statestore.event_batch.v1").validate(batch)


def version_1(data):
    return {**{k: v for k, v in data.items() if k != "app"}, "schema_version": 1}


GOOD = json.loads(encode_event(field_updated("progress", 75, app="orders")))


@pytest.mark.parametrize(
    ("ce_type", "data"),
    [("io.statestore.field_updated.v2", {**GOOD, "state_id": "../etc"}),
     ("io.statestore.field_updated.v2", {**GOOD, "state_id": "a..b"}),
     ("io.statestore.field_updated.v2", {**GOOD, "app": "a/b"}),
     ("io.statestore.field_updated.v2", {**GOOD, "seq": 0}),
     ("io.statestore.field_updated.v2", {**GOOD, "hlc": [1]}),
     ("io.statestore.field_updated.v2", {**GOOD, "extra": 1}),
     ("io.statestore.field_updated.v1", {**version_1(GOOD), "app": "orders"})],
)  # fmt: skip
def test_the_schema_refuses_what_the_decoder_refuses(ce_type, data):
    assert not validator(ce_type).is_valid(data)
    with pytest.raises(InvalidEventError):
        decode_event(ce_type, data)


def test_a_version_1_event_is_valid_against_the_version_1_schema_and_decodes():
    data = version_1(json.loads(encode_event(field_updated("progress", 75))))
    validator("io.statestore.field_updated.v1").validate(data)
    assert decode_event("io.statestore.field_updated.v1", data).app == "default"
