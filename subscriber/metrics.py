"""The subscriber's Prometheus metrics and health, served over HTTP.

One ``SubscriberMetrics`` object is made by the app and passed to the servicer, the
applier and the snapshot flusher; each has its own registry, so tests and several
subscribers in one process never share counters. ``serve`` answers on one port:

- ``/metrics``: Prometheus text;
- ``/healthz/ready`` and ``/healthz/live``: the answers of statestore.subscriber.health
  (200, or 503 with the reason): ready is what Dapr's app health probe is told.

docs/observability.md describes every metric.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import threading
import time
from collections.abc import Iterable, Iterator
from itertools import count
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["SubscriberMetrics", "MetricsServer", "Health", "DEFAULT_PORT"]

DEFAULT_PORT = 9464  # the OpenTelemetry Prometheus exporter's port

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STALENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class SubscriberMetrics:
    """Counters, gauges and histograms of one subscriber, and its delivery clock (stuck deliveries)."""

    def __init__(self, registry: CollectorRegistry | None = None, stuck_after_s: float = 120.0) -> None:
        self.registry = registry or CollectorRegistry()
        self.stuck_after_s = stuck_after_s
        r = self.registry
        self.events_applied = Counter(
            "statestore_events_applied", "Events applied to the state store.", ["kind"], registry=r
        )
        self.duplicates_ignored = Counter(
            "statestore_duplicates_ignored", "Events that changed nothing (already applied).", registry=r
        )
        self.dead_lettered = Counter(
            "statestore_dead_lettered", "Messages sent to the dead-letter topic, by reason class.", ["reason"], registry=r
        )
        self.states_written = Counter("statestore_states_written", "State documents written.", registry=r)
        self.etag_conflicts = Counter(
            "statestore_etag_conflicts", "Transactions that lost an ETag race (merged again).", registry=r
        )
        self.events_parked = Counter(
            "statestore_events_parked", "Events stamped too far ahead, parked until due.", registry=r
        )
        self.apply_latency = Histogram(
            "statestore_delivery_apply_seconds", "Time to apply one delivery.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.staleness = Histogram(
            "statestore_event_staleness_seconds",
            "From an event's stamp (publish) to its apply.",
            buckets=_STALENESS_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("statestore_deliveries_in_flight", "Deliveries being applied now.", registry=r)
        self.snapshot_backlog = Gauge(
            "statestore_snapshot_backlog_states",
            "States the last flush round found awaiting a snapshot (this replica, when it holds the lease).",
            registry=r,
        )
        self.snapshot_flush = Histogram(
            "statestore_snapshot_flush_seconds", "Time of a flush round that wrote snapshots.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.snapshots_written = Counter("statestore_snapshots_written", "Snapshot files written.", registry=r)
        # Read from the flusher at each scrape (statestore.subscriber.app).
        self.snapshot_lease_held = Gauge(
            "statestore_snapshot_lease_held", "1 while this replica holds the snapshot lease (it writes every"
            " replica's snapshots; an idle holder lets it lapse).", registry=r,
        )  # fmt: skip
        self.snapshot_write_cpu = Gauge(
            "statestore_snapshot_write_cpu_seconds",
            "CPU time this process spent writing objects to a local object-store folder (rises only; an S3"
            " client's own threads are not counted).", registry=r,
        )  # fmt: skip
        self.expired_snapshots_removed = Counter(
            "statestore_expired_snapshots_removed", "Snapshots of expired states removed by the expiry sweep.", registry=r
        )
        # Its value is read from statestore.subscriber.health at each scrape.
        self.ready = Gauge("statestore_ready", "1 while the subscriber can apply (its health probe answers OK).", registry=r)
        self._started: dict[int, float] = {}
        self._ids = count()
        self._lock = threading.Lock()

    # -- recording -------------------------------------------------------------------

    @contextlib.contextmanager
    def delivery(self) -> Iterator[None]:
        """Around one delivery: in-flight gauge, apply latency, and the liveness clock."""
        token = next(self._ids)
        started = time.monotonic()
        with self._lock:
            self._started[token] = started
        self.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight.dec()
            with self._lock:
                del self._started[token]
            self.apply_latency.observe(time.monotonic() - started)

    def applied(self, kind: str, stamped_ms: int, now_ms: float | None = None) -> None:
        """One event applied; ``stamped_ms`` is the wall time of its hybrid-clock stamp."""
        self.applied_many([(kind, stamped_ms)], now_ms)

    def applied_many(self, events: Iterable[tuple[str, int]], now_ms: float | None = None) -> None:
        """Events applied, each as (kind, the wall time of its stamp): one count per kind."""
        now_ms = time.time() * 1000 if now_ms is None else now_ms
        counts: dict[str, int] = {}
        observe = self.staleness.observe
        for kind, stamped_ms in events:
            counts[kind] = counts.get(kind, 0) + 1
            observe(max(0.0, (now_ms - stamped_ms) / 1000))
        for kind, count in counts.items():
            self.events_applied.labels(kind=kind).inc(count)

    # -- health ----------------------------------------------------------------------

    def oldest_in_flight_s(self) -> float:
        """Age of the oldest delivery in flight (0 when none)."""
        with self._lock:
            oldest = min(self._started.values(), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest

    def live(self) -> tuple[bool, str]:
        """No delivery in flight longer than the bound: (ok, reason)."""
        age = self.oldest_in_flight_s()
        if age > self.stuck_after_s:
            return False, f"a delivery has been in flight for {age:.0f} s (bound {self.stuck_after_s:g} s)"
        return True, "ok"

    def serve(self, port: int, host: str = "127.0.0.1", health: Health | None = None) -> MetricsServer:
        """Serve /metrics and /healthz/* on ``host:port`` in a thread; SystemExit if the port is taken.
        ``health`` answers /healthz/* (statestore.subscriber.health.SubscriberHealth)."""
        return MetricsServer(self, host, port, health)


class Health(Protocol):
    """What /healthz/* asks (statestore.subscriber.health.SubscriberHealth)."""

    def ready(self) -> tuple[bool, str]: ...

    def live(self) -> tuple[bool, str]: ...


class MetricsServer:
    """A small threaded HTTP server; ``close()`` stops it."""

    def __init__(self, metrics: SubscriberMetrics, host: str, port: int, health: Health | None = None) -> None:
        handler = _handler(metrics, health)
        try:
            self._server = http.server.ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SystemExit(
                    f"subscriber: cannot serve metrics on {host}:{port}: the port is in use. Stop the other"
                    " process, or set STATESTORE_METRICS_PORT to a free port (0 turns metrics off)."
                ) from None
            raise
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(metrics: SubscriberMetrics, health: Health | None) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server name)
            path = self.path.split("?")[0]
            if path == "/metrics":
                self._answer(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz/ready", "/healthz/live") and health is not None:
                ok, reason = health.ready() if path.endswith("ready") else health.live()
                self._answer(200 if ok else 503, f"{reason}\n".encode(), "text/plain; charset=utf-8")
            else:
                self._answer(404, b"try /metrics, /healthz/ready or /healthz/live\n", "text/plain; charset=utf-8")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # scrapes every few seconds: not logged
            pass

    return Handler
