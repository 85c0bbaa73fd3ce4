"""Credential saves (issue 17): time until `save_secrets` returns, and so until readable.

statestore's `save_secrets` of 1 to 1,000 credentials beside the reference's synchronous
way, one read-modify-write per credential through a plain Dapr client
(bench.peers.PlainDaprPeer), idle and behind a progress backlog (bench.backlog).

After each statestore save every guid is read back once (bulk) to count any that is not
readable. Each backlog is drained before the next row.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from bench.backlog import SCENARIOS, backlog, drain

__all__ = ["COUNTS", "SCALE_PLAN", "measure", "report_section"]

COUNTS = [1, 100, 200, 1000]
# Idle rows are cheap and this machine's timings vary from run to run: each is run this
# many times (statestore and the reference alternating) and its median reported.
IDLE_REPEATS = 3
BROKER_COUNTS = [200, 1000]


def _configs(n: int) -> list[dict]:
    return [{"host": f"db{k}.internal", "username": f"svc-{k}", "password": uuid.uuid4().hex} for k in range(n)]


async def _statestore_row(n: int, scenario: str, object_root: Path) -> dict:
    from statestore import SecretStore, StateStore, StateType

    ids = await backlog(scenario, "cred")
    progress = StateStore._pipeline_of(StateType.WORKFLOWS)
    queued = progress.pending
    start = time.perf_counter()
    guids = await SecretStore.save_secrets(_configs(n), timeout=120)
    took = time.perf_counter() - start
    found = await StateStore._runtime().query.get_documents(guids, StateType.CREDENTIALS)
    still_queued = progress.pending
    snapshots_s = await _snapshots_written(guids, start + took, object_root)
    await drain(ids)
    return {"peer": "statestore", "credentials": n, "scenario": scenario, "seconds": round(took, 4),
            "unreadable": n - len(found), "backlog_queued_at_start": queued,
            "backlog_queued_at_return": still_queued, "snapshots_after_s": snapshots_s}  # fmt: skip


async def _snapshots_written(guids: list[str], returned_at: float, object_root: Path, timeout_s: float = 600) -> float:
    """Seconds from the return until every credential's snapshot exists in the stack's
    object store. Waiting for it also keeps the subscriber's work of this row out of the
    next row's time."""
    import asyncio

    from statestore.core.paths import StateType, object_key

    left = [object_root / object_key(g, StateType.CREDENTIALS) for g in guids]
    while left:
        left = [path for path in left if not path.exists()]
        if left and time.perf_counter() - returned_at > timeout_s:
            raise TimeoutError(f"{len(left)} credential snapshots not written {timeout_s:g} s after the save returned")
        await asyncio.sleep(0.02)
    return round(time.perf_counter() - returned_at, 2)


async def _reference_row(peer, n: int, scenario: str) -> dict:
    from statestore import SecretStore
    from statestore.publisher.crypto import seal

    keyring = await SecretStore.keyring()
    ids = await backlog(scenario, "cred")
    start = time.perf_counter()
    for config in _configs(n):  # the reference: seal, then one synchronous RMW per credential
        guid = str(uuid.uuid4())
        await peer.save_field(f"cred-{guid}", "credential", seal(keyring, guid, config))
    took = time.perf_counter() - start
    await drain(ids)
    return {"peer": "reference (plain RMW)", "credentials": n, "scenario": scenario, "seconds": round(took, 4)}


# The scale profile's rows (bench/scale.py): its broker backlog drains at a few thousand a second.
SCALE_PLAN = (("idle", [1, 200, 1000]), ("caller", [200]), ("broker", [200]))


async def measure(stack, say=print, plan=None) -> list[dict]:
    """Every row: statestore and the reference, each count, idle and with the backlog
    (``plan``: (scenario, counts) pairs; default all of them)."""
    from bench.peers import PlainDaprPeer

    peer = PlainDaprPeer(stack.ports.caller.http_port, stack.ports.caller.grpc_port, stack.tokens.get("DAPR_API_TOKEN"))
    rows = []
    try:
        await _statestore_row(1, "idle", stack.object_root)  # warm up: keyring, channels
        for scenario, counts in plan or (("idle", COUNTS), ("caller", COUNTS), ("broker", BROKER_COUNTS)):
            for n in counts:
                say(f"credentials: save of {n}, backlog: {SCENARIOS[scenario]}")
                runs = [(await _statestore_row(n, scenario, stack.object_root), await _reference_row(peer, n, scenario))
                        for _ in range(IDLE_REPEATS if scenario == "idle" else 1)]  # fmt: skip
                rows += [_median_row([ours for ours, _ in runs]), _median_row([theirs for _, theirs in runs])]
    finally:
        await peer.close()
    return rows


def _median_row(runs: list[dict]) -> dict:
    """The run of median time, with every run's time (``runs_s``) and every run's
    unreadable guids counted."""
    row = dict(sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2])
    row["runs_s"] = sorted(r["seconds"] for r in runs)
    if "unreadable" in row:
        row["unreadable"] = sum(r["unreadable"] for r in runs)
    return row


def _seconds(row: dict) -> str:
    """A row's time: the median, and the range when it ran more than once."""
    runs = row.get("runs_s", [])
    return f"{row['seconds']} ({runs[0]}-{runs[-1]})" if len(runs) > 1 else str(row["seconds"])


def report_section(rows: list[dict] | None, where: str = "") -> list[str]:
    """The docs/benchmarks.md section (markdown lines); none when not measured. ``where``:
    appended to the heading (the profile, for docs/scaling.md)."""
    if not rows:
        return []
    ours = {(r["credentials"], r["scenario"]): r for r in rows if r["peer"] == "statestore"}
    lines = [
        f"## Credential saves{where}: time until stored and readable",
        "",
        "`SecretStore.save_secrets` returns once every credential of the call is stored (written",
        "through the caller's sidecar) and readable from any process, and its events are",
        "published; the subscriber writes the snapshots after that. The reference's way is one",
        "synchronous read-modify-write per credential through a plain Dapr client, in the same",
        "run and situation. The backlog ahead is progress updates of 1,000 workflows, queued in",
        "the same process just before the save or just published to the broker (the subscriber",
        "catching up). Before the next row, every snapshot of the row is written and the backlog",
        f"drained (`bench/credentials.py`). Idle rows ran {IDLE_REPEATS} times each (statestore and the",
        "reference alternating): the median, the range in brackets, and the ratio of the medians;",
        "\"unreadable\" counts every run.",
        "",
        "| credentials | backlog ahead | statestore s | unreadable after return | plain RMW s | vs plain RMW | backlog still queued in the caller at return | snapshots written after s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["peer"] == "statestore":
            continue
        o = ours[(r["credentials"], r["scenario"])]
        ratio = f"{r['seconds'] / o['seconds']:.1f}x" if o["seconds"] else "n/a"
        lines.append(f"| {r['credentials']} | {SCENARIOS[r['scenario']]} | {_seconds(o)} | {o['unreadable']} | {_seconds(r)} "
                     f"| {ratio} | {o.get('backlog_queued_at_return', '')} | {o.get('snapshots_after_s', '')} |")  # fmt: skip
    return lines + [""]
