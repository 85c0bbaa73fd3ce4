"""The Grafana dashboard (issue 12): its queries name only metrics that exist, the
committed JSON is the one bench/dashboard_panels.py makes, and the offline evaluation
computes what Prometheus would."""

import json
import math
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bench.dashboard_panels import DASHBOARD_PATH, PANELS, Query, dashboard_json, evaluate, histogram_quantile
from statestore.publisher.metrics import register_metrics
from statestore.subscriber.metrics import SubscriberMetrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count"),
            "gauge": ("",)}  # fmt: skip


def exported(registry: CollectorRegistry) -> set[str]:
    """Sample names a registry's metrics expose, whether observed yet or not."""
    return {family.name + suffix for family in registry.collect() for suffix in SUFFIXES[family.type]}


def documented_daprd_metrics() -> set[str]:
    """The daprd metrics docs/observability.md lists (counts as named; latencies are histograms)."""
    section = DOCS.read_text().split("## The daprd metrics that matter")[1].split("\n## ")[0]
    names = set(re.findall(r"`(dapr_[a-z_]+)`", section))
    assert names, "docs/observability.md lists no daprd metric"
    return {n + s for n in names for s in (("_bucket", "_sum", "_count") if n.endswith(("latencies", "latency")) else ("",))}


def dashboard_expressions() -> list[str]:
    doc = json.loads(DASHBOARD_PATH.read_text())
    return [target["expr"] for panel in doc["panels"] for target in panel["targets"]]


def names_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression (ours and daprd's share these prefixes; labels do not)."""
    return set(re.findall(r"\b((?:statestore|dapr)_[a-z0-9_]+)\b", expr))


def test_every_query_names_a_metric_the_code_or_daprd_exports():
    publisher = CollectorRegistry()
    register_metrics(publisher)
    known = exported(SubscriberMetrics().registry) | exported(publisher) | documented_daprd_metrics()
    expressions = dashboard_expressions()
    used = set().union(*(names_in(e) for e in expressions))
    assert used, "no metric found in the dashboard's queries"
    assert used <= known, f"the dashboard queries metrics nobody exports: {sorted(used - known)}"
    assert all(names_in(e) for e in expressions), "a query whose metric the parser could not find"
    # Each side is on the board: the subscriber, the caller library, both sidecars.
    assert {n.split("_")[0] for n in used} == {"statestore", "dapr"}
    assert "statestore_publish_queue_depth" in used and "dapr_component_pubsub_ingress_bulk_count" in used


def test_the_committed_json_is_the_generated_one():
    assert DASHBOARD_PATH.read_text() == dashboard_json(), "run `python -m bench.dashboard --json-only`"
    doc = json.loads(DASHBOARD_PATH.read_text())
    assert [p["title"] for p in doc["panels"]] == [p.title for p in PANELS]


def test_promql_shapes():
    assert Query("rate", "statestore_events_applied_total", "x", by=("kind",)).promql("1m") == \
        "sum by (kind) (rate(statestore_events_applied_total[1m]))"  # fmt: skip
    assert Query("quantile", "dapr_component_state_latencies", "x", q=0.5, scale=0.001).promql("1m") == \
        "histogram_quantile(0.5, sum by (le) (rate(dapr_component_state_latencies_bucket[1m]))) * 0.001"  # fmt: skip
    assert Query("mean", "statestore_publish_seconds", "x").promql("1m") == \
        "sum (rate(statestore_publish_seconds_sum[1m])) / sum (rate(statestore_publish_seconds_count[1m]))"  # fmt: skip


def test_histogram_quantile_interpolates_inside_the_bucket_as_prometheus_does():
    buckets = {0.1: 10.0, 0.5: 30.0, 1.0: 40.0, math.inf: 40.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (10 / 20))  # rank 20 of 40
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.99, {0.1: 1.0, math.inf: 2.0}) == 0.1  # in +Inf: the highest finite bound
    assert math.isnan(histogram_quantile(0.5, {0.1: 0.0, math.inf: 0.0}))


def test_rates_are_summed_over_replicas_per_label_and_survive_a_counter_reset():
    name = "statestore_events_applied_total"
    a, b = (("kind", "field_updated"), ("replica", "a")), (("kind", "field_updated"), ("replica", "b"))
    series = [(0.0, {name: {a: 0.0, b: 0.0}}), (5.0, {name: {a: 50.0, b: 25.0}}), (10.0, {name: {a: 100.0, b: 10.0}})]
    lines = evaluate(Query("rate", name, "{{kind}}", by=("kind",)), series, window_s=5)
    # 5 s: (50 + 25) / 5; 10 s: replica b restarted (25 -> 10 counts as 10): (50 + 10) / 5
    assert lines == {"field_updated": [(5.0, 15.0), (10.0, 12.0)]}


def test_quantiles_come_from_bucket_rates():
    name = "statestore_event_staleness_seconds_bucket"

    def at(counts):
        return {name: {(("le", le),): c for le, c in counts.items()}}

    series = [(0.0, at({"0.1": 0, "1.0": 0, "+Inf": 0})), (10.0, at({"0.1": 50, "1.0": 100, "+Inf": 100}))]
    (line,) = evaluate(Query("quantile", "statestore_event_staleness_seconds", "p99", q=0.99), series).values()
    assert line == [(10.0, pytest.approx(0.1 + 0.9 * (49 / 50)))]


def test_scrapes_keep_sample_names_as_prometheus_stores_them():
    from bench.dashboard import parse_exposition

    text = ("# TYPE dapr_component_state_count counter\n"
            'dapr_component_state_count{app_id="a",operation="bulk_get",success="true"} 10\n'
            'dapr_component_state_count{app_id="b",operation="bulk_get",success="true"} 3\n'
            'statestore_events_applied_total{kind="field_updated"} 7.0\n'
            'dapr_x_bucket{le="+Inf",note="a \\"quoted\\" value"} 2\n')  # fmt: skip
    samples = parse_exposition(text)
    assert samples["dapr_component_state_count"][(("app_id", "b"), ("operation", "bulk_get"), ("success", "true"))] == 3
    assert samples["statestore_events_applied_total"] == {(("kind", "field_updated"),): 7.0}
    assert samples["dapr_x_bucket"] == {(("le", "+Inf"), ("note", 'a \\"quoted\\" value')): 2.0}
    assert parse_exposition(text, samples)["dapr_component_state_count"][(("app_id", "a"), ("operation", "bulk_get"),
                                                                           ("success", "true"))] == 20  # summed
