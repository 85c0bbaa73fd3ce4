"""The subscriber's health: one set of facts, answered to Dapr's app health probe and over HTTP.

The facts, kept current by ``SubscriberHealth.keep_checking`` and the delivery clock of
``SubscriberMetrics``:

- **store**: a cheap read through the sidecar (the outbox registry) succeeded at the last
  check: the sidecar and the state store answer. Checked every ``CHECK_EVERY_S`` while it
  holds, every ``RECHECK_EVERY_S`` while it fails;
- **flusher**: the snapshot flusher's loop (it holds and renews the snapshot lease) is
  running and finished a round or a back-off within ``flusher_stall_s``;
- **deliveries**: no delivery has been in flight longer than ``STATESTORE_STUCK_DELIVERY_S``.

The answers:

- ``ready()``: every fact holds, so this replica can apply what it is given. Dapr's app
  health probe (daprd ``--enable-app-health-check``: for an app speaking gRPC it calls
  ``AppCallbackHealthCheck.HealthCheck``; ``HealthServicer`` answers OK or UNAVAILABLE with
  the reason) and ``/healthz/ready`` both give it. After ``--app-health-threshold`` failed
  probes daprd stops the app's subscriptions, the broker's consumer group hands this
  replica's partitions to the live ones, and at the first successful probe daprd
  subscribes again (docs/scaling.md, "When a replica dies or hangs").
- ``live()``: no stuck delivery and the flusher's loop running, for ``/healthz/live``
  (a restart would help).

A dead or stopped (SIGSTOP) process answers nothing: the probe's timeout counts as a
failure, which is what moves its partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import grpc
from dapr.proto.runtime.v1 import appcallback_pb2 as pb
from dapr.proto.runtime.v1 import appcallback_pb2_grpc as pb_grpc

from statestore.subscriber.metrics import SubscriberMetrics
from statestore.subscriber.outbox import REGISTRY_KEY
from statestore.subscriber.ports import StateRepository

__all__ = ["SubscriberHealth", "HealthServicer", "CHECK_EVERY_S", "RECHECK_EVERY_S", "FLUSHER_STALL_S"]

log = logging.getLogger("statestore.subscriber")

CHECK_EVERY_S = 2.0  # between store reads while they succeed
RECHECK_EVERY_S = 0.25  # while they fail: back within a quarter second of the store
CHECK_TIMEOUT_S = 2.0
# A flusher round is bounded by its calls' deadlines (a write window, the sidecar call
# timeout) and its back-off by 5 s; a minute without either is a loop that stopped.
FLUSHER_STALL_S = 60.0


class SubscriberHealth:
    """The facts and the two answers. ``flusher_progress`` returns the monotonic time the
    flusher last finished a round or a back-off (None: no flusher to watch)."""

    def __init__(
        self,
        repository: StateRepository,
        metrics: SubscriberMetrics,
        flusher_progress: Callable[[], float] | None = None,
        flusher_stall_s: float = FLUSHER_STALL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._repository = repository
        self._metrics = metrics
        self._flusher_progress = flusher_progress
        self._flusher_stall_s = flusher_stall_s
        self._clock = clock
        self._flusher_task: asyncio.Task | None = None
        self._store_ok = False
        self._store_reason = "not checked yet"
        self._answered: bool | None = None  # the last ready() answer, to log its changes
        metrics.ready.set_function(lambda: 1.0 if self.ready()[0] else 0.0)

    def watch_flusher(self, task: asyncio.Task) -> None:
        """The flusher's task: if it ends while the subscriber runs, the subscriber is unhealthy."""
        self._flusher_task = task

    # -- the facts -------------------------------------------------------------------

    async def check_store(self, timeout_s: float = CHECK_TIMEOUT_S) -> bool:
        """One cheap read through the sidecar; records and returns the store fact."""
        try:
            await asyncio.wait_for(self._repository.load([REGISTRY_KEY]), timeout_s)
        except Exception as exc:
            self._store_ok = False
            self._store_reason = f"cannot read the state store through the sidecar: {type(exc).__name__}: {exc}"
            return False
        self._store_ok, self._store_reason = True, "ok"
        return True

    async def keep_checking(self, stop: asyncio.Event) -> None:
        """Check the store until ``stop``, and log each change of the answer."""
        while not stop.is_set():
            ok = await self.check_store()
            self.ready()  # logs a change
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), CHECK_EVERY_S if ok else RECHECK_EVERY_S)

    def _flusher_fact(self) -> tuple[bool, str]:
        task = self._flusher_task
        if task is not None and task.done():
            error = None if task.cancelled() else task.exception()
            why = f"{type(error).__name__}: {error}" if error else "the subscriber is stopping"
            return False, f"the snapshot flusher stopped ({why})"
        if self._flusher_progress is not None:
            idle = self._clock() - self._flusher_progress()
            if idle > self._flusher_stall_s:
                return False, f"the snapshot flusher's loop has not turned for {idle:.0f} s (bound {self._flusher_stall_s:g} s)"
        return True, "ok"

    # -- the answers -----------------------------------------------------------------

    def live(self) -> tuple[bool, str]:
        """No delivery stuck, the flusher's loop running: (ok, reason)."""
        for ok, reason in (self._metrics.live(), self._flusher_fact()):
            if not ok:
                return False, reason
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Every fact holds, so this replica can apply: (ok, reason). Dapr's probe and
        /healthz/ready give this answer."""
        ok, reason = (self._store_ok, self._store_reason) if not self._store_ok else self.live()
        if ok != self._answered:
            if ok:
                log.info("healthy: the sidecar, the state store and the snapshot flusher work")
            elif self._answered is not None:
                log.warning("unhealthy (Dapr's app health probe fails; after its threshold the sidecar stops"
                            " delivering and this replica's partitions move to the others): %s", reason)  # fmt: skip
            self._answered = ok
        return ok, reason


class HealthServicer(pb_grpc.AppCallbackHealthCheckServicer):
    """Dapr's app health probe over gRPC: OK while ``health.ready()``, else UNAVAILABLE."""

    def __init__(self, health: SubscriberHealth) -> None:
        self._health = health

    async def HealthCheck(self, request, context):
        ok, reason = self._health.ready()
        if not ok:
            await context.abort(grpc.StatusCode.UNAVAILABLE, reason)
        return pb.HealthCheckResponse()
