"""StateStore: the caller-facing API, with the reference system's names and meaning.

Writes become events. ``save_state`` (and the deletes) hand theirs to the publish
pipeline and return (fire-and-forget, "saved asynchronously" as in the reference);
``save_state_object`` returns once the object is stored (statestore.publisher.confirmed). Reads go
straight to the state store through the caller's own sidecar, with the process's own
queued and in-flight writes merged over what they read (statestore.publisher.own_writes).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any, NamedTuple

from statestore.publisher.confirmed import ConfirmedLane, write_confirmed
from statestore.publisher.pipeline import PublishPipeline, QueuedEvent
from statestore.publisher.runtime import LoopRuntime, Runtime, get_runtime
from statestore.publisher.values import check_field_name, check_target, confirmed_timeout, json_roundtrip, ttl_of
from statestore.core.cutting import cut
from statestore.core.document import StateDocument, apply_events, encode_document, provisional_document, seqs_applied
from statestore.core.errors import (
    InvalidValueError,
    PublishError,
    ListingDisabledError,
    SidecarUnavailableError,
    StateNotStoredError,
    SyncTimeoutError,
)
from statestore.core.events import SCHEMA_VERSION, AnyEvent, FieldDeleted, FieldUpdated, ObjectReplaced, StateDeleted
from statestore.core.paths import (
    StateType,
    caller_app_name,
    coerce_state_type,
    format_state_key,
    state_key,
    validate_app_name,
    validate_id,
)
from statestore.core.sidecar import Upsert
from statestore.core.tracing import current_traceparent

__all__ = ["StateStore", "StatePage", "MAX_PAGE_SIZE"]

MAX_PAGE_SIZE = 10_000


def _next_poll_delay(delay: float, waited_s: float) -> float:
    """The pause before the next poll of a wait for applied events: doubling from 2 ms to
    20 ms, then at most a twentieth of the time waited so far (up to 100 ms), so a long
    wait behind a backlog polls the store less often and returns at most 5% later."""
    return min(delay * 2, max(0.02, min(0.1, waited_s / 20)))


class StatePage(NamedTuple):
    """One page of ``list_states``: ids, and the token of the next page (None: last page)."""

    ids: list[str]
    next_page_token: str | None


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def _decode_token(token: object) -> str:
    try:
        return validate_id(base64.urlsafe_b64decode(str(token).encode()).decode())
    except (ValueError, UnicodeDecodeError):
        raise InvalidValueError(
            f"page_token {token!r} is not one list_states returned; start again with page_token=None"
        ) from None

log = logging.getLogger("statestore.publisher")

# sync_many polls at most this many of the states it waits for (the newest) until they are applied.
SYNC_PROBE_STATES = 50
# One bulk read per poll of sync_many holds at most this many keys (sqlite takes at most
# 32,766 at once) and this many bytes of keys.
SYNC_READ_MAX_KEYS = 500
SYNC_READ_MAX_KEY_BYTES = 64 << 10
# States a transaction of _write_ahead holds at most (as the subscriber's commits).
WRITE_AHEAD_MAX_STATES = 250


class StateStore:
    """Workflow and credential state, written as ordered events and read directly.

    All methods are class methods, as in the reference system: a thin facade over the
    process's runtime (statestore.publisher.runtime). ``save_state`` returns as soon as its event is
    queued for publishing; ``save_state_object`` once the object is stored (readable by
    every process). ``get_state`` returns this process's own writes at once; ``flush``
    waits until queued events are published and ``sync`` until this process's events for
    a state are applied (visible to every process).
    """

    # -- internals -------------------------------------------------------------------

    @classmethod
    def runtime(cls) -> Runtime:
        """The process's runtime (producer identity, sequence numbers, pipelines)."""
        return get_runtime()

    @classmethod
    def _runtime(cls) -> LoopRuntime:
        """The running loop's channel, query client and pipelines."""
        return get_runtime().loop_runtime()

    @classmethod
    def _stamp_fields(cls, id: str, state_type: StateType, confirmed: bool = False, app: str | None = None) -> dict[str, Any]:
        """The stamp and target fields of an event; ``id`` and ``state_type`` are checked already."""
        app = caller_app_name() if app is None else validate_app_name(app)
        stamp = get_runtime().stamp(format_state_key(id, state_type, app), confirmed)
        return {
            "app": app,
            "state_id": id,
            "state_type": state_type,
            "producer": stamp.producer,
            "seq": stamp.seq,
            "hlc": stamp.hlc,
            # The caller's OpenTelemetry span, when it has one: the subscriber's apply
            # span continues or links to it (docs/observability.md#traces).
            "traceparent": current_traceparent(),
        }

    # -- writes ----------------------------------------------------------------------

    @classmethod
    async def save_state(
        cls, key: str, value: Any, id: str, type: StateType, *, ttl_seconds: int | None = None
    ) -> None:
        """Set field ``key`` of state ``id`` to ``value`` (any JSON-serialisable value).

        ``ttl_seconds``: the whole state expires that long after this write is applied,
        unless a later write says otherwise (default: the type's retention setting,
        STATESTORE_TTL_WORKFLOWS_S for workflows; none for credentials).

        Fire-and-forget: returns once the event is queued, without waiting for it to be
        applied. Raises InvalidStateIdError / InvalidStateTypeError / InvalidValueError
        (all ValueError) before anything is queued, and PublishError (after queuing this
        event) when earlier events of this process could not be published. While the
        queue is full (an outage), waits until there is room.
        """
        state_type = check_target(id, type)
        check_field_name(key)
        ttl = ttl_of(ttl_seconds, state_type)
        normalised = json_roundtrip(value, f"value of field {key!r}", id)
        event = FieldUpdated.model_construct(
            field=key, value=normalised, ttl_seconds=ttl, kind="field_updated", schema_version=SCHEMA_VERSION, **cls._stamp_fields(id, state_type)
        )
        await cls._submit(event)

    @classmethod
    async def save_state_object(
        cls,
        id: str,
        value: dict[str, Any],
        type: StateType,
        *,
        ttl_seconds: int | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Replace state ``id`` with ``value`` (a dict): the state becomes exactly ``value``.

        Returns the saved object (as it reads back) once it is stored: from then on
        ``get_state`` in any process returns it. It is written through the caller's own
        sidecar, ahead of the subscriber (statestore.publisher.confirmed): it never waits
        behind this process's queued progress updates nor the subscriber's backlog, and it
        is ordered with every other write by its stamp (a field written after it stays).
        Its event follows for the subscriber, which writes the snapshot.
        Raises StateNotStoredError when it cannot be stored within ``timeout`` seconds
        (default STATESTORE_OUTAGE_BUDGET_S: an outage of the sidecar or the state store is
        ridden out until then); ``error.stored`` is False (the stored state is unchanged)
        or None (the sidecar did not answer the last write in time).

        ``wait=False``: fire-and-forget like ``save_state`` (returns once queued; this
        process reads it at once, others once the subscriber applied it).

        Raises InvalidStateIdError / InvalidStateTypeError / InvalidValueError (all
        ValueError) before anything is written; ``ttl_seconds`` as for ``save_state``.
        """
        if wait:
            event = await cls._replace_confirmed(id, value, type, ttl_seconds, timeout)
        else:
            event = cls._replace_event(id, value, type, ttl_seconds)
            await cls._submit(event)
        return json.loads(json.dumps(event.value))  # the caller's copy, as it reads back

    @classmethod
    async def _replace_confirmed(
        cls, id: str, value: dict[str, Any], type: StateType, ttl_seconds: int | None, timeout: float | None,
        app: str | None = None,
    ) -> ObjectReplaced:
        """``save_state_object``'s confirmed replace, for ``app`` (None: this process's); its event."""
        timeout = confirmed_timeout(timeout)
        known = get_runtime().wrote(state_key(id, coerce_state_type(type), app))
        event = cls._replace_event(id, value, type, ttl_seconds, confirmed=True, app=app)
        await cls._write_confirmed(event, timeout, known)
        return event

    @classmethod
    async def _delete_confirmed(cls, id: str, type: StateType, timeout: float | None = None, app: str | None = None) -> bool:
        """Delete state ``id`` of ``app`` (None: this process's) and return once that is
        stored (publisher.confirmed): True when the state existed."""
        state_type = check_target(id, type)
        timeout = confirmed_timeout(timeout)
        event = StateDeleted.model_construct(
            kind="state_deleted", schema_version=SCHEMA_VERSION, **cls._stamp_fields(id, state_type, True, app)
        )  # fmt: skip
        before = await cls._write_confirmed(event, timeout, known=True)
        return before is not None and before.exists()

    @classmethod
    async def _write_confirmed(cls, event: AnyEvent, timeout: float, known: bool) -> StateDocument | None:
        """Store ``event``'s effect ahead of the subscriber, then queue it (publisher.confirmed);
        the document read before (None when there was none, or none was read)."""
        runtime = get_runtime()
        settings = runtime.settings
        lane = ConfirmedLane(runtime.loop_runtime().sidecar, settings.statestore_name, settings.max_document_bytes,
                             cls._queue_stored, _restamp)  # fmt: skip
        try:
            return await write_confirmed(event, lane, timeout, known)
        except StateNotStoredError:
            runtime.retire_confirmed(event.producer)  # its event is never published: its seq never processed
            raise

    @classmethod
    async def _queue_stored(cls, *events: AnyEvent) -> None:
        """Queue the events of states written ahead (a confirmed replace, new credentials)
        on the credentials pipeline (confirmed replaces in a burst share a publish: nobody
        waits for them): the subscriber's apply of them writes the snapshots."""
        await cls._queue_all(list(events), stored=True)

    @classmethod
    async def _queue_all(cls, events: list[AnyEvent], stored: bool = False) -> None:
        """Queue ``events``, none dropped: earlier ones a PublishError hands back are queued
        again. ``stored``: written ahead already (``_queue_stored``); else each as ``_submit``."""
        handover = cls._pipeline_of(StateType.CREDENTIALS) if stored else None
        for event in events:
            try:
                if handover is not None:
                    await handover.submit(QueuedEvent.of(event))
                else:
                    await cls._submit(event)
            except PublishError as exc:
                await cls.republish(exc.events)

    @classmethod
    def _replace_event(
        cls,
        id: str,
        value: dict[str, Any],
        type: StateType,
        ttl_seconds: int | None,
        checked: bool = False,
        confirmed: bool = False,
        app: str | None = None,
    ) -> ObjectReplaced:
        """The stamped ``object_replaced`` event of ``save_state_object`` (checked, not queued).

        ``checked``: ``value`` is known to be JSON of an allowed size (a sealed credential):
        not checked or copied again. ``confirmed``: stamped for a confirmed replace; ``app``:
        for that app (None: this process's)."""
        state_type = check_target(id, type)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise InvalidValueError("state object must be a dict with string keys")
        ttl = ttl_of(ttl_seconds, state_type)
        normalised = value if checked else json_roundtrip(value, "state object", id)
        return ObjectReplaced.model_construct(
            value=normalised, ttl_seconds=ttl, kind="object_replaced", schema_version=SCHEMA_VERSION,
            **cls._stamp_fields(id, state_type, confirmed, app),
        )  # fmt: skip

    @classmethod
    async def _write_ahead(cls, events: list[AnyEvent], timeout: float) -> None:
        """Write the provisional documents of ``events`` (each the first event of a new
        state) straight to the state store through the caller's sidecar, before the events
        are queued: the states are readable when this returns, and the subscriber, applying
        the events later, snapshots and indexes them (statestore.core.document).

        Only for states no other writer can know yet (new credential guids), and before
        their events are queued: the inserts overwrite without a check (last-write, three
        times cheaper than a first-write insert on sqlite), in transactions cut by bytes.
        SidecarUnavailableError if the sidecar or store refused or did not answer within
        ``timeout`` seconds (some transactions may have committed then).
        """
        runtime = get_runtime()
        loop_runtime = runtime.loop_runtime()
        deadline = asyncio.get_running_loop().time() + timeout
        upserts = [Upsert(e.key, encode_document(provisional_document(e)), None, e.ttl_seconds, overwrite=True) for e in events]
        for piece in cut(upserts, Upsert.request_bytes, runtime.settings.request_max_bytes, WRITE_AHEAD_MAX_STATES):
            remaining = max(deadline - asyncio.get_running_loop().time(), 0.0)
            await loop_runtime.sidecar.transact(runtime.settings.statestore_name, piece, remaining)

    @classmethod
    async def delete_state(cls, id: str, type: StateType) -> None:
        """Delete state ``id``: every field written before this call goes, and
        ``get_state`` returns None once it is applied (its snapshot is removed too).

        An event like a write, ordered by its stamp: a write stamped after it starts a
        new state. Fire-and-forget like ``save_state``, with the same errors.
        """
        state_type = check_target(id, type)
        event = StateDeleted.model_construct(
            kind="state_deleted", schema_version=SCHEMA_VERSION, **cls._stamp_fields(id, state_type)
        )
        await cls._submit(event)

    @classmethod
    async def delete_field(cls, key: str, id: str, type: StateType) -> None:
        """Delete field ``key`` of state ``id`` (a later write of it recreates it).

        The state itself stays, even with no field left. Fire-and-forget like
        ``save_state``, with the same errors.
        """
        state_type = check_target(id, type)
        check_field_name(key)
        event = FieldDeleted.model_construct(
            field=key, kind="field_deleted", schema_version=SCHEMA_VERSION, **cls._stamp_fields(id, state_type)
        )
        await cls._submit(event)

    @classmethod
    def _pipeline_for(cls, event: AnyEvent) -> PublishPipeline:
        """Where an event is published."""
        return cls._pipeline_of(event.state_type)

    @classmethod
    def _pipeline_of(cls, state_type: StateType) -> PublishPipeline:
        """The one place that routes queued events to topics, by state type.

        Credentials have a topic and pub/sub component of their own: a credential save
        waits until it is stored, and must not queue behind this process's progress
        backlog, nor behind other apps' progress in the broker and the subscriber.
        Confirmed replaces (publisher.confirmed) publish on that topic too, directly."""
        runtime = get_runtime()
        if state_type is StateType.CREDENTIALS:
            settings = runtime.settings
            return runtime.pipeline(settings.credentials_topic, settings.credentials_pubsub_name,
                                    settings.credentials_batch_max_events, settings.handover_window_ms)  # fmt: skip
        return runtime.pipeline()

    @classmethod
    async def _submit(cls, event: AnyEvent, stored: bool = False) -> None:
        """Queue ``event``; unless it is ``stored`` already (written ahead), this process's
        reads merge it over what they read until it is applied (statestore.publisher.own_writes)."""
        if not stored:
            get_runtime().own_writes.add(event)
        await cls._pipeline_for(event).submit(QueuedEvent.of(event))

    @classmethod
    async def republish(cls, events: list[AnyEvent]) -> None:
        """Queue events again that an earlier PublishError returned (same stamps: idempotent)."""
        for event in events:
            await cls._submit(event)

    @classmethod
    async def flush(cls) -> None:
        """Wait until every event queued by this loop is published.

        Raises PublishError (with the events) for events that could not be published
        within the outage budget.
        """
        await get_runtime().loop_runtime().flush()

    @classmethod
    def stats(cls) -> dict[str, Any]:
        """Counters of this process's publishing: published, pending, outages (started,
        ended, seconds), in_outage, failed_events, backpressure_waits, retries, ..."""
        return get_runtime().stats()

    @classmethod
    def register_metrics(cls, registry: Any = None) -> Any:
        """Expose this process's publishing as Prometheus metrics (queue depth, publish
        batches, errors, latency, ...) on ``registry`` (a prometheus_client
        CollectorRegistry; default: prometheus_client's). docs/observability.md lists them."""
        from statestore.publisher.metrics import register_metrics

        return register_metrics(registry)

    @classmethod
    async def _flush_states(cls, state_type: StateType, keys: set[str], timeout: float) -> None:
        """Wait until this loop's events of the states ``keys`` are published; PublishError
        for theirs only (others stay for their owner), asyncio.TimeoutError after ``timeout``.
        Their events are all in the one pipeline of their state type: only that one is
        waited for (a credential save must not wait for the progress backlog)."""
        await asyncio.wait_for(cls._pipeline_of(state_type).flush(lambda q: q.event.key in keys), timeout)

    @classmethod
    async def sync(cls, id: str, type: StateType, timeout: float = 10.0) -> None:
        """Wait until every event this process wrote to state ``id`` has been applied.

        After it returns, ``get_state`` reflects this process's writes (read-your-writes).
        Raises SyncTimeoutError after ``timeout`` seconds (an outage longer than that
        included), PublishError for this state's events that could not be published.
        """
        await cls.sync_many([id], type, timeout)

    @classmethod
    async def sync_many(cls, ids: list[str], type: StateType, timeout: float = 10.0) -> None:
        """``sync`` for many states at once (bulk reads of at most 500 states per poll)."""
        state_type = coerce_state_type(type)
        app = caller_app_name()
        keys = {id: format_state_key(validate_id(id), state_type, app) for id in ids}
        runtime = get_runtime()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        loop_runtime = runtime.loop_runtime()
        try:
            await cls._flush_states(state_type, set(keys.values()), timeout)
        except asyncio.TimeoutError:
            outage = any(p.in_outage for p in loop_runtime.pipelines.values())
            raise SyncTimeoutError(
                f"{loop_runtime.unpublished()} events of this process were still unpublished after {timeout:g} s "
                f"({'the sidecar or broker is not taking events' if outage else 'publishing is behind'}). "
                "Is the caller's Dapr sidecar running?",
                list(keys),
            ) from None
        # Every (producer id, last seq) this process still has to see applied, per state.
        waiting = {id: runtime.waits(keys[id]) for id in ids}
        for id in [id for id, w in waiting.items() if not w]:
            runtime.own_writes.settle(keys[id], None, all_applied=True)  # nothing of ours to wait for
        waiting = {id: w for id, w in waiting.items() if w}
        await cls._await_applied(state_type, waiting, keys, deadline, timeout, all_applied=True)

    @classmethod
    async def _await_applied(
        cls,
        state_type: StateType,
        waiting: dict[str, dict[str, int]],
        keys: dict[str, str],
        deadline: float,
        timeout: float,
        all_applied: bool = False,
        app: str | None = None,
    ) -> dict[str, StateDocument | None]:
        """Poll the store until each state id of ``waiting`` shows its (producer id -> seq)
        applied; returns the documents that showed it. SyncTimeoutError at ``deadline``
        (loop time; ``timeout`` is what the error reports). ``all_applied``: the seqs are all
        this process wrote to the states (a sync), so their own writes are settled for good."""
        runtime = get_runtime()
        loop = asyncio.get_running_loop()
        floors = {id: runtime.confirmed(keys[id]) for id in waiting}
        wanted = {id: dict(w) for id, w in waiting.items()}
        waiting = dict(wanted)
        seen: dict[str, StateDocument | None] = {}
        query = runtime.loop_runtime().query_for(app)
        delay = 0.002
        started = loop.time()
        probing = True
        while waiting:
            # While the newest states are behind, poll only them: re-reading every waiting
            # state each round would cost the store more reads than the subscriber has
            # writes to make. Once they are applied, one pass reads the rest.
            batch = list(waiting)[-SYNC_PROBE_STATES:] if probing else list(waiting)
            documents = {}
            try:
                for chunk in _chunks(batch, keys):
                    documents.update(await query.get_documents(chunk, state_type))
            except SidecarUnavailableError as exc:
                # An outage of the caller's sidecar: ridden out up to the timeout, as publishing is.
                if loop.time() + delay > deadline:
                    raise SyncTimeoutError(
                        f"{len(waiting)} states not confirmed applied after {timeout:g} s: {exc}", list(waiting)
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.02)
                continue
            for id in batch:
                document = documents.get(id)
                behind = {p: s for p, s in waiting[id].items() if not seqs_applied(document, p, s, floors[id].get(p, 0))}
                if behind:
                    waiting[id] = behind
                else:
                    del waiting[id]
                    seen[id] = document
                    runtime.confirm(keys[id], wanted[id])
                    runtime.own_writes.settle(keys[id], document, all_applied=all_applied)
            if not waiting:
                return seen
            if probing and not any(id in waiting for id in batch):
                probing = False
                continue
            probing = True
            if loop.time() + delay > deadline:
                id = next(i for i in batch if i in waiting)
                behind = waiting[id]
                document = documents.get(id)
                done = {p: (document.processed_upto(p) if document else 0) for p in behind}
                raise SyncTimeoutError(
                    f"state {keys[id]!r}: this process's events not all applied after {timeout:g} s "
                    f"(applied/written per producer id: {', '.join(f'{done[p]}/{s}' for p, s in behind.items())}; "
                    f"{len(waiting)} states behind). Is the subscriber running (`make up`)? "
                    "Its log says why events are not applied.",
                    list(waiting),
                )
            await asyncio.sleep(delay)
            delay = _next_poll_delay(delay, loop.time() - started)
        return seen

    # -- reads -----------------------------------------------------------------------

    @classmethod
    async def list_states(
        cls, type: StateType, prefix: str = "", page_size: int = 1000, page_token: str | None = None
    ) -> StatePage:
        """The ids of this app's states of ``type`` that start with ``prefix``, sorted, a
        page at a time: pass ``page.next_page_token`` back for the next page (None: done).

        Needs a subscriber started with STATESTORE_LIST_INDEX=1, else raises
        ListingDisabledError. Reads the id index (statestore.core.index: 64 shard documents per app and type, one
        bulk read) and keeps the ids whose state exists now (one bulk read per 500). A
        state appears once its first write is applied and goes once its delete is
        applied or it expires. A page may hold fewer than ``page_size`` ids when some
        expired since they were indexed.
        """
        return await cls._list(coerce_state_type(type), prefix, page_size, page_token)

    @classmethod
    async def _list(
        cls, state_type: StateType, prefix: str, page_size: int, page_token: str | None, app: str | None = None
    ) -> StatePage:
        """``list_states`` for ``app`` (None: this process's)."""
        if not isinstance(prefix, str):
            raise InvalidValueError("prefix must be a string")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidValueError(f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}, not {page_size!r}")
        query = get_runtime().loop_runtime().query_for(app)
        if not await query.index_enabled():
            raise ListingDisabledError(
                "listing needs the id index, which no subscriber keeps: start the subscriber with"
                " STATESTORE_LIST_INDEX=1 (states are listed from their next write on)"
            )
        after = "" if page_token is None else _decode_token(page_token)
        ids, more = await query.index_page(state_type, prefix, after, page_size)
        keys = {id: state_key(id, state_type, app) for id in ids}
        documents: dict[str, StateDocument] = {}
        for chunk in _chunks(ids, keys):
            documents.update(await query.get_documents(chunk, state_type))
        live = [id for id in ids if id in documents and documents[id].exists()]
        return StatePage(live, _encode_token(ids[-1]) if more and ids else None)

    @classmethod
    async def get_state(cls, id: str, type: StateType) -> dict[str, Any] | None:
        """The state ``id`` as a dict, or None when no state exists.

        Reads the state store directly through the caller's sidecar, and merges over it
        this process's own writes of the state that are not applied yet (queued, in the
        broker, or at the subscriber): a process reads its own writes at once (fields,
        replaces and deletes), by the same merge the subscriber applies. Other processes
        see them once applied (``sync`` waits for that).

        Raises StateDecodeError when the stored value cannot be decoded and
        SidecarUnavailableError when the sidecar cannot be reached: neither is ever
        reported as empty state. SyncTimeoutError only when more than
        STATESTORE_OWN_WRITES_MAX_EVENTS of this process's writes were published and not
        yet read back (the state lost some to that bound) and those are still not applied
        after STATESTORE_OUTAGE_BUDGET_S: the subscriber is that far behind.
        """
        return await cls._get(id, check_target(id, type))

    @classmethod
    async def _get(cls, id: str, state_type: StateType, app: str | None = None) -> dict[str, Any] | None:
        """``get_state`` for ``app`` (None: this process's)."""
        runtime = get_runtime()
        query = runtime.loop_runtime().query_for(app)
        document = await query.get_document(id, state_type)
        key = state_key(id, state_type, app)
        own, dropped = runtime.own_writes.pending(key)
        if dropped and not all(seqs_applied(document, p, s) for p, s in dropped.items()):
            # Writes of the state that the bound no longer keeps: published (never behind
            # this process's own queue), so wait until the subscriber applies them.
            budget = runtime.settings.outage_budget_s
            deadline = asyncio.get_running_loop().time() + budget
            seen = await cls._await_applied(state_type, {id: dropped}, {id: key}, deadline, budget, app=app)
            document = seen[id]
        if own or dropped:
            own = runtime.own_writes.settle(key, document)
            if own:
                document = apply_events(document, own)
        if document is None:
            return None
        latest = document.latest_stamp()
        if latest is not None:
            runtime.clock.observe((latest[0], latest[1]))
        return document.to_state() if document.exists() else None


def _chunks(ids: list[str], keys: dict[str, str]) -> list[list[str]]:
    """``ids`` cut into bulk reads of at most SYNC_READ_MAX_KEYS keys and SYNC_READ_MAX_KEY_BYTES."""
    chunks: list[list[str]] = [[]]
    size = 0
    for id in ids:
        key_bytes = len(keys[id]) + 16
        if chunks[-1] and (len(chunks[-1]) >= SYNC_READ_MAX_KEYS or size + key_bytes > SYNC_READ_MAX_KEY_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(id)
        size += key_bytes
    return [c for c in chunks if c]


def _restamp(event: AnyEvent, after: tuple[int, int]) -> AnyEvent:
    """``event`` stamped again, later than ``after`` (a time read from the store); same
    producer and sequence number (publisher.confirmed)."""
    clock = get_runtime().clock
    clock.observe(after)
    fields = {name: getattr(event, name) for name in type(event).model_fields}
    return type(event).model_construct(**{**fields, "hlc": clock.now()})
