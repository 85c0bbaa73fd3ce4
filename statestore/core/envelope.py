"""The CloudEvent envelope of statestore messages. Pure: no I/O, no Dapr.

Where the CloudEvents SDK pays, it is used: the envelope of a packed message (one per up
to 100 events, so its cost per event is a fraction of a microsecond) is built and
validated by the SDK, and a structured CloudEvent received as raw bytes (the dead-letter
tool, a delivery Dapr did not parse) is read by the SDK, which checks the required
attributes and the spec version. The envelope of a message that carries one event stays
hand-written: the SDK costs about 5 us more per message there, which would be per event
(docs/benchmarks.md, "CloudEvents SDK"). The event data itself is encoded once, by the
event's pydantic model, and spliced in, never parsed and re-encoded.
"""

from __future__ import annotations

import json
from typing import Any

from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

__all__ = ["CONTENT_TYPE", "SOURCE", "EnvelopeError", "write_envelope", "write_envelope_fast", "read_structured"]

CONTENT_TYPE = "application/cloudevents+json"
SOURCE = "statestore"
_DATA_CONTENT_TYPE = "application/json"
_FORMAT = JSONFormat()


class EnvelopeError(ValueError):
    """Bytes that are not a structured CloudEvent (JSON, CloudEvents 1.0)."""


def _attributes(ce_id: str, ce_type: str) -> dict[str, str]:
    return {"specversion": "1.0", "id": ce_id, "source": SOURCE, "type": ce_type, "datacontenttype": _DATA_CONTENT_TYPE}


def _splice(head: bytes, data: bytes) -> bytes:
    # head is a JSON object of the attributes; the data (already JSON) goes in as is.
    return head[:-1] + b',"data":' + data + b"}"


def write_envelope(ce_id: str, ce_type: str, data: bytes) -> bytes:
    """A structured CloudEvent whose attributes the SDK validates and writes; ``data`` is
    JSON already and is spliced in unchanged."""
    return _splice(_FORMAT.write(CloudEvent(_attributes(ce_id, ce_type), None)), data)


def write_envelope_fast(ce_id: str, ce_type: str, data: bytes) -> bytes:
    """``write_envelope`` without the SDK, for the one-event-per-message path (same bytes
    up to attribute order and spacing; tests/unit/test_envelope.py reads both back)."""
    return _splice(json.dumps(_attributes(ce_id, ce_type), separators=(",", ":")).encode(), data)


def read_structured(body: bytes | str) -> tuple[str, str, Any]:
    """``(id, type, data)`` of a structured CloudEvent, read by the SDK.

    Raises EnvelopeError with a reason (no values) for anything else: not JSON, not an
    object, a missing required attribute, another spec version.
    """
    try:
        event = _FORMAT.read(None, body)
    except (ValueError, TypeError, BaseCloudEventException) as exc:
        raise EnvelopeError(f"not a structured CloudEvent: {type(exc).__name__}: {_first_line(exc)}") from None
    except AttributeError:  # valid JSON, but not an object
        raise EnvelopeError("not a structured CloudEvent: the JSON is not an object") from None
    except RecursionError:  # JSON nested deeper than the decoder goes (daprd dead-letters such messages)
        raise EnvelopeError("not a structured CloudEvent: the JSON is nested too deeply") from None
    if event.get_specversion() != "1.0":
        raise EnvelopeError(f"CloudEvents spec version {event.get_specversion()!r}; statestore reads 1.0")
    return event.get_id(), event.get_type(), event.get_data()


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200]
