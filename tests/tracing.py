"""OpenTelemetry helpers for tests: tracers whose finished spans stay in memory."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from statestore.core.tracing import format_traceparent

_global: InMemorySpanExporter | None = None


def memory_tracer(name: str = "test") -> tuple[trace.Tracer, InMemorySpanExporter]:
    """A tracer of its own provider, and the exporter that keeps what it finishes."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer(name), exporter


def global_memory_exporter() -> InMemorySpanExporter:
    """The process's global tracer provider, set once, exporting to memory (cleared
    on every call): what an app's own OpenTelemetry setup is to the publisher."""
    global _global
    if _global is None:
        provider = TracerProvider()
        _global = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(_global))
        trace.set_tracer_provider(provider)
    _global.clear()
    return _global


def traceparent_of(span) -> str:
    """The W3C traceparent of a live span."""
    context = span.get_span_context()
    return format_traceparent(context.trace_id, context.span_id, context.trace_flags)
