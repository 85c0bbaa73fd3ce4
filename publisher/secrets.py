"""SecretStore: credentials sealed by the caller before they leave the process.

    guid = await SecretStore.save_secret({"host": "db", "password": "..."})
    config = await SecretStore.get_credentials(guid)

A credential is stored as state type CREDENTIALS under a new guid, as an AES-256-GCM
sealed object (statestore.publisher.crypto): Redis, the sqlite file, the object-store snapshots
and every log hold ciphertext only. The keys come from the Dapr secret store component
``secretstore`` through the caller's sidecar.

Unlike field updates, a credential save is durable on return: a guid is a promise that
the credential can be read, by any process, as soon as the caller has it. So a new
credential does not wait for the event pipeline: its document is written straight to the
state store through the caller's sidecar (provisional, statestore.core.document), and then
its event is published, on a topic and publish pipeline of its own
(``credentials_topic``), for the subscriber to write its snapshot. Only when that direct
write fails does the save wait for the subscriber to apply the events, and that wait does
not include the caller's progress backlog either.

There is no shared index of credentials: ``reencrypt_all`` enumerates them from the
object store's snapshots (statestore.publisher.objectlist), so saving a credential writes its own
state and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from statestore.publisher.crypto import CredentialError, Keyring, UnknownCredentialError, encode_config, open_sealed, seal, seal_json
from statestore.publisher.objectlist import list_state_ids
from statestore.publisher.store import StateStore
from statestore.publisher.values import check_size
from statestore.core.errors import InvalidValueError, PublishError, SidecarUnavailableError, SyncTimeoutError
from statestore.core.paths import StateType, validate_id
from statestore.core.settings import get_settings
from statestore.subscriber.ports import ObjectStore

__all__ = ["SecretStore", "CredentialNotStoredError", "replace_credentials_with_guid", "LEGACY_INDEX_ID"]

# The shared index that earlier versions kept (guid -> key id); skipped when listing.
LEGACY_INDEX_ID = "credential-index"
C = StateType.CREDENTIALS
SHOWN_GUIDS = 20
log = logging.getLogger("statestore.publisher")


class CredentialNotStoredError(CredentialError, SyncTimeoutError):
    """Credentials of a save were not confirmed stored within the timeout.

    ``guids`` holds every guid not yet confirmed. Nothing is dropped: their events stay
    queued (or in the broker) and are applied once the subscriber catches up, and
    ``get_credentials`` reads them from then on.
    """

    def __init__(self, guids: list[str], timeout: float, why: str = "") -> None:
        shown = ", ".join(guids[:SHOWN_GUIDS]) + (f" and {len(guids) - SHOWN_GUIDS} more" if len(guids) > SHOWN_GUIDS else "")
        super().__init__(
            f"{len(guids)} credentials were not confirmed stored within {timeout:g} s "
            f"(STATESTORE_CREDENTIAL_TIMEOUT_S): {shown}. {why + '. ' if why else ''}They stay queued "
            "and are stored once the caller's sidecar publishes them and the subscriber applies them "
            "(are both running? `make up`; their logs say why not); get_credentials reads them then. "
            "error.guids lists them all.",
            guids,
        )
        self.guids = list(guids)


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
    async def save_secret(cls, config: dict[str, Any], timeout: float | None = None) -> str:
        """Store one credential configuration; returns its new guid once it is stored.

        As ``save_secrets``.
        """
        return (await cls.save_secrets([config], timeout))[0]

    @classmethod
    async def save_secrets(cls, configs: list[dict[str, Any]], timeout: float | None = None) -> list[str]:
        """Store a batch of credential configurations; returns their guids, in order.

        Returns once every one of them is stored and readable by ``get_credentials`` from
        any process. Every configuration is validated and sealed before anything is
        written: InvalidValueError (naming the position) leaves nothing behind.

        The sealed credentials are written straight to the state store through the
        caller's sidecar (a few transactions for the whole batch), then their events are
        published for the subscriber, which writes their object-store snapshots; the call
        waits for that publish, not for the subscriber. If the direct write fails (the
        sidecar or the store is down), the events are queued all the same and the call
        waits until the subscriber has applied them. CredentialNotStoredError (naming the
        guids) after ``timeout`` seconds (default STATESTORE_CREDENTIAL_TIMEOUT_S) if they
        are not all stored by then; nothing is dropped, they are stored once the sidecar
        and the subscriber take them.
        """
        configs = list(configs)
        keyring = await cls.keyring()
        guids = [str(uuid.uuid4()) for _ in configs]
        sealed = {guid: _seal_checked(keyring, guid, config, n) for n, (guid, config) in enumerate(zip(guids, configs))}
        await cls._create(sealed, timeout)
        return guids

    @classmethod
    async def _create(cls, sealed: dict[str, dict[str, Any]], timeout: float | None) -> None:
        """Store new credentials: write them ahead of their events, then publish these."""
        if not sealed:
            return
        timeout, deadline = _budget(timeout)
        loop = asyncio.get_running_loop()
        events = [StateStore._replace_event(guid, value, C, None, checked=True) for guid, value in sealed.items()]
        try:
            await StateStore._write_ahead(events, timeout)
        except SidecarUnavailableError as exc:
            # Some may be written: the subscriber's merge completes those and applies the rest.
            log.warning("writing %d credentials through the sidecar failed (%s); waiting for the subscriber instead", len(events), exc)
            await StateStore._queue_all(events)
            await cls._await_applied(list(sealed), deadline, timeout, f"the direct write failed: {exc}")
            return
        await StateStore._queue_stored(*events)
        # Stored and readable now; wait (within the timeout) until the events are in the
        # broker too, so the snapshot follows even if this process dies right after.
        try:
            await StateStore._flush_states(C, {event.key for event in events}, max(deadline - loop.time(), 0.001))
        except (PublishError, asyncio.TimeoutError) as exc:
            if isinstance(exc, PublishError):
                await StateStore.republish(exc.events)
            log.warning(
                "%d credentials are stored, but their events are not published yet (%s): their snapshots follow"
                " once the broker takes them (they stay queued)", len(events), str(exc) or "timed out",
            )

    @classmethod
    async def _store(cls, sealed: dict[str, dict[str, Any]], timeout: float | None) -> None:
        """Queue new seals of existing credentials, then wait once until all are applied."""
        if not sealed:
            return
        timeout, deadline = _budget(timeout)
        await StateStore._queue_all([StateStore._replace_event(guid, value, C, None) for guid, value in sealed.items()])
        await cls._await_applied(list(sealed), deadline, timeout, "")

    @classmethod
    async def _await_applied(cls, guids: list[str], deadline: float, timeout: float, why: str) -> None:
        """Wait until the queued events of ``guids`` are applied; CredentialNotStoredError at ``deadline``."""
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                await StateStore.sync_many(guids, C, timeout=max(remaining, 0.001))
                return
            except PublishError as exc:
                await StateStore.republish(exc.events)  # nothing is dropped; keep waiting
                if remaining <= 0:
                    raise CredentialNotStoredError(guids, timeout, why) from None
            except SyncTimeoutError as exc:
                pending = set(exc.pending)
                raise CredentialNotStoredError([g for g in guids if g in pending] or guids, timeout, why) from None

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
    async def reencrypt_all(cls, objects: ObjectStore, chunk: int = 200) -> tuple[int, dict[str, str]]:
        """Re-seal every credential not sealed with the active key.

        The credentials are enumerated from their snapshots in the object store
        ``objects`` (the subscriber's: statestore.subscriber.objectstore.open_object_store
        with its settings). A credential saved in the last moments (its snapshot not yet
        written) is not listed; running this again is harmless.

        Returns how many were re-sealed, and the guids that could not be opened (wrong
        key, tampered) with the reason; those are left as they are.
        """
        keyring = await cls.keyring(refresh=True)
        guids = [g for g in await list_state_ids(objects, C) if g != LEGACY_INDEX_ID]
        moved, failed = 0, {}
        for start in range(0, len(guids), chunk):
            # get_state (not a bulk read) so the clock observes each stamp: the re-sealed
            # value is stamped after the one it replaces, whichever process wrote that.
            states = await asyncio.gather(*(StateStore.get_state(g, C) for g in guids[start : start + chunk]))
            resealed = {}
            for guid, sealed in zip(guids[start : start + chunk], states):
                if sealed is None or sealed.get("key_id") == keyring.active:
                    continue
                try:
                    resealed[guid] = seal(keyring, guid, open_sealed(keyring, guid, sealed))
                except CredentialError as exc:
                    failed[guid] = str(exc)
            await cls._store(resealed, timeout=max(60.0, get_settings().credential_timeout_s))
            moved += len(resealed)
        return moved, failed


def _budget(timeout: float | None) -> tuple[float, float]:
    """A save's timeout (default STATESTORE_CREDENTIAL_TIMEOUT_S) and its deadline on the loop's clock."""
    timeout = get_settings().credential_timeout_s if timeout is None else timeout
    return timeout, asyncio.get_running_loop().time() + timeout


def _seal_checked(keyring: Keyring, guid: str, config: object, position: int) -> dict[str, Any]:
    """``config`` sealed for ``guid``; InvalidValueError (naming its position) if it cannot be stored."""
    what = f"credential configuration #{position}"
    if not isinstance(config, dict) or not all(isinstance(key, str) for key in config):
        raise InvalidValueError(f"{what} must be a dict with string keys; nothing was saved")
    try:
        plaintext = encode_config(config)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidValueError(f"{what} is not JSON-serialisable ({exc}); nothing was saved") from None
    sealed = seal_json(keyring, guid, plaintext)
    try:  # strings and an integer: JSON as it is, only its size to check
        check_size(len(json.dumps(sealed)), what, guid)
    except InvalidValueError as exc:
        raise InvalidValueError(f"{exc} Nothing was saved.") from None
    return sealed


async def replace_credentials_with_guid(workflow_args: dict[str, Any]) -> dict[str, Any]:
    """Workflow arguments with ``credentials`` stored as a secret and replaced by its
    ``credential_guid``, as the reference's ``start_workflow`` does. Other keys are kept.

    Returns once the credential is stored (as ``SecretStore.save_secret``)."""
    if "credentials" not in workflow_args:
        return dict(workflow_args)
    args = {k: v for k, v in workflow_args.items() if k != "credentials"}
    args["credential_guid"] = await SecretStore.save_secret(workflow_args["credentials"])
    return args
