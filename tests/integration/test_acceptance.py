"""Issue 13.4: one acceptance suite, run against the real stack and the in-memory store.

The ``backend`` fixture yields either; each test uses only the public API plus a backend
probe for the object-store snapshot and for letting a TTL pass.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from statestore import InvalidValueError, SecretStore, StateStore, StateType, build_state_store_path
from statestore.testing import memory_state_store
from statestore.core.paths import object_key
from tests.integration.conftest import eventually

W, C = StateType.WORKFLOWS, StateType.CREDENTIALS


class StackBackend:
    name = "stack"

    def snapshot(self, id: str, state_type: StateType = W) -> Any:
        try:
            return json.loads(Path(build_state_store_path(id, state_type)).read_text())
        except (FileNotFoundError, ValueError):
            return None

    async def let_expire(self, seconds: int, id: str) -> None:
        async def gone():
            return await StateStore.get_state(id, W) is None

        await eventually(gone, timeout=seconds + 15)

    async def sweep(self) -> None:
        pass  # the subscriber sweeps every second on the test stack (conftest)


class MemoryBackend:
    name = "memory"

    def __init__(self, store) -> None:
        self.store = store

    def snapshot(self, id: str, state_type: StateType = W) -> Any:
        return self.store.snapshot(object_key(id, state_type))

    async def let_expire(self, seconds: int, id: str) -> None:
        self.store.advance(seconds + 0.001)

    async def sweep(self) -> None:
        self.store.advance(1)  # the end of the marker's 1-second bucket
        await self.store.sweep_expired()


@pytest.fixture(params=["stack", "memory"])
def backend(request):
    if request.param == "stack":
        yield StackBackend()
    else:
        with memory_state_store() as store:
            yield MemoryBackend(store)


def new_id(prefix: str = "acc") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def snapshot_is(backend, id: str, expected, state_type: StateType = W, timeout: float = 10) -> None:
    async def matches():
        return backend.snapshot(id, state_type) == expected

    await eventually(matches, timeout=timeout)


async def test_save_sync_get_and_snapshot(backend):
    wf = new_id()
    await StateStore.save_state_object(wf, {"status": "running", "progress": 0}, W)
    await StateStore.save_state("progress", 50, wf, W)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == {"status": "running", "progress": 50}
    await snapshot_is(backend, wf, {"status": "running", "progress": 50})
    assert await StateStore.get_state(new_id(), W) is None


async def test_later_writes_of_one_process_win_and_a_replace_drops_older_fields(backend):
    wf = new_id()
    for n in range(20):
        await StateStore.save_state("n", n, wf, W)
    await StateStore.save_state_object(wf, {"only": True}, W)
    await StateStore.save_state("after", 1, wf, W)
    await StateStore.flush()
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == {"only": True, "after": 1}


async def test_delete_state_and_delete_field(backend):
    wf = new_id()
    await StateStore.save_state_object(wf, {"a": 1, "b": 2}, W)
    await StateStore.delete_field("a", wf, W)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == {"b": 2}
    await StateStore.delete_state(wf, W)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) is None
    await snapshot_is(backend, wf, None)
    await StateStore.save_state("c", 3, wf, W)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == {"c": 3}
    await snapshot_is(backend, wf, {"c": 3})


async def test_ttl_expires_the_state_and_its_snapshot_and_a_later_write_recreates_it(backend):
    wf = new_id()
    await StateStore.save_state("a", 1, wf, W, ttl_seconds=2)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == {"a": 1}
    await snapshot_is(backend, wf, {"a": 1})
    await backend.let_expire(2, wf)
    assert await StateStore.get_state(wf, W) is None
    await backend.sweep()
    await snapshot_is(backend, wf, None, timeout=30)  # the expiry sweep
    await StateStore.save_state("a", 2, wf, W)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == {"a": 2}
    await snapshot_is(backend, wf, {"a": 2})


async def test_list_states_pages_sorted_ids_of_existing_states(backend):
    run = uuid.uuid4().hex[:6]
    ids = [f"acl-{run}-{n:03d}" for n in range(25)]
    for id in ids:
        await StateStore.save_state("n", 1, id, W)
    await StateStore.sync_many(ids, W)
    await StateStore.delete_state(ids[3], W)
    await StateStore.sync(ids[3], W)
    first = await StateStore.list_states(W, prefix=f"acl-{run}-", page_size=10)
    listed, token = list(first.ids), first.next_page_token
    while token:
        page = await StateStore.list_states(W, prefix=f"acl-{run}-", page_size=10, page_token=token)
        listed += page.ids
        token = page.next_page_token
    assert listed == [i for i in ids if i != ids[3]]


async def test_bad_input_is_refused_the_same_way(backend):
    with pytest.raises(InvalidValueError, match="ttl_seconds"):
        await StateStore.save_state("a", 1, new_id(), W, ttl_seconds=0)
    with pytest.raises(InvalidValueError, match="page_token"):
        await StateStore.list_states(W, page_token="not-a-token!")
    with pytest.raises(ValueError):
        await StateStore.save_state("a", 1, "../etc", W)


async def test_secret_store_round_trip_sealed(backend):
    guid = await SecretStore.save_secret({"host": "db", "password": "hunter2"})
    await StateStore.sync(guid, C)
    assert await SecretStore.get_credentials(guid) == {"host": "db", "password": "hunter2"}
    stored = await StateStore.get_state(guid, C)
    assert "hunter2" not in json.dumps(stored)  # sealed in both backends


def test_the_pytest_plugin_fixture_is_registered(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("statestore")
