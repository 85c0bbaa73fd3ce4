"""The pytest plugin (entry point ``pytest11``): the ``memory_state_store`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from statestore.testing import MemoryStateStore
from statestore.testing import memory_state_store as _memory_state_store


@pytest.fixture
def memory_state_store() -> Iterator[MemoryStateStore]:
    """StateStore and SecretStore in memory for the test (statestore.testing)."""
    with _memory_state_store() as store:
        yield store
