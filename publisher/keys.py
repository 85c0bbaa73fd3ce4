"""Credential keys: create the local keyring, rotate it, re-encrypt old credentials.

    python -m statestore.publisher.keys init        # create ./local/secrets/statestore-keys.json if missing
    python -m statestore.publisher.keys rotate      # add a new key and make it the active one
    python -m statestore.publisher.keys reencrypt   # re-seal every credential with the active key

`reencrypt` uses the caller's sidecar (DAPR_GRPC_PORT: the keyring, reads and writes)
and lists the stored credentials in the subscriber's object store, opened from the same
settings the subscriber runs with: STATESTORE_OBJECTSTORE_URL (and _ENDPOINT, _REGION,
the AWS credentials) for S3, else the folder STATESTORE_TMP_ROOT (./local/tmp, as
`make up` writes it).

The file is what the `secretstore` component (secretstores.local.file) serves; the
local.file store reads it when the sidecar starts, so restart the callers' sidecars
after `rotate` (`make down && make up`). Old keys stay in the keyring, so credentials
sealed with them still decrypt until `reencrypt` has moved them to the new key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from statestore.publisher.crypto import new_key

__all__ = ["KEYS_FILE", "ensure_keyring", "rotate_keyring", "main"]

KEYS_FILE = Path(os.environ.get("STATESTORE_KEYS_FILE", "./local/secrets/statestore-keys.json"))
SECRET_NAME = "statestore-keyring"


def _write(path: Path, keyring: dict[str, str]) -> None:
    """Write the keyring atomically; the file is 0600 from its creation (never readable
    by others, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover of a crash: O_EXCL below must create it anew
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps({SECRET_NAME: keyring}, indent=2))
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def ensure_keyring(path: Path = KEYS_FILE) -> bool:
    """Create the keyring file with one key if it does not exist; True if created."""
    if path.exists():
        return False
    _write(path, {"active": "k1", "k1": new_key()})
    return True


def rotate_keyring(path: Path = KEYS_FILE) -> str:
    """Add a key, make it active, keep the old ones; returns the new key id."""
    keyring = json.loads(path.read_text())[SECRET_NAME]
    numbers = [int(kid[1:]) for kid in keyring if kid.startswith("k") and kid[1:].isdigit()]
    new_id = f"k{max(numbers, default=0) + 1}"
    keyring[new_id] = new_key()
    keyring["active"] = new_id
    _write(path, keyring)
    return new_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m statestore.publisher.keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("command", choices=["init", "rotate", "reencrypt"])
    args = parser.parse_args(argv)
    if args.command == "init":
        print(f"created {KEYS_FILE}" if ensure_keyring() else f"{KEYS_FILE} exists; left as it is")
    elif args.command == "rotate":
        if not KEYS_FILE.exists():
            print(f"error: {KEYS_FILE} does not exist; run `python -m statestore.publisher.keys init`", file=sys.stderr)
            return 1
        print(f"active key is now {rotate_keyring()}; restart the callers' sidecars, then run reencrypt")
    else:
        moved, failed = asyncio.run(_reencrypt())
        print(f"re-encrypted {moved} credentials with the active key")
        for guid, reason in failed.items():
            print(f"not re-encrypted: {reason}", file=sys.stderr)
        return 1 if failed else 0
    return 0


async def _reencrypt() -> tuple[int, dict[str, str]]:
    from statestore.core.settings import get_settings
    from statestore.publisher.secrets import SecretStore
    from statestore.subscriber.objectstore import open_object_store

    return await SecretStore.reencrypt_all(open_object_store(get_settings()))


if __name__ == "__main__":
    sys.exit(main())
