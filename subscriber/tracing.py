"""The subscriber's trace export: an OpenTelemetry SDK tracer when an exporter is
configured, else none at all (tracing off: no span is made, nothing is paid).

Exporters, by the standard OpenTelemetry variables where they exist:

- ``STATESTORE_TRACE_FILE=path``: finished spans appended to ``path`` as JSON lines (one
  object per span: ``span_record``), for tests and for a look without a collector;
- OTLP over gRPC when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (the exporter reads the other
  ``OTEL_EXPORTER_OTLP_*`` variables itself);
- ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``; comma-separated) chooses
  explicitly; ``OTEL_SDK_DISABLED=true`` turns everything off.

The SDK reads ``OTEL_TRACES_SAMPLER``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``
and ``OTEL_BSP_*`` (the batch span processor's queue and delay) as usual.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Tracing", "configure_tracing", "span_record", "JsonLinesSpanExporter", "TracingConfigError"]

log = logging.getLogger("statestore.subscriber")

SERVICE_NAME = "statestore-subscriber"
EXPORTERS = ("otlp", "console", "none")


class TracingConfigError(ValueError):
    """The trace export settings cannot be honoured (unknown exporter, SDK missing)."""


@dataclass
class Tracing:
    """A configured tracer and what to flush and close at shutdown."""

    tracer: Any
    provider: Any
    exporters: list[str]  # their names: file, otlp, console
    span_exporters: list[Any]

    def shutdown(self) -> None:
        """Export what is still queued and close the exporters."""
        self.provider.shutdown()


def chosen_exporters(trace_file: str, environ: Mapping[str, str]) -> list[str]:
    """The exporters the settings ask for: ``file``, ``otlp``, ``console`` (none: off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={environ['OTEL_TRACES_EXPORTER']!r}: unknown exporter {unknown[0]!r};"
            f" the subscriber supports {', '.join(EXPORTERS)} (and STATESTORE_TRACE_FILE for a file)"
        )
    if not names and (environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        names = ["otlp"]
    chosen = [n for n in names if n != "none"]
    return (["file"] if trace_file else []) + chosen


def configure_tracing(trace_file: str = "", environ: Mapping[str, str] | None = None) -> Tracing | None:
    """A tracer exporting to the configured exporters, or None when none is configured.

    Raises TracingConfigError when the settings name an unknown exporter or the SDK (the
    ``[subscriber]`` extra) is not installed.
    """
    environ = os.environ if environ is None else environ
    names = chosen_exporters(trace_file, environ)
    if not names:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise TracingConfigError(
            f"trace export is configured ({', '.join(names)}) but the OpenTelemetry SDK is not installed:"
            " pip install 'statestore[subscriber]', or unset STATESTORE_TRACE_FILE and OTEL_* export settings"
        ) from None
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    span_exporters = []
    for name in names:
        if name == "file":
            exporter: Any = JsonLinesSpanExporter(trace_file)
        elif name == "console":
            exporter = ConsoleSpanExporter()
        else:
            exporter = _otlp_exporter(environ)
        # Spans are handed to a background thread: the apply loop never waits on export.
        provider.add_span_processor(BatchSpanProcessor(exporter))
        span_exporters.append(exporter)
    return Tracing(provider.get_tracer("statestore.subscriber"), provider, names, span_exporters)


def _otlp_exporter(environ: Mapping[str, str]) -> Any:
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip()
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        elif protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[no-redef]
        else:
            raise TracingConfigError(f"OTLP protocol {protocol!r} is not supported: use grpc or http/protobuf")
    except ImportError:
        package = "opentelemetry-exporter-otlp-proto-" + ("grpc" if protocol == "grpc" else "http")
        raise TracingConfigError(
            f"OTLP export over {protocol} needs {package}: pip install {package}"
            + (" (or statestore[subscriber])" if protocol == "grpc" else "")
        ) from None
    return OTLPSpanExporter()


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def span_record(span: Any) -> dict[str, Any]:
    """One finished span as a JSON-ready dict: ids in hex, times in ns since the epoch."""
    context, parent = span.context, span.parent
    return {
        "name": span.name,
        "trace_id": _hex(context.trace_id, 32),
        "span_id": _hex(context.span_id, 16),
        "parent_span_id": _hex(parent.span_id, 16) if parent is not None else None,
        "parent_trace_id": _hex(parent.trace_id, 32) if parent is not None else None,
        "kind": span.kind.name.lower(),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name.lower(),
        "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in (span.attributes or {}).items()},
        "links": [
            {"trace_id": _hex(link.context.trace_id, 32), "span_id": _hex(link.context.span_id, 16)}
            for link in span.links
        ],
        "service": span.resource.attributes.get("service.name"),
    }


class JsonLinesSpanExporter:
    """A SpanExporter that appends each finished span to a file as one JSON line.

    One write per batch on a file opened for appending, so several subscriber
    replicas may share the file. A failing write is logged once and reported to the SDK.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._failed = False

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        data = "".join(json.dumps(span_record(span), separators=(",", ":")) + "\n" for span in spans).encode()
        try:
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    while data:  # one write per batch: lines of two replicas never interleave
                        data = data[os.write(fd, data) :]
                finally:
                    os.close(fd)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot write spans to %s (STATESTORE_TRACE_FILE): %s", self.path, exc)
                self._failed = True
            return SpanExportResult.FAILURE
        self._failed = False
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
