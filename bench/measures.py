"""One function per measure; each takes a peer and returns plain numbers."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass

__all__ = [
    "percentiles",
    "ProcessMeter",
    "caller_latency",
    "throughput",
    "staleness",
    "lost_updates",
    "read_latency",
]


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50/p99/p999 in milliseconds."""
    if not samples_s:
        return {}
    ordered = sorted(samples_s)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 4)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "p999_ms": at(0.999), "n": len(ordered)}


@dataclass
class ProcessMeter:
    """CPU seconds and peak RSS of a process, from /proc."""

    pid: int

    def cpu_s(self) -> float:
        fields = open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100

    def peak_rss_mb(self) -> float:
        for line in open(f"/proc/{self.pid}/status"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return 0.0


def tag() -> str:
    return uuid.uuid4().hex[:6]


async def caller_latency(peer, calls: int) -> dict:
    """How long the caller waits for one field update (sequential calls)."""
    ids = [f"lat-{tag()}-{n}" for n in range(50)]
    samples = []
    for n in range(calls):
        start = time.perf_counter()
        await peer.save_field(ids[n % len(ids)], f"f{n % 10}", n)
        samples.append(time.perf_counter() - start)
    await peer.settle(ids)
    return percentiles(samples)


async def _read_through(peer, state_id: str):
    """A read that outlasts a sidecar too busy to answer within its deadline (the
    delay keeps counting; a loaded machine must not end the whole benchmark)."""
    from statestore.core.errors import SidecarUnavailableError

    while True:
        try:
            return await peer.get(state_id)
        except SidecarUnavailableError:
            await asyncio.sleep(0.1)


def poll_interval(waited_s: float) -> float:
    """How long the probe sleeps between reads after ``waited_s``: 1 ms at first, then a
    twentieth of the wait so far, at most 20 ms. A delay is measured within 5% (plus 1 ms),
    and a probe waiting out a backlog of seconds does not read every millisecond: those
    reads would load the caller and its sidecar like no user does, and count in their CPU."""
    return min(0.02, max(0.001, waited_s / 20))


async def probe_delays(peer, stop: asyncio.Event, delays: list[float], pause_s: float = 0.02) -> None:
    """Publish-to-visible delay: write one field, poll until it reads back; repeat."""
    probe_id, k = f"probe-{tag()}", 0
    while not stop.is_set():
        k += 1
        start = time.perf_counter()
        await peer.save_field(probe_id, "k", k)
        while ((await _read_through(peer, probe_id)) or {}).get("k") != k:
            await asyncio.sleep(poll_interval(time.perf_counter() - start))
        delays.append(time.perf_counter() - start)
        await asyncio.sleep(pause_s)


async def _load_until_visible(peer, writers: list, state_ids: list[str]) -> tuple[float, float]:
    """Run ``writers`` (coroutines) at once; seconds until every call returned, and until
    every update is visible through reads."""
    start = time.perf_counter()
    await asyncio.gather(*writers)
    called = time.perf_counter() - start
    await peer.settle(state_ids)
    return called, time.perf_counter() - start


async def _complete(peer, state_ids: list[str], fields: int) -> bool:
    """Whether a sample of about 50 states reads back with all ``fields``."""
    sample = [await peer.get(s) for s in state_ids[:: max(1, len(state_ids) // 50)]]
    return all(s is not None and len(s) == fields for s in sample)


async def throughput(peer, ids: int, fields: int, producers: int, probe: bool = False) -> dict:
    """Updates per second, counted when all are applied and visible through reads.

    With ``probe``, the publish-to-visible delay is sampled while the load runs.
    """
    run = tag()
    state_ids = [f"tp-{run}-{n}" for n in range(ids)]
    work = [(state_ids[i], f"f{f}", f) for f in range(fields) for i in range(ids)]
    delays: list[float] = []
    stop = asyncio.Event()
    prober = asyncio.create_task(probe_delays(peer, stop, delays)) if probe else None

    async def producer(k: int) -> None:
        for state_id, key, value in work[k::producers]:
            await peer.save_field(state_id, key, value)

    called, visible = await _load_until_visible(peer, [producer(k) for k in range(producers)], state_ids)
    stop.set()
    if prober:
        await prober
    complete = await _complete(peer, state_ids, fields)
    return {
        "updates": len(work), "producers": producers, "ids": ids,
        "calls_per_s": round(len(work) / called), "applied_per_s": round(len(work) / visible),
        "seconds": round(visible, 2), "complete": complete,
        **({"staleness": percentiles(delays)} if probe else {}),
    }  # fmt: skip


async def staleness(peer, rate: float, seconds: float, ids: int = 200) -> dict:
    """Publish-to-visible delay at a fixed offered load (open loop), sampled by a probe."""
    run = tag()
    state_ids = [f"st-{run}-{n}" for n in range(ids)]
    delays: list[float] = []
    stop = asyncio.Event()

    async def load() -> int:
        sent, start = 0, time.perf_counter()
        while not stop.is_set():
            due = int((time.perf_counter() - start) * rate)
            while sent < due:
                await peer.save_field(state_ids[sent % ids], "n", sent)
                sent += 1
            await asyncio.sleep(0.002)
        return sent

    start = time.perf_counter()
    loader = asyncio.create_task(load())
    prober = asyncio.create_task(probe_delays(peer, stop, delays))
    await asyncio.sleep(seconds)
    stop.set()
    sent = await loader
    await prober
    achieved = sent / (time.perf_counter() - start)
    await peer.settle(state_ids)
    backlog_s = time.perf_counter() - start - seconds
    result = percentiles(delays)
    return {"offered_per_s": rate, "achieved_per_s": round(achieved), "drain_s": round(backlog_s, 2), **result}


async def lost_updates(peer, ids: int, producers: int, fields_each: int) -> dict:
    """Producers write distinct fields of the same states at once; count what is missing."""
    run = tag()
    state_ids = [f"lost-{run}-{n}" for n in range(ids)]

    async def producer(p: int) -> None:
        for f in range(fields_each):
            for state_id in state_ids:
                await peer.save_field(state_id, f"p{p}-f{f}", f)

    await asyncio.gather(*(producer(p) for p in range(producers)))
    await peer.settle(state_ids)
    expected = producers * fields_each
    missing = 0
    for state_id in state_ids:
        state = await peer.get(state_id) or {}
        missing += expected - sum(1 for k in state if k.startswith("p"))
    return {"updates": ids * expected, "lost": missing, "lost_pct": round(100 * missing / (ids * expected), 2)}


async def read_latency(peer, ids: int, reads: int) -> dict:
    """get_state on a warm store of ``ids`` states."""
    run = tag()
    state_ids = [f"rd-{run}-{n}" for n in range(ids)]
    for chunk in range(0, ids, 500):
        await asyncio.gather(*(peer.save_field(s, "v", 1) for s in state_ids[chunk : chunk + 500]))
    await peer.settle(state_ids)
    samples = []
    for n in range(reads):
        start = time.perf_counter()
        await peer.get(state_ids[(n * 7919) % ids])
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


class RssPeaks:
    """Peak resident memory of several processes during one phase (sampled every 100 ms),
    in MiB; VmHWM would give the peak over the process's whole life instead."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self.peaks = {name: 0.0 for name in pids}
        self._task = asyncio.create_task(self._sample())

    @staticmethod
    def rss_mb(pid: int) -> float:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            pass
        return 0.0

    async def _sample(self) -> None:
        while True:
            for name, pid in self._pids.items():
                self.peaks[name] = max(self.peaks[name], self.rss_mb(pid))
            await asyncio.sleep(0.1)

    def stop(self) -> dict[str, float]:
        self._task.cancel()
        return dict(self.peaks)


def scrape(url: str, name: str) -> float | None:
    """The value of the unlabelled sample ``name`` at a Prometheus endpoint (None: absent, or unreachable)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    return next((float(line.split()[1]) for line in text.splitlines() if line.startswith(f"{name} ")), None)


async def fleet(peer, ids: int, fields: int, pids: dict[str, int], concurrency: int = 1,
                snapshots_done=None, snapshot_timeout_s: float = 600, snapshot_write_cpu_s=None) -> dict:  # fmt: skip
    """Many states, few updates each, from one caller: every id gets ``status``, then
    every id gets ``progress`` (and so on for ``fields``). Applied/s counts until every
    update is visible through reads; publish-to-visible is sampled by a probe meanwhile.
    ``snapshots_done(state_ids, fields)`` (statestore) says whether every snapshot is written;
    ``snapshot_write_cpu_s()`` the subscriber's CPU seconds in object-store writes so far.
    CPU per update is taken twice: until every update is visible (``cpu_us_per_update``),
    and until every snapshot is written too (``cpu_us_per_update_with_snapshots``)."""
    run = tag()
    state_ids = [f"fl-{run}-{n}" for n in range(ids)]
    names = ["status", "progress", "step", "result"][:fields]
    rss = RssPeaks(pids)
    meters = {name: ProcessMeter(pid) for name, pid in {**pids, "caller": os.getpid()}.items()}
    if snapshot_write_cpu_s is not None and snapshot_write_cpu_s() is not None:
        meters["subscriber-snapshot-writes"] = _Reading(snapshot_write_cpu_s)
    cpu0 = {name: meter.cpu_s() for name, meter in meters.items()}
    delays: list[float] = []
    stop = asyncio.Event()
    prober = asyncio.create_task(probe_delays(peer, stop, delays, pause_s=0.05))

    async def caller(k: int) -> None:
        for name in names:
            for state_id in state_ids[k::concurrency]:
                await peer.save_field(state_id, name, name)

    called, visible = await _load_until_visible(peer, [caller(k) for k in range(concurrency)], state_ids)
    visible_at = time.perf_counter()
    cpu_us = {name: round(1e6 * (meter.cpu_s() - cpu0[name]) / (ids * fields)) for name, meter in meters.items()}
    stop.set()
    await prober
    snapshots_s = None
    if snapshots_done is not None:
        while not snapshots_done(state_ids, names):
            if time.perf_counter() - visible_at > snapshot_timeout_s:
                break
            await asyncio.sleep(0.2)
        else:
            snapshots_s = round(time.perf_counter() - visible_at, 1)
    with_snapshots = {name: round(1e6 * (meter.cpu_s() - cpu0[name]) / (ids * fields)) for name, meter in meters.items()}
    with_snapshots["caller"] = cpu_us["caller"]  # after that only this harness ran in it (the file checks)
    peaks = rss.stop()
    complete = await _complete(peer, state_ids, fields)
    return {
        "ids": ids, "fields": fields, "updates": ids * fields, "concurrency": concurrency,
        "calls_per_s": round(ids * fields / called), "applied_per_s": round(ids * fields / visible),
        "seconds": round(visible, 2), "complete": complete, "staleness": percentiles(delays),
        "snapshots_after_s": snapshots_s, "peak_rss_mb": peaks, "cpu_us_per_update": cpu_us,
        **({"cpu_us_per_update_with_snapshots": with_snapshots} if snapshots_done is not None else {}),
    }  # fmt: skip


@dataclass
class _Reading:
    """A CPU figure read from somewhere else (a metric), as a ProcessMeter gives one."""

    read: object

    def cpu_s(self) -> float:
        return self.read() or 0.0


def snapshot_checker(tmp_root: str, app: str = "default"):
    """snapshots_done for the statestore peer: every id's config.json exists, and a sample
    of them holds every field (a file exists after the first field's snapshot)."""
    from pathlib import Path

    base = Path(tmp_root) / "persistent-artifacts" / "apps" / app / "workflows"

    def done(state_ids: list[str], names: list[str]) -> bool:
        if any(not (base / s / "config.json").exists() for s in state_ids[::-1]):
            return False
        for state_id in state_ids[:: max(1, len(state_ids) // 200)]:
            try:
                if set(json.loads((base / state_id / "config.json").read_text())) != set(names):
                    return False
            except (OSError, ValueError):  # being written
                return False
        return True

    return done
