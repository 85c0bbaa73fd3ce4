"""Issue 27: the subscriber's health, one set of facts answered to Dapr's gRPC app health
probe and over HTTP; the probe is never refused by the delivery bound (no sidecar needed:
a real gRPC server in process, the in-memory state store)."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from dapr.proto.runtime.v1 import appcallback_pb2 as pb
from dapr.proto.runtime.v1 import appcallback_pb2_grpc as pb_grpc
from google.protobuf import empty_pb2
from prometheus_client import generate_latest

from statestore.cli.metrics import parse
from statestore.core.errors import SidecarUnavailableError
from statestore.subscriber.app import _BoundDeliveries, _RequireAppToken
from statestore.subscriber.health import HealthServicer, SubscriberHealth
from statestore.subscriber.metrics import SubscriberMetrics
from statestore.subscriber.ports import InMemoryStateRepository


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyRepository(InMemoryStateRepository):
    """The sidecar or the store down while ``down`` is set."""

    down = False

    async def load(self, keys):
        if self.down:
            raise SidecarUnavailableError("read states: the Dapr sidecar did not answer")
        return await super().load(keys)


def made(stuck_after_s: float = 120.0):
    clock = Clock()
    turned = {"at": clock.now}
    metrics = SubscriberMetrics(stuck_after_s=stuck_after_s)
    repository = FlakyRepository()
    health = SubscriberHealth(repository, metrics, flusher_progress=lambda: turned["at"], flusher_stall_s=60, clock=clock)
    return health, metrics, repository, clock, turned


async def test_ready_only_once_the_store_answers_through_the_sidecar_and_again_after_it_failed():
    health, metrics, repository, _, _ = made()
    assert health.ready() == (False, "not checked yet")
    assert await health.check_store() and health.ready() == (True, "ok")
    repository.down = True
    assert not await health.check_store()
    ok, reason = health.ready()
    assert not ok and "cannot read the state store through the sidecar" in reason
    assert health.live() == (True, "ok")  # the sidecar is gone, the app is not stuck: no restart
    repository.down = False
    assert await health.check_store() and health.ready()[0]


async def test_a_stalled_or_stopped_snapshot_flusher_makes_it_unready_and_not_live():
    health, _, _, clock, turned = made()
    await health.check_store()
    clock.now += 59
    assert health.ready()[0]
    clock.now += 2  # 61 s without a round or a back-off
    for ok, reason in (health.ready(), health.live()):
        assert not ok and "flusher's loop has not turned for 61 s" in reason
    turned["at"] = clock.now
    assert health.ready()[0]

    async def crashes():
        raise RuntimeError("a bug")

    task = asyncio.create_task(crashes())
    await asyncio.gather(task, return_exceptions=True)
    health.watch_flusher(task)
    ok, reason = health.ready()
    assert not ok and "the snapshot flusher stopped (RuntimeError: a bug)" in reason


async def test_a_stuck_delivery_makes_it_unready_and_not_live():
    health, metrics, _, _, _ = made(stuck_after_s=0.0)
    await health.check_store()
    with metrics.delivery():
        await asyncio.sleep(0.01)
        for ok, reason in (health.ready(), health.live()):
            assert not ok and "in flight" in reason
    assert health.ready()[0]


async def test_the_ready_gauge_is_the_answer_at_each_scrape():
    health, metrics, repository, _, _ = made()

    def gauge() -> float:
        return parse(generate_latest(metrics.registry).decode()).total("statestore_ready")

    assert gauge() == 0
    await health.check_store()
    assert gauge() == 1
    repository.down = True
    await health.check_store()
    assert gauge() == 0


async def test_keep_checking_rechecks_fast_while_failing_and_logs_each_change(caplog):
    caplog.set_level(logging.INFO, logger="statestore.subscriber")
    health, _, repository, _, _ = made()
    await health.check_store()
    health.ready()
    repository.down = True
    stop = asyncio.Event()
    checking = asyncio.create_task(health.keep_checking(stop))
    await asyncio.sleep(0.1)
    assert not health.ready()[0]
    repository.down = False
    for _ in range(40):  # rechecked every 0.25 s while failing
        if health.ready()[0]:
            break
        await asyncio.sleep(0.05)
    assert health.ready()[0]
    stop.set()
    await checking
    logged = [r.getMessage() for r in caplog.records]
    assert logged[0] == "healthy: the sidecar, the state store and the snapshot flusher work"
    assert "unhealthy" in logged[1] and "cannot read the state store" in logged[1]
    assert logged[2] == logged[0] and len(logged) == 3  # each change once


class Deliveries(pb_grpc.AppCallbackServicer):
    """Holds every delivery until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = 0

    async def OnBulkTopicEvent(self, request, context):
        self.holding += 1
        await self.release.wait()
        return pb.TopicEventBulkResponse()

    async def ListTopicSubscriptions(self, request, context):
        return pb.ListTopicSubscriptionsResponse()


@pytest.fixture
async def app_server():
    """The subscriber's gRPC server as app.py builds it: token check, delivery bound 1."""
    health, metrics, repository, _, _ = made()
    deliveries = Deliveries()
    server = grpc.aio.server(interceptors=[_RequireAppToken("secret"), _BoundDeliveries(1)])
    pb_grpc.add_AppCallbackServicer_to_server(deliveries, server)
    pb_grpc.add_AppCallbackHealthCheckServicer_to_server(HealthServicer(health), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield health, repository, deliveries, channel
    deliveries.release.set()
    await channel.close()
    await server.stop(None)


async def probe(channel) -> grpc.StatusCode:
    """What daprd's probe does: HealthCheck, no token, a deadline."""
    try:
        await pb_grpc.AppCallbackHealthCheckStub(channel).HealthCheck(empty_pb2.Empty(), timeout=2)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_the_grpc_probe_gets_ok_only_while_it_can_apply_with_the_reason_otherwise(app_server):
    health, repository, _, channel = app_server
    assert await probe(channel) == grpc.StatusCode.UNAVAILABLE  # not checked yet
    await health.check_store()
    assert await probe(channel) == grpc.StatusCode.OK
    repository.down = True
    await health.check_store()
    try:
        await pb_grpc.AppCallbackHealthCheckStub(channel).HealthCheck(empty_pb2.Empty(), timeout=2)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE and "cannot read the state store" in exc.details()
    else:
        raise AssertionError("the probe was answered OK while the store was down")


async def test_deliveries_beyond_the_bound_are_refused_but_the_probe_never_is(app_server):
    health, _, deliveries, channel = app_server
    await health.check_store()
    stub = pb_grpc.AppCallbackStub(channel)
    token = (("dapr-api-token", "secret"),)
    first = asyncio.ensure_future(stub.OnBulkTopicEvent(pb.TopicEventBulkRequest(), metadata=token, timeout=10))
    while deliveries.holding < 1:
        await asyncio.sleep(0.01)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.OnBulkTopicEvent(pb.TopicEventBulkRequest(), metadata=token, timeout=5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await probe(channel) == grpc.StatusCode.OK  # busy is healthy
    deliveries.release.set()
    await first
    await stub.OnBulkTopicEvent(pb.TopicEventBulkRequest(), metadata=token, timeout=5)  # room again
