"""The stored form of a state and the merge that applies events to it. Pure: no I/O.

A state is kept as a per-field last-writer-wins map with a replace watermark:

- ``fields[name] = (value, stamp)``: the field's value and the stamp of the event that
  wrote it;
- ``replaced``: the stamp of the latest whole-object replace applied.

Applying a field update with stamp ``s`` sets the field unless ``s`` is not above the
watermark or the field already holds a later stamp. Applying a replace with stamp ``s``
above the watermark moves the watermark to ``s``, drops every field written before ``s``
and writes the replace's fields at ``s`` (a field written after ``s`` stays).

Deletes are tombstones, so they commute with writes like everything else:

- a state delete (``state_deleted``) with stamp ``s`` moves the watermark like a replace
  with an empty object;
- a field delete (``field_deleted``) with stamp ``s`` records ``deleted[name] = s`` and
  removes the field, unless the field holds a later stamp; a field update is applied
  only above both the field's stamp and its tombstone (a write stamped after a delete
  recreates the field);
- ``written`` is the greatest stamp of any write (update or replace). The state exists
  (``exists()``) when something was written after the latest state delete, i.e. when
  ``written`` is at or above the watermark: after a delete, ``get_state`` returns None
  although the document stays (its watermark and producer records keep the order and
  ``sync`` working).

Field tombstones age out like producer records, on the document's own clock, but after
``TOMBSTONE_RETENTION_MS`` (seven days): only an event delivered later than that after a
field delete of the same field could bring the deleted value back.

The merge is commutative, associative and idempotent, and its result equals applying
the events one after another in stamp order (``replay_in_order``, the oracle the tests
compare against): delivery order, duplicates and redelivery do not change the outcome.

``producers`` records, per producer, which of its sequence numbers were processed, so a
producer can wait until all its events for this state are applied (read-your-writes).
The records serve only that wait; the merge above is idempotent without them. A record
is kept for ``retention_ms`` (default one hour), measured on the document's own newest
stamp (no wall clock: every replica evicts alike), so any number of producers may write
one state while the records stay bounded by how many wrote within the retention. A
process changes its producer id every retention/4, so an id never writes again after its
record could have been evicted (it would restart at ``upto=0`` and never catch up).

A document is ``provisional`` when a caller wrote it straight to the state store ahead of
the subscriber (``written_ahead``): a new credential, or a confirmed ``save_state_object``,
is readable on return without waiting for the event pipeline. It holds exactly what
applying the caller's event to the stored document gives, so the merge treats it as the
state it is; but the subscriber has not yet written its snapshot or indexed it. Applying
any event to a provisional document therefore always yields a new, non-provisional one,
even when the event was applied before: the applier then writes it, marks its snapshot
and counts the state as created for the id index (adding an id already listed changes
nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import ConfigDict, Field, JsonValue, model_validator

from statestore.core.construct import FastConstructModel
from statestore.core.errors import StateDecodeError
from statestore.core.events import AnyEvent, FieldDeleted, FieldUpdated, ObjectReplaced, Stamp, StateDeleted

__all__ = [
    "DOCUMENT_VERSION",
    "PRODUCER_RETENTION_MS",
    "TOMBSTONE_RETENTION_MS",
    "FieldEntry",
    "ProducerProgress",
    "StateDocument",
    "apply_events",
    "provisional_document",
    "written_ahead",
    "is_applied",
    "seqs_applied",
    "replay_in_order",
    "encode_document",
    "decode_document",
    "snapshot_of",
]

DOCUMENT_VERSION = 1
PRODUCER_RETENTION_MS = 3_600_000
TOMBSTONE_RETENTION_MS = 7 * 86_400_000


# Named tuples, not models: the merge makes one per event, and they are ~20x cheaper to
# build. Stored as JSON arrays: [value, stamp] and [upto, ahead, last_wall_ms].
class FieldEntry(NamedTuple):
    """A field's value and the stamp of the event that wrote it."""

    value: JsonValue
    stamp: Stamp


class ProducerProgress(NamedTuple):
    """Which sequence numbers of one producer were processed for one state."""

    upto: int = 0  # every seq <= upto was processed
    ahead: tuple[int, ...] = ()  # processed seqs above upto + 1 (delivered out of order)
    last_wall_ms: int = 0

    def processed(self, seq: int) -> bool:
        return seq <= self.upto or seq in self.ahead

    def record(self, seq: int, wall_ms: int) -> ProducerProgress:
        if self.processed(seq):
            return self
        last_wall_ms = max(self.last_wall_ms, wall_ms)
        if seq == self.upto + 1 and not self.ahead:  # the usual case: next in line
            return ProducerProgress(seq, (), last_wall_ms)
        ahead = set(self.ahead)
        ahead.add(seq)
        upto = self.upto
        while upto + 1 in ahead:
            upto += 1
            ahead.discard(upto)
        return ProducerProgress(upto, tuple(sorted(ahead)), last_wall_ms)


class StateDocument(FastConstructModel):
    """What the state store holds for one state id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = DOCUMENT_VERSION
    replaced: Stamp | None = None
    fields: dict[str, FieldEntry] = Field(default_factory=dict)
    producers: dict[str, ProducerProgress] = Field(default_factory=dict)
    deleted: dict[str, Stamp] = Field(default_factory=dict)  # field tombstones
    written: Stamp | None = None  # the greatest stamp of any write
    ttl_s: int | None = None  # the ttl_seconds of that write: the store entry expires after it
    # Written by a caller ahead of the subscriber (module docstring); stored only when True.
    provisional: bool = False

    @model_validator(mode="after")
    def _written_of_older_documents(self) -> StateDocument:
        # Documents from before deletes have no ``written``: every event they hold was a write.
        if "written" not in self.model_fields_set:
            object.__setattr__(self, "written", self.latest_stamp())
        return self

    def exists(self) -> bool:
        """False when nothing was written, or nothing since the latest state delete."""
        return self.written is not None and (self.replaced is None or self.written >= self.replaced)

    def to_state(self) -> dict[str, Any]:
        """The state as the caller sees it: field name to value (tombstones hidden)."""
        return {name: entry.value for name, entry in self.fields.items()}

    def latest_stamp(self) -> Stamp | None:
        """The greatest stamp this document holds (for the reader's clock)."""
        stamps = [entry.stamp for entry in self.fields.values()]
        stamps.extend(self.deleted.values())
        if self.replaced is not None:
            stamps.append(self.replaced)
        return max(stamps, default=None)

    def processed_upto(self, producer: str) -> int:
        """Every sequence number of ``producer`` up to this one was processed (0: none known)."""
        progress = self.producers.get(producer)
        return progress.upto if progress else 0

    def newest_wall_ms(self) -> int:
        """The document's own clock: the newest wall time of any stamp or record it holds."""
        latest = self.latest_stamp()
        walls = [p.last_wall_ms for p in self.producers.values()]
        return max([latest[0] if latest else 0, *walls])


_NEW_PRODUCER = ProducerProgress()


def apply_events(
    document: StateDocument | None,
    events: Iterable[AnyEvent],
    retention_ms: int = PRODUCER_RETENTION_MS,
    tombstone_retention_ms: int = TOMBSTONE_RETENTION_MS,
) -> StateDocument:
    """Merge ``events`` into ``document`` (None: no state yet).

    Returns a new document, or ``document`` itself when the events change nothing
    (all of them were applied before). Producer records whose last event is more than
    ``retention_ms`` older than the document's newest stamp are dropped, and field
    tombstones older than ``tombstone_retention_ms``.
    """
    replaced = document.replaced if document else None
    fields = dict(document.fields) if document else {}
    producers = dict(document.producers) if document else {}
    deleted = dict(document.deleted) if document else {}
    written = document.written if document else None
    ttl_s = document.ttl_s if document else None
    # A provisional document always changes: the subscriber must write, snapshot and index it.
    changed = content_changed = document is None or document.provisional
    # The document's own clock: a record is dated by it, not by its producer's wall
    # clock, so a producer whose clock is behind is not evicted at once.
    now = document.newest_wall_ms() if document else 0

    for event in events:
        now = max(now, event.hlc[0])
        progress = producers.get(event.producer) or _NEW_PRODUCER
        recorded = progress.record(event.seq, now)
        if recorded is not progress:
            producers[event.producer] = recorded
            changed = True
        stamp = event.stamp
        if isinstance(event, (FieldUpdated, ObjectReplaced)) and (written is None or stamp > written):
            written = stamp  # whether or not a later delete supersedes it: exists() compares
            ttl_s = event.ttl_seconds  # the newest write decides the expiry
            changed = content_changed = True
        if replaced is not None and stamp <= replaced:
            continue  # a later replace or delete already superseded this event
        if isinstance(event, (ObjectReplaced, StateDeleted)):
            replaced = stamp
            fields = {name: entry for name, entry in fields.items() if entry.stamp > stamp}
            deleted = {name: at for name, at in deleted.items() if at > stamp}
            if isinstance(event, ObjectReplaced):
                for name, value in event.value.items():
                    if name not in fields and name not in deleted:
                        fields[name] = FieldEntry(value, stamp)
            changed = content_changed = True
        else:
            current = fields.get(event.field)
            tombstone = deleted.get(event.field)
            if (current is None or current.stamp < stamp) and (tombstone is None or tombstone < stamp):
                if isinstance(event, FieldDeleted):
                    fields.pop(event.field, None)
                    deleted[event.field] = stamp
                else:
                    fields[event.field] = FieldEntry(event.value, stamp)
                    deleted.pop(event.field, None)
                changed = content_changed = True

    if not changed:
        return document
    horizon = now - retention_ms
    producers = {name: progress for name, progress in producers.items() if progress.last_wall_ms >= horizon}
    deleted = {name: at for name, at in deleted.items() if at[0] >= now - tombstone_retention_ms}
    if document is not None and not content_changed and producers == document.producers:
        return document  # e.g. a redelivered event of a producer whose record was evicted
    return StateDocument.model_construct(
        version=DOCUMENT_VERSION, replaced=replaced, fields=fields, producers=producers, deleted=deleted, written=written,
        ttl_s=ttl_s,
    )


def provisional_document(event: AnyEvent) -> StateDocument:
    """The document a caller writes ahead of ``event``, the first event of a new state:
    what applying it to no state gives, marked provisional (module docstring)."""
    return written_ahead(None, event)


def written_ahead(document: StateDocument | None, event: AnyEvent) -> StateDocument:
    """The document a caller writes ahead of the subscriber: ``event`` merged into the
    stored ``document`` (None: no state yet) and marked provisional (module docstring).

    ``document`` itself when it already shows ``event`` applied (the subscriber was first):
    there is nothing to write then."""
    if document is not None and is_applied(document, event):
        return document
    return apply_events(document, [event]).model_copy(update={"provisional": True})


def is_applied(document: StateDocument | None, event: AnyEvent) -> bool:
    """Whether ``document`` records ``event`` as processed (its producer's record shows its
    sequence number; records last ``PRODUCER_RETENTION_MS`` after the producer's last event)."""
    if document is None:
        return False
    progress = document.producers.get(event.producer)
    return progress is not None and progress.processed(event.seq)


def seqs_applied(document: StateDocument | None, producer: str, seq: int, floor: int = 0) -> bool:
    """Whether ``document`` shows ``producer``'s seqs up to ``seq`` processed: all of them,
    or, when the state expired since a sync saw ``floor`` applied (its records went with
    it), every seq after ``floor``."""
    if document is None:
        return False
    if document.processed_upto(producer) >= seq:
        return True
    progress = document.producers.get(producer)
    if progress is None or floor <= 0:
        return False
    return all(progress.processed(n) for n in range(floor + 1, seq + 1))


def replay_in_order(events: Iterable[AnyEvent]) -> dict[str, Any] | None:
    """The sequential oracle: apply each distinct event once, in stamp order.

    Returns the state a single writer applying the events one by one would hold: None
    when nothing was written, or nothing since the last state delete (a field delete of
    a state that does not exist leaves it not existing).
    """
    unique = {event.stamp: event for event in events}
    state: dict[str, Any] | None = None
    for stamp in sorted(unique):
        event = unique[stamp]
        if isinstance(event, ObjectReplaced):
            state = dict(event.value)
        elif isinstance(event, StateDeleted):
            state = None
        elif isinstance(event, FieldDeleted):
            if state is not None:
                state.pop(event.field, None)
        else:
            state = {**(state or {}), event.field: event.value}
    return state


def encode_document(document: StateDocument) -> bytes:
    """The document as stored (JSON). ``provisional`` only when set, so documents
    written by the subscriber read the same in every version that knows them."""
    return document.model_dump_json(exclude=None if document.provisional else {"provisional"}).encode()


def decode_document(key: str, raw: bytes | str) -> StateDocument:
    """Parse a stored document; StateDecodeError if it is not one (never "no state")."""
    try:
        return StateDocument.model_validate_json(raw)
    except ValueError:
        raise StateDecodeError(
            f"the stored state {key!r} is not a statestore document (corrupt, or written by"
            " another tool); inspect it in the state store, then fix or delete it"
        ) from None


def snapshot_of(key: str, raw: bytes | str) -> tuple[dict[str, Any] | None, int | None]:
    """What a snapshot needs of a stored document, read without building it (the snapshot
    flusher's hot path): the state as the caller sees it, None when it does not exist, and
    the document's ``ttl_s``. As ``decode_document`` (StateDecodeError), which reads any
    document this does not read quickly."""
    try:
        data = orjson.loads(raw)
        written, replaced, ttl_s = data["written"], data["replaced"], data["ttl_s"]
        if data["version"] == DOCUMENT_VERSION and (ttl_s is None or type(ttl_s) is int):
            exists = written is not None and (replaced is None or written >= replaced)
            return ({name: entry[0] for name, entry in data["fields"].items()} if exists else None), ttl_s
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        pass
    document = decode_document(key, raw)
    return (document.to_state() if document.exists() else None), document.ttl_s
