"""statestore: durable, ordered workflow and credential state for Dapr applications.

    from statestore import StateStore, StateType, build_state_store_path, SecretStore

The one import name the distribution installs. Its parts:

- ``statestore.core``: the contract both sides share (settings, id and path rules, the
  event models, the merge, the sidecar adapter); pure but for the adapter;
- ``statestore.publisher``: the caller library (``StateStore``, ``SecretStore``);
- ``statestore.subscriber``: the Dapr app that applies events (``statestore-subscriber``);
- ``statestore.testing``: the in-memory store for apps' tests (and its pytest fixture);
- ``statestore.devstack``, ``statestore.cli``: the local stack and the ``statestore`` command.

The names below are loaded on first use, so importing ``statestore.core`` (the subscriber
does) does not load the caller library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module that defines it
_EXPORTS = {
    "StateStore": "statestore.publisher.store",
    "StatePage": "statestore.publisher.store",
    "StateStoreClient": "statestore.publisher.client",
    "StateType": "statestore.core.paths",
    "build_state_store_path": "statestore.core.paths",
    "StateQueryClient": "statestore.publisher.query",
    "SecretStore": "statestore.publisher.secrets",
    "replace_credentials_with_guid": "statestore.publisher.secrets",
    "CredentialNotStoredError": "statestore.publisher.secrets",
    "CredentialError": "statestore.publisher.crypto",
    "UnknownCredentialError": "statestore.publisher.crypto",
    "WrongKeyError": "statestore.publisher.crypto",
    "TamperedCredentialError": "statestore.publisher.crypto",
    "KeyringError": "statestore.publisher.crypto",
    "StateStoreError": "statestore.core.errors",
    "InvalidStateIdError": "statestore.core.errors",
    "InvalidStateTypeError": "statestore.core.errors",
    "InvalidValueError": "statestore.core.errors",
    "PublishError": "statestore.core.errors",
    "SidecarUnavailableError": "statestore.core.errors",
    "StateDecodeError": "statestore.core.errors",
    "SyncTimeoutError": "statestore.core.errors",
    "StateNotStoredError": "statestore.core.errors",
    "ListingDisabledError": "statestore.core.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'statestore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # what type checkers and IDEs see
    from statestore.core.errors import (
        InvalidStateIdError,
        InvalidStateTypeError,
        InvalidValueError,
        ListingDisabledError,
        PublishError,
        SidecarUnavailableError,
        StateDecodeError,
        StateNotStoredError,
        StateStoreError,
        SyncTimeoutError,
    )
    from statestore.core.paths import StateType, build_state_store_path
    from statestore.publisher.client import StateStoreClient
    from statestore.publisher.crypto import (
        CredentialError,
        KeyringError,
        TamperedCredentialError,
        UnknownCredentialError,
        WrongKeyError,
    )
    from statestore.publisher.query import StateQueryClient
    from statestore.publisher.secrets import CredentialNotStoredError, SecretStore, replace_credentials_with_guid
    from statestore.publisher.store import StatePage, StateStore
