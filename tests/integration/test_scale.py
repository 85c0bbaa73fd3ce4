"""Issue 9 and the subscriber parts of issue 10 on the real stack: a packed delivery of
100,000 events over 100,000 states, a snapshot backlog larger than daprd's default
message limit, bounded memory, values up to the documented limit."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path


from dapr.proto.runtime.v1 import appcallback_pb2 as pb
from statestore import StateStore, StateType, build_state_store_path
from statestore.core.events import BATCH_TYPE, encode_event
from statestore.core.settings import Settings
from statestore.subscriber.applier import EventApplier
from statestore.subscriber.dapr_ports import DaprStateRepository
from statestore.subscriber.servicer import SUCCESS, SubscriberServicer
from tests.integration.conftest import dead_letter_bodies, eventually, subscriber_logs
from tests.strategies import field_updated

W = StateType.WORKFLOWS
STATES = 100_000
BUSY = ("SQLITE_BUSY", "database is locked")


class SnapshotCount:
    """How many of a run's states have their snapshot file. Each call lists the state
    folder once and looks only at folders not yet seen with a snapshot: a glob of
    100,000 folders every second takes a core away from the subscriber it waits for."""

    def __init__(self, run: str) -> None:
        self._run = run
        self._root = Path(build_state_store_path(f"{run}-0", W)).parents[1]
        self._written: set[str] = set()

    def __call__(self) -> int:
        with os.scandir(self._root) as entries:
            new = [e.name for e in entries if e.name.startswith(f"{self._run}-") and e.name not in self._written]
        self._written.update(name for name in new if (self._root / name / "config.json").exists())
        return len(self._written)


def rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Peak resident memory of a process, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.start = self.peak = rss(pid)
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss(self._pid))
            await asyncio.sleep(0.05)

    def stop(self) -> int:
        self._task.cancel()
        return self.peak - self.start


def batch_data(events) -> bytes:
    return b'{"schema_version":1,"events":[' + b",".join(encode_event(e) for e in events) + b"]}"


async def test_a_packed_delivery_of_100000_events_over_100000_states_applies_without_retry(subscriber_sidecar, stack):
    """One delivery as daprd would make it if the subscription allowed it (1,000 packed
    messages of 100 events, 100,000 states), handled by the subscriber's servicer against
    the real sidecar and sqlite; the stack's subscriber then writes every snapshot."""
    run = f"fleet-{uuid.uuid4().hex[:6]}"
    producer = f"{run}-p"
    events = [field_updated("status", "running", producer=producer, seq=1, hlc=(1_700_000_000_000 + n, 0),
                            state_id=f"{run}-{n}") for n in range(STATES)]  # fmt: skip
    entries = [
        pb.TopicEventBulkRequestEntry(
            entry_id=f"m{m}",
            cloud_event=pb.TopicEventCERequest(
                id=f"{producer}:{m}", type=BATCH_TYPE, data=batch_data(events[m * 100 : (m + 1) * 100]),
            ),
        )
        for m in range(STATES // 100)
    ]  # fmt: skip
    del events
    settings = Settings()
    servicer = SubscriberServicer(EventApplier(DaprStateRepository(subscriber_sidecar, "statestore")), settings)
    log_before = {name: (stack.logs / name).stat().st_size for name in ("subscriber.log", "subscriber-daprd.log")}
    rss = RssSampler(stack.subscriber_app.pid)
    statuses = await servicer.handle(settings.topic, entries)
    assert set(statuses.values()) == {SUCCESS} and len(statuses) == 1000
    assert servicer.applied_events == STATES

    snapshots_written = SnapshotCount(run)

    async def all_snapshots():  # the outbox backlog: 100,000 keys (the old slots: > 4 MiB)
        return snapshots_written() == STATES

    await eventually(all_snapshots, timeout=300, interval=1.0)
    growth = rss.stop()
    for name, size in log_before.items():
        with open(stack.logs / name, "rb") as fh:
            fh.seek(size)
            text = fh.read().decode(errors="replace")
        assert not [marker for marker in BUSY if marker in text], f"{name}: {text[-2000:]}"
        assert "will be redelivered" not in text and "RESOURCE_EXHAUSTED" not in text
        assert "snapshot flush failed" not in text
    # a generous bound: flushing 100,000 snapshots must not hold the backlog in memory
    assert growth < 150 << 20, f"subscriber RSS grew by {growth >> 20} MiB"
    sample = json.loads(Path(build_state_store_path(f"{run}-12345", W)).read_text())
    assert sample == {"status": "running"}


async def test_values_up_to_the_limit_work_end_to_end_and_a_small_write_follows():
    """Issue 10.5: 40 values of 900 kB on 4 states (9 MB documents), then a small write."""
    run = f"big-{uuid.uuid4().hex[:6]}"
    ids = [f"{run}-{n}" for n in range(4)]
    value = "v" * 900_000
    for n in range(40):
        await StateStore.save_state(f"f{n // 4}", value + str(n), ids[n % 4], W)
        await StateStore.flush()
    await StateStore.save_state("small", 1, ids[0], W)
    for state_id in ids:
        await StateStore.sync(state_id, W, timeout=120)
    state = await StateStore.get_state(ids[0], W)
    assert state["small"] == 1 and len(state) == 11 and state["f9"] == value + "36"

    async def snapshot_complete():
        path = Path(build_state_store_path(ids[0], W))
        try:
            return json.loads(path.read_text()).get("small") == 1
        except (OSError, ValueError):  # not there yet, or being written
            return False

    await eventually(snapshot_complete, timeout=60)


async def test_a_state_too_large_to_store_is_dead_lettered_and_blocks_nothing(stack):
    run = f"huge-{uuid.uuid4().hex[:6]}"
    value = "v" * 950_000
    for n in range(15):  # 15 fields of 950 kB: over the 12 MiB document limit
        await StateStore.save_state(f"f{n}", value, f"{run}-big", W)
        await StateStore.flush()
    await StateStore.save_state("small", 1, f"{run}-other", W)
    await StateStore.sync(f"{run}-other", W, timeout=60)
    assert await StateStore.get_state(f"{run}-other", W) == {"small": 1}

    async def refused():  # on either profile's broker, and in any replica's log
        bodies = await asyncio.to_thread(dead_letter_bodies, stack)
        return any(f"{run}-big".encode() in body for body in bodies) and f"workflows/{run}-big" in subscriber_logs(stack)

    await eventually(refused, timeout=90)
    assert "STATESTORE_MAX_DOCUMENT_BYTES" in subscriber_logs(stack)
    # What is stored (and every other process reads): not all 15. This process's own
    # reads would still merge its refused writes in (publisher.own_writes keeps a write
    # until a read shows it applied; the subscriber tells no caller of a dead letter).
    big = await StateStore._runtime().query.get_state(f"{run}-big", W)
    assert big is None or len(big) < 15


async def test_a_read_larger_than_the_sidecars_limit_splits_and_finishes(subscriber_sidecar):
    """Three 7 MB documents: each fits daprd's 16 MiB limit, the three together do not."""
    from statestore.core.sidecar import Upsert

    keys = [f"workflows/large-read-{uuid.uuid4().hex[:6]}-{n}" for n in range(3)]
    value = json.dumps({"v": "x" * 7_000_000}).encode()
    for key in keys:
        await subscriber_sidecar.transact("statestore", [Upsert(key, value, None)])
    reads = []
    read = subscriber_sidecar._read

    async def counted(store, some):
        reads.append(len(some))
        return await read(store, some)

    subscriber_sidecar._read = counted
    found = await subscriber_sidecar.get_bulk_state("statestore", keys)
    assert set(found) == set(keys) and all(len(item.value) == len(value) for item in found.values())
    assert reads[0] == 3 and len(reads) > 1  # the whole answer did not fit: it was split
