"""The progress backlog a measured write must not wait behind (credentials, confirmed replaces).

Three situations:

- ``idle``: nothing else queued;
- ``caller``: 100,000 progress updates queued (fire-and-forget) in the same process just
  before the write;
- ``broker``: 100,000 progress updates just published (flushed) to the broker, the
  subscriber catching up with them.
"""

from __future__ import annotations

import uuid

__all__ = ["BACKLOG", "BACKLOG_IDS", "SCENARIOS", "backlog", "drain"]

BACKLOG = 100_000
BACKLOG_IDS = 1000
SCENARIOS = {
    "idle": "none",
    "caller": f"{BACKLOG:,} updates queued in the caller",
    "broker": f"{BACKLOG:,} updates just published, subscriber catching up",
}


async def _queue_backlog(size: int, prefix: str) -> list[str]:
    """Queue ``size`` progress updates (fire-and-forget) on BACKLOG_IDS workflows."""
    from statestore import StateStore, StateType

    ids = [f"{prefix}-backlog-{uuid.uuid4().hex[:6]}-{n}" for n in range(BACKLOG_IDS)]
    for k in range(size):
        await StateStore.save_state("progress", k, ids[k % BACKLOG_IDS], StateType.WORKFLOWS)
    return ids


async def backlog(scenario: str, prefix: str) -> list[str]:
    """Set up the scenario's backlog; returns the ids to drain afterwards."""
    from statestore import StateStore

    if scenario == "idle":
        return []
    ids = await _queue_backlog(BACKLOG, prefix)
    if scenario == "broker":
        await StateStore.flush()  # published: the backlog is in the broker and the subscriber, not here
    return ids


async def drain(ids: list[str]) -> None:
    """Wait until the backlog on ``ids`` is applied (the next row starts from a quiet stack)."""
    from statestore import StateStore, StateType

    if ids:
        await StateStore.sync_many(ids, StateType.WORKFLOWS, timeout=600)
