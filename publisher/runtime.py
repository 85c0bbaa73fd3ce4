"""The publisher's process runtime: everything ``StateStore``'s class methods share.

One explicit object holds the settings, the producer identity and clock, the per-state
sequence numbers, the per-loop gRPC channels and publish pipelines (one per topic), and
the last-chance drain run at SIGTERM/SIGINT, interpreter exit and loop shutdown.
``get_runtime()`` returns the process's runtime; ``set_runtime()`` replaces it (tests, a
future in-memory store). After ``os.fork`` the child gets a new one.

Rules it keeps:

- **Threads**: sequence numbers are issued under a lock; each event loop (each thread
  running ``asyncio.run``) has its own channel and pipelines, released when the loop
  shuts down (``asyncio.run`` ending) or, for a loop closed without that, at the next
  sweep once its events are published.
- **Identity**: a producer id is used for at most ``producer_retention_s / 4``, then a
  new one is taken, so an id never writes again after a state may have evicted its
  record (statestore.core.document). ``waits(key)`` lists every (producer id, last seq) the
  process still has to see applied for a state. Confirmed replaces (``save_state_object``)
  are stamped by a second producer id of their own: they are stored when the call
  returns, so ``sync`` never waits for them, and one that fails before its event is
  published retires that id (``retire_confirmed``) instead of leaving a gap in a
  sequence somebody waits on.
- **Own writes**: every queued event is kept in ``own_writes`` (publisher.own_writes)
  until a read shows it applied, so ``get_state`` returns the process's own writes.
- **Fork**: the child drops the parent's runtime without touching it (its gRPC objects
  belong to the parent) and builds a new one on first use: new producer id, sequence
  numbers, clock (pushed past the parent's), channels and pipelines. grpc.aio hangs in
  a child forked while the parent had a channel open, so a forked child talks to its
  sidecar with gRPC's synchronous stack from worker threads (the same API).
- **Signals**: on first use from the main thread, handlers for SIGTERM and SIGINT are
  installed that publish what is queued (within ``shutdown_grace_s``) and then hand the
  signal on to whatever handler was there before (the default action: terminate or
  KeyboardInterrupt). See docs/reliability.md for the rule.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from statestore.publisher.drain import publish_left
from statestore.publisher.own_writes import OwnWrites
from statestore.publisher.pipeline import PublishPipeline, QueuedEvent
from statestore.publisher.query import StateQueryClient
from statestore.core.errors import PublishError
from statestore.core.hlc import HybridClock
from statestore.core.settings import Settings, get_settings
from statestore.core.sidecar import SidecarClient

__all__ = ["Runtime", "LoopRuntime", "ProducerStamp", "get_runtime", "set_runtime"]

log = logging.getLogger("statestore.publisher")


class SidecarTransport:
    """A pipeline's transport: bulk publish to one topic through one sidecar client."""

    def __init__(self, sidecar: SidecarClient, pubsub: str, topic: str) -> None:
        self._sidecar = sidecar
        self._pubsub = pubsub
        self._topic = topic

    async def publish_batch(self, cloudevents):
        return await self._sidecar.bulk_publish(self._pubsub, self._topic, cloudevents)

    async def wait_ready(self, timeout: float) -> bool:
        return await self._sidecar.is_ready(timeout)

    async def component_type(self) -> str | None:
        # Once per process and sidecar: a new event loop's pipelines do not ask again.
        key = (self._sidecar.target, self._pubsub)
        if key not in _COMPONENT_TYPES:
            _COMPONENT_TYPES[key] = await self._sidecar.component_type(self._pubsub)
        return _COMPONENT_TYPES[key]


# (sidecar gRPC target, pub/sub component name) -> the component's type, as the sidecar said
_COMPONENT_TYPES: dict[tuple[str, str], str | None] = {}


@dataclass(frozen=True)
class ProducerStamp:
    """What identifies one event of this process: producer id, sequence number, time."""

    producer: str
    seq: int
    hlc: tuple[int, int]


@dataclass
class _Identity:
    id: str
    started: float  # time.monotonic() when this id was taken
    seq: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _new_producer_id() -> str:
    return f"{socket.gethostname()[:24]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class LoopRuntime:
    """What belongs to one event loop: the gRPC channel and one pipeline per topic."""

    def __init__(self, runtime: Runtime, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._runtime = runtime
        self.sidecar = runtime.sidecar_factory() if runtime.sidecar_factory else SidecarClient(blocking=runtime.forked)
        self.query = StateQueryClient(self.sidecar, runtime.settings.statestore_name)
        self.pipelines: dict[tuple[str, str], PublishPipeline] = {}  # (pubsub, topic) -> pipeline
        self._closer = self._close_at_loop_shutdown()
        self._start_closer()

    def query_for(self, app: str | None) -> StateQueryClient:
        """The query client of ``app``'s states (None: this process's app)."""
        if app is None:
            return self.query
        return StateQueryClient(self.sidecar, self._runtime.settings.statestore_name, app)

    def pipeline(
        self, pubsub: str, topic: str, batch_max_events: int | None = None, batch_window_ms: float | None = None
    ) -> PublishPipeline:
        found = self.pipelines.get((pubsub, topic))
        if found is None:
            transport = SidecarTransport(self.sidecar, pubsub, topic)
            found = self.pipelines[(pubsub, topic)] = PublishPipeline(
                transport, self._runtime.settings, batch_max_events=batch_max_events, batch_window_ms=batch_window_ms,
                handed_back=self._runtime.own_writes.discard, published=self._runtime.own_writes.published,
            )  # fmt: skip
        return found

    async def flush(self, belongs: Callable[[QueuedEvent], bool] | None = None) -> None:
        """Flush every pipeline of this loop at once; one PublishError holding all their
        failed events (those ``belongs`` selects, when given)."""
        pipelines = list(self.pipelines.values())
        outcomes = await asyncio.gather(*(p.flush(belongs) for p in pipelines), return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if not errors:
            return
        if len(errors) == 1 or not all(isinstance(e, PublishError) for e in errors):
            raise next((e for e in errors if not isinstance(e, PublishError)), errors[0])
        raise PublishError("; ".join(str(e) for e in errors), [event for e in errors for event in e.events])

    def unpublished(self) -> int:
        return sum(p.pending for p in self.pipelines.values())

    def _start_closer(self) -> None:
        # An async generator the loop finalises at shutdown (asyncio.run calls
        # loop.shutdown_asyncgens() after cancelling every task): its ``finally`` then
        # drains the pipelines and closes the channel while the loop still runs.
        # Driven to its first ``yield`` here, synchronously (nothing before it awaits).
        try:
            self._closer.asend(None).send(None)
        except StopIteration:
            pass

    async def _close_at_loop_shutdown(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Publish what is left (within the grace period), close the channel, forget this loop."""
        try:
            for pipeline in list(self.pipelines.values()):
                await pipeline.aclose()
        finally:
            if self.unpublished() == 0:
                await self.sidecar.close()
                self._runtime.release(self)


class Runtime:
    """The process's publisher runtime (see the module docstring)."""

    def __init__(
        self,
        settings: Settings | None = None,
        forked: bool = False,
        clock: HybridClock | None = None,
        sidecar_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        # What each loop talks to instead of a SidecarClient (statestore.testing: memory).
        self.sidecar_factory = sidecar_factory
        self.forked = forked
        self.clock = clock or HybridClock()
        # Reentrant: the signal handler's drain runs in the main thread, possibly while
        # that thread is inside stamp() holding this lock.
        self._lock = threading.RLock()
        self._rotate_after = self.settings.producer_retention_s / 4
        self._identity = _Identity(_new_producer_id(), time.monotonic())
        self._confirmed_identity = _Identity(_new_producer_id(), time.monotonic())
        self.own_writes = OwnWrites(self.settings.own_writes_max_events, self.settings.producer_retention_s)
        # state key -> producer id -> (last seq issued, when that id was taken)
        self._issued: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
        # key -> producer id -> the last seq a sync saw applied (an expired state loses
        # its records: a later sync then waits only for the seqs after this one).
        self._confirmed: dict[str, dict[str, int]] = defaultdict(dict)
        self._loops: dict[asyncio.AbstractEventLoop, LoopRuntime] = {}

    # -- identity and sequence numbers -------------------------------------------------

    @property
    def producer_id(self) -> str:
        """The producer id new events get now."""
        with self._lock:
            return self._current_identity().id

    @property
    def confirmed_producer_id(self) -> str:
        """The producer id confirmed replaces get now."""
        with self._lock:
            return self._current_confirmed_identity().id

    def _current_identity(self) -> _Identity:
        if time.monotonic() - self._identity.started >= self._rotate_after:
            self._identity = _Identity(_new_producer_id(), time.monotonic())
        return self._identity

    def _current_confirmed_identity(self) -> _Identity:
        if time.monotonic() - self._confirmed_identity.started >= self._rotate_after:
            self._confirmed_identity = _Identity(_new_producer_id(), time.monotonic())
        return self._confirmed_identity

    def stamp(self, key: str, confirmed: bool = False) -> ProducerStamp:
        """The next (producer, seq, time) for state ``key``; thread-safe, never repeats.

        ``confirmed``: for a confirmed replace, from the producer id of those (``sync``
        does not wait for them)."""
        with self._lock:
            identity = self._current_confirmed_identity() if confirmed else self._current_identity()
            identity.seq[key] += 1
            seq = identity.seq[key]
            if not confirmed:
                self._issued[key][identity.id] = (seq, identity.started)
            return ProducerStamp(identity.id, seq, self.clock.now())

    def wrote(self, key: str) -> bool:
        """Whether this process wrote state ``key`` before (with either producer id)."""
        with self._lock:
            return key in self._issued or self._confirmed_identity.seq.get(key, 0) > 0

    def retire_confirmed(self, producer: str) -> None:
        """A confirmed replace of ``producer`` failed before its event was published: its
        sequence number will never be processed, so the id writes no more (a new one is taken)."""
        with self._lock:
            if self._confirmed_identity.id == producer:
                self._confirmed_identity = _Identity(_new_producer_id(), time.monotonic())

    def waits(self, key: str) -> dict[str, int]:
        """Every producer id of this process that wrote state ``key``, with its last seq.

        Ids older than the retention are dropped: their records may be gone, and a
        sync that waited for them would last far longer than any timeout anyway.
        """
        horizon = time.monotonic() - self.settings.producer_retention_s
        with self._lock:
            issued = self._issued.get(key, {})
            for producer in [p for p, (_, started) in issued.items() if started < horizon]:
                del issued[producer]
            return {producer: seq for producer, (seq, _) in issued.items()}

    def confirmed(self, key: str) -> dict[str, int]:
        """Per producer id, the last seq of ``key`` that a sync saw applied."""
        with self._lock:
            return dict(self._confirmed.get(key, {}))

    def confirm(self, key: str, seqs: dict[str, int]) -> None:
        """A sync saw ``seqs`` (producer id -> seq) of ``key`` applied."""
        with self._lock:
            mine = self._confirmed[key]
            for producer, seq in seqs.items():
                mine[producer] = max(mine.get(producer, 0), seq)

    def last_seq(self, key: str) -> int:
        """The last sequence number the current producer id used for ``key`` (0: none)."""
        with self._lock:
            return self._identity.seq.get(key, 0)

    # -- loops, channels, pipelines ------------------------------------------------------

    def loop_runtime(self) -> LoopRuntime:
        """The running loop's channel and pipelines (made on first use)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._loops.get(loop)
        if found is None:
            self._sweep()
            found = LoopRuntime(self, loop)
            with self._lock:
                self._loops[loop] = found
            _install_process_hooks(self.settings)
        return found

    def pipeline(
        self,
        topic: str | None = None,
        pubsub: str | None = None,
        batch_max_events: int | None = None,
        batch_window_ms: float | None = None,
    ) -> PublishPipeline:
        """The running loop's pipeline for ``topic`` on ``pubsub`` (default: the state topic),
        publishing up to ``batch_max_events`` at once, after ``batch_window_ms`` unless
        flushed (defaults: the settings)."""
        return self.loop_runtime().pipeline(
            pubsub or self.settings.pubsub_name, topic or self.settings.topic, batch_max_events, batch_window_ms
        )

    def pipelines(self) -> list[PublishPipeline]:
        """Every live pipeline of every loop."""
        with self._lock:
            return [p for lr in self._loops.values() for p in lr.pipelines.values()]

    def release(self, loop_runtime: LoopRuntime) -> None:
        with self._lock:
            if self._loops.get(loop_runtime.loop) is loop_runtime:
                del self._loops[loop_runtime.loop]

    def _sweep(self) -> None:
        """Forget loops closed without shutting down whose pipelines hold nothing."""
        with self._lock:
            for loop in [lo for lo, lr in self._loops.items() if lo.is_closed() and lr.unpublished() == 0]:
                del self._loops[loop]

    def loops(self) -> int:
        with self._lock:
            return len(self._loops)

    def stats(self) -> dict[str, Any]:
        """Counters summed over every live pipeline (published, outages, ...)."""
        totals: dict[str, Any] = {"pending": 0, "in_outage": False}
        for pipeline in self.pipelines():
            for name, value in vars(pipeline.stats).items():
                if name == "in_outage_since":
                    totals["in_outage"] = totals["in_outage"] or value is not None
                else:
                    totals[name] = totals.get(name, 0) + value
            totals["pending"] += pipeline.pending
        return {**totals, "loops": self.loops(), "producer": self.producer_id}

    # -- last-chance drain -----------------------------------------------------------------

    def drain(self, timeout: float | None = None) -> int:
        """Publish every live pipeline's unpublished events now, from a helper thread,
        over the sidecar's HTTP API (statestore.publisher.drain: nothing shared with the loop's gRPC).

        Safe from a signal handler and at exit (whatever loop is running or blocked);
        returns how many events were not published within ``timeout`` (default: the
        shutdown grace period).
        """
        timeout = self.settings.shutdown_grace_s if timeout is None else timeout
        with self._lock:
            pipelines = [(route, p) for lr in self._loops.values() for route, p in lr.pipelines.items()]
        left = [(route, q) for route, pipeline in pipelines for q in pipeline.take_unpublished()]
        if not left:
            return 0
        outcome: dict[str, int] = {"lost": len(left)}

        def publish() -> None:
            outcome["lost"] = asyncio.run(publish_left(self.settings, left, timeout))

        worker = threading.Thread(target=publish, name="statestore-drain", daemon=True)
        worker.start()
        worker.join(timeout + 2)
        if outcome["lost"]:
            log.error("%d of %d queued state events were not published at shutdown", outcome["lost"], len(left))
        return outcome["lost"]


# -- the process's runtime ---------------------------------------------------------------

_runtime: Runtime | None = None
_runtime_lock = threading.Lock()
_abandoned_at_fork: list[Runtime] = []  # the parent's, never touched again (nor collected)


def get_runtime() -> Runtime:
    """The process's runtime (made on first use; a new one after fork)."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = Runtime(forked=_forked)
    return _runtime


def set_runtime(runtime: Runtime | None) -> Runtime | None:
    """Replace the process's runtime (None: a fresh one on next use); returns the old one."""
    global _runtime
    with _runtime_lock:
        old, _runtime = _runtime, runtime
    return old


_forked = False


def _after_fork_in_child() -> None:
    global _runtime, _runtime_lock, _forked
    _forked = True
    _runtime_lock = threading.Lock()  # another thread may have held it at fork
    if _runtime is not None:
        _abandoned_at_fork.append(_runtime)
        # The child's clock continues the parent's: its stamps come after the parent's.
        clock = HybridClock()
        clock.observe(_runtime.clock.last)
        _runtime = Runtime(forked=True, clock=clock)
    if sys.version_info < (3, 12):
        # A child forked from inside a running loop (multiprocessing's fork start method
        # in async code) could not call asyncio.run(); Python 3.12 resets this itself.
        asyncio.events._set_running_loop(None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- exit and signals --------------------------------------------------------------------

_hooks_installed = False
_previous_handlers: dict[int, Any] = {}
_draining = threading.Event()


def _install_process_hooks(settings: Settings) -> None:
    """The exit drain, and the signal handlers when called from the main thread."""
    global _hooks_installed
    if _hooks_installed or threading.current_thread() is not threading.main_thread():
        if not _hooks_installed:
            _register_exit_drain()  # atexit works from any thread; signals wait for the main one
        return
    _hooks_installed = True
    _register_exit_drain()
    if settings.handle_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            _chain_signal(signum)


_exit_registered = False


def _register_exit_drain() -> None:
    global _exit_registered
    if not _exit_registered:
        _exit_registered = True
        atexit.register(_drain_at_exit)
        try:  # multiprocessing children end with os._exit: no atexit, but its finalizers run
            import multiprocessing.util as mp_util

            mp_util.register_after_fork(_MP_HOOK, _register_mp_finalizer)
        except ImportError:  # pragma: no cover
            pass


class _MpHook:
    """A weak-referenceable token multiprocessing's after-fork registry holds."""


_MP_HOOK = _MpHook()


def _register_mp_finalizer(_: object) -> None:
    import multiprocessing.util as mp_util

    mp_util.Finalize(None, _drain_at_exit, exitpriority=100)


def _drain_at_exit() -> None:
    """Publish events still queued when the interpreter exits (their loop may be gone)."""
    if _runtime is not None:
        _runtime.drain()


def _chain_signal(signum: int) -> None:
    previous = signal.getsignal(signum)
    if previous in (signal.SIG_IGN, None) or previous is _on_signal:
        return  # ignored on purpose, or set outside Python: leave it alone
    _previous_handlers[signum] = previous
    signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame: Any) -> None:
    """Drain, then hand the signal on to the handler that was there before ours."""
    if not _draining.is_set():  # a second signal during the drain goes straight on
        _draining.set()
        try:
            if _runtime is not None:
                _runtime.drain()
        except Exception as exc:  # never let the drain swallow the signal
            log.error("statestore: drain at signal %d failed: %s", signum, exc)
        finally:
            _draining.clear()
    previous: Callable[[int, Any], Any] | int = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # e.g. the default SIGINT handler raises KeyboardInterrupt
        return
    # The default action (terminate): restore it and send the signal again.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
