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

    def row(self) -> dict:
        data = asdict(self)
        data["recover_s"] = round(max(self.recover_s), 2) if self.recover_s else 0.0
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

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.ids = [f"fault-{tag}-{n}" for n in range(self.states)]

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
            bad = [i for i in self.ids if _read(build_state_store_path(i, W)) != self.expected.get(i)]
            if not bad or time.monotonic() > deadline:
                return len(bad)
            await asyncio.sleep(0.05)


def _read(path: str) -> dict | None:
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
    result = next((r for r in RESULTS if r.fault == name), None)
    if result is None:
        result = FaultResult(name)
        RESULTS.append(result)
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
