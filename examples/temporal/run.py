"""The starter: save credentials, start N workflows, watch them, check what they left.

As the reference's ``start_workflow`` does, each workflow's credentials are saved with
``SecretStore`` (``replace_credentials_with_guid``) before it starts: its arguments carry
only the guid. ``make run ENGINE=temporal`` calls :func:`main` (N from TEMPORAL_WORKFLOWS,
default 50); the integration test and bench/temporal call :func:`run_workflows`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client

from bench.measures import percentiles
from examples.temporal.activities import rmw_peer
from examples.temporal.shared import (
    MODES,
    WorkflowInput,
    WorkflowResult,
    credential_fingerprint,
    expected_state,
    task_queue,
)
from examples.temporal.workflow import StateStoreWorkflow
from statestore import StateQueryClient, StateStore, StateType, replace_credentials_with_guid
from statestore.core.paths import caller_app_name
from statestore.core.settings import get_settings
from statestore.core.sidecar import SidecarClient

__all__ = ["RunReport", "run_workflows", "read_state", "main"]

W = StateType.WORKFLOWS


@dataclass
class RunReport:
    """What a run of N workflows did, and what it left in the state store."""

    mode: str
    steps: int
    ids: list[str]
    fingerprints: dict[str, str]  # workflow id -> digest of the credentials it was started with
    results: dict[str, WorkflowResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    completion_s: dict[str, float] = field(default_factory=dict)  # start -> result, per workflow
    wall_s: float = 0.0
    final_states: dict[str, dict | None] = field(default_factory=dict)
    events_applied: int | None = None  # processed, per the states' producer records (statestore mode)

    def states_as_written(self) -> list[str]:
        """Ids whose final state differs from what the workflow wrote."""
        return [i for i in self.ids if self.final_states.get(i) != expected_state(i, self.steps)]

    def credentials_read_back(self) -> list[str]:
        """Ids with a step that did not read back the credentials it was started with."""
        return [
            i for i in self.ids
            if i not in self.results
            or any(s.credential_fingerprint != self.fingerprints[i] for s in self.results[i].steps)
        ]  # fmt: skip

    def summary(self) -> dict[str, Any]:
        steps = [s for r in self.results.values() for s in r.steps]
        finishes = [r.finish for r in self.results.values() if r.finish]
        resent = sum((s.attempt - 1) * s.events for s in steps)  # by attempts that failed after writing
        records = sum(1 for i in self.ids for n in range(1, self.steps + 1) if f"step_{n}" in (self.final_states.get(i) or {}))
        published = sum(s.events for s in steps) + sum(f.events for f in finishes) + resent
        return {
            "mode": self.mode,
            "workflows": len(self.ids),
            "completed": len(self.results),
            "failed": len(self.failures),
            "progress_events_published": published,
            "progress_events_resent_by_retries": resent,
            "retried_step_attempts": sum(s.attempt - 1 for s in steps),
            # A read-modify-write is applied when its call returns.
            "progress_events_applied": published if self.events_applied is None else self.events_applied,
            "step_records_applied": records,
            "step_records_expected": len(self.ids) * self.steps,
            "activity_ms": percentiles([s.elapsed_ms / 1000 for s in steps]),
            "finish_activity_ms": percentiles([f.elapsed_ms / 1000 for f in finishes]),
            "publish_to_visible_ms": percentiles([f.visible_ms / 1000 for f in finishes]),
            "workflow_completion_ms": percentiles(list(self.completion_s.values())),
            "wall_s": round(self.wall_s, 2),
            "credentials_read_back": len(self.ids) - len(self.credentials_read_back()),
            "final_states_as_written": len(self.ids) - len(self.states_as_written()),
        }


async def read_state(mode: str, workflow_id: str) -> dict | None:
    """A workflow's state as a reader sees it, where ``mode`` writes it."""
    if mode == "rmw":
        return await rmw_peer().get(workflow_id)
    return await StateStore.get_state(workflow_id, W)


async def run_workflows(
    client: Client,
    count: int,
    steps: int = 5,
    mode: str = "statestore",
    fail_once_at_step: int | None = None,
    progress: Callable[[str], None] | None = None,
    started: asyncio.Event | None = None,
) -> RunReport:
    """Start ``count`` workflows, wait for all of them, read back their final states.

    ``progress`` gets a status line every 0.5 s; ``started`` is set once the credentials
    are saved and the workflows are being started (bench/temporal slows the store then)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if count < 1 or steps < 1:
        raise ValueError(f"count and steps must be at least 1 (got {count} and {steps})")
    tag = uuid.uuid4().hex[:8]
    ids = [f"temporal-{mode}-{tag}-{n}" for n in range(count)]
    configs = {i: {"host": f"db-{n}.internal", "port": 5432, "username": f"svc{n}", "password": secrets.token_hex(16)}
               for n, i in enumerate(ids)}  # fmt: skip
    arguments = await asyncio.gather(*(replace_credentials_with_guid({"workflow_id": i, "credentials": configs[i]}) for i in ids))
    # Read-your-writes: the credentials are readable before any activity asks for them.
    await StateStore.sync_many([a["credential_guid"] for a in arguments], StateType.CREDENTIALS, timeout=60)
    report = RunReport(mode, steps, ids, {i: credential_fingerprint(c) for i, c in configs.items()})

    t0 = time.perf_counter()

    async def one(args: dict[str, Any]) -> None:
        workflow_id = args["workflow_id"]
        begun = time.perf_counter()
        try:
            report.results[workflow_id] = await client.execute_workflow(
                StateStoreWorkflow.run,
                WorkflowInput(workflow_id, args["credential_guid"], steps, mode, fail_once_at_step),
                id=workflow_id, task_queue=task_queue(), result_type=WorkflowResult,
            )  # fmt: skip
            report.completion_s[workflow_id] = time.perf_counter() - begun
        except Exception as exc:  # reported in the summary, with the reason
            report.failures[workflow_id] = f"{type(exc).__name__}: {exc}"

    runs = asyncio.gather(*(one(a) for a in arguments))
    if started is not None:
        started.set()
    while progress is not None and not runs.done():
        await asyncio.wait([runs], timeout=0.5)
        states = await asyncio.gather(*(read_state(mode, i) for i in ids))
        mean = sum((s or {}).get("progress", 0) for s in states) / count
        progress(f"{len(report.results)}/{count} workflows completed, mean progress {mean:5.1f}% "
                 f"(read back), {time.perf_counter() - t0:5.1f} s")  # fmt: skip
    await runs
    report.wall_s = time.perf_counter() - t0
    states = await asyncio.gather(*(read_state(mode, i) for i in ids))
    report.final_states = dict(zip(ids, states))
    if mode == "statestore":
        report.events_applied = await events_applied(ids)
    return report


async def events_applied(ids: list[str]) -> int:
    """How many events the subscriber applied to these workflow states: the sequence
    numbers each state's producer records say were processed (re-sent events included)."""
    sidecar = SidecarClient()
    try:
        documents = await StateQueryClient(sidecar, get_settings().statestore_name).get_documents(ids, W)
    finally:
        await sidecar.close()
    return sum(p.upto + len(p.ahead) for d in documents.values() for p in d.producers.values())


def print_summary(summary: dict[str, Any]) -> None:
    """The same summary as the Dapr Workflows example's run."""

    def pct(name: str) -> str:
        p = summary[name]
        return f"p50 {p.get('p50_ms', 0):.1f} ms, p99 {p.get('p99_ms', 0):.1f} ms over {p.get('n', 0)}"

    n = summary["workflows"]
    print(f"summary of app {caller_app_name()} (Temporal, activities write with {summary['mode']}):")
    print(f"  workflows completed  {summary['completed']}/{n} in {summary['wall_s']:.2f} s ({summary['failed']} failed)")
    print(f"  progress events      {summary['progress_events_published']} published "
          f"({summary['progress_events_resent_by_retries']} re-sent by retried activities), "
          f"{summary['progress_events_applied']} applied; "
          f"{summary['step_records_applied']}/{summary['step_records_expected']} step records in the final states")  # fmt: skip
    print(f"  activity time        {pct('activity_ms')} step activities")
    print(f"  publish-to-visible   {pct('publish_to_visible_ms')} final writes (save_state_object until sync returns)")
    print(f"  workflow completion  {pct('workflow_completion_ms')} workflows")
    print(f"  credentials          {n} saved with SecretStore, {summary['credentials_read_back']}/{n} read back by guid in activities")
    print(f"  final states checked {summary['final_states_as_written']}/{n} as expected", flush=True)


async def main(count: int | None = None, steps: int | None = None) -> int:
    """Run the example against a running stack; exit status 0 when every check passes."""
    from examples.temporal.worker import connect

    count = count or int(os.environ.get("TEMPORAL_WORKFLOWS", "50"))
    steps = steps or int(os.environ.get("TEMPORAL_STEPS", "5"))
    client = await connect()
    print(f"starting {count} Temporal workflows of {steps} steps each (task queue {task_queue()!r})", flush=True)
    tty = sys.stdout.isatty()
    report = await run_workflows(
        client, count, steps,
        progress=lambda line: print(("\r" if tty else "") + line, end="" if tty else "\n", flush=True),
    )  # fmt: skip
    await StateStore.flush()
    print()
    summary = report.summary()
    print_summary(summary)
    for workflow_id, reason in list(report.failures.items())[:5]:
        print(f"failed: {workflow_id}: {reason}")
    ok = summary["completed"] == summary["final_states_as_written"] == summary["credentials_read_back"] == count
    return 0 if ok else 1
