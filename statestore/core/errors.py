"""The errors statestore raises; each message says what is wrong and what to do."""

from __future__ import annotations

__all__ = [
    "StateStoreError",
    "InvalidStateIdError",
    "InvalidAppNameError",
    "InvalidStateTypeError",
    "InvalidValueError",
    "SidecarUnavailableError",
    "ListingDisabledError",
    "StateDecodeError",
    "PublishError",
    "SyncTimeoutError",
    "StateNotStoredError",
]


class StateStoreError(Exception):
    """Base class of every statestore error."""


class InvalidStateIdError(StateStoreError, ValueError):
    """A state id is empty, too long, not a string, or has characters outside the safe set."""


class InvalidAppNameError(StateStoreError, ValueError):
    """An application name (STATESTORE_APP_NAME, the Dapr app id) breaks the id rules."""


class InvalidStateTypeError(StateStoreError, ValueError):
    """A state type is not a StateType (nor the value of one)."""


class InvalidValueError(StateStoreError, ValueError):
    """A key or value cannot be stored: not JSON-serialisable, or too large."""


class ListingDisabledError(StateStoreError):
    """list_states was called, but no subscriber keeps the id index it reads."""


class SidecarUnavailableError(StateStoreError, ConnectionError):
    """The Dapr sidecar cannot be reached or answered with an error."""


class StateDecodeError(StateStoreError):
    """A stored state could not be decoded; it is never reported as empty state."""


class PublishError(StateStoreError):
    """Events could not be published after all retries.

    ``events`` holds every event that was not published, so nothing is silently lost:
    the caller may persist them or publish them again with ``StateStore.republish``.
    """

    def __init__(self, message: str, events: list | None = None) -> None:
        super().__init__(message)
        self.events = list(events or [])


class SyncTimeoutError(StateStoreError, TimeoutError):
    """Events published by this process were not all applied within the timeout.

    ``pending`` holds the ids of the states still behind.
    """

    def __init__(self, message: str, pending: list[str] | None = None) -> None:
        super().__init__(message)
        self.pending = list(pending or [])


class StateNotStoredError(StateStoreError):
    """``save_state_object`` could not store the object within its timeout.

    ``stored`` is False when nothing was written (the stored state is unchanged), None
    when the sidecar did not answer the last write in time (it may have landed: read the
    state). Nothing of the replace is queued or published either way.
    """

    def __init__(self, message: str, state_id: str, stored: bool | None) -> None:
        super().__init__(message)
        self.state_id = state_id
        self.stored = stored
