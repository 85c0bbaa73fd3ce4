"""Authenticated encryption of credential configurations (AES-256-GCM). Pure: no I/O.

A sealed credential is a JSON object that reveals nothing of the plaintext:

    {"v": 1, "alg": "AES-256-GCM", "key_id": "k2", "key_check": "...",
     "nonce": "<base64>", "ciphertext": "<base64>"}

The credential guid is the associated data, so a ciphertext copied to another guid does
not decrypt. ``key_check`` (a hash of the key) tells a wrong key from tampered data.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from statestore.core.errors import StateStoreError

__all__ = [
    "Keyring",
    "seal",
    "seal_json",
    "encode_config",
    "open_sealed",
    "is_sealed",
    "new_key",
    "CredentialError",
    "UnknownCredentialError",
    "WrongKeyError",
    "TamperedCredentialError",
    "KeyringError",
]

ALGORITHM = "AES-256-GCM"


class CredentialError(StateStoreError):
    """Base class of credential errors."""


class UnknownCredentialError(CredentialError, KeyError):
    """No credential is stored under that guid."""


class WrongKeyError(CredentialError):
    """The credential was sealed with a key this keyring does not have."""


class TamperedCredentialError(CredentialError):
    """The sealed credential was changed after it was written."""


class KeyringError(CredentialError):
    """The keyring is missing or malformed."""


def new_key() -> str:
    """A fresh 256-bit key, base64."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


def _check(key: bytes) -> str:
    return hashlib.sha256(b"statestore-key-check" + key).hexdigest()[:16]


@dataclass(frozen=True)
class Keyring:
    """Keys by id, and which one seals new credentials."""

    active: str
    keys: dict[str, bytes]

    @classmethod
    def from_secret(cls, secret: dict[str, str]) -> Keyring:
        """From the secret-store entry: ``{"active": "k1", "k1": "<base64>", ...}``."""
        active = secret.get("active", "")
        try:
            keys = {kid: base64.b64decode(value, validate=True) for kid, value in secret.items() if kid != "active"}
        except ValueError:
            raise KeyringError("a key in the keyring is not base64") from None
        if active not in keys:
            raise KeyringError(f"the keyring's active key {active!r} is not in it; run `python -m statestore.publisher.keys init`")
        if any(len(key) != 32 for key in keys.values()):
            raise KeyringError("every keyring key must be 32 bytes (AES-256)")
        return cls(active, keys)

    @cached_property
    def sealer(self) -> tuple[AESGCM, str]:
        """The active key's cipher and key check (made once: a batch seals with it many times)."""
        key = self.keys[self.active]
        return AESGCM(key), _check(key)


def seal(keyring: Keyring, guid: str, config: dict[str, Any]) -> dict[str, Any]:
    """Encrypt ``config`` for ``guid`` with the active key."""
    return seal_json(keyring, guid, encode_config(config))


def encode_config(config: dict[str, Any]) -> bytes:
    """The plaintext that ``seal`` encrypts: ``config`` as compact JSON (ValueError for
    NaN or infinity, TypeError for what JSON cannot hold)."""
    return json.dumps(config, separators=(",", ":"), allow_nan=False).encode()


def seal_json(keyring: Keyring, guid: str, plaintext: bytes) -> dict[str, Any]:
    """Encrypt a configuration already encoded by ``encode_config`` for ``guid``."""
    cipher, key_check = keyring.sealer
    nonce = os.urandom(12)
    ciphertext = cipher.encrypt(nonce, plaintext, guid.encode())
    return {
        "v": 1,
        "alg": ALGORITHM,
        "key_id": keyring.active,
        "key_check": key_check,
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }


def is_sealed(value: object) -> bool:
    return isinstance(value, dict) and value.get("alg") == ALGORITHM and "ciphertext" in value


def open_sealed(keyring: Keyring, guid: str, sealed: dict[str, Any]) -> dict[str, Any]:
    """Decrypt a sealed credential; WrongKeyError or TamperedCredentialError if it cannot be."""
    if not is_sealed(sealed):
        raise TamperedCredentialError(f"credential {guid!r} is not a sealed credential")
    key = keyring.keys.get(sealed.get("key_id", ""))
    if key is None or _check(key) != sealed.get("key_check"):
        raise WrongKeyError(
            f"credential {guid!r} was sealed with key {sealed.get('key_id')!r}, which this keyring "
            "does not hold (or holds a different key under that id); restore that key to read it"
        )
    try:
        plaintext = AESGCM(key).decrypt(
            base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ciphertext"]), guid.encode()
        )
    except (InvalidTag, ValueError, KeyError):
        raise TamperedCredentialError(f"credential {guid!r} fails authentication: it was altered") from None
    return json.loads(plaintext)
