"""The caller library's Prometheus metrics, for an app that serves Prometheus.

    from prometheus_client import start_http_server
    from statestore import StateStore
    StateStore.register_metrics()          # on prometheus_client's default registry
    start_http_server(8000)

The collector reads ``StateStore.stats()`` (this process's publishing, every event loop)
at each scrape: nothing is counted twice and nothing runs between scrapes.
docs/observability.md describes every metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

__all__ = ["PublisherCollector", "register_metrics"]

# stats() name -> (metric name without _total, help)
_COUNTERS = {
    "published": ("statestore_published_events", "Events the sidecar accepted."),
    "batches": ("statestore_publish_batches", "Bulk-publish requests sent to the sidecar."),
    "publish_errors": ("statestore_publish_errors", "Messages a publish request failed to publish (each attempt)."),
    "retries": ("statestore_publish_retries", "Publish rounds retried after a failure."),
    "failed_events": ("statestore_publish_failed_events", "Events handed back by PublishError (budget exhausted)."),
    "outages": ("statestore_publish_outages", "Publish outages (the sidecar or broker refusing) that began."),
    "backpressure_waits": ("statestore_publish_backpressure_waits", "Times a save waited on a full queue."),
}


class PublisherCollector(Collector):
    """Turns ``stats()`` (StateStore.stats by default) into metrics at each scrape."""

    def __init__(self, stats: Callable[[], dict[str, Any]] | None = None) -> None:
        if stats is None:
            from statestore.publisher.store import StateStore

            stats = StateStore.stats
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield GaugeMetricFamily("statestore_publish_queue_depth", "Events queued or being published.",
                                value=stats.get("pending", 0))  # fmt: skip
        yield GaugeMetricFamily("statestore_publish_in_outage", "1 during a publish outage.",
                                value=1 if stats.get("in_outage") else 0)  # fmt: skip
        for key, (name, help_text) in _COUNTERS.items():
            yield CounterMetricFamily(name, help_text, value=stats.get(key, 0))
        yield SummaryMetricFamily(
            "statestore_publish_seconds", "Time of one bulk-publish request.",
            count_value=stats.get("batches", 0), sum_value=stats.get("publish_seconds", 0.0),
        )  # fmt: skip


def register_metrics(registry: CollectorRegistry | None = None) -> PublisherCollector:
    """Register the caller's metrics on ``registry`` (default: prometheus_client's); returns the collector."""
    collector = PublisherCollector()
    (registry or REGISTRY).register(collector)
    return collector
