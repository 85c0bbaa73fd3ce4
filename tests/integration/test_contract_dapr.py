"""The port contracts of tests/contract, run against the real adapters on the real stack:
the state store through the subscriber's sidecar, and the object store as the subscriber
opens it (a folder on the local profile, S3Proxy on the scale profile)."""

import pytest

from statestore.subscriber.dapr_ports import DaprStateRepository
from tests.contract.test_repository_contract import ObjectStoreContract, RepositoryContract
from tests.integration.conftest import open_subscriber_objects


class TestDaprStateRepository(RepositoryContract):
    @pytest.fixture
    def repository(self, subscriber_sidecar):
        return DaprStateRepository(subscriber_sidecar, "statestore")


class TestSubscriberObjectStore(ObjectStoreContract):
    @pytest.fixture
    def objects(self, subscriber_objects):
        return subscriber_objects

    @pytest.fixture
    def other_writer(self, stack):
        return open_subscriber_objects(stack)
