"""State types, id rules and the paths derived from them. Pure: no I/O, no Dapr."""

from __future__ import annotations

import re
from enum import Enum

from statestore.core.errors import InvalidAppNameError, InvalidStateIdError, InvalidStateTypeError
from statestore.core.settings import get_settings

__all__ = [
    "DEFAULT_APP",
    "StateType",
    "MAX_ID_LENGTH",
    "SAFE_ID_PATTERN",
    "validate_id",
    "validate_app_name",
    "caller_app_name",
    "coerce_state_type",
    "state_key",
    "format_state_key",
    "parse_state_key",
    "object_key",
    "object_prefix",
    "state_id_of_object_key",
    "build_state_store_path",
]

DEFAULT_APP = "default"
MAX_ID_LENGTH = 128
# Letters, digits, '_', '-' and '.', not starting with '.': no separator, no '..',
# no control or whitespace character, so an id is always one safe path segment.
SAFE_ID_PATTERN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}")


class StateType(Enum):
    """Kinds of state: WORKFLOWS for workflow state, CREDENTIALS for credential configs."""

    WORKFLOWS = "workflows"
    CREDENTIALS = "credentials"

    @classmethod
    def is_member(cls, value: object) -> bool:
        """True when ``value`` is exactly the value of a member (case-sensitive)."""
        return any(member.value == value for member in cls)


def validate_id(id: object) -> str:
    """Return ``id`` if it is a safe state id, else raise InvalidStateIdError."""
    if not isinstance(id, str):
        raise InvalidStateIdError(f"state id must be a string, got {type(id).__name__}")
    if not id:
        raise InvalidStateIdError("state id must not be empty")
    if len(id) > MAX_ID_LENGTH:
        raise InvalidStateIdError(
            f"state id is {len(id)} characters long; the limit is {MAX_ID_LENGTH}"
        )
    if ".." in id or not SAFE_ID_PATTERN.fullmatch(id):
        raise InvalidStateIdError(
            f"state id {id[:40]!r} has characters outside the safe set: use letters, digits,"
            " '_', '-' and '.', not starting with '.' and without '..'"
        )
    return id


def validate_app_name(name: object) -> str:
    """Return ``name`` if it is a safe application name (the rules of a state id), else
    raise InvalidAppNameError."""
    try:
        return validate_id(name)
    except InvalidStateIdError as exc:
        raise InvalidAppNameError(str(exc).replace("state id", "app name", 1)) from None


def caller_app_name() -> str:
    """This process's application name: STATESTORE_APP_NAME, else the Dapr app id that
    ``dapr run`` gives the app (APP_ID), else ``default``. Validated like an id (once per
    settings object: it is on every write's path)."""
    global _checked_app
    settings = get_settings()
    checked_for, name = _checked_app
    if checked_for is not settings:
        name = validate_app_name(settings.app_name)
        _checked_app = (settings, name)  # one tuple, replaced whole: safe from any thread
    return name


_checked_app: tuple[object, str] = (None, "")


def coerce_state_type(state_type: object) -> StateType:
    """Return the StateType for a member or a member's value, else raise."""
    if isinstance(state_type, StateType):
        return state_type
    if StateType.is_member(state_type):
        return StateType(state_type)
    allowed = ", ".join(repr(m.value) for m in StateType)
    raise InvalidStateTypeError(
        f"state type {state_type!r} is not a StateType; use StateType.WORKFLOWS,"
        f" StateType.CREDENTIALS or one of {allowed}"
    )


def state_key(id: str, state_type: StateType | str, app: str | None = None) -> str:
    """The key of a state in the Dapr state store (see ``format_state_key``).

    ``app`` defaults to this process's application name (``caller_app_name``).
    """
    app = caller_app_name() if app is None else validate_app_name(app)
    return format_state_key(validate_id(id), coerce_state_type(state_type), app)


def format_state_key(id: str, state_type: StateType, app: str = DEFAULT_APP) -> str:
    """``state_key`` for an id, type and app already checked (the hot path).

    ``{state_type}/{id}`` for the app ``default`` (the key every state had before app
    names existed, so stored documents keep working), ``{app}/{state_type}/{id}`` for any
    other app. Neither an id nor an app name holds a ``/``, so the number of segments
    tells the two forms apart.
    """
    name = state_type._value_  # ``.value`` goes through enum's descriptor: slow on the hot path
    if app == DEFAULT_APP:
        return f"{name}/{id}"
    return f"{app}/{name}/{id}"


def parse_state_key(key: str) -> tuple[str, StateType, str]:
    """The id, type and app a state key names (the inverse of ``state_key``)."""
    parts = key.split("/")
    if len(parts) == 2:
        return parts[1], StateType(parts[0]), DEFAULT_APP
    app, state_type, id = parts
    return id, StateType(state_type), app


def object_key(id: str, state_type: StateType | str, app: str | None = None) -> str:
    """The object-store key of a state's snapshot, relative to the temporary root.

    ``app`` defaults to this process's application name; the subscriber passes the app
    the event named, so the file lands where ``build_state_store_path`` told the caller.
    """
    return f"{object_prefix(state_type, app)}{validate_id(id)}/config.json"


def object_prefix(state_type: StateType | str, app: str | None = None) -> str:
    """The object-store folder holding every snapshot of one state type of one app
    (ends with '/'); ``app`` defaults to this process's application name."""
    app = caller_app_name() if app is None else validate_app_name(app)
    return f"persistent-artifacts/apps/{app}/{coerce_state_type(state_type).value}/"


def state_id_of_object_key(key: str, state_type: StateType | str, app: str | None = None) -> str | None:
    """The state id whose snapshot ``key`` is (the inverse of ``object_key``), or None."""
    prefix = object_prefix(state_type, app)
    if not key.startswith(prefix) or not key.endswith("/config.json"):
        return None
    id = key[len(prefix) : -len("/config.json")]
    return id if SAFE_ID_PATTERN.fullmatch(id) and ".." not in id else None


def build_state_store_path(id: str, state_type: StateType | str) -> str:
    """The snapshot's file path, as in the reference system.

    ``{tmp_root}/persistent-artifacts/apps/{app_name}/{state_type}/{id}/config.json``,
    with ``tmp_root`` (default ``./local/tmp``) from STATESTORE_TMP_ROOT and ``app_name``
    from ``caller_app_name`` (STATESTORE_APP_NAME, else the Dapr app id, else
    ``default``).

    Raises InvalidStateIdError or InvalidStateTypeError (both ValueError) on bad input.
    """
    root = get_settings().tmp_root.rstrip("/")
    return f"{root}/{object_key(id, state_type)}"
