"""What tracing costs (issue 12.3): apply throughput with tracing off and on.

    python -m bench.tracing            # every part below (about 2 minutes)
    python -m bench.tracing --cpu      # parts 1 and 2 only (no stack)

1. **Caller**: the time ``current_traceparent()`` adds to each write, without
   opentelemetry-api, with it and no span, inside a span.
2. **Subscriber CPU, in process**: the servicer decodes and applies deliveries of 64
   packed messages x 100 events into an in-memory store, and the flusher writes their
   snapshots (no sidecar, so the subscriber's own CPU per event is all there is: an upper
   bound of the overhead's share). Off with untraced events (as before tracing existed),
   off with traced events (callers trace, the subscriber exports nothing), on (the SDK
   with the JSON-lines file exporter). The three alternate, 7 rounds.
3. **The real stack**: ``bench.measures.throughput`` (1,000 states x 10 fields, 16
   producers) on a fresh local stack per run, in four modes (``MODES``): off (no caller
   span, no subscriber exporter), the caller's writes traced only (the run inside one
   span of an SDK tracer, so every event carries it), the subscriber exporting only (to
   a file), both. The modes alternate, ``--rounds`` (3) runs each.

Prints Markdown tables. Timings on a shared machine are noisy: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

EVENTS_PER_MESSAGE = 100
MESSAGES = 64


def _deliveries(count: int, traced: bool) -> list[list]:
    from dapr.proto.runtime.v1 import appcallback_pb2 as pb

    from statestore.core.events import BATCH_TYPE, FieldUpdated, encode_event
    from statestore.core.paths import StateType

    now = int(time.time() * 1000)
    deliveries = []
    for d in range(count):
        entries = []
        for m in range(MESSAGES):
            events = []
            for n in range(EVENTS_PER_MESSAGE):
                i = (m * EVENTS_PER_MESSAGE + n)
                # 10 callers a message (spelled out: this also runs against code from before tracing)
                tp = f"00-{d * 1000 + m + 1:032x}-{n % 10 + 1:016x}-01" if traced else None
                events.append(FieldUpdated(state_id=f"s{d}-{i % 2000}", state_type=StateType.WORKFLOWS, producer="bench",
                                           seq=i // 2000 + 1, hlc=(now, i), field=f"f{i}", value=i, traceparent=tp))  # fmt: skip
            data = b'{"schema_version":1,"events":[' + b",".join(encode_event(e) for e in events) + b"]}"
            entries.append(pb.TopicEventBulkRequestEntry(
                entry_id=f"{d}-{m}", cloud_event=pb.TopicEventCERequest(id=f"{d}-{m}", type=BATCH_TYPE, data=data)))  # fmt: skip
        deliveries.append(entries)
    return deliveries


async def _apply_rate(deliveries: list[list], tracer, flush: bool) -> float:
    from statestore.core.settings import Settings
    from statestore.subscriber.applier import EventApplier
    from statestore.subscriber.outbox import OutboxWriter, SnapshotFlusher
    from statestore.subscriber.ports import InMemoryObjectStore, InMemoryStateRepository
    from statestore.subscriber.servicer import SubscriberServicer

    settings = Settings()
    repo = InMemoryStateRepository()
    kwargs = {"tracer": tracer} if tracer is not None else {}  # runs on code without tracing too
    applier = EventApplier(repo, **({"outbox": OutboxWriter(repo, traced=True)} if tracer is not None else {}))
    servicer = SubscriberServicer(applier, settings, **kwargs)
    flusher = SnapshotFlusher(repo, InMemoryObjectStore(), outbox=applier.outbox, **kwargs)
    start = time.perf_counter()
    for entries in deliveries:
        await servicer.handle(settings.topic, entries)
        if flush:
            while await flusher.flush_once():
                pass
    return len(deliveries) * MESSAGES * EVENTS_PER_MESSAGE / (time.perf_counter() - start)


def cpu_part(repeats: int = 7, deliveries: int = 6) -> list[tuple[str, float, float]]:
    """(configuration, median events/s, best events/s) of the in-process apply."""
    from statestore.subscriber.tracing import configure_tracing

    plain, traced = _deliveries(deliveries, False), _deliveries(deliveries, True)
    spans = Path(tempfile.mkdtemp(prefix="statestore-trace-bench-")) / "spans.jsonl"
    tracing = configure_tracing(str(spans), {})
    configs = [("off, untraced events", plain, None), ("off, traced events", traced, None),
               ("on (file exporter), traced events", traced, tracing.tracer)]  # fmt: skip
    rates: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    for _ in range(repeats):  # interleaved: drift on a noisy machine hits every configuration alike
        for name, work, tracer in configs:
            rates[name].append(asyncio.run(_apply_rate(work, tracer, flush=True)))
    tracing.shutdown()
    return [(name, statistics.median(r), max(r)) for name, r in rates.items()]


def off_rate(repeats: int = 7, deliveries: int = 6) -> list[float]:
    """Events/s of the in-process apply, untraced events, no tracer: the figure to
    compare with the code from before tracing (this function runs on it too)."""
    work = _deliveries(deliveries, False)
    return [asyncio.run(_apply_rate(work, None, flush=True)) for _ in range(repeats)]


def caller_part(calls: int = 200_000) -> list[tuple[str, float]]:
    """Nanoseconds per ``current_traceparent()`` call, the whole per-write cost in the caller."""
    import timeit

    import statestore.core.tracing as tracing
    from opentelemetry.sdk.trace import TracerProvider

    def per_call() -> float:
        return min(timeit.repeat(tracing.current_traceparent, number=calls, repeat=5)) / calls * 1e9

    rows = []
    saved = tracing._trace
    tracing._trace = None  # as without opentelemetry-api
    rows.append(("opentelemetry-api not installed", per_call()))
    tracing._trace = saved
    tracing._otel()
    rows.append(("installed, no current span", per_call()))
    with TracerProvider().get_tracer("bench").start_as_current_span("request"):
        rows.append(("installed, inside a span", per_call()))
    return rows


class _Discard:
    """A span exporter that drops spans (an app that traces, exporting elsewhere)."""

    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis=30_000):
        return True


MODES = {  # name: (the caller's writes carry a span context, the subscriber exports spans)
    "off": (False, False),
    "caller traces only": (True, False),
    "subscriber exports only": (False, True),
    "on": (True, True),
}


async def _stack_throughput(traced: bool) -> dict:
    from bench import measures as m
    from bench.peers import StateStorePeer

    peer = StateStorePeer()
    if not traced:
        return await m.throughput(peer, 1000, 10, 16)
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard()))
    tracer = provider.get_tracer("bench")
    # One span around the run (the producer tasks inherit it): the app's own cost of a
    # span per call is not statestore's, and is left out.
    with tracer.start_as_current_span("bench run"):
        result = await m.throughput(peer, 1000, 10, 16)
    provider.shutdown()
    return result


def stack_part(rounds: int = 2, modes: tuple[str, ...] = ("off", "on")) -> list[tuple[str, list[int]]]:
    """Applied/s on the real stack per mode of MODES (a fresh stack each, modes alternating)."""
    from statestore.devstack import Ports, Stack
    from statestore.core.settings import get_settings, get_sidecar_settings

    results: dict[str, list[int]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode in modes:
            caller_traces, subscriber_exports = MODES[mode]
            base = Path(tempfile.mkdtemp(prefix="statestore-trace-bench-"))
            env = {"STATESTORE_TRACE_FILE": str(base / "spans.jsonl")} if subscriber_exports else {}
            stack = Stack(base, Ports.free(), extra_env=env)
            stack.up()
            try:
                os.environ.update(stack.caller_env())
                get_settings.cache_clear()
                get_sidecar_settings.cache_clear()
                from statestore.publisher.runtime import Runtime, set_runtime

                set_runtime(Runtime())  # a fresh runtime for this stack's sidecar
                result = asyncio.run(_stack_throughput(caller_traces))
                assert result["complete"], result
                results[mode].append(result["applied_per_s"])
                print(f"{mode}: {result['applied_per_s']} applied/s", flush=True)
            finally:
                stack.down()
    return list(results.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="only the in-process parts (no stack)")
    parser.add_argument("--rounds", type=int, default=3, help="stacks per mode on the real stack (default 3)")
    args = parser.parse_args()
    print("| caller: current_traceparent() per write | ns per call (best of 5) |")
    print("| --- | --- |")
    for name, ns in caller_part():
        print(f"| {name} | {ns:,.0f} |", flush=True)
    print("\n| subscriber, in process (64 x 100 events a delivery) | events/s (median of 7) | best of 7 |")
    print("| --- | --- | --- |")
    for name, rate, best in cpu_part():
        print(f"| {name} | {rate:,.0f} | {best:,.0f} |", flush=True)
    if args.cpu:
        return
    rows = stack_part(args.rounds, tuple(MODES))
    print("\n| real stack, 1,000 states x 10 fields, 16 producers | applied/s (each run) | median |")
    print("| --- | --- | --- |")
    for mode, rates in rows:
        print(f"| {mode} | {', '.join(f'{r:,}' for r in rates)} | {statistics.median(rates):,.0f} |")


if __name__ == "__main__":
    main()
