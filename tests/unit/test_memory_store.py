"""The pytest plugin's ``memory_state_store`` fixture, as an app's own test uses it:
no stack, nothing imported from publisher.testing."""

from publisher import StateStore, StateType
from publisher.runtime import get_runtime

W = StateType.WORKFLOWS


async def test_an_app_test_runs_the_real_api_in_memory(memory_state_store):
    await StateStore.save_state("status", "done", "wf-1", W, ttl_seconds=60)
    await StateStore.sync("wf-1", W, timeout=1)
    assert await StateStore.get_state("wf-1", W) == {"status": "done"}
    assert memory_state_store.published == 1
    memory_state_store.advance(61)
    assert await StateStore.get_state("wf-1", W) is None


def test_the_fixture_puts_the_real_runtime_back(memory_state_store):
    assert get_runtime().sidecar_factory is not None


def test_outside_the_fixture_the_runtime_talks_to_a_sidecar():
    assert get_runtime().sidecar_factory is None


async def test_listing_without_a_subscriber_that_keeps_the_index_is_a_clear_error(memory_state_store):
    import pytest

    from publisher import ListingDisabledError
    from statestore.index import ENABLED_KEY

    await StateStore.save_state("status", "done", "wf-1", W)
    await StateStore.sync("wf-1", W, timeout=1)
    assert (await StateStore.list_states(W)).ids == ["wf-1"]
    del memory_state_store.repository.items[ENABLED_KEY]  # as with STATESTORE_LIST_INDEX unset
    with pytest.raises(ListingDisabledError, match="STATESTORE_LIST_INDEX=1"):
        await StateStore.list_states(W)
