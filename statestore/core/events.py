"""The wire contract between publisher and subscriber. Pure: no I/O, no Dapr.

Each write becomes one event, sent as the data of a CloudEvent whose ``type`` names the
kind and schema version. Every event names the caller's application (``app``: its namespace of states, schema
version 2; version-1 events, from before app names, are read as app ``default``) and
carries a stamp, ``(wall_ms, logical, producer,
seq)``: a hybrid logical clock time, the producer's identity and the producer's sequence
number for that state. Stamps are unique and totally ordered; the subscriber's merge
(statestore.core.document) applies events as if in stamp order.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Callable, Literal, TypeVar, Union

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
)

from statestore.core.construct import FastConstructModel
from statestore.core.envelope import write_envelope, write_envelope_fast
from statestore.core.paths import (
    DEFAULT_APP,
    MAX_ID_LENGTH,
    SAFE_ID_PATTERN,
    StateType,
    format_state_key,
    validate_app_name,
    validate_id,
)

__all__ = [
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "upcast_v1",
    "V2_FIELDS",
    "TRACEPARENT_PATTERN",
    "Stamp",
    "FieldUpdated",
    "ObjectReplaced",
    "StateDeleted",
    "FieldDeleted",
    "AnyEvent",
    "WRITE_KINDS",
    "Event",
    "EventBatch",
    "EVENT_TYPES",
    "KINDS_SINCE",
    "InvalidEventError",
    "cloudevent_type",
    "cloudevent_id",
    "encode_event",
    "encode_cloudevent",
    "encode_batch_cloudevent",
    "decode_event",
    "decode_events",
    "BATCH_TYPE",
    "describe_errors",
]

SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)
"""Versions the subscriber accepts. 2 added ``app``; a version-1 event is upcast."""

Stamp = tuple[int, int, str, int, str]
"""(hlc wall_ms, hlc logical, producer, seq, digest): the total order of events.

The digest of the event's content only matters when two events claim the same producer
and sequence number with different content (a buggy or malicious producer): the order is
still total, so every replica and every delivery order picks the same winner."""


V2_FIELDS = ("app", "traceparent", "ttl_seconds")
"""Fields version 2 added: a version-1 event has none of them. (``ttl_seconds`` was added
to version 2 before version 2 shipped, so it is optional and not a new version.)"""


def upcast_v1(data: Any) -> Any:
    """A version-1 event (no ``app``) as version 2: it belongs to the app ``default``.

    Version 1 had neither ``app`` nor ``traceparent``, so one that has either is malformed."""
    if isinstance(data, dict) and data.get("schema_version") == 1:
        for field in V2_FIELDS:
            if field in data:
                raise ValueError(f"schema_version 1 events have no {field!r} field (it came with version 2)")
        if data.get("kind") in ("state_deleted", "field_deleted"):
            raise ValueError(f"{data['kind']} events came with schema_version 2; send schema_version 2")
        return {**data, "schema_version": 2, "app": DEFAULT_APP}
    return data


TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"

# What the id rules (statestore.core.paths.validate_id) mean in a JSON Schema, for producers
# in other languages (docs/schemas). The decoder enforces the same rules natively, in
# pydantic-core (no Python call per event): one regular expression without look-around,
# where every '.' is followed by another character than '.' (or ends the id), and a length;
# a violation is described with validate_id's own message (describe_errors).
_SAFE_NAME = {"pattern": f"^{SAFE_ID_PATTERN.pattern}$", "maxLength": MAX_ID_LENGTH, "not": {"pattern": "[.][.]"}}
_SAFE_NAME_RULE = r"^[A-Za-z0-9_\-](?:[A-Za-z0-9_\-]|\.[A-Za-z0-9_\-])*\.?$"
SafeName = Annotated[str, Field(pattern=_SAFE_NAME_RULE, max_length=MAX_ID_LENGTH, json_schema_extra=_SAFE_NAME)]


_T = TypeVar("_T")


class computed_once:
    """A read-only attribute computed on first read and kept in the instance's ``__dict__``.

    A non-data descriptor: once computed, the value in ``__dict__`` shadows it, and every
    later read is a plain attribute read (``key`` and ``stamp`` are read several times per
    event on the hot path). Not ``functools.cached_property``: on Python 3.11 that holds one
    lock per attribute for every instance of the class, so a thread reading ``event.key``
    waits for any other thread computing it, and a signal handler that interrupts the main
    thread there (the SIGTERM drain) deadlocks with it. Two threads computing the same
    value here at once is harmless: it is a pure function of the frozen event. Assigning
    it is refused like any assignment to a frozen model.
    """

    def __init__(self, method: Callable[[Any], Any]) -> None:
        self._method = method
        self._name = method.__name__
        self.__doc__ = method.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self._name] = self._method(instance)
        return value


class _EventBase(FastConstructModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ignored_types=(computed_once,))

    schema_version: Literal[2] = Field(SCHEMA_VERSION, description="The event schema version (1 is still read).")
    app: SafeName = Field(DEFAULT_APP, description="The caller's application name: its namespace of states.")
    state_id: SafeName = Field(description="The state's id.")
    state_type: StateType = Field(description="The kind of state.")
    producer: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="The producing process's identity, unique per process (and per fork)."
    )
    seq: Annotated[int, Field(ge=1)] = Field(
        description="The producer's sequence number for this state: 1, 2, 3... with no gap."
    )
    hlc: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]] = Field(
        description="Hybrid logical clock [wall_ms, logical]: rises with every event of the producer."
    )
    traceparent: Annotated[str, Field(pattern=TRACEPARENT_PATTERN)] | None = Field(
        None, description="W3C trace context of the write (optional): the apply span links to it."
    )

    @computed_once
    def stamp(self) -> Stamp:
        return (self.hlc[0], self.hlc[1], self.producer, self.seq, self._digest())

    def _digest(self) -> str:
        # repr of the parsed JSON: the same event text gives the same digest everywhere.
        return hashlib.blake2b(repr(self._content()).encode(), digest_size=8).hexdigest()

    def _content(self) -> Any:
        raise NotImplementedError

    @computed_once
    def key(self) -> str:
        """The state-store key of the state this event changes (fields already validated)."""
        state_type = self.state_type
        return format_state_key(self.state_id, state_type if type(state_type) is StateType else StateType(state_type), self.app)


_TTL = Field(
    None,
    ge=1,
    description="Optional: the state expires this many seconds after the subscriber applies this write"
    " (unless a later write says otherwise). Absent: no expiry.",
)


class FieldUpdated(_EventBase):
    """Set one field of a state (``save_state``)."""

    kind: Literal["field_updated"] = "field_updated"
    ttl_seconds: int | None = _TTL
    field: Annotated[str, Field(min_length=1, max_length=1024)] = Field(description="The field to set.")
    value: JsonValue = Field(description="Its new value: any JSON.")

    def _content(self) -> Any:
        return [self.field, self.value]


class ObjectReplaced(_EventBase):
    """Replace a whole state with ``value`` (``save_state_object``)."""

    kind: Literal["object_replaced"] = "object_replaced"
    ttl_seconds: int | None = _TTL
    value: dict[str, JsonValue] = Field(description="The whole new state.")

    def _content(self) -> Any:
        return self.value


class StateDeleted(_EventBase):
    """Delete a whole state (``delete_state``): every field written before it goes.

    New in version 2 (there is no version-1 type). Like a replace with an empty object,
    except that afterwards the state does not exist until a later write recreates it."""

    kind: Literal["state_deleted"] = "state_deleted"

    def _content(self) -> Any:
        return None


class FieldDeleted(_EventBase):
    """Delete one field of a state (``delete_field``); a later write of it recreates it.

    New in version 2 (there is no version-1 type)."""

    kind: Literal["field_deleted"] = "field_deleted"
    field: Annotated[str, Field(min_length=1, max_length=1024)] = Field(description="The field to delete.")

    def _content(self) -> Any:
        return [self.field]


AnyEvent = Union[FieldUpdated, ObjectReplaced, StateDeleted, FieldDeleted]
"""Every event kind (a plain union, for annotations)."""

WRITE_KINDS = ("field_updated", "object_replaced")
"""The kinds that write a value (the others delete)."""

Event = Annotated[AnyEvent, Field(discriminator="kind")]
_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


class EventBatch(BaseModel):
    """The data of an ``io.statestore.event_batch.v1`` CloudEvent: several events."""

    schema_version: Literal[1] = Field(description="The batch schema version; each event has its own.")
    events: list[Event] = Field(description="Each element exactly as the event would travel alone.")


_BATCH_ADAPTER: TypeAdapter[EventBatch] = TypeAdapter(EventBatch)


def cloudevent_type(kind: str, version: int = SCHEMA_VERSION) -> str:
    """The CloudEvent ``type`` of an event kind: ``io.statestore.<kind>.v<version>``."""
    return f"io.statestore.{kind}.v{version}"


KINDS_SINCE = {"field_updated": 1, "object_replaced": 1, "state_deleted": 2, "field_deleted": 2}
"""Each event kind and the first schema version that has it."""

EVENT_TYPES = {
    cloudevent_type(kind, version) for kind, first in KINDS_SINCE.items() for version in SCHEMA_VERSIONS if version >= first
}
BATCH_TYPE = cloudevent_type("event_batch", 1)


class InvalidEventError(ValueError):
    """A received event is malformed, of an unknown type or of an unknown version."""


def cloudevent_id(event: AnyEvent) -> str:
    """A unique, deterministic CloudEvent id: producer, state key and sequence number."""
    return f"{event.producer}:{event.key}:{event.seq}"


_OPTIONAL = ("traceparent", "ttl_seconds")


_FIELDS: dict[type, tuple[str, ...]] = {}  # each event class's fields, in order


def encode_event(event: AnyEvent) -> bytes:
    """The event's JSON (a CloudEvent's data, or one element of a batch's ``events``);
    ``traceparent`` and ``ttl_seconds`` only when set.

    Written by orjson from the event's fields, in the model's order: the JSON pydantic
    writes (tests/unit/test_events.py compares them), at a tenth of the CPU. A value orjson
    does not write (an integer beyond 64 bits) takes pydantic's path."""
    cls = type(event)
    names = _FIELDS.get(cls) or _FIELDS.setdefault(cls, tuple(cls.model_fields))
    values = event.__dict__
    data = {name: values[name] for name in names if values[name] is not None or name not in _OPTIONAL}
    try:
        return orjson.dumps(data)
    except TypeError:
        absent = {name for name in _OPTIONAL if getattr(event, name, None) is None}
        return event.model_dump_json(exclude=absent or None).encode()


def encode_cloudevent(event: AnyEvent, data: bytes | None = None) -> bytes:
    """The structured CloudEvent (JSON) that carries ``event`` alone."""
    return write_envelope_fast(cloudevent_id(event), cloudevent_type(event.kind), data or encode_event(event))


def encode_batch_cloudevent(batch_id: str, encoded_events: list[bytes]) -> bytes:
    """One CloudEvent (type ``io.statestore.event_batch.v1``) carrying several events.

    Each element of ``events`` is an event exactly as it would travel alone; packing
    only spares the broker and the sidecars a message per event.
    """
    data = b'{"schema_version":1,"events":[' + b",".join(encoded_events) + b"]}"
    return write_envelope(batch_id, BATCH_TYPE, data)


def decode_event(ce_type: str, data: bytes | str | dict[str, Any]) -> AnyEvent:
    """Validate a received CloudEvent's type and data; raise InvalidEventError with a reason."""
    if ce_type not in EVENT_TYPES:
        if ce_type.startswith("io.statestore."):
            raise InvalidEventError(f"unknown event type or schema version {ce_type!r}")
        raise InvalidEventError(f"not a statestore event: CloudEvent type {ce_type!r}")
    try:
        if isinstance(data, dict):
            event = _EVENT_ADAPTER.validate_python(data)
        else:
            event = _EVENT_ADAPTER.validate_json(data)
    except ValidationError as exc:
        event = _upcast_or_raise(ce_type, data, exc)
    if ce_type not in (cloudevent_type(event.kind, version) for version in SCHEMA_VERSIONS if version >= KINDS_SINCE[event.kind]):
        raise InvalidEventError(f"CloudEvent type {ce_type!r} does not match kind {event.kind!r}")
    return event


def _upcast_or_raise(ce_type: str, data: bytes | str | dict[str, Any], exc: ValidationError) -> AnyEvent:
    """A version-1 event (which the models, version 2, refuse) upcast and validated; any
    other refused event raises InvalidEventError with ``exc``'s reasons. Version 1 is read
    here, off the hot path, so that decoding calls no Python code per event."""
    try:
        older = data if isinstance(data, dict) else json.loads(data)
    except ValueError:
        older = None
    if not isinstance(older, dict) or older.get("schema_version") != 1:
        raise InvalidEventError(f"malformed {ce_type} event: {describe_errors(exc)}") from None
    try:
        return _EVENT_ADAPTER.validate_python(upcast_v1(older))
    except ValidationError as invalid:
        raise InvalidEventError(f"malformed {ce_type} event: {describe_errors(invalid)}") from None
    except ValueError as invalid:
        raise InvalidEventError(f"malformed {ce_type} event: event: {invalid}") from None


def decode_events(
    ce_type: str, data: bytes | str | dict[str, Any]
) -> tuple[list[AnyEvent], list[str]]:
    """The events a CloudEvent carries (one, or a batch's), and a reason per bad one.

    Raises InvalidEventError when the CloudEvent as a whole is not a statestore event.
    """
    if ce_type != BATCH_TYPE:
        return [decode_event(ce_type, data)], []
    try:  # the usual case, all valid: one pass in pydantic-core
        batch = _BATCH_ADAPTER.validate_python(data) if isinstance(data, dict) else _BATCH_ADAPTER.validate_json(data)
        return list(batch.events), []
    except ValidationError:
        pass  # find out which events are bad, and why
    try:
        batch = json.loads(data) if isinstance(data, (bytes, str)) else data
    except ValueError:
        raise InvalidEventError(f"malformed {ce_type}: data is not JSON") from None
    if not isinstance(batch, dict) or batch.get("schema_version") != 1 or not isinstance(batch.get("events"), list):
        raise InvalidEventError(f"malformed {ce_type}: need schema_version 1 and an events list")
    events, reasons = [], []
    for n, item in enumerate(batch["events"]):
        kind = item.get("kind") if isinstance(item, dict) else None
        try:
            events.append(decode_event(cloudevent_type(str(kind)), item))
        except InvalidEventError as exc:
            reasons.append(f"event {n}: {exc}")
    return events, reasons


def describe_errors(exc: ValidationError, limit: int = 5) -> str:
    """Where and why validation failed, without the input values (they may be secrets;
    an id breaking the id rules is named, as validate_id names it)."""
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or 'event'}: {_id_rule_broken(err) or err['msg']}"
        for err in exc.errors(include_url=False)[:limit]
    ]
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


_ID_RULES = {"state_id": validate_id, "app": validate_app_name}


def _id_rule_broken(error: Any) -> str | None:
    """validate_id's message for a state id or app name the schema's rule refused."""
    check = _ID_RULES.get(error["loc"][-1] if error["loc"] else None)
    if check is None or not error["type"].startswith("string_"):
        return None
    try:
        check(error["input"])
    except ValueError as exc:
        return str(exc)
    return None
