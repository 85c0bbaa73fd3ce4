"""Issue 12: the `statestore` command against the real stack."""

import asyncio
import json
import subprocess
import sys
import uuid

from statestore.devstack.stack import PROJECT_ROOT
from statestore import StateStore, StateType
from tests.integration.conftest import python_env

W = StateType.WORKFLOWS


def statestore(stack, *args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "statestore.cli", *args], cwd=PROJECT_ROOT,
                          env={**python_env(stack), **(env or {})}, capture_output=True, text=True, timeout=timeout)  # fmt: skip


async def written(state_id):
    await StateStore.save_state_object(state_id, {"status": "running", "config": {"batch": 10}}, W)
    await StateStore.save_state("progress", 42, state_id, W)
    await StateStore.sync(state_id, W)


async def test_get_prints_what_get_state_returns(stack):
    wf = f"cli-{uuid.uuid4().hex[:8]}"
    await written(wf)
    result = statestore(stack, "get", wf)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == await StateStore.get_state(wf, W) == {"status": "running", "config": {"batch": 10},
                                                                            "progress": 42}  # fmt: skip


async def test_inspect_shows_stamps_producers_and_the_snapshot(stack):
    wf = f"cli-{uuid.uuid4().hex[:8]}"
    await written(wf)
    result = statestore(stack, "inspect", wf)
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["key"] == f"workflows/{wf}" and view["state"]["progress"] == 42
    # The confirmed replace is stamped by the process's confirmed-write producer id, the
    # field update by its other one: each is that producer's first event of the state.
    field, replaced = view["fields"]["progress"]["written"], view["replaced"]
    assert field["seq"] == replaced["seq"] == 1 and field["producer"] != replaced["producer"]
    assert {p: v["processed_upto"] for p, v in view["producers"].items()} == {field["producer"]: 1, replaced["producer"]: 1}
    assert view["snapshot"].startswith(("up to date", "behind", "not written yet"))


async def test_watch_prints_each_change_as_it_is_applied(stack):
    wf = f"cli-{uuid.uuid4().hex[:8]}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statestore.cli", "watch", wf, "--count", "3", "--interval", "0.05",
        cwd=PROJECT_ROOT, env=python_env(stack), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip

    async def line() -> str:
        return (await asyncio.wait_for(process.stdout.readline(), 60)).decode()

    assert "watching" in await line()
    assert "(no state)" in await line()
    await StateStore.save_state("status", "running", wf, W)
    # Each write waits until the watcher printed the one before: it polls, so two writes in
    # quick succession may show as one change.
    assert '+ status = "running"' in await line()
    await StateStore.save_state("status", "done", wf, W)
    assert '~ status = "done"' in await line()
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()


def test_error_paths_say_what_is_wrong_without_a_traceback(stack):
    missing = statestore(stack, "get", f"never-{uuid.uuid4().hex[:8]}")
    assert missing.returncode == 1 and "no workflows state" in missing.stderr
    bad_type = statestore(stack, "get", "wf-1", "--type", "secrets")
    assert bad_type.returncode == 2 and "'secrets' is not one of" in bad_type.stderr
    bad_id = statestore(stack, "get", "../etc")
    assert bad_id.returncode == 2 and "safe set" in bad_id.stderr
    down = statestore(stack, "get", "wf-1", env={"DAPR_GRPC_PORT": "1", "DAPR_API_TIMEOUT_SECONDS": "1"})
    assert down.returncode == 2 and "did not answer" in down.stderr
    for result in (missing, bad_type, bad_id, down):
        assert "Traceback" not in result.stderr + result.stdout
