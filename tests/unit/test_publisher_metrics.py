"""Issue 12: the caller's Prometheus metrics, from a real pipeline's counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from statestore.publisher.metrics import PublisherCollector, register_metrics
from statestore.publisher.pipeline import PublishPipeline
from statestore.cli.metrics import parse
from tests.unit.test_pipeline import FakeTransport, queued, settings


def scraped(registry: CollectorRegistry):
    return parse(generate_latest(registry).decode())


async def test_batches_errors_latency_and_queue_depth_follow_the_pipeline():
    pipeline = PublishPipeline(FakeTransport(failures=2, mode="entries"), settings(outage_budget_s=5))
    registry = CollectorRegistry()

    def stats():
        return {**vars(pipeline.stats), "pending": pipeline.pending, "in_outage": pipeline.in_outage}

    registry.register(PublisherCollector(stats))
    for q in queued(25):
        await pipeline.submit(q)
    assert scraped(registry).total("statestore_publish_queue_depth") == pipeline.pending > 0
    await pipeline.flush()
    after = scraped(registry)
    assert after.total("statestore_publish_queue_depth") == 0
    assert after.total("statestore_published_events_total") == 25
    # Two failed requests (every message in them counted), then the rest succeed.
    assert after.total("statestore_publish_errors_total") >= 2
    assert after.total("statestore_publish_batches_total") == pipeline.stats.batches >= 3 + 2
    assert after.total("statestore_publish_seconds_count") == pipeline.stats.batches
    assert after.total("statestore_publish_seconds_sum") > 0
    assert after.total("statestore_publish_retries_total") >= 1


def test_register_metrics_puts_the_collector_on_the_given_registry():
    registry = CollectorRegistry()
    register_metrics(registry)
    names = set(scraped(registry).samples)
    assert {"statestore_publish_queue_depth", "statestore_publish_batches_total",
            "statestore_publish_errors_total", "statestore_publish_seconds_count"} <= names  # fmt: skip
