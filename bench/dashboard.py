"""Draw the Grafana dashboard's panels from a real run: docs/dashboard.png.

    python -m bench.dashboard               # start a stack, ~75 s of writes, scrape every second, draw
    python -m bench.dashboard --seconds 30  # a shorter load
    python -m bench.dashboard --json-only   # write deploy/grafana/statestore-dashboard.json only

The run starts its own local stack (Redis, daprd, subscriber) on free ports, as `make
bench` does, writes at three rates from this process (1,000 ids, a few fields each), with
a few poison messages on the way, and scrapes every second the subscriber's /metrics,
both sidecars' metrics ports and this process's caller metrics (StateStore's collector).
Each panel of bench/dashboard_panels.py is then evaluated over the scrapes the way
Prometheus would (rates over a 10 s window, histogram quantiles) and drawn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import tempfile
import re
import time
import urllib.request
import uuid
from pathlib import Path

from bench.dashboard_panels import DASHBOARD_PATH, PANELS, Series, dashboard_json, evaluate, metric_names
from statestore.devstack import Ports, Stack
from statestore.devstack.stack import PROJECT_ROOT

__all__ = ["main"]

PNG_PATH = PROJECT_ROOT / "docs" / "dashboard.png"
RATES = (500, 2000, 4000)  # updates/s, one third of the load each; then 10 s idle


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def write_json() -> Path:
    DASHBOARD_PATH.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_PATH.write_text(dashboard_json())
    return DASHBOARD_PATH


async def load(seconds: float, stop: asyncio.Event) -> int:
    """Field updates at each of RATES for a third of ``seconds``; returns how many."""
    from statestore import StateStore, StateType

    written = 0
    for rate in RATES:
        phase_end = time.monotonic() + seconds / len(RATES)
        while time.monotonic() < phase_end and not stop.is_set():
            tick = time.monotonic()
            for _ in range(rate // 10):
                n = written % 1000
                await StateStore.save_state(f"f{written % 7}", written, f"dash-{n:04d}", StateType.WORKFLOWS)
                written += 1
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    await StateStore.flush()
    return written


async def poison(stack: Stack, count: int = 3) -> None:
    """A few messages the subscriber refuses: the dead-letter panel moves."""
    from statestore.core.settings import SidecarSettings
    from statestore.core.sidecar import SidecarClient

    sidecar = SidecarClient(SidecarSettings(dapr_grpc_port=stack.ports.caller.grpc_port))
    try:
        for _ in range(count):
            body = {"specversion": "1.0", "id": f"dash-poison-{uuid.uuid4().hex}", "source": "bench.dashboard",
                    "type": "io.statestore.field_updated.v9", "datacontenttype": "application/json", "data": {}}  # fmt: skip
            await sidecar.publish("pubsub", "statestore-events", json.dumps(body).encode(), "application/cloudevents+json")
    finally:
        await sidecar.close()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str, into: dict | None = None) -> dict:
    """Prometheus text as Prometheus stores it: sample name -> labels -> value (summed into
    ``into``). Not prometheus_client's parser: it renames a counter's samples to ``_total``,
    and daprd's counters (``dapr_component_state_count``) have no such suffix."""
    samples: dict = {} if into is None else into
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        name, labels, value = match.groups()
        key = tuple(sorted(_LABEL.findall(labels or "")))
        samples.setdefault(name, {})[key] = samples.get(name, {}).get(key, 0.0) + float(value)
    return samples


def scrape_once(urls: list[str], registry) -> dict:
    """Every endpoint's samples, merged (label sets tell the sidecars apart: app_id)."""
    from prometheus_client import generate_latest

    samples = parse_exposition(generate_latest(registry).decode())
    for url in urls:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            parse_exposition(response.read().decode(), samples)
    return samples


async def run(seconds: float) -> tuple[Series, int]:
    from prometheus_client import CollectorRegistry

    from statestore import StateStore

    base = Path(tempfile.mkdtemp(prefix="statestore-dashboard-"))
    stack = Stack(base, Ports.free())
    say(f"starting the stack in {base}")
    stack.up()
    os.environ.update(stack.caller_env())
    registry = CollectorRegistry()
    StateStore.register_metrics(registry)
    urls = [f"http://127.0.0.1:{stack.ports.subscriber.app_metrics_port}/metrics",
            f"http://127.0.0.1:{stack.ports.caller.metrics_port}/metrics",
            f"http://127.0.0.1:{stack.ports.subscriber.metrics_port}/metrics"]  # fmt: skip
    series: Series = []
    stop = asyncio.Event()
    started = time.monotonic()

    async def scraping() -> None:
        while not stop.is_set():
            tick = time.monotonic()
            samples = await asyncio.to_thread(scrape_once, urls, registry)
            series.append((round(tick - started, 2), samples))
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))

    try:
        scraper = asyncio.create_task(scraping())
        await asyncio.sleep(3)
        say(f"writing for {seconds:g} s at {', '.join(map(str, RATES))} updates/s")
        writer = asyncio.create_task(load(seconds, stop))
        await asyncio.sleep(seconds / 2)
        await poison(stack)
        written = await writer
        say(f"{written} updates written; idle 10 s")
        await asyncio.sleep(10)
        stop.set()
        await scraper
    finally:
        stack.down()
    return series, written


def draw(series: Series, written: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    rows = math.ceil(len(PANELS) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(14, 3.1 * rows), sharex=True)
    for ax, panel in zip(axes.flat, PANELS):
        for query in panel.queries:
            for legend, points in sorted(evaluate(query, series).items()):
                ax.plot([t for t, _ in points], [v for _, v in points], label=legend, linewidth=1.4)
        ax.set_title(f"{panel.title}  [{panel.source}]", fontsize=10)
        ax.set_ylabel({"ops": "per s", "s": "seconds", "short": ""}[panel.unit], fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data in this run", ha="center", va="center", transform=ax.transAxes, fontsize=9)
    for ax in axes.flat[len(PANELS):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("seconds since the first scrape", fontsize=8)
    fig.suptitle(
        f"statestore dashboard (deploy/grafana/statestore-dashboard.json), drawn from a local-profile run:\n"
        f"{written} updates offered at {'/'.join(map(str, RATES))} per s, 3 poison messages, scraped every 1 s, rates over 10 s "
        "(a shared 2-core machine: noisy)",
        fontsize=10,
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.975))
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--seconds", type=float, default=75.0, help="length of the write load (default 75)")
    parser.add_argument("--json-only", action="store_true", help="write the dashboard JSON only, start nothing")
    args = parser.parse_args(argv)
    say(f"wrote {write_json()}")
    if args.json_only:
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the stack is stopped
    series, written = asyncio.run(run(args.seconds))
    draw(series, written, PNG_PATH)
    say(f"wrote {PNG_PATH} ({len(series)} scrapes)")
    served = {name for _, samples in series for name in samples}
    missing = sorted(metric_names() - served)
    if missing:
        say(f"the dashboard reads metrics no endpoint served in this run: {', '.join(missing)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
