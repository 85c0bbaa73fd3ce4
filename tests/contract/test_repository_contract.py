"""One contract for every StateRepository and ObjectStore: in-memory and local files here,
Dapr and S3 in tests/integration/test_contract_dapr.py (same assertions, real servers)."""

import uuid

import pytest

from statestore.subscriber.objectstore import LocalFileObjectStore
from statestore.subscriber.ports import (
    EtagMismatchError,
    InMemoryObjectStore,
    InMemoryStateRepository,
    ObjectChangedError,
    Upsert,
)


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

    @pytest.fixture
    def other_writer(self, objects):
        """A second writer over the same objects, with its own memory of versions (another replica)."""
        raise NotImplementedError

    @staticmethod
    def snapshot_key():
        return f"persistent-artifacts/apps/contract/workflows/{uuid.uuid4().hex[:8]}/config.json"

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

    async def test_a_conditional_put_creates_then_replaces_what_this_writer_wrote(self, objects):
        key = self.snapshot_key()
        await objects.put(key, b'{"v": 1}', timeout=5.0, conditional=True)
        await objects.put(key, b'{"v": 2}', timeout=5.0, conditional=True)
        assert await objects.get(key) == b'{"v": 2}'

    async def test_a_conditional_put_over_another_writers_object_fails_and_writes_nothing(self, objects, other_writer):
        """The snapshot fence: a writer whose source is older than what another writer
        wrote since cannot put it back; after the refusal it knows the current version."""
        key = self.snapshot_key()
        await objects.put(key, b'{"v": 1}', conditional=True)
        with pytest.raises(ObjectChangedError):
            await other_writer.put(key, b'{"v": 0}', conditional=True)  # never saw it: create only
        assert await objects.get(key) == b'{"v": 1}'
        await other_writer.put(key, b'{"v": 2}', conditional=True)  # now it knows the version
        with pytest.raises(ObjectChangedError):
            await objects.put(key, b'{"v": 1.5}', conditional=True)  # a deposed writer's late put
        assert await objects.get(key) == b'{"v": 2}'
        await objects.put(key, b'{"v": 3}', conditional=True)  # read again, put again: allowed
        assert await objects.get(key) == b'{"v": 3}'

    async def test_a_conditional_put_after_another_writer_deleted_the_object_fails(self, objects, other_writer):
        key = self.snapshot_key()
        await objects.put(key, b'{"v": 1}', conditional=True)
        await other_writer.delete(key)
        with pytest.raises(ObjectChangedError):
            await objects.put(key, b'{"v": 0}', conditional=True)
        assert await objects.get(key) is None
        await objects.put(key, b'{"v": 2}', conditional=True)
        assert await objects.get(key) == b'{"v": 2}'

    async def test_put_many_writes_each_and_names_those_another_writer_changed(self, objects, other_writer):
        a, b = self.snapshot_key(), self.snapshot_key()
        assert await objects.put_many([(a, b'{"v": 1}'), (b, b'{"v": 1}')], timeout=5.0) == []
        await other_writer.put(b, b'{"v": "theirs"}')
        assert await objects.put_many([(a, b'{"v": 2}'), (b, b'{"v": 2}')], timeout=5.0) == [b]
        assert (await objects.get(a), await objects.get(b)) == (b'{"v": 2}', b'{"v": "theirs"}')
        assert await objects.put_many([(a, b'{"v": 2}'), (b, b'{"v": 3}')], timeout=5.0) == []  # b: now known
        assert (await objects.get(a), await objects.get(b)) == (b'{"v": 2}', b'{"v": 3}')
        with pytest.raises(TimeoutError):
            await objects.put_many([(a, b'{"v": 4}')], timeout=0.0)
        assert await objects.get(a) == b'{"v": 2}'

    async def test_a_put_past_its_deadline_fails_and_never_lands(self, objects):
        """The write window: a write whose deadline passed is refused, not written late."""
        key = self.snapshot_key()
        with pytest.raises(TimeoutError):
            await objects.put(key, b"{}", timeout=0.0, conditional=True)
        with pytest.raises(TimeoutError):
            await objects.put(key, b"{}", timeout=-1.0)
        assert await objects.get(key) is None
        assert await objects.list(key.rsplit("/", 1)[0] + "/") == []  # no temporary left either

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

    @pytest.fixture
    def other_writer(self, objects):
        return objects.writer()


class TestLocalFileObjectStore(ObjectStoreContract):
    @pytest.fixture
    def objects(self, tmp_path):
        return LocalFileObjectStore(tmp_path)

    @pytest.fixture
    def other_writer(self, objects):
        return LocalFileObjectStore(objects.root)
