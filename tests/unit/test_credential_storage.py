"""The pure parts of credential storage: listing credentials in the object store, the keys file."""

import json
import os
import stat

import pytest

from statestore.publisher import keys
from statestore.publisher.objectlist import list_state_ids
from statestore.subscriber.objectstore import LocalFileObjectStore
from statestore.subscriber.ports import InMemoryObjectStore
from statestore.core.paths import StateType, object_key, object_prefix, state_id_of_object_key

C = StateType.CREDENTIALS


def test_object_key_and_its_inverse():
    key = object_key("9f2c-41d0", C)
    assert key.startswith(object_prefix(C)) and key.endswith("/config.json")
    assert state_id_of_object_key(key, C) == "9f2c-41d0"
    assert state_id_of_object_key(object_key("9f2c-41d0", StateType.WORKFLOWS), C) is None
    assert state_id_of_object_key(object_prefix(C) + "a/b/config.json", C) is None  # not one segment
    assert state_id_of_object_key(object_prefix(C) + "x/other.json", C) is None


@pytest.mark.parametrize("make", [lambda tmp: InMemoryObjectStore(), lambda tmp: LocalFileObjectStore(tmp)])
async def test_credential_ids_are_listed_from_their_snapshots_only(make, tmp_path):
    objects = make(tmp_path)
    for guid in ("g2", "g1"):
        await objects.put(object_key(guid, C), b"{}")
    await objects.put(object_key("w1", StateType.WORKFLOWS), b"{}")  # another type
    await objects.put(object_prefix(C) + "g3/notes.txt", b"")  # not a snapshot
    assert await list_state_ids(objects, C) == ["g1", "g2"]


def test_keys_file_is_0600_from_its_creation(tmp_path, monkeypatch):
    """The key material is never in a file anyone else may read, not even before a chmod."""
    modes = []
    real_fsync = os.fsync

    def watch(fd):  # called with the keys written and the file still open
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", watch)
    monkeypatch.setattr(os, "chmod", lambda *a, **k: pytest.fail("chmod after writing: the file was open to others"))
    old = os.umask(0)  # the most permissive umask: the mode must come from os.open itself
    try:
        path = tmp_path / "secrets" / "keys.json"
        assert keys.ensure_keyring(path)
        keys.rotate_keyring(path)
    finally:
        os.umask(old)
    assert modes == [0o600, 0o600]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    assert set(json.loads(path.read_text())[keys.SECRET_NAME]) == {"active", "k1", "k2"}


def test_a_write_ahead_upsert_overwrites_and_every_other_new_key_is_first_write():
    """Only a new credential's direct write goes without the first-write check (its
    guid is known to nobody else); the subscriber's inserts keep it."""
    from dapr.proto.common.v1 import common_pb2

    from statestore.core.sidecar import Upsert, _operation

    first = common_pb2.StateOptions.CONCURRENCY_FIRST_WRITE
    assert _operation(Upsert("k", b"{}", None)).request.options.concurrency == first
    ahead = _operation(Upsert("k", b"{}", None, overwrite=True)).request
    assert ahead.options.concurrency != first and not ahead.HasField("etag")
    assert _operation(Upsert("k", b"{}", "7")).request.etag.value == "7"
