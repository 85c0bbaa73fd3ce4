"""Issue 12: the subscriber's metrics object and its HTTP endpoints (no stack needed)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import generate_latest

from statestore.cli.metrics import parse, summarize
from statestore.subscriber.metrics import SubscriberMetrics


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class FakeHealth:
    """The answers of statestore.subscriber.health, set by the test (tests/unit/test_health.py
    tests the real one)."""

    def __init__(self, metrics: SubscriberMetrics) -> None:
        self.answer = (False, "not checked yet")
        self._metrics = metrics

    def ready(self):
        return self.answer

    def live(self):
        return self._metrics.live()


@pytest.fixture
def served():
    metrics = SubscriberMetrics(stuck_after_s=0.0)
    health = FakeHealth(metrics)
    server = metrics.serve(0, health=health)
    yield metrics, health, f"http://127.0.0.1:{server.port}"
    server.close()


def test_metrics_are_served_as_prometheus_text(served):
    metrics, _, base = served
    metrics.applied("field_updated", stamped_ms=1000, now_ms=3500)
    status, text = get(f"{base}/metrics")
    assert status == 200
    scrape = parse(text)
    assert scrape.get("statestore_events_applied_total", kind="field_updated") == 1
    assert scrape.total("statestore_event_staleness_seconds_count") == 1
    assert scrape.total("statestore_event_staleness_seconds_sum") == pytest.approx(2.5)


def test_ready_answers_what_the_health_says_with_its_reason(served):
    _, health, base = served
    status, body = get(f"{base}/healthz/ready")
    assert status == 503 and "not checked yet" in body
    health.answer = (True, "ok")
    assert get(f"{base}/healthz/ready")[0] == 200
    health.answer = (False, "cannot read the state store")
    assert get(f"{base}/healthz/ready") == (503, "cannot read the state store\n")


def test_live_fails_while_a_delivery_is_in_flight_beyond_the_bound(served):
    metrics, _, base = served
    assert get(f"{base}/healthz/live")[0] == 200
    with metrics.delivery():
        status, body = get(f"{base}/healthz/live")
        assert status == 503 and "in flight" in body
        assert parse(get(f"{base}/metrics")[1]).total("statestore_deliveries_in_flight") == 1
    assert get(f"{base}/healthz/live")[0] == 200
    assert parse(get(f"{base}/metrics")[1]).total("statestore_delivery_apply_seconds_count") == 1


def test_a_port_in_use_gets_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SystemExit, match="in use.*STATESTORE_METRICS_PORT"):
            SubscriberMetrics().serve(taken.getsockname()[1])


def test_two_metrics_objects_never_share_counters():
    a, b = SubscriberMetrics(), SubscriberMetrics()
    a.states_written.inc(3)
    assert parse(generate_latest(b.registry).decode()).total("statestore_states_written_total") == 0
    assert parse(generate_latest(a.registry).decode()).total("statestore_states_written_total") == 3


def test_stats_summary_takes_rates_from_two_scrapes():
    first = parse('statestore_events_applied_total{kind="field_updated"} 10\n'
                  "statestore_event_staleness_seconds_sum 1\nstatestore_event_staleness_seconds_count 10\n")
    second = parse('statestore_events_applied_total{kind="field_updated"} 30\n'
                   'statestore_events_applied_total{kind="object_replaced"} 10\n'
                   'statestore_dead_lettered_total{reason="invalid_event"} 2\n'
                   "statestore_event_staleness_seconds_sum 5\nstatestore_event_staleness_seconds_count 40\n")
    summary = summarize(first, second, seconds=2.0)
    assert summary["applied_per_s"] == 15.0 and summary["applied_total"] == 40
    assert summary["mean_staleness_s"] == pytest.approx(4 / 30, abs=1e-3)
    assert summary["dead_lettered_by_reason"] == {"invalid_event": 2}
