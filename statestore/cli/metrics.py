"""Read a subscriber's /metrics (Prometheus text) into numbers and its /healthz/* answers,
for `statestore stats`, `statestore status`, devstack's status and tests."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Scrape", "scrape", "parse", "ScrapeError", "health_answer"]

Labels = tuple[tuple[str, str], ...]


class ScrapeError(Exception):
    """The metrics endpoint did not answer, or did not answer Prometheus text."""


@dataclass(frozen=True)
class Scrape:
    """Sample name -> labels -> value."""

    samples: dict[str, dict[Labels, float]]

    def total(self, name: str) -> float:
        """The sum over every label set of ``name`` (0 when absent)."""
        return sum(self.samples.get(name, {}).values())

    def get(self, name: str, **labels: str) -> float:
        """The sum over the label sets of ``name`` that include ``labels``."""
        wanted = set(labels.items())
        return sum(v for key, v in self.samples.get(name, {}).items() if wanted <= set(key))

    def by(self, name: str, label: str) -> dict[str, float]:
        """``name`` summed per value of ``label``."""
        out: dict[str, float] = {}
        for key, value in self.samples.get(name, {}).items():
            label_value = dict(key).get(label, "")
            out[label_value] = out.get(label_value, 0.0) + value
        return out

    def __add__(self, other: Scrape) -> Scrape:
        """Two replicas' scrapes, summed sample by sample."""
        merged = {name: dict(values) for name, values in self.samples.items()}
        for name, values in other.samples.items():
            for key, value in values.items():
                merged.setdefault(name, {})[key] = merged.get(name, {}).get(key, 0.0) + value
        return Scrape(merged)


def parse(text: str) -> Scrape:
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return Scrape(samples)


def scrape(url: str, timeout: float = 5.0) -> Scrape:
    """GET ``url`` and parse it; ScrapeError says what went wrong."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ScrapeError(
            f"cannot read {url}: {reason}. Is the subscriber running, with STATESTORE_METRICS_PORT"
            " on that port? (--metrics URL names another)"
        ) from None
    try:
        return parse(text)
    except ValueError as exc:
        raise ScrapeError(f"{url} did not answer Prometheus text: {exc}") from None


def summarize(first: Scrape, second: Scrape, seconds: float) -> dict[str, float | dict[str, float]]:
    """What `statestore stats` shows, from two scrapes ``seconds`` apart."""
    applied = "statestore_events_applied_total"
    staleness_sum = second.total("statestore_event_staleness_seconds_sum") - first.total("statestore_event_staleness_seconds_sum")
    staleness_n = second.total("statestore_event_staleness_seconds_count") - first.total("statestore_event_staleness_seconds_count")
    return {
        "applied_per_s": round((second.total(applied) - first.total(applied)) / seconds, 1),
        "applied_total": second.total(applied),
        "mean_staleness_s": round(staleness_sum / staleness_n, 3) if staleness_n else 0.0,
        "deliveries_in_flight": second.total("statestore_deliveries_in_flight"),
        "snapshot_backlog_states": second.total("statestore_snapshot_backlog_states"),
        "dead_lettered_total": second.total("statestore_dead_lettered_total"),
        "dead_lettered_by_reason": second.by("statestore_dead_lettered_total", "reason"),
        "parked_total": second.total("statestore_events_parked_total"),
        "duplicates_ignored_total": second.total("statestore_duplicates_ignored_total"),
        "etag_conflicts_total": second.total("statestore_etag_conflicts_total"),
        "ready_replicas": second.total("statestore_ready"),
    }


def health_answer(url: str, timeout: float = 2.0) -> tuple[bool | None, str]:
    """A /healthz/* URL's answer: (True, reason) on 200, (False, its reason) on an error
    status, (None, why) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return True, response.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode().strip() or f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return None, f"{url} does not answer: {getattr(exc, 'reason', exc)}"
