"""Issue 12: the subscriber's Prometheus metrics and health endpoints, on the real stack."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

from statestore import StateStore, StateType
from statestore.cli.metrics import Scrape, scrape
from tests.integration.conftest import eventually
from tests.integration.test_cli import statestore

W = StateType.WORKFLOWS
N = 25


def metrics_ports(stack) -> list[int]:
    """The metrics port of every subscriber replica running now (a scrape sums them);
    earlier tests may have added replicas and stopped them."""
    specs = [stack.ports.subscriber, *(stack.replica_specs[app.name] for app, _ in stack.replicas)]
    return [spec.app_metrics_port for (app, _), spec in zip(stack.subscriber_pairs(), specs) if app.alive()]


def scrape_all(stack) -> Scrape:
    total = Scrape({})
    for port in metrics_ports(stack):
        total = total + scrape(f"http://127.0.0.1:{port}/metrics")
    return total


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_n_writes_move_applied_and_staleness_by_n(stack):
    before = scrape_all(stack)
    wf = f"metrics-{uuid.uuid4().hex[:8]}"
    for n in range(N):
        await StateStore.save_state(f"f{n}", n, wf, W)
    await StateStore.sync(wf, W)

    async def moved():
        after = scrape_all(stack)
        return after if after.total("statestore_events_applied_total") >= before.total("statestore_events_applied_total") + N else None

    after = await eventually(moved)
    assert after.total("statestore_events_applied_total") - before.total("statestore_events_applied_total") == N
    assert after.get("statestore_events_applied_total", kind="field_updated") - before.get(
        "statestore_events_applied_total", kind="field_updated"
    ) == N
    assert after.total("statestore_event_staleness_seconds_count") - before.total("statestore_event_staleness_seconds_count") == N
    assert after.total("statestore_states_written_total") > before.total("statestore_states_written_total")
    assert after.total("statestore_delivery_apply_seconds_count") > before.total("statestore_delivery_apply_seconds_count")


async def test_a_dead_letter_moves_the_dead_letter_counter(stack, caller_sidecar, settings):
    before = scrape_all(stack).total("statestore_dead_lettered_total")
    body = json.dumps({"specversion": "1.0", "id": f"metrics-{uuid.uuid4().hex}", "source": "test",
                       "type": "io.statestore.deleted.v1", "datacontenttype": "application/json",
                       "data": {"state_id": "x"}}).encode()  # fmt: skip
    await caller_sidecar.publish(settings.pubsub_name, settings.topic, body, "application/cloudevents+json")

    async def moved():
        return scrape_all(stack).get("statestore_dead_lettered_total", reason="invalid_event") >= 1 and (
            scrape_all(stack).total("statestore_dead_lettered_total") == before + 1
        )

    await eventually(moved)


async def test_ready_and_live_while_up_not_ready_without_the_sidecar(stack):
    base = f"http://127.0.0.1:{stack.ports.subscriber.app_metrics_port}"
    assert status(f"{base}/healthz/ready") == 200
    assert status(f"{base}/healthz/live") == 200
    stack.subscriber_sidecar.stop()
    try:

        async def not_ready():
            return status(f"{base}/healthz/ready") == 503

        await eventually(not_ready)
        assert status(f"{base}/healthz/live") == 200  # nothing is stuck: only the sidecar is gone
    finally:
        stack.start_sidecar(stack.subscriber_sidecar, stack.ports.subscriber)

    async def ready():
        return status(f"{base}/healthz/ready") == 200

    await eventually(ready)


async def test_statestore_stats_reads_the_subscribers_metrics(stack):
    wf = f"metrics-{uuid.uuid4().hex[:8]}"
    for n in range(5):
        await StateStore.save_state(f"f{n}", n, wf, W)
    await StateStore.sync(wf, W)
    urls = [arg for port in metrics_ports(stack) for arg in ("--metrics", f"http://127.0.0.1:{port}/metrics")]
    result = statestore(stack, "stats", *urls, "--interval", "0.1", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    now = scrape_all(stack)
    assert shown["applied_total"] == now.total("statestore_events_applied_total") >= 5
    assert shown["dead_lettered_total"] == now.total("statestore_dead_lettered_total")
    assert shown["parked_total"] == now.total("statestore_events_parked_total")
    assert shown["ready_replicas"] == len(metrics_ports(stack))
    assert {"applied_per_s", "deliveries_in_flight", "snapshot_backlog_states"} <= set(shown)


def test_statestore_stats_without_a_subscriber_says_so(stack):
    result = statestore(stack, "stats", "--metrics", "http://127.0.0.1:1/metrics", "--interval", "0.1")
    assert result.returncode == 2
    assert "cannot read http://127.0.0.1:1/metrics" in result.stderr and "Traceback" not in result.stderr
