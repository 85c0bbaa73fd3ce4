"""The pytest plugin's ``memory_state_store`` fixture, as an app's own test uses it:
no stack, nothing imported from statestore.testing."""

from statestore import StateStore, StateType
from statestore.publisher.runtime import get_runtime

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

    from statestore import ListingDisabledError
    from statestore.core.index import ENABLED_KEY

    await StateStore.save_state("status", "done", "wf-1", W)
    await StateStore.sync("wf-1", W, timeout=1)
    assert (await StateStore.list_states(W)).ids == ["wf-1"]
    del memory_state_store.repository.items[ENABLED_KEY]  # as with STATESTORE_LIST_INDEX unset
    with pytest.raises(ListingDisabledError, match="STATESTORE_LIST_INDEX=1"):
        await StateStore.list_states(W)


async def test_an_expired_states_snapshot_goes_with_the_sweep_and_a_rewritten_one_stays(memory_state_store):
    from statestore.core.paths import object_key

    await StateStore.save_state("status", "done", "wf-gone", W, ttl_seconds=60)
    await StateStore.save_state("status", "done", "wf-kept", W, ttl_seconds=60)
    await StateStore.save_state("status", "forever", "wf-kept", W)  # rewritten without a TTL
    await StateStore.sync_many(["wf-gone", "wf-kept"], W, timeout=1)
    memory_state_store.advance(30)
    assert await memory_state_store.sweep_expired() == 0  # nothing due yet
    memory_state_store.advance(32)
    assert await StateStore.get_state("wf-gone", W) is None
    assert memory_state_store.snapshot(object_key("wf-gone", W)) == {"status": "done"}  # until the sweep
    assert await memory_state_store.sweep_expired() == 1
    assert memory_state_store.snapshot(object_key("wf-gone", W)) is None
    assert memory_state_store.snapshot(object_key("wf-kept", W)) == {"status": "forever"}
    assert not [k for k in memory_state_store.objects.objects if k.startswith("statestore-expiry/")]


async def test_default_retention_per_type_applies_when_a_write_gives_no_ttl(monkeypatch):
    """STATESTORE_TTL_WORKFLOWS_S: workflow writes without ttl_seconds expire after it;
    an explicit ttl_seconds wins; credentials have no default retention."""
    from statestore import SecretStore
    from statestore.testing import memory_state_store
    from statestore.core.document import decode_document
    from statestore.core.settings import get_settings

    monkeypatch.setenv("STATESTORE_TTL_WORKFLOWS_S", "86400")
    get_settings.cache_clear()
    try:
        with memory_state_store() as store:

            def ttl(key):
                return decode_document(key, store.repository.items[key].value).ttl_s

            await StateStore.save_state("status", "done", "wf-default", W)
            await StateStore.save_state_object("wf-explicit", {"status": "done"}, W, ttl_seconds=60)
            guid = await SecretStore.save_secret({"password": "s3cret"})
            await StateStore.sync_many(["wf-default", "wf-explicit"], W, timeout=1)
            assert ttl("workflows/wf-default") == 86400
            assert ttl("workflows/wf-explicit") == 60
            assert ttl(f"credentials/{guid}") is None
            store.advance(86401)
            assert await StateStore.get_state("wf-default", W) is None
            assert await SecretStore.get_credentials(guid) == {"password": "s3cret"}
    finally:
        monkeypatch.delenv("STATESTORE_TTL_WORKFLOWS_S")
        get_settings.cache_clear()
    with memory_state_store() as store:  # unset: no default, states stay
        await StateStore.save_state("status", "done", "wf-default", W)
        await StateStore.sync("wf-default", W, timeout=1)
        store.advance(10**7)
        assert await StateStore.get_state("wf-default", W) == {"status": "done"}


async def test_credentials_are_written_ahead_then_applied_snapshotted_and_listed_in_memory():
    """The memory store runs save_secrets' real path: the direct write through the
    (memory) sidecar, then the event, which the applier turns into the final document."""
    from statestore import SecretStore, StateType
    from statestore.testing import memory_state_store
    from statestore.core.document import decode_document
    from statestore.core.paths import object_key

    with memory_state_store() as store:
        guids = await SecretStore.save_secrets([{"password": "a"}, {"password": "b"}])
        for guid in guids:
            key = f"credentials/{guid}"
            assert not decode_document(key, store.repository.items[key].value).provisional
            assert store.snapshot(object_key(guid, StateType.CREDENTIALS))["key_id"] == "k1"
        assert sorted((await StateStore.list_states(StateType.CREDENTIALS)).ids) == sorted(guids)
        assert [await SecretStore.get_credentials(g) for g in guids] == [{"password": "a"}, {"password": "b"}]


async def test_a_confirmed_replace_and_own_writes_in_memory(memory_state_store):
    """save_state_object is stored on return; a process reads its own fire-and-forget writes."""
    from statestore.core.paths import object_key

    assert await StateStore.save_state_object("wf-args", {"workflow_id": "wf-args"}, W) == {"workflow_id": "wf-args"}
    assert await StateStore.get_state("wf-args", W) == {"workflow_id": "wf-args"}
    await StateStore.flush()  # its event follows the write: the subscriber's apply writes the snapshot
    assert memory_state_store.snapshot(object_key("wf-args", W)) == {"workflow_id": "wf-args"}
    await StateStore.save_state("status", "running", "wf-args", W)
    assert await StateStore.get_state("wf-args", W) == {"workflow_id": "wf-args", "status": "running"}
    await StateStore.delete_state("wf-args", W)
    assert await StateStore.get_state("wf-args", W) is None


async def test_a_confirmed_replace_supersedes_a_stored_stamp_from_the_future(memory_state_store):
    """A writer whose clock ran two minutes ahead stored a field; a replace written after
    it (by a process that never read the state, so its clock has not seen that stamp) is
    stamped again after it, and supersedes it."""
    import time

    from tests.strategies import field_updated

    ahead = field_updated("status", "from the future", producer="fast-clock", seq=1,
                          hlc=(int(time.time() * 1000) + 120_000, 0), state_id="wf-skew")  # fmt: skip
    await memory_state_store.applier.apply([ahead])
    await StateStore.save_state_object("wf-skew", {"status": "final"}, W)
    assert await StateStore.get_state("wf-skew", W) == {"status": "final"}
