"""Issue 27 on the local profile (one replica): a subscriber app that dies while its
sidecar stays up is reported, with the fix, by `statestore status`, by `make status`'s
checks; what was written meanwhile waits in Redis (its sidecar retries the deliveries:
no app health check on Redis Streams, docs/scaling.md), and
`make up` (Stack.resume on a partly running stack) brings it back with nothing lost."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from statestore import StateStore, StateType
from tests.integration.test_cli import statestore

pytestmark = pytest.mark.profile("local")

W = StateType.WORKFLOWS


async def test_a_dead_subscriber_app_is_reported_with_the_fix_and_loses_nothing(stack):
    spec = stack.ports.subscriber
    app_metrics = f"http://127.0.0.1:{spec.app_metrics_port}/metrics"
    sidecar_metrics = f"http://127.0.0.1:{spec.metrics_port}/metrics"
    ids = [f"dead-{uuid.uuid4().hex[:8]}-{n}" for n in range(20)]
    stack.subscriber_app.kill()
    try:
        for round_ in range(10):  # written while it is dead: queued in Redis
            for state_id in ids:
                await StateStore.save_state(f"f{round_ % 3}", round_, state_id, W)
        await StateStore.flush()

        shown = statestore(stack, "status", "--metrics", app_metrics, "--sidecar-metrics", sidecar_metrics)
        assert shown.returncode == 3, shown.stdout + shown.stderr
        assert "the subscriber app is not running, but its sidecar is" in shown.stdout
        assert "nothing is lost" in shown.stdout and "Restart it: `make up`" in shown.stdout
        problems = stack.problems()  # what `make status` prints
        assert any("subscriber: the subscriber app is not running; its sidecar is up" in p and "`make up`" in p
                   for p in problems), problems  # fmt: skip
        stored = await StateStore._runtime().query.get_documents(ids, W)  # what other processes read
        assert stored == {}  # nothing applied while it is dead (this process reads its own writes)
    finally:
        started = await asyncio.to_thread(stack.resume)  # what `make up` does on a stack partly running
    assert started == ["subscriber", "subscriber-daprd"]  # the idle sidecar restarted with it
    await asyncio.gather(*(StateStore.sync(i, W, timeout=60) for i in ids))
    expected = {"f0": 9, "f1": 7, "f2": 8}
    assert [await StateStore.get_state(i, W) for i in ids] == [expected] * len(ids)
    assert stack.problems() == []
    shown = statestore(stack, "status", "--metrics", app_metrics)
    assert shown.returncode == 0 and shown.stdout.strip() == f"{app_metrics}: ready", shown.stdout
