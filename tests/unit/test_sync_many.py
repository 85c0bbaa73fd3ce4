"""sync_many against a subscriber that lags: it polls the newest states only, and still
returns only once every state is applied (in memory, no sidecar)."""

from __future__ import annotations

from typing import Any

import pytest

from statestore import StateStore, StateType
from statestore.publisher.runtime import Runtime, set_runtime
from statestore.publisher.store import SYNC_PROBE_STATES
from statestore.testing import MemoryStateStore, _MemorySidecar

W = StateType.WORKFLOWS
STATES = 1_000


class LaggingSidecar(_MemorySidecar):
    """Takes published events at once but applies them only when the test says so;
    records how many keys each bulk read asks for."""

    def __init__(self, store: MemoryStateStore) -> None:
        super().__init__(store)
        self.held: list[tuple[Any, ...]] = []
        self.reads: list[int] = []
        self.apply_at: dict[int, slice] = {}  # read number -> which held events to apply then

    async def bulk_publish(self, pubsub: str, topic: str, cloudevents) -> dict[str, str]:
        self.held.extend(cloudevents)
        return {}

    async def get_bulk_state(self, store: str, keys):
        keys = list(keys)
        self.reads.append(len(keys))
        part = self.apply_at.get(len(self.reads))
        if part is not None:
            await super().bulk_publish("pubsub", "topic", self.held[part])
        return await super().get_bulk_state(store, keys)


@pytest.fixture
def lagging():
    sidecar: LaggingSidecar | None = None

    def make() -> LaggingSidecar:
        nonlocal sidecar
        sidecar = LaggingSidecar(MemoryStateStore())
        return sidecar

    previous = set_runtime(Runtime(sidecar_factory=make))
    try:
        yield lambda: sidecar
    finally:
        set_runtime(previous)


async def save_states() -> list[str]:
    ids = [f"wf-{n}" for n in range(STATES)]
    for id in ids:
        await StateStore.save_state("status", "running", id, W)
    return ids


async def test_while_the_subscriber_lags_only_the_newest_states_are_polled(lagging):
    ids = await save_states()
    await StateStore.flush()
    sidecar = lagging()
    sidecar.apply_at = {6: slice(None)}  # applied while the 6th read runs
    await StateStore.sync_many(ids, W, timeout=10)
    before_applied = sidecar.reads[:6]
    assert before_applied == [SYNC_PROBE_STATES] * 6, sidecar.reads
    # then one pass over the rest confirms them: every state read about once, not once a poll
    assert sum(sidecar.reads) == 6 * SYNC_PROBE_STATES + STATES - SYNC_PROBE_STATES, sidecar.reads


async def test_the_newest_applied_first_does_not_end_the_wait_early(lagging):
    ids = await save_states()
    await StateStore.flush()
    sidecar = lagging()
    half = len(sidecar.held) // 2
    sidecar.apply_at = {2: slice(half, None), 5: slice(0, half)}  # the newest half first
    await StateStore.sync_many(ids, W, timeout=10)
    assert len(sidecar.reads) >= 5, "returned before the oldest states were applied"
    assert not [id for id in ids if await StateStore.get_state(id, W) != {"status": "running"}]
