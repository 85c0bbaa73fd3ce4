"""The statestore Grafana dashboard, defined once: its panels and queries, the Grafana JSON
made from them (deploy/grafana/statestore-dashboard.json), and the same queries evaluated
over a run's scrapes (bench/dashboard.py draws them into docs/dashboard.png).

Each query is one of four PromQL shapes, rendered as Grafana reads it and evaluated here
the way Prometheus does (``rate`` over a window, ``sum by``, ``histogram_quantile`` with
linear interpolation inside a bucket), so the picture shows what the dashboard would.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["Query", "Panel", "PANELS", "DASHBOARD_PATH", "dashboard", "metric_names", "Series", "evaluate"]

DASHBOARD_PATH = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "statestore-dashboard.json"
Labels = tuple[tuple[str, str], ...]
Series = list[tuple[float, dict[str, dict[Labels, float]]]]
"""Scrapes of one run: (seconds since start, sample name -> labels -> value), oldest first."""


@dataclass(frozen=True)
class Query:
    """One line (or one line per label value) of a panel.

    ``rate``: per-second increase of a counter; ``gauge``: its current value;
    ``quantile``: ``q`` of a histogram (``metric`` names the family, without ``_bucket``);
    ``mean``: ``rate(_sum) / rate(_count)``. All are summed over replicas ``by`` labels.
    """

    kind: Literal["rate", "gauge", "quantile", "mean"]
    metric: str
    legend: str
    by: tuple[str, ...] = ()
    match: tuple[tuple[str, str], ...] = ()
    q: float = 0.99
    scale: float = 1.0  # multiply (daprd latencies are milliseconds; panels show seconds)

    def _selector(self, name: str) -> str:
        labels = ",".join(f'{k}="{v}"' for k, v in self.match)
        return f"{name}{{{labels}}}" if labels else name

    def promql(self, window: str = "$__rate_interval") -> str:
        by = f" by ({', '.join(self.by)})" if self.by else ""
        if self.kind == "rate":
            expr = f"sum{by} (rate({self._selector(self.metric)}[{window}]))"
        elif self.kind == "gauge":
            expr = f"sum{by} ({self._selector(self.metric)})"
        elif self.kind == "quantile":
            le_by = ", ".join(("le", *self.by))
            expr = f"histogram_quantile({self.q}, sum by ({le_by}) (rate({self._selector(self.metric + '_bucket')}[{window}])))"
        else:
            expr = (f"sum{by} (rate({self._selector(self.metric + '_sum')}[{window}]))"
                    f" / sum{by} (rate({self._selector(self.metric + '_count')}[{window}]))")  # fmt: skip
        return f"{expr} * {self.scale:g}" if self.scale != 1.0 else expr

    def samples(self) -> list[str]:
        """The exposition sample names this query reads."""
        if self.kind == "quantile":
            return [self.metric + "_bucket"]
        if self.kind == "mean":
            return [self.metric + "_sum", self.metric + "_count"]
        return [self.metric]


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str  # Grafana unit: "ops" (per second), "s", "short"
    queries: tuple[Query, ...]
    source: str  # whose endpoint: "subscriber", "caller app", "caller daprd", "subscriber daprd"
    description: str = ""
    extra: dict = field(default_factory=dict)


def _q(kind, metric, legend, **kw) -> Query:
    return Query(kind, metric, legend, **kw)


def _p50_p99(histogram: str, scale: float = 1.0) -> tuple[Query, Query]:
    return (_q("quantile", histogram, "p50", q=0.5, scale=scale), _q("quantile", histogram, "p99", q=0.99, scale=scale))


PANELS: tuple[Panel, ...] = (
    Panel("Events applied / s", "ops", (
        _q("rate", "statestore_events_applied_total", "{{kind}}", by=("kind",)),
    ), "subscriber", "statestore_events_applied_total by kind, summed over replicas."),
    Panel("Publish-to-apply staleness", "s", _p50_p99("statestore_event_staleness_seconds"), "subscriber", "From an event's stamp (save_state) to its apply."),
    Panel("Delivery apply latency", "s", _p50_p99("statestore_delivery_apply_seconds"), "subscriber", "Time to decode, apply and answer one bulk delivery."),
    Panel("States written and snapshots / s", "ops", (
        _q("rate", "statestore_states_written_total", "states written"),
        _q("rate", "statestore_snapshots_written_total", "snapshots written"),
    ), "subscriber"),
    Panel("In flight and snapshot backlog", "short", (
        _q("gauge", "statestore_deliveries_in_flight", "deliveries in flight"),
        _q("gauge", "statestore_snapshot_backlog_states", "snapshot backlog (states)"),
    ), "subscriber"),
    Panel("Dead letters and parked / s", "ops", (
        _q("rate", "statestore_dead_lettered_total", "dead-lettered {{reason}}", by=("reason",)),
        _q("rate", "statestore_events_parked_total", "parked"),
    ), "subscriber", "Anything but zero deserves a look: `statestore deadletter list`; parked: a clock is off."),
    Panel("Duplicates and ETag conflicts / s", "ops", (
        _q("rate", "statestore_duplicates_ignored_total", "duplicates ignored"),
        _q("rate", "statestore_etag_conflicts_total", "ETag conflicts"),
    ), "subscriber", "Redeliveries (a message claimed again after processingTimeout) and replicas racing on a state."),
    Panel("Caller: publishing", "ops", (
        _q("rate", "statestore_published_events_total", "events published"),
        _q("rate", "statestore_publish_batches_total", "bulk publishes"),
        _q("rate", "statestore_publish_errors_total", "publish errors"),
    ), "caller app", "The caller library's collector (StateStore.register_metrics) in the app's own /metrics."),
    Panel("Caller: publish queue depth", "short", (
        _q("gauge", "statestore_publish_queue_depth", "events queued or being published"),
    ), "caller app"),
    Panel("Caller: mean bulk publish time", "s", (
        _q("mean", "statestore_publish_seconds", "mean of one bulk publish"),
    ), "caller app"),
    Panel("daprd egress: bulk publishes / s", "ops", (
        _q("rate", "dapr_component_pubsub_egress_bulk_count", "{{topic}} success={{success}}", by=("topic", "success")),
    ), "caller daprd", "The caller sidecar's bulk publishes to the broker."),
    Panel("daprd egress: bulk publish latency", "s", _p50_p99("dapr_component_pubsub_egress_bulk_latencies", 0.001), "caller daprd"),
    Panel("daprd ingress: bulk deliveries and events / s", "ops", (
        _q("rate", "dapr_component_pubsub_ingress_bulk_count", "deliveries {{topic}}", by=("topic",)),
        _q("rate", "dapr_component_pubsub_ingress_bulk_event_count", "events {{process_status}}", by=("process_status",)),
    ), "subscriber daprd", "Bulk deliveries to the subscriber app and the messages in them, by the app's answer."),
    Panel("daprd ingress: app's answer latency", "s", _p50_p99("dapr_component_pubsub_ingress_bulk_latencies", 0.001), "subscriber daprd"),
    Panel("daprd: state store calls / s", "ops", (
        _q("rate", "dapr_component_state_count", "{{app_id}} {{operation}}", by=("app_id", "operation")),
    ), "caller daprd, subscriber daprd", "The caller's reads, the subscriber's bulk reads and transactions."),
    Panel("daprd: state store latency p99", "s", (
        _q("quantile", "dapr_component_state_latencies", "{{app_id}} {{operation}}", by=("app_id", "operation"), scale=0.001),
    ), "caller daprd, subscriber daprd"),
)


def metric_names() -> set[str]:
    """Every exposition sample name the dashboard's queries read."""
    return {name for panel in PANELS for query in panel.queries for name in query.samples()}


def dashboard() -> dict:
    """The Grafana dashboard (schema 39, a Prometheus data source chosen at import)."""
    ds = {"type": "prometheus", "uid": "${datasource}"}
    panels = []
    for n, panel in enumerate(PANELS):
        panels.append({
            "id": n + 1, "type": "timeseries", "title": panel.title, "datasource": ds,
            "description": f"{panel.description} Source: {panel.source} /metrics.".strip(),
            "gridPos": {"h": 8, "w": 12, "x": 12 * (n % 2), "y": 8 * (n // 2)},
            "fieldConfig": {"defaults": {"unit": panel.unit, "min": 0}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
            "targets": [{"refId": chr(ord("A") + i), "datasource": ds, "expr": q.promql(), "legendFormat": q.legend}
                        for i, q in enumerate(panel.queries)],
        })  # fmt: skip
    return {
        "title": "statestore", "uid": "statestore", "schemaVersion": 39, "version": 1, "editable": True,
        "tags": ["statestore", "dapr"], "time": {"from": "now-15m", "to": "now"}, "refresh": "10s",
        "description": "statestore subscriber, caller library and daprd sidecars (docs/observability.md). "
                       "Generated by bench/dashboard_panels.py: edit that, then `python -m bench.dashboard --json-only`.",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]},
        "panels": panels,
    }  # fmt: skip


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


# -- evaluation over scrapes (what Prometheus would compute) ---------------------------


def _matches(labels: Labels, match: tuple[tuple[str, str], ...]) -> bool:
    have = dict(labels)
    return all(have.get(k) == v for k, v in match)


def _group(labels: Labels, by: tuple[str, ...]) -> Labels:
    have = dict(labels)
    return tuple((k, have.get(k, "")) for k in by)


def _rates(series: Series, i: int, window_s: float, name: str, query: Query, by: tuple[str, ...]) -> dict[Labels, float]:
    """sum by (by) (rate(name[window])) at scrape ``i``: the increase of each series between
    the scrape about ``window_s`` earlier and this one, per second (a reset counts from 0)."""
    t, now = series[i]
    j = i
    while j > 0 and t - series[j - 1][0] <= window_s:
        j -= 1
    if j == i:
        return {}
    t0, then = series[j]
    out: dict[Labels, float] = {}
    for labels, value in now.get(name, {}).items():
        if not _matches(labels, query.match):
            continue
        before = then.get(name, {}).get(labels, 0.0)
        increase = value - before if value >= before else value
        key = _group(labels, by)
        out[key] = out.get(key, 0.0) + increase / (t - t0)
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus's histogram_quantile over cumulative bucket counts (``le`` -> count)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return math.nan
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower  # the +Inf bucket: the highest finite bound
            return lower + (le - lower) * ((rank - below) / (count - below) if count > below else 0.0)
        lower, below = le, count
    return lower


def _legend(query: Query, key: Labels) -> str:
    text = query.legend
    for k, v in key:
        text = text.replace("{{" + k + "}}", v)
    return text


def evaluate(query: Query, series: Series, window_s: float = 10.0) -> dict[str, list[tuple[float, float]]]:
    """The query's lines over the run: legend -> [(seconds, value)]."""
    lines: dict[str, list[tuple[float, float]]] = {}
    for i, (t, samples) in enumerate(series):
        values: dict[Labels, float] = {}
        if query.kind == "rate":
            values = _rates(series, i, window_s, query.metric, query, query.by)
        elif query.kind == "gauge":
            for labels, value in samples.get(query.metric, {}).items():
                if _matches(labels, query.match):
                    key = _group(labels, query.by)
                    values[key] = values.get(key, 0.0) + value
        elif query.kind == "mean":
            sums = _rates(series, i, window_s, query.metric + "_sum", query, query.by)
            counts = _rates(series, i, window_s, query.metric + "_count", query, query.by)
            values = {key: sums.get(key, 0.0) / n for key, n in counts.items() if n > 0}
        else:
            by_le = _rates(series, i, window_s, query.metric + "_bucket", query, ("le", *query.by))
            grouped: dict[Labels, dict[float, float]] = {}
            for key, rate in by_le.items():
                le = float(dict(key)["le"])
                grouped.setdefault(tuple(kv for kv in key if kv[0] != "le"), {})[le] = rate
            values = {key: histogram_quantile(query.q, b) for key, b in grouped.items()}
        for key, value in values.items():
            if not math.isnan(value):
                lines.setdefault(_legend(query, key), []).append((t, value * query.scale))
    return lines
