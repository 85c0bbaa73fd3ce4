"""StateStore: the caller-facing API, with the reference system's names and meaning.

Writes become events handed to the publish pipeline (fire-and-forget); reads go
straight to the state store through the caller's own sidecar.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import socket
import uuid
import weakref
from collections import defaultdict
from typing import Any

from publisher.pipeline import PublishPipeline, QueuedEvent
from publisher.query import StateQueryClient
from statestore.errors import InvalidValueError, SyncTimeoutError
from statestore.events import SCHEMA_VERSION, FieldUpdated, ObjectReplaced
from statestore.hlc import HybridClock
from statestore.paths import StateType, caller_app_name, coerce_state_type, state_key, validate_id
from statestore.settings import Settings, get_settings
from statestore.sidecar import SidecarClient

__all__ = ["StateStore"]

log = logging.getLogger("statestore.publisher")

MAX_FIELD_LENGTH = 1024
# The subscriber's decoder refuses deeper values (pydantic's recursion limit is lower
# than JSON's), so the API refuses them first.
MAX_NESTING = 64


class _SidecarTransport:
    def __init__(self, sidecar: SidecarClient, settings: Settings) -> None:
        self._sidecar = sidecar
        self._settings = settings

    async def publish_batch(self, cloudevents):
        return await self._sidecar.bulk_publish(self._settings.pubsub_name, self._settings.topic, cloudevents)


class _Producer:
    """This process's identity, clock and per-state sequence numbers (shared by loops)."""

    def __init__(self) -> None:
        self.id = f"{socket.gethostname()[:24]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.clock = HybridClock()
        self._seq: dict[str, int] = defaultdict(int)

    def next_seq(self, key: str) -> int:
        self._seq[key] += 1
        return self._seq[key]

    def last_seq(self, key: str) -> int:
        return self._seq.get(key, 0)


# Every pipeline ever made, so the exit hook finds events whose loop is already gone
# (a loop that ends right after fire-and-forget writes never runs the publisher task).
_PIPELINES: list[PublishPipeline] = []


class _LoopRuntime:
    """What belongs to one event loop: the gRPC channel and the publish pipeline."""

    def __init__(self, settings: Settings) -> None:
        self.sidecar = SidecarClient()
        self.pipeline = PublishPipeline(_SidecarTransport(self.sidecar, settings), settings)
        self.query = StateQueryClient(self.sidecar, settings.statestore_name)
        _PIPELINES.append(self.pipeline)


class StateStore:
    """Workflow and credential state, written as ordered events and read directly.

    All methods are class methods, as in the reference system. Writes return as soon as
    the event is queued for publishing; ``flush`` waits until queued events are
    published and ``sync`` until this process's events for a state are applied.
    """

    _producer: _Producer | None = None
    _runtimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopRuntime] = weakref.WeakKeyDictionary()

    # -- internals -------------------------------------------------------------------

    @classmethod
    def _producer_state(cls) -> _Producer:
        if cls._producer is None:
            cls._producer = _Producer()
        return cls._producer

    @classmethod
    def _runtime(cls) -> _LoopRuntime:
        loop = asyncio.get_running_loop()
        runtime = cls._runtimes.get(loop)
        if runtime is None:
            runtime = cls._runtimes[loop] = _LoopRuntime(get_settings())
            _register_exit_drain()
        return runtime

    @classmethod
    def _stamp_fields(cls, id: str, state_type: StateType) -> dict[str, Any]:
        producer = cls._producer_state()
        return {
            "app": caller_app_name(),
            "state_id": id,
            "state_type": state_type,
            "producer": producer.id,
            "seq": producer.next_seq(state_key(id, state_type)),
            "hlc": producer.clock.now(),
        }

    # -- writes ----------------------------------------------------------------------

    @classmethod
    async def save_state(cls, key: str, value: Any, id: str, type: StateType) -> None:
        """Set field ``key`` of state ``id`` to ``value`` (any JSON-serialisable value).

        Fire-and-forget: returns once the event is queued, without waiting for it to be
        applied. Raises InvalidStateIdError / InvalidStateTypeError / InvalidValueError
        (all ValueError) before anything is queued, and PublishError (after queuing this
        event) when earlier events of this process could not be published.
        """
        state_type = _check_target(id, type)
        if not isinstance(key, str) or not key or len(key) > MAX_FIELD_LENGTH:
            raise InvalidValueError(f"field name must be a non-empty string of at most {MAX_FIELD_LENGTH} characters")
        normalised = _json_roundtrip(value, f"value of field {key!r}", id)
        event = FieldUpdated.model_construct(
            field=key, value=normalised, kind="field_updated", schema_version=SCHEMA_VERSION, **cls._stamp_fields(id, state_type)
        )
        await cls._submit(event)

    @classmethod
    async def save_state_object(cls, id: str, value: dict[str, Any], type: StateType) -> dict[str, Any]:
        """Replace state ``id`` with ``value`` (a dict): the state becomes exactly ``value``.

        Returns the dict that will be stored. Fire-and-forget like ``save_state``, with
        the same errors.
        """
        state_type = _check_target(id, type)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise InvalidValueError("state object must be a dict with string keys")
        normalised = _json_roundtrip(value, "state object", id)
        event = ObjectReplaced.model_construct(
            value=normalised, kind="object_replaced", schema_version=SCHEMA_VERSION, **cls._stamp_fields(id, state_type)
        )
        await cls._submit(event)
        return json.loads(json.dumps(normalised))

    @classmethod
    async def _submit(cls, event: FieldUpdated | ObjectReplaced) -> None:
        await cls._runtime().pipeline.submit(QueuedEvent.of(event))

    @classmethod
    async def republish(cls, events: list[FieldUpdated | ObjectReplaced]) -> None:
        """Queue events again that an earlier PublishError returned (same stamps: idempotent)."""
        for event in events:
            await cls._runtime().pipeline.submit(QueuedEvent.of(event))

    @classmethod
    async def flush(cls) -> None:
        """Wait until every event queued by this process is published.

        Raises PublishError (with the events) for events that could not be published.
        """
        await cls._runtime().pipeline.flush()

    @classmethod
    async def sync(cls, id: str, type: StateType, timeout: float = 10.0) -> None:
        """Wait until every event this process wrote to state ``id`` has been applied.

        After it returns, ``get_state`` reflects this process's writes (read-your-writes).
        Raises SyncTimeoutError after ``timeout`` seconds, PublishError as ``flush``.
        """
        await cls.sync_many([id], type, timeout)

    @classmethod
    async def sync_many(cls, ids: list[str], type: StateType, timeout: float = 10.0) -> None:
        """``sync`` for many states at once (one bulk read per poll)."""
        state_type = coerce_state_type(type)
        for id in ids:
            validate_id(id)
        producer = cls._producer_state()
        waiting = {id: producer.last_seq(state_key(id, state_type)) for id in ids}
        runtime = cls._runtime()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await asyncio.wait_for(runtime.pipeline.flush(), timeout)
        delay = 0.002
        while True:
            documents = await runtime.query.get_documents(list(waiting), state_type)
            done = {id: (documents[id].processed_upto(producer.id) if id in documents else 0) for id in waiting}
            waiting = {id: target for id, target in waiting.items() if done[id] < target}
            if not waiting:
                return
            if loop.time() + delay > deadline:
                id, target = next(iter(waiting.items()))
                raise SyncTimeoutError(
                    f"state {state_key(id, state_type)!r}: {done[id]} of this process's {target} events applied "
                    f"after {timeout:g} s ({len(waiting)} states behind). Is the subscriber running "
                    "(`make up`)? Its log says why events are not applied."
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)

    # -- reads -----------------------------------------------------------------------

    @classmethod
    async def get_state(cls, id: str, type: StateType) -> dict[str, Any] | None:
        """The state ``id`` as a dict, or None when no state exists.

        Reads the state store directly through the caller's sidecar. Raises
        StateDecodeError when the stored value cannot be decoded and
        SidecarUnavailableError when the sidecar cannot be reached: neither is ever
        reported as empty state.
        """
        state_type = _check_target(id, type)
        document = await cls._runtime().query.get_document(id, state_type)
        if document is None:
            return None
        latest = document.latest_stamp()
        if latest is not None:
            cls._producer_state().clock.observe((latest[0], latest[1]))
        return document.to_state()


def _check_target(id: object, type: object) -> StateType:
    validate_id(id)
    return coerce_state_type(type)


def _json_roundtrip(value: Any, what: str, state_id: str) -> Any:
    """``value`` as it will read back from JSON; InvalidValueError if it is not JSON,
    nests too deeply or is too large. Checked before the event takes a sequence number,
    so a refused write leaves no gap that ``sync`` would wait for."""
    try:
        encoded = json.dumps(value, allow_nan=False)
        normalised = json.loads(encoded)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"{what} is not JSON-serialisable: {exc}") from None
    except RecursionError:
        normalised = None
    if normalised is None and value is not None or _depth(normalised) > MAX_NESTING:
        raise InvalidValueError(f"{what} is nested too deeply: the limit is {MAX_NESTING} levels")
    limit = get_settings().max_value_bytes
    if len(encoded) > limit:
        raise InvalidValueError(
            f"{what} of state {state_id!r} is {len(encoded)} bytes as JSON; the limit is {limit} "
            "(STATESTORE_MAX_VALUE_BYTES). Store large data elsewhere and keep a reference."
        )
    return normalised


def _depth(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        if depth + 1 > MAX_NESTING:
            return depth + 1
        stack.extend((child, depth + 1) for child in item)
    return deepest


_exit_drain_registered = False


def _register_exit_drain() -> None:
    global _exit_drain_registered
    if not _exit_drain_registered:
        atexit.register(_drain_at_exit)
        _exit_drain_registered = True


def _drain_at_exit() -> None:
    """Publish events still queued when the interpreter exits (their loop is gone)."""
    left = [q for pipeline in _PIPELINES for q in pipeline.take_unpublished()]
    if not left:
        return

    async def drain() -> None:
        sidecar = SidecarClient()
        pipeline = PublishPipeline(_SidecarTransport(sidecar, get_settings()), get_settings())
        for queued in left:
            await pipeline.submit(queued)
        try:
            await pipeline.flush()
        finally:
            await sidecar.close()

    try:
        asyncio.run(drain())
    except Exception as exc:  # nothing to raise to at exit: say it loudly
        log.error("%d state events were not published at exit: %s", len(left), exc)
