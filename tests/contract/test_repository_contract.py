"""One contract for every StateRepository and ObjectStore: in-memory here, Dapr in
tests/integration/test_contract_dapr.py (same assertions, real sidecar)."""

import uuid

import pytest

from statestore.subscriber.ports import EtagMismatchError, InMemoryObjectStore, InMemoryStateRepository, Upsert


class RepositoryContract:
    @pytest.fixture
    def repository(self):
        raise NotImplementedError

    @staticmethod
    def key():
        return f"workflows/contract-{uuid.uuid4().hex[:10]}"

    async def test_missing_keys_are_absent(self, repository):
        assert await repository.load([self.key()]) == {}

    async def test_create_then_update_with_etag(self, repository):
        key = self.key()
        await repository.commit([Upsert(key, b'{"v":1}', None)])
        item = (await repository.load([key]))[key]
        assert item.value == b'{"v":1}' and item.etag
        await repository.commit([Upsert(key, b'{"v":2}', item.etag)])
        assert (await repository.load([key]))[key].value == b'{"v":2}'

    async def test_create_fails_when_the_key_exists(self, repository):
        key = self.key()
        await repository.commit([Upsert(key, b"{}", None)])
        with pytest.raises(EtagMismatchError):
            await repository.commit([Upsert(key, b'{"lost":1}', None)])

    async def test_an_overwrite_creates_or_replaces_without_a_check(self, repository):
        """A new credential's direct write (Upsert.overwrite): no first-write check."""
        key = self.key()
        await repository.commit([Upsert(key, b'{"v":1}', None, overwrite=True)])
        await repository.commit([Upsert(key, b'{"v":2}', None, overwrite=True)])
        assert (await repository.load([key]))[key].value == b'{"v":2}'

    async def test_stale_etag_fails_and_writes_nothing(self, repository):
        a, b = self.key(), self.key()
        await repository.commit([Upsert(a, b'{"a":1}', None)])
        stale = (await repository.load([a]))[a].etag
        await repository.commit([Upsert(a, b'{"a":2}', stale)])
        with pytest.raises(EtagMismatchError):
            await repository.commit([Upsert(b, b'{"b":1}', None), Upsert(a, b'{"a":3}', stale)])
        found = await repository.load([a, b])
        assert found[a].value == b'{"a":2}' and b not in found  # all or nothing


class ObjectStoreContract:
    @pytest.fixture
    def objects(self):
        raise NotImplementedError

    async def test_put_then_get(self, objects):
        key = f"persistent-artifacts/apps/contract/workflows/{uuid.uuid4().hex[:8]}/config.json"
        assert await objects.get(key) is None
        await objects.put(key, b'{"a": 1}')
        await objects.put(key, b'{"a": 2}')
        assert await objects.get(key) == b'{"a": 2}'

    async def test_delete_removes_and_deleting_nothing_is_fine(self, objects):
        key = f"persistent-artifacts/apps/contract/workflows/{uuid.uuid4().hex[:8]}/config.json"
        await objects.put(key, b'{"a": 1}')
        await objects.delete(key)
        assert await objects.get(key) is None
        await objects.delete(key)  # a redelivered delete: already gone, no error

    async def test_list_gives_the_keys_under_a_folder_and_removing_folders_keeps_every_object(self, objects):
        folder = f"statestore-expiry/contract-{uuid.uuid4().hex[:8]}/"
        assert await objects.list(folder) == []  # nothing there yet
        keys = [f"{folder}workflows/a", f"{folder}workflows/b", f"{folder}orders/workflows/c"]
        for key in keys:
            await objects.put(key, b"{}")
        await objects.put(f"{folder[:-1]}x/workflows/d", b"{}")  # a sibling with the same start: not listed
        assert sorted(await objects.list(folder)) == sorted(keys)
        await objects.delete(keys[0])
        await objects.remove_folders([f"{folder}workflows", f"{folder}orders/workflows", f"{folder}orders", folder[:-1]])
        assert sorted(await objects.list(folder)) == sorted(keys[1:])  # full folders stay, and their objects
        for key in keys[1:]:
            await objects.delete(key)
        await objects.remove_folders([f"{folder}workflows", f"{folder}orders/workflows", f"{folder}orders", folder[:-1]])
        assert await objects.list(folder) == []
        await objects.delete(f"{folder[:-1]}x/workflows/d")


class TestInMemoryRepository(RepositoryContract):
    @pytest.fixture
    def repository(self):
        return InMemoryStateRepository()


class TestInMemoryObjectStore(ObjectStoreContract):
    @pytest.fixture
    def objects(self):
        return InMemoryObjectStore()
