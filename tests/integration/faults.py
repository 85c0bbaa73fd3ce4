"""A load of field updates and object replaces run across a fault, checked against the
sequential oracle afterwards, with the figures for docs/reliability.md."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from statestore import PublishError, StateStore, StateType, build_state_store_path
from statestore.core.partitioning import partition_for
from statestore.core.paths import state_key
from statestore.core.settings import get_settings
from statestore.publisher.store import StateStore as _Store

W = StateType.WORKFLOWS

RESULTS: list[FaultResult] = []


@dataclass
class FaultResult:
    fault: str
    runs: int = 0
    events: int = 0
    lost: int = 0
    double_applied: int = 0
    snapshot_mismatches: int = 0
    recover_s: list[float] = field(default_factory=list)
    # Replica faults only: seconds from the fault until every partition of the replica
    # moved (its states advance again), and until the backlog it left is applied.
    moved_s: list[float] = field(default_factory=list)
    applied_s: list[float] = field(default_factory=list)

    def row(self) -> dict:
        data = asdict(self)
        for name in ("recover_s", "moved_s", "applied_s"):
            data[name] = round(max(data[name]), 2) if data[name] else None
        data["recover_s"] = data["recover_s"] or 0.0
        return data


@dataclass
class Load:
    """Writes from this process (one producer) to ``states`` states until stopped.

    ``expected`` is what a single writer applying the accepted calls in order would hold.
    """

    states: int = 12
    pause_s: float = 0.003
    # Every tenth round replaces each state: confirmed (stored when the call returns), or
    # fire-and-forget for a load that must keep writing through an outage of the caller's
    # sidecar or broker (a confirmed replace waits that out).
    confirmed: bool = True
    ids: list[str] = field(default_factory=list)
    expected: dict[str, dict] = field(default_factory=dict)
    events: int = 0
    republished: int = 0

    spread: bool = False  # ids spread evenly over the event topic's partitions

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        if not self.spread:
            self.ids = [f"fault-{tag}-{n}" for n in range(self.states)]
            return
        # The same partition a state's events go to (statestore.core.partitioning).
        partitions = get_settings().partitions
        per_partition: dict[int, list[str]] = {p: [] for p in range(partitions)}
        n = 0
        while len(self.ids) < self.states:
            state_id = f"fault-{tag}-{n}"
            group = per_partition[partition_for(state_key(state_id, W), partitions)]
            if len(group) < -(-self.states // partitions):
                group.append(state_id)
                self.ids.append(state_id)
            n += 1

    async def run(self, stop: asyncio.Event) -> None:
        r = 0
        while not stop.is_set():
            r += 1
            for state_id in self.ids:
                if r % 10 == 0:
                    value = {"round": r, "kind": "replace", "a": r, "b": r}
                    await self._call(StateStore.save_state_object(state_id, value, W, wait=self.confirmed))
                    self.expected[state_id] = dict(value)
                else:
                    await self._call(StateStore.save_state(f"f{r % 5}", r, state_id, W))
                    self.expected.setdefault(state_id, {})[f"f{r % 5}"] = r
                self.events += 1
            await asyncio.sleep(self.pause_s)

    async def _call(self, call: Awaitable) -> None:
        try:
            await call
        except PublishError as exc:
            # Earlier events could not be published: a careful caller sends them again.
            self.republished += len(exc.events)
            await StateStore.republish(exc.events)

    async def settle(self, timeout: float = 120.0) -> None:
        """Publish everything (re-sending what failed), then wait until all is applied."""
        for _ in range(10):
            try:
                await StateStore.flush()
                break
            except PublishError as exc:
                self.republished += len(exc.events)
                await StateStore.republish(exc.events)
        await asyncio.gather(*(StateStore.sync(state_id, W, timeout=timeout) for state_id in self.ids))

    async def check(self, result: FaultResult) -> None:
        """Compare state store and snapshots with the oracle; count what differs."""
        runtime = _Store.runtime()
        query = _Store._runtime().query
        for state_id in self.ids:
            document = await query.get_document(state_id, W)
            state = document.to_state() if document else None
            expected = self.expected.get(state_id)
            result.lost += sum(1 for k, v in (expected or {}).items() if (state or {}).get(k) != v)
            result.lost += sum(1 for k in (state or {}) if k not in (expected or {}))  # stale extras
            progress = document.producers.get(runtime.producer_id) if document else None
            last = runtime.last_seq(f"workflows/{state_id}")
            # Every sequence number processed exactly once: none missing, none beyond.
            if progress is None or progress.upto != last or progress.ahead:
                result.double_applied += 1
        result.snapshot_mismatches += await self._snapshot_mismatches()

    async def _snapshot_mismatches(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            bad = [i for i in self.ids if read_snapshot(build_state_store_path(i, W)) != self.expected.get(i)]
            if not bad or time.monotonic() > deadline:
                return len(bad)
            await asyncio.sleep(0.05)


def result_row(name: str) -> FaultResult:
    """The row of RESULTS for the fault called ``name`` (made on first use)."""
    result = next((r for r in RESULTS if r.fault == name), None)
    if result is None:
        result = FaultResult(name)
        RESULTS.append(result)
    return result


def read_snapshot(path: str) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None


async def run_across_fault(
    name: str,
    inject: Callable[[], Awaitable[None]],
    recover: Callable[[], Awaitable[None]],
    hold_s: float = 1.0,
    warmup_s: float = 0.4,
    after_s: float = 0.4,
    load: Load | None = None,
) -> FaultResult:
    """Run a load, inject the fault, hold it, recover, finish the load, check it."""
    load = load or Load()
    result = result_row(name)
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    await asyncio.sleep(warmup_s)
    await inject()
    await asyncio.sleep(hold_s)
    await recover()
    recovered_at = time.monotonic()
    await asyncio.sleep(after_s)
    stop.set()
    await task
    await load.settle()
    result.recover_s.append(time.monotonic() - recovered_at)
    result.runs += 1
    result.events += load.events
    await load.check(result)
    return result


@dataclass
class Progress:
    """How far each state of a load is applied, sampled every ``every_s`` (one bulk read):
    the load's producer's processed sequence number in each stored document, beside the
    last sequence number the load had accepted for it at that moment."""

    load: Load
    every_s: float = 0.1
    samples: list[tuple[float, dict[str, int], dict[str, int]]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        runtime = _Store.runtime()
        query = _Store._runtime().query
        while not stop.is_set():
            at = time.monotonic()
            published = {i: runtime.last_seq(f"workflows/{i}") for i in self.load.ids}
            try:
                documents = await query.get_documents(self.load.ids, W)
            except Exception:  # the caller's sidecar busy for a moment: sample again
                continue
            applied = {}
            for state_id in self.load.ids:
                progress = documents[state_id].producers.get(runtime.producer_id) if state_id in documents else None
                applied[state_id] = progress.upto if progress else 0
            self.samples.append((at, applied, published))
            await asyncio.sleep(self.every_s)

    def at(self, when: float) -> tuple[float, dict[str, int], dict[str, int]]:
        """The first sample taken at or after ``when`` (the last one if none is)."""
        return next((s for s in self.samples if s[0] >= when), self.samples[-1])

    def first(self, after: float, condition) -> float | None:
        """The time of the first sample after ``after`` whose (applied, published) meet ``condition``."""
        return next((at for at, applied, published in self.samples if at >= after and condition(applied, published)), None)

    def stalled(self, start: float, end: float) -> list[str]:
        """States applied no further between ``start`` and ``end`` although the load wrote them."""
        _, before, _ = self.at(start)
        _, after, published = self.at(end)
        return [i for i in self.load.ids if after[i] == before[i] and published[i] > before[i]]


async def await_handover(progress: Progress, fault_at: float, moved_within: float, applied_within: float):
    """Wait (by condition) until every state advances again after a replica fault at
    ``fault_at``, then until the backlog is applied. Returns (moved_s, applied_s, stalled
    states); AssertionError when a bound passes first.

    "Moved": every state applied beyond where it stood a second after the fault (what the
    stopped replica had already sent its sidecar has landed by then). "Applied": every
    event accepted up to that moment applied.
    """
    settle = fault_at + 1.0

    def moved(applied, _published):
        _, reference, _ = progress.at(settle)
        return all(applied[i] > reference[i] for i in progress.load.ids)

    moved_at = await _first(progress, settle + progress.every_s, moved, fault_at + moved_within, "moved")
    _, _, frontier = progress.at(moved_at)
    applied_at = await _first(
        progress, moved_at, lambda applied, _: all(applied[i] >= frontier[i] for i in progress.load.ids),
        fault_at + applied_within, "applied",
    )  # fmt: skip
    return moved_at - fault_at, applied_at - fault_at, progress.stalled(settle, min(moved_at, settle + 2.0))


async def _first(progress: Progress, after: float, condition, deadline: float, what: str) -> float:
    while True:
        found = progress.first(after, condition)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within the bound: last sample {progress.samples[-1][1:]}")
        await asyncio.sleep(progress.every_s)
