"""statestore's caller-facing library.

    from publisher import StateStore, StateType, build_state_store_path

    await StateStore.save_state("progress", 75, "workflow-123", StateType.WORKFLOWS)
    state = await StateStore.get_state("workflow-123", StateType.WORKFLOWS)
"""

from publisher.crypto import (
    CredentialError,
    KeyringError,
    TamperedCredentialError,
    UnknownCredentialError,
    WrongKeyError,
)
from publisher.query import StateQueryClient
from publisher.secrets import CredentialNotStoredError, SecretStore, replace_credentials_with_guid
from publisher.store import StatePage, StateStore
from statestore.errors import (
    InvalidStateIdError,
    InvalidStateTypeError,
    InvalidValueError,
    PublishError,
    SidecarUnavailableError,
    StateDecodeError,
    StateStoreError,
    SyncTimeoutError,
    ListingDisabledError,
)
from statestore.paths import StateType, build_state_store_path

__all__ = [
    "StateStore",
    "StatePage",
    "StateType",
    "build_state_store_path",
    "StateQueryClient",
    "SecretStore",
    "replace_credentials_with_guid",
    "CredentialError",
    "CredentialNotStoredError",
    "UnknownCredentialError",
    "WrongKeyError",
    "TamperedCredentialError",
    "KeyringError",
    "StateStoreError",
    "InvalidStateIdError",
    "InvalidStateTypeError",
    "InvalidValueError",
    "PublishError",
    "SidecarUnavailableError",
    "StateDecodeError",
    "SyncTimeoutError",
    "ListingDisabledError",
]
