"""The real stack for integration tests: the profile's servers, daprd sidecars, the subscriber app(s).

One stack per test session in a temporary folder, on free ports, so tests never touch
./local or a stack started with `make up`. ``--profile scale`` runs Kafka, PostgreSQL,
S3Proxy and three subscriber replicas instead of Redis, sqlite and local files.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import redis

from statestore.devstack import Ports, Stack
from statestore.core.settings import Settings, SidecarSettings, get_settings, get_sidecar_settings
from statestore.core.sidecar import SidecarClient


# The list index on, and expiry swept every second in 1-second buckets: an expired state's
# snapshot goes within seconds (test_state_lifecycle.py), not minutes.
TEST_SUBSCRIBER_ENV = {"STATESTORE_LIST_INDEX": "1", "STATESTORE_EXPIRY_SWEEP_S": "1", "STATESTORE_EXPIRY_BUCKET_S": "1"}


@pytest.fixture(scope="session")
def stack(profile):
    # Not under pytest's basetemp: pytest resets that folder to 0700 whenever a session
    # starts, and PostgreSQL (run as the postgres user when we are root) must reach its
    # data folder through every parent, also when it restarts mid-session.
    base = Path(tempfile.mkdtemp(prefix="statestore-stack-"))
    base.chmod(0o711)
    # Tracing on for the whole session (the traced path under every test): the
    # subscribers append their spans to one file, exported within 0.2 s (test_traces).
    tracing = {"STATESTORE_TRACE_FILE": str(base / "spans.jsonl"), "OTEL_BSP_SCHEDULE_DELAY": "200"}
    stack = Stack(
        base, Ports.free(), api_tokens=True, profile=profile, extra_env={**TEST_SUBSCRIBER_ENV, **tracing},
        component_metadata={"cleanupInterval": "1s"},  # expired rows leave the store within seconds
    )  # fmt: skip
    stack.up()
    yield stack
    stack.down()
    assert not stack.running(), "make down must leave no process of ours running"
    # The folder holds every snapshot the session wrote (over 100,000 folders after
    # test_scale.py): deleting it took 34-65 s at the end of the session, which nothing
    # needs to wait for. `sh` returns at once; its rm goes on alone.
    subprocess.run(["sh", "-c", 'rm -rf "$0" &', str(base)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


@pytest.fixture(scope="session", autouse=True)
def caller_environment(stack):
    """Point this process's StateStore at the stack's caller sidecar."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in stack.caller_env().items():
            patch.setenv(name, value)
        get_settings.cache_clear()
        get_sidecar_settings.cache_clear()
        yield
    get_settings.cache_clear()
    get_sidecar_settings.cache_clear()


@pytest.fixture(scope="session")
def settings(caller_environment) -> Settings:
    return get_settings()


@pytest.fixture
async def subscriber_sidecar(stack):
    """A client of the subscriber's own sidecar (a second app id)."""
    client = SidecarClient(sidecar_settings(stack, stack.ports.subscriber.grpc_port))
    yield client
    await client.close()


@pytest.fixture
async def caller_sidecar(stack):
    client = SidecarClient(sidecar_settings(stack, stack.ports.caller.grpc_port))
    yield client
    await client.close()


def open_subscriber_objects(stack: Stack):
    """The subscriber's object store, opened from the settings the stack gives the subscriber
    (statestore.subscriber.objectstore: the folder, or S3 with the server's key pair)."""
    from statestore.subscriber.objectstore import open_object_store

    with pytest.MonkeyPatch.context() as patch:
        for name, value in stack.objectstore_env().items():
            patch.setenv(name, value)
        return open_object_store(Settings())


@pytest.fixture
def subscriber_objects(stack):
    return open_subscriber_objects(stack)


def sidecar_settings(stack: Stack, grpc_port: int) -> SidecarSettings:
    return SidecarSettings(dapr_grpc_port=grpc_port, dapr_api_token=stack.tokens.get("DAPR_API_TOKEN"))


async def eventually(probe, timeout: float = 30.0, interval: float = 0.02):
    """Await ``probe()`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {result!r})")
        await asyncio.sleep(interval)


def dead_letter_bodies(stack: Stack) -> list[bytes]:
    """Every message on the dead-letter topic, oldest first (Redis stream or Kafka topic)."""
    topic = get_settings().deadletter_topic
    if stack.redis is not None:
        client = redis.Redis(port=stack.ports.redis)
        return [fields[b"data"] for _, fields in client.xrange(topic, min="-", max="+")] if client.exists(topic) else []
    out = stack.servers["kafka"].tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer", "--topic", topic, "--from-beginning", "--timeout-ms", "4000"
    )
    return [line.encode() for line in out.splitlines() if line.strip()]


def subscriber_logs(stack: Stack) -> str:
    """The logs of every subscriber replica, one after another."""
    return "".join(app.log_path.read_text() for app, _ in stack.subscriber_pairs())


def python_env(stack: Stack) -> dict[str, str]:
    """Environment for a child Python process that uses the caller sidecar."""
    return {**os.environ, **stack.caller_env()}


def pytest_terminal_summary(terminalreporter):
    """The fault matrix's figures (for docs/reliability.md), when fault tests ran."""
    from tests.integration.faults import RESULTS

    if not RESULTS:
        return
    terminalreporter.section("reliability")
    terminalreporter.write_line("| fault | runs | events | lost | double-applied | snapshot behind | recover (s, max) |")
    terminalreporter.write_line("| --- | --- | --- | --- | --- | --- | --- |")
    for result in RESULTS:
        r = result.row()
        terminalreporter.write_line(
            f"| {r['fault']} | {r['runs']} | {r['events']} | {r['lost']} | {r['double_applied']} "
            f"| {r['snapshot_mismatches']} | {r['recover_s']} |"
        )
    moving = [result.row() for result in RESULTS if result.moved_s]
    if moving:  # issue 27's replica faults: how long the replica's partitions waited
        terminalreporter.write_line("")
        terminalreporter.write_line("| replica fault | runs | partitions moved (s, max) | backlog applied (s, max) |")
        terminalreporter.write_line("| --- | --- | --- | --- |")
        for r in moving:
            applied = "" if r["applied_s"] is None else r["applied_s"]
            terminalreporter.write_line(f"| {r['fault']} | {r['runs']} | {r['moved_s']} | {applied} |")
    out = os.environ.get("RELIABILITY_JSON")
    if out:
        import json

        with open(out, "w") as fh:
            json.dump([r.row() for r in RESULTS], fh, indent=2)
