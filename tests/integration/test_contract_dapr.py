"""The port contracts of tests/contract, run against the Dapr adapters on the real stack."""

import pytest

from subscriber.dapr_ports import DaprObjectStore, DaprStateRepository
from tests.contract.test_repository_contract import ObjectStoreContract, RepositoryContract


class TestDaprStateRepository(RepositoryContract):
    @pytest.fixture
    def repository(self, subscriber_sidecar):
        return DaprStateRepository(subscriber_sidecar, "statestore")


class TestDaprObjectStore(ObjectStoreContract):
    @pytest.fixture
    def objects(self, subscriber_sidecar):
        return DaprObjectStore(subscriber_sidecar, "objectstore")
