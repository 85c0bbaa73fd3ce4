"""The port contracts of tests/contract, run against the Dapr adapters on the real stack."""

import pytest

from statestore.subscriber.dapr_ports import DaprObjectStore, DaprStateRepository
from tests.contract.test_repository_contract import ObjectStoreContract, RepositoryContract


class TestDaprStateRepository(RepositoryContract):
    @pytest.fixture
    def repository(self, subscriber_sidecar):
        return DaprStateRepository(subscriber_sidecar, "statestore")


class TestDaprObjectStore(ObjectStoreContract):
    @pytest.fixture
    def objects(self, subscriber_sidecar):
        return DaprObjectStore(subscriber_sidecar, "objectstore")

    async def test_a_write_past_its_deadline_fails_and_never_lands(self, objects):
        """Issue 10.6: the flusher's snapshot writes carry its lease window as their
        deadline; the adapter must hand it to the call, which then does not happen."""
        import uuid

        from statestore.core.sidecar import SidecarUnavailableError

        key = f"contract/deadline-{uuid.uuid4().hex}.json"
        with pytest.raises(SidecarUnavailableError, match="DEADLINE_EXCEEDED"):
            await objects.put(key, b"{}", timeout=-1.0)  # already past: gRPC rounds tiny deadlines up to 1 ms, which a loopback call can meet
        assert await objects.get(key) is None
        await objects.put(key, b"{}", timeout=5.0)  # a deadline it meets: written
        assert await objects.get(key) == b"{}"
        await objects.delete(key, timeout=5.0)
