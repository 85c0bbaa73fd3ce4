"""SecretStore: credentials sealed by the caller before they leave the process.

    guid = await SecretStore.save_secret({"host": "db", "password": "..."})
    config = await SecretStore.get_credentials(guid)

A credential is stored as state type CREDENTIALS under a new guid, as an AES-256-GCM
sealed object (publisher.crypto): Redis, the sqlite file, the object-store snapshots
and every log hold ciphertext only. The keys come from the Dapr secret store component
``secretstore`` through the caller's sidecar. A credential index (the state
``credentials/credential-index``: guid -> key id) lets ``reencrypt_all`` find what an old
key sealed.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from publisher.crypto import CredentialError, Keyring, UnknownCredentialError, open_sealed, seal
from publisher.store import StateStore
from statestore.errors import InvalidValueError
from statestore.paths import StateType, validate_id
from statestore.settings import get_settings

__all__ = ["SecretStore", "INDEX_ID", "replace_credentials_with_guid"]

INDEX_ID = "credential-index"
C = StateType.CREDENTIALS


class SecretStore:
    """Credential configurations, encrypted end to end. All methods are class methods."""

    _keyring: Keyring | None = None
    _keyring_read_at = 0.0

    @classmethod
    async def keyring(cls, refresh: bool = False) -> Keyring:
        """The keyring from the secret store (reused for STATESTORE_KEYRING_CACHE_S)."""
        settings = get_settings()
        if refresh or cls._keyring is None or time.monotonic() - cls._keyring_read_at > settings.keyring_cache_s:
            sidecar = StateStore._runtime().sidecar
            secret = await sidecar.get_secret(settings.secretstore_name, settings.keyring_secret)
            cls._keyring, cls._keyring_read_at = Keyring.from_secret(secret), time.monotonic()
        return cls._keyring

    @classmethod
    async def save_secret(cls, config: dict[str, Any]) -> str:
        """Store one credential configuration; returns its new guid."""
        return (await cls.save_secrets([config]))[0]

    @classmethod
    async def save_secrets(cls, configs: list[dict[str, Any]]) -> list[str]:
        """Store a batch of credential configurations; returns their guids, in order.

        The batch is sealed, queued together and flushed: one bulk publish for up to
        STATESTORE_BATCH_MAX_EVENTS / 2 credentials (each also updates the index).
        Raises InvalidValueError before anything is published if a config is not a dict.
        """
        if not all(isinstance(config, dict) for config in configs):
            raise InvalidValueError("each credential configuration must be a dict")
        keyring = await cls.keyring()
        guids = [str(uuid.uuid4()) for _ in configs]
        for guid, config in zip(guids, configs):
            await cls._store(keyring, guid, config)
        await StateStore.flush()
        return guids

    @classmethod
    async def _store(cls, keyring: Keyring, guid: str, config: dict[str, Any]) -> None:
        await StateStore.save_state_object(guid, seal(keyring, guid, config), C)
        await StateStore.save_state(guid, keyring.active, INDEX_ID, C)

    @classmethod
    async def get_credentials(cls, guid: str) -> dict[str, Any]:
        """The decrypted configuration stored under ``guid``.

        Raises UnknownCredentialError (no such guid), WrongKeyError (sealed with a key
        this keyring lacks) or TamperedCredentialError (altered after it was written).
        """
        validate_id(guid)
        sealed = await StateStore.get_state(guid, C)
        if sealed is None:
            raise UnknownCredentialError(f"no credential is stored under guid {guid!r}")
        keyring = await cls.keyring()
        if sealed.get("key_id") not in keyring.keys:
            keyring = await cls.keyring(refresh=True)  # rotated since we read it?
        return open_sealed(keyring, guid, sealed)

    @classmethod
    async def reencrypt_all(cls) -> tuple[int, dict[str, str]]:
        """Re-seal every credential not sealed with the active key.

        Returns how many were re-sealed, and the guids that could not be opened (wrong
        key, tampered) with the reason; those are left as they are.
        """
        keyring = await cls.keyring(refresh=True)
        index = await StateStore.get_state(INDEX_ID, C) or {}
        moved, failed = [], {}
        for guid in (guid for guid, key_id in index.items() if key_id != keyring.active):
            try:
                config = await cls.get_credentials(guid)
            except CredentialError as exc:
                failed[guid] = str(exc)
                continue
            await cls._store(keyring, guid, config)
            moved.append(guid)
        await StateStore.flush()
        for state_id in [*moved, INDEX_ID] if moved else []:
            await StateStore.sync(state_id, C, timeout=60)
        return len(moved), failed


async def replace_credentials_with_guid(workflow_args: dict[str, Any]) -> dict[str, Any]:
    """Workflow arguments with ``credentials`` stored as a secret and replaced by its
    ``credential_guid``, as the reference's ``start_workflow`` does. Other keys are kept."""
    if "credentials" not in workflow_args:
        return dict(workflow_args)
    args = {k: v for k, v in workflow_args.items() if k != "credentials"}
    args["credential_guid"] = await SecretStore.save_secret(workflow_args["credentials"])
    return args
