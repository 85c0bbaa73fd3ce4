"""What a write may carry, checked before it takes a sequence number: ids and types, field
names, values (JSON, nesting, size), expiries and timeouts. Pure: no I/O.

Each check raises a ValueError subclass (statestore.core.errors) whose message says what
is wrong; a write that fails one leaves nothing queued and no gap that ``sync`` would
wait for.
"""

from __future__ import annotations

import json
from typing import Any

from statestore.core.errors import InvalidValueError
from statestore.core.paths import StateType, coerce_state_type, validate_id
from statestore.core.settings import get_settings

__all__ = [
    "MAX_FIELD_LENGTH",
    "MAX_NESTING",
    "check_target",
    "check_field_name",
    "ttl_of",
    "confirmed_timeout",
    "json_roundtrip",
    "check_size",
]

MAX_FIELD_LENGTH = 1024
# The subscriber's decoder refuses deeper values (pydantic's recursion limit is lower
# than JSON's), so the API refuses them first.
MAX_NESTING = 64
# Values JSON gives back unchanged (a float is not: 1e400 is refused, -0.0 and the like
# would need the round trip to be sure).
_READ_BACK_AS_IS = frozenset({str, int, bool, type(None)})


def confirmed_timeout(timeout: object) -> float:
    """A confirmed write's timeout: ``timeout``, else STATESTORE_OUTAGE_BUDGET_S."""
    if timeout is None:
        return get_settings().outage_budget_s
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise InvalidValueError(f"timeout must be a number of seconds > 0 (or None), not {timeout!r}")
    return float(timeout)


def check_target(id: object, type: object) -> StateType:
    validate_id(id)
    return coerce_state_type(type)


def ttl_of(ttl_seconds: object, state_type: StateType) -> int | None:
    """The write's expiry: ``ttl_seconds``, else the type's default retention."""
    if ttl_seconds is None:
        return get_settings().ttl_workflows_s if state_type is StateType.WORKFLOWS else None
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds < 1:
        raise InvalidValueError(f"ttl_seconds must be a whole number of seconds >= 1 (or None), not {ttl_seconds!r}")
    return ttl_seconds


def check_field_name(key: object) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_FIELD_LENGTH:
        raise InvalidValueError(f"field name must be a non-empty string of at most {MAX_FIELD_LENGTH} characters")


def json_roundtrip(value: Any, what: str, state_id: str) -> Any:
    """``value`` as it will read back from JSON; InvalidValueError if it is not JSON,
    nests too deeply or is too large. Checked before the event takes a sequence number,
    so a refused write leaves no gap that ``sync`` would wait for."""
    try:
        encoded = json.dumps(value, allow_nan=False)
        if type(value) in _READ_BACK_AS_IS:  # the usual progress value: no parse needed
            check_size(len(encoded), what, state_id)
            return value
        normalised = json.loads(encoded)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"{what} is not JSON-serialisable: {exc}") from None
    except RecursionError:
        normalised = None
    if normalised is None and value is not None or _depth(normalised) > MAX_NESTING:
        raise InvalidValueError(f"{what} is nested too deeply: the limit is {MAX_NESTING} levels")
    check_size(len(encoded), what, state_id)
    return normalised


def check_size(encoded_bytes: int, what: str, state_id: str) -> None:
    """InvalidValueError if a value of ``encoded_bytes`` as JSON is over STATESTORE_MAX_VALUE_BYTES."""
    limit = get_settings().max_value_bytes
    if encoded_bytes > limit:
        raise InvalidValueError(
            f"{what} of state {state_id!r} is {encoded_bytes} bytes as JSON; the limit is {limit} "
            "(STATESTORE_MAX_VALUE_BYTES). Store large data elsewhere and keep a reference."
        )


def _depth(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        if depth + 1 > MAX_NESTING:
            return depth + 1
        stack.extend((child, depth + 1) for child in item)
    return deepest
