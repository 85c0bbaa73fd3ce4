"""The reference successor's interface (issue 28.3): StateStoreClient satisfies a copy of
``application_sdk.infrastructure.state.StateStore``'s four signatures, and works in memory."""

from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

import pytest

from statestore import InvalidValueError, StateStore, StateStoreClient, StateType


@runtime_checkable
class SuccessorStateStore(Protocol):
    """A copy of the Atlan application SDK 3.x protocol (application_sdk.infrastructure.state)."""

    async def save(self, key: str, value: dict) -> None: ...
    async def load(self, key: str) -> dict | None: ...
    async def delete(self, key: str) -> bool: ...
    async def list_keys(self, prefix: str = "") -> list[str]: ...


def test_it_satisfies_the_successors_protocol_signature_by_signature():
    client = StateStoreClient(StateType.WORKFLOWS)
    assert isinstance(client, SuccessorStateStore)
    for name in ("save", "load", "delete", "list_keys"):
        ours, theirs = inspect.signature(getattr(StateStoreClient, name)), inspect.signature(getattr(SuccessorStateStore, name))
        assert list(ours.parameters) == list(theirs.parameters), name
        assert [p.default for p in ours.parameters.values()] == [p.default for p in theirs.parameters.values()], name
        assert inspect.iscoroutinefunction(getattr(client, name)), name


def test_a_type_checker_accepts_it_where_the_protocol_is_wanted():
    def inject(store: SuccessorStateStore) -> SuccessorStateStore:
        return store

    assert inject(StateStoreClient(StateType.CREDENTIALS, app="orders")).app == "orders"


async def test_save_load_delete_list_in_memory_beside_the_class_methods(memory_state_store):
    workflows, orders = StateStoreClient(StateType.WORKFLOWS), StateStoreClient(StateType.WORKFLOWS, app="orders")
    await workflows.save("wf-1", {"status": "running"})
    await workflows.save("wf-2", {"status": "done"})
    await orders.save("wf-1", {"status": "theirs"})
    assert await workflows.load("wf-1") == {"status": "running"}
    assert await StateStore.get_state("wf-1", StateType.WORKFLOWS) == {"status": "running"}  # side by side
    assert await orders.load("wf-1") == {"status": "theirs"}  # another app: another state
    assert await workflows.load("nope") is None
    await StateStore.flush()  # the events follow the writes: the subscriber indexes the ids
    assert await workflows.list_keys() == ["wf-1", "wf-2"] and await workflows.list_keys("wf-2") == ["wf-2"]
    assert await orders.list_keys() == ["wf-1"]
    assert await workflows.delete("wf-1") is True
    assert await workflows.load("wf-1") is None and await workflows.delete("wf-1") is False
    assert await orders.load("wf-1") == {"status": "theirs"}
    with pytest.raises(InvalidValueError):
        await workflows.save("wf-3", {"not json": object()})
