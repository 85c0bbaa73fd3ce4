"""Issue 18: a fire-and-forget caller rides out outages of its sidecar and of the broker.

Each run ends with every update applied (checked against the sequential oracle). The
long holds (sidecar 45 s, Redis 30 s) run under `make chaos` (OUTAGE_LONG=1); `make test`
runs a 10 s sidecar outage and an 8 s Redis outage.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from dataclasses import dataclass

import pytest

from statestore.devstack.processes import port_open
from statestore import PublishError, SidecarUnavailableError, StateStore, StateType, SyncTimeoutError
from statestore.publisher.runtime import Runtime, set_runtime
from statestore.publisher.store import StateStore as Store
from statestore.core.settings import get_settings
from statestore.core.sidecar import RECONNECT_WITHIN_S
from tests.integration.conftest import eventually
from tests.integration.faults import RESULTS, Load, run_across_fault

W = StateType.WORKFLOWS
LONG = os.environ.get("OUTAGE_LONG") == "1"
SIDECAR_HOLDS = [10.0, 45.0] if LONG else [10.0]
REDIS_HOLD = 30.0 if LONG else 8.0


@dataclass
class NoRepublishLoad(Load):
    """The fault load, but a caller that must never see an error: any PublishError fails.

    Its replaces are fire-and-forget: it keeps writing through the outage (a confirmed
    replace would wait it out; test_confirmed_writes.py covers that)."""

    confirmed: bool = False

    async def _call(self, call) -> None:
        try:
            await call
        except PublishError as exc:  # pragma: no cover - the failure this test exists to catch
            raise AssertionError(f"the caller saw PublishError during an outage within the budget: {exc}") from None


class PortWatch:
    """Records when a TCP port starts accepting connections (polled every 10 ms)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.opened_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            if port_open(self.port):
                self.opened_at = time.monotonic()
                return
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()


RESUME_S: list[float] = []


@pytest.mark.parametrize("hold_s", SIDECAR_HOLDS)
async def test_caller_sidecar_unreachable_while_updates_are_written(stack, hold_s):
    """50 states x 10 updates a second; the caller's daprd is stopped for ``hold_s``."""
    pipeline = Store.runtime().pipeline()
    ended_before = pipeline.stats.outages_ended
    watch = PortWatch(stack.ports.caller.grpc_port)
    seen: dict[str, float] = {}

    async def inject():
        stack.caller_sidecar.kill()
        await asyncio.sleep(0.5)
        # While it is down: reads fail fast and clearly; sync rides out up to its timeout.
        started = time.monotonic()
        with pytest.raises(SidecarUnavailableError, match="did not answer"):
            await StateStore.get_state("any", W)
        seen["get_state_s"] = time.monotonic() - started
        with pytest.raises(SyncTimeoutError):
            await StateStore.sync(load.ids[0], W, timeout=1.5)

    async def recover():
        watch.start()
        await asyncio.to_thread(stack.start_sidecar, stack.caller_sidecar, stack.ports.caller)

    async def resumed():
        while pipeline.stats.outages_ended == ended_before:
            await asyncio.sleep(0.005)
        seen["resumed_at"] = time.monotonic()

    load = NoRepublishLoad(states=50, pause_s=0.1)
    waiter = asyncio.create_task(resumed())
    try:
        result = await run_across_fault(f"caller sidecar unreachable {hold_s:g} s", inject, recover, hold_s=hold_s,
                                        warmup_s=1.0, after_s=2.0, load=load)  # fmt: skip
        await asyncio.wait_for(waiter, 30)
    finally:
        watch.stop()
        waiter.cancel()
    assert (result.lost, result.double_applied, result.snapshot_mismatches) == (0, 0, 0), result
    assert load.events >= 5000 * hold_s / 10 * 0.5
    assert seen["get_state_s"] < RECONNECT_WITHIN_S + 1.0  # one wait for the channel, not a timeout
    resume = seen["resumed_at"] - watch.opened_at
    RESUME_S.append(resume)
    print(f"\nsidecar back to first successful publish: {resume:.2f} s (outage {hold_s:g} s)")
    assert resume <= 2.0, f"publishing resumed {resume:.2f} s after the sidecar's port opened"
    assert Store.stats()["outages_ended"] >= 1


async def test_past_the_budget_publish_error_holds_exactly_the_unpublished_events(stack):
    """A 3 s budget: what PublishError hands back is exactly what was not applied, and
    republishing it applies everything."""
    state_id = f"budget-{uuid.uuid4().hex[:8]}"
    runtime = Runtime(get_settings().model_copy(update={"outage_budget_s": 3.0}))
    old = set_runtime(runtime)
    failed: list = []
    try:
        for f in range(100):
            await StateStore.save_state(f"f{f}", f, state_id, W)
        await StateStore.flush()
        stack.caller_sidecar.kill()
        for f in range(100, 300):
            try:
                await StateStore.save_state(f"f{f}", f, state_id, W)
            except PublishError as exc:
                failed.extend(exc.events)
            await asyncio.sleep(0.02)  # 4 s of writes: past the budget
        try:
            await StateStore.flush()
        except PublishError as exc:
            failed.extend(exc.events)
        assert failed, "past the budget, PublishError must hand the events back"
        await asyncio.to_thread(stack.start_sidecar, stack.caller_sidecar, stack.ports.caller)
        await StateStore.flush()  # whatever was still queued goes out now

        producer = runtime.producer_id
        failed_seqs = {e.seq for e in failed}
        assert len(failed_seqs) == len(failed) and {e.producer for e in failed} == {producer}

        async def applied_exactly_the_rest():
            document = await Store._runtime().query.get_document(state_id, W)
            progress = document.producers.get(producer) if document else None
            if progress is None:
                return None
            done = {s for s in range(1, 301) if progress.processed(s)}
            return done if done == set(range(1, 301)) - failed_seqs else None

        await eventually(applied_exactly_the_rest, timeout=30)
        await StateStore.republish(failed)
        await StateStore.sync(state_id, W, timeout=30)
        assert await StateStore.get_state(state_id, W) == {f"f{f}": f for f in range(300)}
    finally:
        set_runtime(old)
        await asyncio.to_thread(lambda: port_open(stack.ports.caller.grpc_port) or stack.start_sidecar(
            stack.caller_sidecar, stack.ports.caller))  # fmt: skip


class ConnectCounter:
    """Listens on a down sidecar's port and drops every connection: counts the gRPC
    channel's reconnect attempts (its state stays TRANSIENT_FAILURE, so they are not
    observable otherwise)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._seen = 0
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> "ConnectCounter":
        self._server = await asyncio.start_server(self._drop, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _drop(self, reader, writer) -> None:
        writer.close()
        self._seen += 1
        self._changed.set()

    async def attempts(self, n: int) -> None:
        while self._seen < n:
            self._changed.clear()
            await self._changed.wait()


async def test_a_read_right_after_the_caller_sidecar_returns_answers(stack):
    """The channel waits out its longest backoff (1 s plus jitter) after a long outage;
    a read that starts the moment the sidecar is healthy again still answers."""
    state_id = f"reread-{uuid.uuid4().hex[:8]}"
    await StateStore.save_state("v", 1, state_id, W)
    await StateStore.sync(state_id, W, timeout=30)
    runtime = Store._runtime()
    try:
        for _ in range(4):  # the backoff's jitter differs each round
            stack.caller_sidecar.kill()
            async with ConnectCounter(stack.ports.caller.grpc_port) as connects:
                with pytest.raises(SidecarUnavailableError, match="did not answer"):
                    await runtime.query.get_document(state_id, W)
                # Backoff 0.1 s growing 1.6x: the 7th failed attempt is followed by the 1 s maximum.
                await asyncio.wait_for(connects.attempts(7), 30)
            await asyncio.to_thread(stack.start_sidecar, stack.caller_sidecar, stack.ports.caller)
            assert await StateStore.get_state(state_id, W) == {"v": 1}
    finally:
        await asyncio.to_thread(lambda: port_open(stack.ports.caller.grpc_port) or stack.start_sidecar(
            stack.caller_sidecar, stack.ports.caller))  # fmt: skip


@pytest.mark.profile("local")  # scale: test_faults_scale.py stops the Kafka broker
async def test_redis_stopped_under_load(stack):
    """Callers raise nothing, nothing is lost."""

    async def inject():
        stack.redis.stop()

    async def recover():
        await asyncio.to_thread(stack.start_redis)

    load = NoRepublishLoad(states=12, pause_s=0.01)
    result = await run_across_fault(f"Redis stopped {REDIS_HOLD:g} s under load", inject, recover,
                                    hold_s=REDIS_HOLD, load=load)  # fmt: skip
    assert (result.lost, result.double_applied, result.snapshot_mismatches) == (0, 0, 0), result
    assert next(r for r in RESULTS if r.fault == result.fault).events > 0
