import base64
import json

import pytest

from statestore.publisher.crypto import (
    Keyring,
    KeyringError,
    TamperedCredentialError,
    WrongKeyError,
    encode_config,
    new_key,
    open_sealed,
    seal,
    seal_json,
)


def keyring(**keys):
    keys = keys or {"k1": new_key()}
    return Keyring.from_secret({"active": list(keys)[-1], **keys})


CONFIG = {"host": "db.internal", "password": "hunter2-plaintext"}


def test_round_trip_and_nothing_in_clear():
    ring = keyring()
    sealed = seal(ring, "guid-1", CONFIG)
    assert "hunter2" not in json.dumps(sealed) and "db.internal" not in json.dumps(sealed)
    assert open_sealed(ring, "guid-1", sealed) == CONFIG
    assert seal(ring, "guid-1", CONFIG)["nonce"] != sealed["nonce"]  # fresh nonce each time


def test_a_config_encoded_once_seals_as_seal_does():
    ring = keyring()
    sealed = seal_json(ring, "guid-1", encode_config(CONFIG))
    assert open_sealed(ring, "guid-1", sealed) == CONFIG
    assert sealed.keys() == seal(ring, "guid-1", CONFIG).keys() and sealed["key_check"] == seal(ring, "g", CONFIG)["key_check"]
    with pytest.raises(ValueError):
        encode_config({"x": float("nan")})  # JSON has no NaN: refused before anything is sealed


def test_old_keys_still_open_after_rotation():
    old = new_key()
    sealed = seal(keyring(k1=old), "g", CONFIG)
    rotated = keyring(k1=old, k2=new_key())
    assert rotated.active == "k2" and open_sealed(rotated, "g", sealed) == CONFIG
    assert seal(rotated, "g", CONFIG)["key_id"] == "k2"


@pytest.mark.parametrize("ring", [keyring(k9=new_key()), keyring(k1=new_key())], ids=["missing id", "other key, same id"])
def test_a_wrong_key_is_told_apart_from_tampering(ring):
    sealed = seal(keyring(k1=new_key()), "g", CONFIG)
    with pytest.raises(WrongKeyError, match="restore that key"):
        open_sealed(ring, "g", sealed)


def flip(b64):
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    "tamper",
    [lambda s: {**s, "ciphertext": flip(s["ciphertext"])}, lambda s: {**s, "nonce": flip(s["nonce"])},
     lambda s: {**s, "ciphertext": "not base64!"}, lambda s: {"plain": "text"}],
    ids=["ciphertext", "nonce", "garbage", "not sealed"],
)  # fmt: skip
def test_tampered_data_fails_authentication(tamper):
    ring = keyring()
    with pytest.raises(TamperedCredentialError):
        open_sealed(ring, "g", tamper(seal(ring, "g", CONFIG)))


def test_a_ciphertext_moved_to_another_guid_does_not_open():
    ring = keyring()
    with pytest.raises(TamperedCredentialError, match="altered"):
        open_sealed(ring, "guid-b", seal(ring, "guid-a", CONFIG))


@pytest.mark.parametrize(
    "secret",
    [{"k1": new_key()}, {"active": "k1", "k1": "***"}, {"active": "k1", "k1": base64.b64encode(b"short").decode()}],
    ids=["no active", "not base64", "wrong length"],
)
def test_malformed_keyrings_are_refused(secret):
    with pytest.raises(KeyringError):
        Keyring.from_secret(secret)


from hypothesis import given, settings as hsettings

from tests.strategies import credential_configs


@hsettings(max_examples=300, deadline=None)
@given(credential_configs)
def test_any_credential_configuration_round_trips(config):
    ring = keyring()
    assert open_sealed(ring, "guid-p", seal(ring, "guid-p", config)) == config
