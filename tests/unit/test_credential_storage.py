"""The pure parts of credential storage: listing the object store's answer, the keys file."""

import json
import os
import stat

import pytest

from statestore.publisher import keys
from statestore.publisher.objectlist import parse_list_response
from statestore.core.paths import StateType, object_key, object_prefix, state_id_of_object_key

C = StateType.CREDENTIALS


def test_object_key_and_its_inverse():
    key = object_key("9f2c-41d0", C)
    assert key.startswith(object_prefix(C)) and key.endswith("/config.json")
    assert state_id_of_object_key(key, C) == "9f2c-41d0"
    assert state_id_of_object_key(object_key("9f2c-41d0", StateType.WORKFLOWS), C) is None
    assert state_id_of_object_key(object_prefix(C) + "a/b/config.json", C) is None  # not one segment
    assert state_id_of_object_key(object_prefix(C) + "x/other.json", C) is None


def test_localstorage_list_answer_is_absolute_paths_of_every_file():
    prefix = object_prefix(C)
    raw = json.dumps([f"/srv/local/tmp/{prefix}g1/config.json", f"/srv/local/tmp/{prefix}g2/config.json",
                      "/srv/local/tmp/elsewhere/file"]).encode()  # fmt: skip
    assert parse_list_response(raw, prefix) == ([f"{prefix}g1/config.json", f"{prefix}g2/config.json"], None)
    assert parse_list_response(b"null", prefix) == ([], None)


def test_s3_list_answer_pages_with_a_marker():
    prefix = object_prefix(C)
    page = {"Contents": [{"Key": f"{prefix}g1/config.json", "Size": 10}, {"Key": f"{prefix}g2/config.json"}],
            "IsTruncated": True, "Marker": "", "Name": "bucket"}  # fmt: skip
    assert parse_list_response(json.dumps(page).encode(), prefix) == (
        [f"{prefix}g1/config.json", f"{prefix}g2/config.json"], f"{prefix}g2/config.json")  # fmt: skip
    last = {"Contents": [{"Key": f"{prefix}g3/config.json"}], "IsTruncated": False}
    assert parse_list_response(json.dumps(last).encode(), prefix) == ([f"{prefix}g3/config.json"], None)
    assert parse_list_response(json.dumps({"IsTruncated": False}).encode(), prefix) == ([], None)
    with pytest.raises(ValueError, match="neither"):
        parse_list_response(b"42", prefix)


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
