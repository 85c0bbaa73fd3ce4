"""The subscriber Dapr app: a gRPC server for the sidecar's callbacks."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import grpc
from dapr.proto.runtime.v1 import appcallback_pb2_grpc as pb_grpc

from statestore.core.dapr_sdk import add_app_callback
from statestore.core.settings import get_settings, get_sidecar_settings
from statestore.core.sidecar import SidecarClient
from statestore.subscriber.applier import EventApplier
from statestore.subscriber.dapr_ports import DaprParking, DaprStateRepository
from statestore.subscriber.deadletter import DeadLetterBox
from statestore.subscriber.expiry import ExpiryMarkers
from statestore.subscriber.health import HealthServicer, SubscriberHealth
from statestore.subscriber.metrics import SubscriberMetrics
from statestore.subscriber.objectstore import LocalFileObjectStore, open_object_store
from statestore.subscriber.outbox import REGISTRY_KEY, OutboxWriter, SnapshotFlusher
from statestore.subscriber.ports import ObjectStoreError, StateRepository
from statestore.subscriber.servicer import SubscriberServicer
from statestore.subscriber.tracing import TracingConfigError, configure_tracing

__all__ = ["main", "serve"]

log = logging.getLogger("statestore.subscriber")


class _RequireAppToken(grpc.aio.ServerInterceptor):
    """With APP_API_TOKEN set, only a sidecar that sends that token delivers events.

    daprd asks for the subscription list (and health) without the token, so those
    read-only calls stay open; every call that carries data needs it.
    """

    OPEN = ("/ListTopicSubscriptions", "/ListInputBindings", "/HealthCheck")

    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_service(self, continuation, details):
        token = dict(details.invocation_metadata or ()).get("dapr-api-token")
        if token == self._token or details.method.endswith(self.OPEN):
            return await continuation(details)

        async def deny(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong dapr-api-token")

        return grpc.unary_unary_rpc_method_handler(deny)


class _BoundDeliveries(grpc.aio.ServerInterceptor):
    """At most ``limit`` calls at once; beyond it a call is refused (RESOURCE_EXHAUSTED:
    daprd retries the delivery), so memory stays bounded whatever the backlog.

    Dapr's app health probe is never counted nor refused: a replica busy with deliveries
    is healthy, and a refused probe would count as a failure and move its partitions.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._running = 0

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or details.method.endswith("/HealthCheck"):
            return handler
        call = handler.unary_unary

        async def bounded(request, context):
            if self._running >= self._limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"more than {self._limit} calls at once")
            self._running += 1
            try:
                return await call(request, context)
            finally:
                self._running -= 1

        return grpc.unary_unary_rpc_method_handler(
            bounded, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )


async def serve(stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set, then finish in-flight batches and exit."""
    settings = get_settings()
    sidecar_settings = get_sidecar_settings()
    if settings.max_document_bytes + (1 << 20) > sidecar_settings.max_body_bytes:
        raise SystemExit(
            f"subscriber: STATESTORE_MAX_DOCUMENT_BYTES ({settings.max_document_bytes}) must be at least 1 MiB"
            f" below the sidecar's limit STATESTORE_SIDECAR_MAX_BODY_BYTES ({sidecar_settings.max_body_bytes},"
            " daprd --max-body-size): lower the first, or raise both."
        )
    try:
        tracing = configure_tracing(settings.trace_file)
    except TracingConfigError as exc:
        raise SystemExit(f"subscriber: {exc}") from None
    tracer = tracing.tracer if tracing else None
    metrics = SubscriberMetrics(stuck_after_s=settings.stuck_delivery_s)
    sidecar = SidecarClient(sidecar_settings)  # connects at its first call
    repository = DaprStateRepository(sidecar, settings.statestore_name)
    outbox = OutboxWriter(repository, settings.subscriber_replica_id, traced=tracer is not None)
    applier = EventApplier(
        repository,
        outbox=outbox,
        request_max_bytes=settings.request_max_bytes,
        max_document_bytes=settings.max_document_bytes,
        keep_index=settings.list_index,
        metrics=metrics,
    )
    parking = DaprParking(sidecar, settings.pubsub_name, settings.parked_topic, settings.pack_events, settings.pack_max_bytes)
    servicer = SubscriberServicer(applier, settings, parking, metrics, DeadLetterBox(repository, settings.request_max_bytes),
                                  tracer=tracer)  # fmt: skip
    try:
        objects = open_object_store(settings)
    except ObjectStoreError as exc:
        raise SystemExit(f"subscriber: {exc}") from None
    flusher = SnapshotFlusher(
        repository, objects, lease_s=settings.snapshot_lease_s, coalesce_s=settings.snapshot_coalesce_s,
        outbox=outbox, metrics=metrics, tracer=tracer,
        expiry=ExpiryMarkers(repository, objects, bucket_s=settings.expiry_bucket_s),
        sweep_interval_s=settings.expiry_sweep_s,
    )  # fmt: skip
    health = SubscriberHealth(repository, metrics, flusher_progress=lambda: flusher.turned_at)
    metrics.snapshot_lease_held.set_function(lambda: 1.0 if flusher.holding() else 0.0)
    # Served before the gRPC server: a port in use stops the start before that opens.
    metrics_server = (
        metrics.serve(settings.metrics_port, settings.metrics_host, health) if settings.metrics_port else None
    )
    token = os.environ.get("APP_API_TOKEN")
    # Deliveries beyond the bound are refused (daprd retries them). Each topic also has
    # its own budget (servicer).
    interceptors = [_BoundDeliveries(8 * settings.subscriber_deliveries_per_topic)]
    server = grpc.aio.server(
        interceptors=[_RequireAppToken(token), *interceptors] if token else interceptors,
        options=[
            ("grpc.max_receive_message_length", settings.subscriber_max_delivery_bytes),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    add_app_callback(servicer, server)
    pb_grpc.add_AppCallbackHealthCheckServicer_to_server(HealthServicer(health), server)
    address = f"127.0.0.1:{settings.subscriber_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError:
        raise SystemExit(
            f"subscriber: cannot listen on {address}: the port is in use. "
            "Stop the other process or set STATESTORE_SUBSCRIBER_PORT."
        ) from None
    await server.start()
    log.info(
        "subscriber listening on %s for topic %r (dead letters to %r, kept in the state store), sidecar %s",
        address, settings.topic, settings.deadletter_topic, sidecar.target,
    )  # fmt: skip
    log.info("snapshots to %r", objects)
    if isinstance(objects, LocalFileObjectStore):
        metrics.snapshot_write_cpu.set_function(lambda: objects.write_cpu_s)
    if tracing:
        log.info("traces: apply and snapshot spans exported to %s", ", ".join(
            f"{name} {settings.trace_file}" if name == "file" else name for name in tracing.exporters))  # fmt: skip
    if metrics_server:
        log.info("metrics and health on http://%s:%d/metrics, /healthz/ready, /healthz/live",
                 settings.metrics_host, metrics_server.port)  # fmt: skip
    stop_flushing = asyncio.Event()
    flushing = asyncio.create_task(flusher.run(stop_flushing))
    health.watch_flusher(flushing)
    indexing = asyncio.create_task(_until_done(applier.enable_index, stop))
    probing = asyncio.create_task(health.keep_checking(stop_flushing))
    await stop.wait()
    indexing.cancel()
    await server.stop(grace=10)  # finish in-flight batches, then their snapshots
    stop_flushing.set()
    await flushing
    await probing
    try:
        await outbox.deregister()
    except Exception as exc:  # the registry keeps an empty outbox: harmless
        log.info("outbox not deregistered: %s", exc)
    await sidecar.close()
    if metrics_server:
        metrics_server.close()
    if tracing:
        tracing.shutdown()  # export the spans still queued
    log.info(
        "subscriber stopped: %d events applied, %d rejected, %d parked, %d snapshots written",
        servicer.applied_events, servicer.rejected_events, servicer.parked_events, flusher.written,
    )  # fmt: skip


async def _until_done(step, stop: asyncio.Event, pause_s: float = 0.5) -> None:
    """Run ``step`` until it succeeds (the sidecar may still be starting) or ``stop``."""
    while not stop.is_set():
        try:
            return await step()
        except Exception as exc:
            log.debug("will retry %s: %s", getattr(step, "__name__", step), exc)
            await asyncio.sleep(pause_s)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    asyncio.run(run())
