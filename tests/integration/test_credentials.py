"""Issue 6: credentials sealed by the caller, nowhere in plaintext, rotation, access."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis

from devstack import Ports
from devstack.stack import SidecarSpec
from publisher import (
    SecretStore,
    SidecarUnavailableError,
    StateStore,
    StateType,
    TamperedCredentialError,
    UnknownCredentialError,
    WrongKeyError,
    replace_credentials_with_guid,
)
from publisher.crypto import Keyring, new_key, seal
from publisher.keys import rotate_keyring
from publisher.secrets import INDEX_ID
from statestore.settings import SidecarSettings
from statestore.sidecar import SidecarClient
from tests.integration.conftest import sidecar_settings

C = StateType.CREDENTIALS
RATES: dict[str, float] = {}


def secret_config(marker: str, n: int = 0) -> dict:
    return {"host": f"db{n}.internal", "username": f"svc-{n}", "password": f"pw-{marker}-{n}", "port": 5432}


async def test_single_and_batched_credentials_round_trip_and_leave_no_plaintext(stack):
    marker = f"PLAINTEXT{uuid.uuid4().hex}"
    single = await SecretStore.save_secret(secret_config(marker))
    start = time.perf_counter()
    batch = await SecretStore.save_secrets([secret_config(marker, n) for n in range(1, 101)])
    published = time.perf_counter() - start
    await StateStore.sync_many([single, *batch], C, timeout=60)
    applied = time.perf_counter() - start
    RATES["published"], RATES["applied"] = 100 / published, 100 / applied
    print(f"batch of 100 credentials: published at {100 / published:.0f}/s, applied at {100 / applied:.0f}/s")

    assert len(set(batch)) == 100
    assert await SecretStore.get_credentials(single) == secret_config(marker)
    for n, guid in enumerate(batch, start=1):
        assert await SecretStore.get_credentials(guid) == secret_config(marker, n)

    # Wait until the snapshots are out, then search every place data rests or travels.
    from tests.integration.test_statestore import assert_snapshot_matches

    await assert_snapshot_matches(batch[-1], C)
    needle = marker.encode()
    if stack.redis is not None:
        client = redis.Redis(port=stack.ports.redis)
        client.bgrewriteaof()
        for stream in client.scan_iter():
            if client.type(stream) == b"stream":
                assert needle not in repr(client.xrange(stream)).encode(), stream
    # Every file of the stack: databases, broker logs, objects, process logs.
    places = [p for p in stack.local.rglob("*") if p.is_file()]
    stored = {"local": "dapr/statestore.db", "scale": "postgres/data/base/"}[stack.profile.name]
    assert any(stored in str(p) for p in places)
    assert any(p.suffix == ".json" and stack.object_root in p.parents for p in places)
    leaks = [str(p) for p in places if p.is_file() and needle in p.read_bytes()]
    assert leaks == []


async def test_unknown_guid():
    with pytest.raises(UnknownCredentialError, match="no credential"):
        await SecretStore.get_credentials(str(uuid.uuid4()))


async def test_wrong_key_and_tampered_ciphertext_are_distinct_errors():
    foreign = Keyring.from_secret({"active": "k1", "k1": new_key()})
    wrong = str(uuid.uuid4())
    await StateStore.save_state_object(wrong, seal(foreign, wrong, {"password": "x"}), C)
    good = await SecretStore.save_secret({"password": "y"})
    await StateStore.sync(good, C)
    sealed = await StateStore.get_state(good, C)
    tampered = dict(sealed, ciphertext=sealed["ciphertext"][:-4] + ("AAAA" if sealed["ciphertext"][-4:] != "AAAA" else "BBBB"))
    await StateStore.save_state_object(good, tampered, C)
    await asyncio.gather(StateStore.sync(wrong, C), StateStore.sync(good, C))
    with pytest.raises(WrongKeyError):
        await SecretStore.get_credentials(wrong)
    with pytest.raises(TamperedCredentialError):
        await SecretStore.get_credentials(good)


async def test_workflow_arguments_keep_a_guid_instead_of_credentials():
    args = {"workflow_id": "wf-cred", "credentials": {"password": "z"}, "output_path": "/data"}
    stored = await replace_credentials_with_guid(args)
    assert "credentials" not in stored and stored["output_path"] == "/data"
    await StateStore.sync(stored["credential_guid"], C)
    assert await SecretStore.get_credentials(stored["credential_guid"]) == {"password": "z"}


async def test_rotation_new_key_for_new_writes_old_still_decrypt_reencrypt_moves_all(stack):
    old = await SecretStore.save_secret({"password": "before rotation"})
    await StateStore.sync(old, C)
    old_key = (await StateStore.get_state(old, C))["key_id"]
    new_key_id = rotate_keyring(stack.keys_file)
    # local.file reads its file at start: restart the caller's sidecar to serve the new keyring.
    stack.caller_sidecar.stop()
    await asyncio.to_thread(stack.start_sidecar, stack.caller_sidecar, stack.ports.caller)
    await SecretStore.keyring(refresh=True)

    new = await SecretStore.save_secret({"password": "after rotation"})
    await StateStore.sync(new, C)
    assert (await StateStore.get_state(new, C))["key_id"] == new_key_id != old_key
    assert await SecretStore.get_credentials(old) == {"password": "before rotation"}

    moved, failed = await SecretStore.reencrypt_all()
    assert moved >= 1 and old not in failed
    assert all("altered" in reason for reason in failed.values())  # the tampered one above, if it ran
    assert (await StateStore.get_state(old, C))["key_id"] == new_key_id
    assert await SecretStore.get_credentials(old) == {"password": "before rotation"}
    index = await StateStore.get_state(INDEX_ID, C)
    assert {key_id for guid, key_id in index.items() if guid not in failed} == {new_key_id}


async def test_the_subscriber_and_other_app_ids_cannot_read_keys_or_publish(stack, subscriber_sidecar):
    with pytest.raises(SidecarUnavailableError, match="secret"):
        await subscriber_sidecar.get_secret("secretstore", "statestore-keyring")
    spec = Ports.free().caller
    intruder_spec = SidecarSpec("intruder", spec.http_port, spec.grpc_port, spec.metrics_port, spec.internal_grpc_port)
    intruder = stack._process("intruder-daprd", stack._daprd_argv(intruder_spec))
    await asyncio.to_thread(stack.start_sidecar, intruder, intruder_spec)
    client = SidecarClient(sidecar_settings(stack, spec.grpc_port))  # a valid token, the wrong app id
    try:
        with pytest.raises(SidecarUnavailableError, match="secret"):
            await client.get_secret("secretstore", "statestore-keyring")
        with pytest.raises(SidecarUnavailableError, match="pubsub"):
            await client.publish("pubsub", "statestore-events", b"{}", "application/json")
        with pytest.raises(SidecarUnavailableError, match="statestore"):
            await client.get_state("statestore", "workflows/anything")
    finally:
        await client.close()
        intruder.stop()


async def test_api_tokens_keep_out_callers_and_apps_without_them(stack):
    import grpc
    from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc

    anonymous = SidecarClient(SidecarSettings(dapr_grpc_port=stack.ports.caller.grpc_port, dapr_api_token=None))
    try:
        with pytest.raises(SidecarUnavailableError, match="UNAUTHENTICATED"):
            await anonymous.get_state("statestore", "workflows/anything")
    finally:
        await anonymous.close()
    # The subscriber app itself answers only its sidecar (APP_API_TOKEN).
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.subscriber.app_port}") as channel:
        stub = appcallback_pb2_grpc.AppCallbackStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.OnTopicEvent(appcallback_pb2.TopicEventRequest(topic="statestore-events"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.OnBulkTopicEvent(appcallback_pb2.TopicEventBulkRequest(topic="statestore-events"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
