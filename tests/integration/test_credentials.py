"""Issue 6: credentials sealed by the caller, nowhere in plaintext, rotation, access.
Issue 17: a returned guid is readable at once, from any process, whatever the backlog."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid

import pytest
import redis

from statestore.devstack import Ports
from statestore.devstack.processes import port_open
from statestore.devstack.stack import PROJECT_ROOT, SidecarSpec
from statestore import (
    CredentialNotStoredError,
    InvalidValueError,
    SecretStore,
    SidecarUnavailableError,
    StateStore,
    StateType,
    TamperedCredentialError,
    UnknownCredentialError,
    WrongKeyError,
    replace_credentials_with_guid,
)
from statestore.publisher.crypto import Keyring, new_key, seal
from statestore.publisher.keys import rotate_keyring
from statestore.publisher.objectlist import list_state_ids
from statestore.core.paths import state_key
from statestore.core.settings import SidecarSettings, get_settings
from statestore.core.sidecar import SidecarClient
from tests.integration.conftest import eventually, python_env, sidecar_settings
from tests.strategies import credential_configs

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


async def test_rotation_new_key_for_new_writes_old_still_decrypt_reencrypt_moves_all(stack, subscriber_objects):
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

    # The operator's tool, as the README runs it: the caller's sidecar for keys and state,
    # the subscriber's object-store settings for listing the snapshots (no shared index document).
    from tests.integration.test_statestore import assert_snapshot_matches

    await assert_snapshot_matches(old, C)  # reencrypt lists what has a snapshot
    await assert_snapshot_matches(new, C)
    env = {**python_env(stack), **stack.objectstore_env()}
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "statestore.publisher.keys", "reencrypt"],
                                   cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert "re-encrypted" in done.stdout, done.stdout + done.stderr
    moved = int(done.stdout.split("re-encrypted ")[1].split()[0])
    # Credentials other tests sealed with a foreign key or tampered with are reported, not moved.
    failed = [line for line in done.stderr.splitlines() if line.startswith("not re-encrypted")]
    assert all("altered" in line or "does not hold" in line for line in failed), done.stderr
    assert done.returncode == (1 if failed else 0) and moved >= 1
    assert (await StateStore.get_state(old, C))["key_id"] == new_key_id
    assert (await StateStore.get_state(new, C))["key_id"] == new_key_id
    assert await SecretStore.get_credentials(old) == {"password": "before rotation"}
    # Snapshots follow the re-sealed states within the flusher's coalescing pause: list
    # once ours are rewritten (S3Proxy's file listing may skip a file being replaced).
    await assert_snapshot_matches(old, C)
    await assert_snapshot_matches(new, C)
    # Every credential that can be opened is now sealed with the new key.
    guids = await list_state_ids(subscriber_objects, C)
    assert old in guids and new in guids
    bad = {line.split("credential ")[1].split()[0].strip("'") for line in failed}
    states = await asyncio.gather(*(StateStore.get_state(g, C) for g in guids))
    assert {s["key_id"] for g, s in zip(guids, states) if g not in bad} == {new_key_id}


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
        with pytest.raises(SidecarUnavailableError, match="pubsub-credentials"):
            await client.publish("pubsub-credentials", "statestore-credentials", b"{}", "application/json")
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


# -- issue 17: durable on return ---------------------------------------------------------


async def test_save_secret_then_get_credentials_at_once_in_the_same_process():
    for n in range(20):
        config = secret_config(uuid.uuid4().hex, n)
        guid = await SecretStore.save_secret(config)
        assert await SecretStore.get_credentials(guid) == config  # no sync, no retry
    args = await replace_credentials_with_guid({"workflow_id": "wf-now", "credentials": {"password": "now"}})
    assert await SecretStore.get_credentials(args["credential_guid"]) == {"password": "now"}


@pytest.mark.parametrize("ahead", ["queued in the caller", "published to the broker"])
async def test_another_process_reads_200_guids_right_after_save_secrets_with_30000_updates_queued_ahead(stack, ahead):
    reader = subprocess.Popen([sys.executable, "-m", "tests.integration.credential_reader"], cwd=PROJECT_ROOT,
                              env=python_env(stack), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert await asyncio.to_thread(reader.stdout.readline) == "ready\n"
        progress = [f"backlog-{uuid.uuid4().hex[:8]}-{n}" for n in range(300)]
        for n in range(30_000):  # other workflows' progress, queued ahead of the credentials
            await StateStore.save_state("progress", n, progress[n % 300], StateType.WORKFLOWS)
        if ahead == "published to the broker":
            await StateStore.flush()  # all 30,000 wait in Redis and the subscriber, not here
        configs = [secret_config(uuid.uuid4().hex, n) for n in range(200)]
        guids = await SecretStore.save_secrets(configs)
        behind = StateStore._pipeline_of(StateType.WORKFLOWS).pending
        reader.stdin.write(json.dumps(guids) + "\n")
        reader.stdin.flush()
        result = json.loads(await asyncio.to_thread(reader.stdout.readline))
    finally:
        reader.kill()
        reader.wait()
    print(f"{ahead}: progress events still queued in the caller when save_secrets returned: {behind}")
    assert result["unreadable"] == [] and result["errors"] == [] and result["readable"] == 200
    assert result["configs"] == configs
    await StateStore.sync_many(progress, StateType.WORKFLOWS, timeout=120)


async def test_generated_credentials_round_trip_through_the_stack():
    from hypothesis import HealthCheck, given, settings

    examples: list[dict] = []

    @settings(max_examples=12, database=None, suppress_health_check=list(HealthCheck))
    @given(credential_configs)
    def collect(config):
        examples.append(config)

    collect()
    guids = await SecretStore.save_secrets(examples)
    assert [await SecretStore.get_credentials(g) for g in guids] == examples


async def test_a_bad_configuration_leaves_nothing_queued_and_no_orphans():
    issued = dict(StateStore.runtime()._issued)  # every state this process stamped an event for
    credentials = StateStore._pipeline_of(C)
    for bad in ({"password": object()}, {"password": float("nan")}, ["not", "a", "dict"], {"blob": "x" * (2 << 20)}):
        with pytest.raises(InvalidValueError, match="#2.*") as info:
            await SecretStore.save_secrets([{"password": "a"}, {"password": "b"}, bad, {"password": "d"}])
        assert "nothing was saved" in str(info.value).lower()
    assert dict(StateStore.runtime()._issued) == issued  # not one event was stamped, so none was queued
    assert credentials.pending == 0


async def stop_subscribers(stack) -> list:
    apps = [app for app, _ in stack.subscriber_pairs()]  # every replica (three on the scale profile)
    for app in apps:
        app.stop()
    return apps


async def start_subscribers(apps: list) -> None:
    for app in apps:
        app.start()
    for app in apps:
        port = int(app.env["STATESTORE_SUBSCRIBER_PORT"])
        await asyncio.to_thread(app.wait_healthy, lambda port=port: port_open(port), 60)


async def listed_credentials() -> set[str]:
    ids, token = [], None
    while True:
        page = await StateStore.list_states(C, page_size=10_000, page_token=token)
        ids += page.ids
        if (token := page.next_page_token) is None:
            return set(ids)


async def test_with_the_subscriber_stopped_saves_are_readable_at_once_and_snapshots_follow(stack):
    from tests.integration.test_statestore import snapshot

    configs = [secret_config(uuid.uuid4().hex, n) for n in range(20)]
    apps = await stop_subscribers(stack)
    try:
        guids = await SecretStore.save_secrets(configs, timeout=10)
        assert [await SecretStore.get_credentials(g) for g in guids] == configs  # stored without the subscriber
        assert all(snapshot(g, C) is None for g in guids)  # snapshot and listing wait for the subscriber
        assert not set(guids) & await listed_credentials()
        assert b'"provisional":true' in (await StateStore._runtime().sidecar.get_state(get_settings().statestore_name, state_key(guids[0], C))).value
    finally:
        await start_subscribers(apps)

    async def all_snapshotted():
        return all([snapshot(g, C) == await StateStore.get_state(g, C) for g in guids])

    await eventually(all_snapshotted, timeout=60)  # the subscriber applied their events: snapshots written
    assert set(guids) <= await listed_credentials()  # and indexed
    stored = await StateStore._runtime().query.get_documents(guids, C)
    assert not any(document.provisional for document in stored.values()) and len(stored) == 20
    assert [await SecretStore.get_credentials(g) for g in guids] == configs


async def test_timeout_names_the_unconfirmed_guids_and_they_are_stored_after_restart(stack):
    # A credential needs the caller's sidecar (the direct write) or, failing that, the
    # subscriber (the events): stop both, so neither way stores it within the timeout.
    configs = [secret_config(uuid.uuid4().hex, n) for n in range(5)]
    await SecretStore.keyring()
    apps = await stop_subscribers(stack)
    stack.caller_sidecar.kill()
    try:
        start = time.perf_counter()
        with pytest.raises(CredentialNotStoredError) as info:
            await SecretStore.save_secrets(configs, timeout=3)
        took = time.perf_counter() - start
    finally:
        await asyncio.to_thread(stack.start_sidecar, stack.caller_sidecar, stack.ports.caller)
    error = info.value
    try:
        assert len(error.guids) == 5 and all(guid in str(error) for guid in error.guids)
        assert "3 s" in str(error) and "subscriber" in str(error) and "direct write failed" in str(error)
        assert took < 3 + 1.5, took
        query = StateStore._runtime().query
        for guid in error.guids:
            assert await query.get_document(guid, StateType.CREDENTIALS) is None  # not stored yet: no half state either
        # This process reads its own queued writes (read-your-writes); other processes do not yet.
        assert sorted([await SecretStore.get_credentials(g) for g in error.guids], key=json.dumps) == sorted(configs, key=json.dumps)
    finally:
        await start_subscribers(apps)  # the queued events get published and applied

    async def all_stored():
        return all([await query.get_document(g, C) is not None for g in error.guids])

    await eventually(all_stored, timeout=60)
    assert sorted([await SecretStore.get_credentials(g) for g in error.guids], key=json.dumps) == sorted(configs, key=json.dumps)


async def test_readme_credentials_example_runs_as_written(stack):
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## Credentials", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", example], cwd=PROJECT_ROOT,
                                   env=python_env(stack), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "credential_guid" in done.stdout
