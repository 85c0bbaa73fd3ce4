"""Trace context across the pipeline: each write carries its caller's W3C ``traceparent``,
and the publish, apply and snapshot spans continue or link to it.

OpenTelemetry is optional. A caller needs only ``opentelemetry-api`` (the ``[tracing]``
extra) and whatever SDK and exporter its app configures; without the API installed,
``current_traceparent`` returns None after one failed import and nothing else here runs.
The subscriber's SDK and exporters are set up in ``statestore.subscriber.tracing``.

Batch spans (one per published batch, per delivery, per snapshot round) cannot have one
parent per event. They link to every distinct trace context of their events (at most
``MAX_LINKS``) and, when there is exactly one, also continue it as their parent: the
common case of one request writing a few states then shows as one trace.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from statestore.core.events import TRACEPARENT_PATTERN

__all__ = [
    "MAX_LINKS",
    "MAX_KEYS_SHOWN",
    "current_traceparent",
    "format_traceparent",
    "parse_traceparent",
    "linked_span",
    "publisher_span",
    "otel_available",
    "mark_error",
]

MAX_LINKS = 32
"""Links one span keeps: a delivery of 6,400 events from as many traced calls links the
first 32 trace contexts and counts the rest (``statestore.links_dropped``)."""

MAX_KEYS_SHOWN = 16
"""State keys named in a span's ``statestore.state_keys`` (the first ones)."""

_TRACEPARENT = re.compile(TRACEPARENT_PATTERN)
_UNSET: Any = object()
_trace: Any = _UNSET  # the opentelemetry.trace module once imported, None without it
_publisher_tracer: Any = None
_last: tuple[Any, str] = (None, "")  # the span context current_traceparent formatted last


def _otel() -> Any:
    """``opentelemetry.trace``, or None when opentelemetry-api is not installed (tried once)."""
    global _trace
    if _trace is _UNSET:
        try:
            from opentelemetry import trace
        except ImportError:
            trace = None
        _trace = trace
    return _trace


def otel_available() -> bool:
    """Whether opentelemetry-api can be imported in this process."""
    return _otel() is not None


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    """The W3C ``traceparent`` (version 00) of a span context."""
    return f"00-{trace_id:032x}-{span_id:016x}-{flags & 0xFF:02x}"


def parse_traceparent(value: object) -> tuple[int, int, int] | None:
    """``(trace_id, span_id, flags)`` of a W3C ``traceparent``, or None when it is not a
    valid one (wrong shape, version ff, all-zero trace or span id)."""
    if not isinstance(value, str) or not _TRACEPARENT.fullmatch(value) or value.startswith("ff"):
        return None
    trace_id, span_id, flags = int(value[3:35], 16), int(value[36:52], 16), int(value[53:55], 16)
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, flags


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current OpenTelemetry span (sampled or not), or None
    when opentelemetry-api is not installed or no valid span is current."""
    global _last
    trace = _otel()
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    last_context, last_value = _last
    if context is last_context:  # the same span writing again: formatting is most of the cost
        return last_value
    if not context.is_valid:
        return None
    value = format_traceparent(context.trace_id, context.span_id, context.trace_flags)
    _last = (context, value)  # one tuple, replaced whole: safe from any thread
    return value


def _span_contexts(traceparents: Iterable[str | None]) -> list[Any]:
    """The distinct valid contexts among ``traceparents``, in first-seen order, as remote
    SpanContexts."""
    trace = _otel()
    contexts = []
    for value in dict.fromkeys(tp for tp in traceparents if tp):
        parsed = parse_traceparent(value)
        if parsed is not None:
            trace_id, span_id, flags = parsed
            contexts.append(trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags)))
    return contexts


@contextlib.contextmanager
def linked_span(
    tracer: Any,
    name: str,
    traceparents: Iterable[str | None],
    *,
    kind: str = "internal",
    attributes: Mapping[str, Any] | None = None,
    start_time: int | None = None,
) -> Iterator[Any]:
    """A span on ``tracer``, current inside the block, that links to each distinct trace
    context in ``traceparents`` (at most MAX_LINKS) and continues it when there is one.

    With none it is a root span: never a child of whatever context happens to be current
    (a long-lived task inherits the context of the call that started it). ``kind`` is
    "internal", "producer" or "consumer". Needs opentelemetry-api.
    """
    trace = _otel()
    from opentelemetry.context import Context

    contexts = _span_contexts(traceparents)
    parent = trace.set_span_in_context(trace.NonRecordingSpan(contexts[0])) if len(contexts) == 1 else Context()
    attrs = {
        **(attributes or {}),
        "statestore.trace_contexts": len(contexts),
        "statestore.links_dropped": max(0, len(contexts) - MAX_LINKS),
    }
    with tracer.start_as_current_span(
        name,
        context=parent,
        kind=getattr(trace.SpanKind, kind.upper()),
        links=[trace.Link(c) for c in contexts[:MAX_LINKS]],
        attributes=attrs,
        start_time=start_time,
    ) as span:
        yield span


def mark_error(span: Any, description: str) -> None:
    """Set ``span``'s status to ERROR with ``description`` (an opentelemetry span)."""
    trace = _otel()
    span.set_status(trace.Status(trace.StatusCode.ERROR, description))


def publisher_span(
    name: str, traceparents: list[str], attributes: Mapping[str, Any]
) -> contextlib.AbstractContextManager[Any]:
    """A producer span of the app's own (global) tracer provider for a published batch,
    linked to the events' trace contexts; a no-op when no event carries one."""
    global _publisher_tracer
    if not traceparents or _otel() is None:
        return contextlib.nullcontext()
    if _publisher_tracer is None:
        _publisher_tracer = _trace.get_tracer("statestore.publisher")
    return linked_span(_publisher_tracer, name, traceparents, kind="producer", attributes=attributes)
