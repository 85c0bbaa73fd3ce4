"""statestore's caller-facing library.

    from publisher import StateStore, StateType, build_state_store_path

    await StateStore.save_state("progress", 75, "workflow-123", StateType.WORKFLOWS)
    state = await StateStore.get_state("workflow-123", StateType.WORKFLOWS)
"""

from publisher.query import StateQueryClient
from publisher.store import StateStore
from statestore.errors import (
    InvalidStateIdError,
    InvalidStateTypeError,
    InvalidValueError,
    PublishError,
    SidecarUnavailableError,
    StateDecodeError,
    StateStoreError,
    SyncTimeoutError,
)
from statestore.paths import StateType, build_state_store_path

__all__ = [
    "StateStore",
    "StateType",
    "build_state_store_path",
    "StateQueryClient",
    "StateStoreError",
    "InvalidStateIdError",
    "InvalidStateTypeError",
    "InvalidValueError",
    "PublishError",
    "SidecarUnavailableError",
    "StateDecodeError",
    "SyncTimeoutError",
]
