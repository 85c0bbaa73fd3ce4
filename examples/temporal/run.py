"""The starter: save N workflows' arguments, start the workflows, watch them, check what they left.

As the reference's ``start_workflow`` does (examples.workflow_args), each workflow's
credentials are replaced by their guid (SecretStore), ``application_name`` and
``workflow_id`` are added, and the whole object is saved with ``save_state_object``
under the workflow id; then the workflow starts with its id only, and its first activity
reads the arguments with ``get_state`` in the worker process. ``make run ENGINE=temporal``
calls :func:`main` (N from TEMPORAL_WORKFLOWS, default 50); the integration test and
bench/temporal call :func:`run_workflows`.
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
from temporalio.exceptions import ApplicationError

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
from examples.workflow_args import ARGS_NOT_FOUND, CredentialBatcher, save_workflow_args
from statestore import StateQueryClient, StateStore, StateType
from statestore.core.paths import caller_app_name
from statestore.core.settings import get_settings
from statestore.core.sidecar import SidecarClient
from statestore.publisher.demo import settled_count

__all__ = ["RunReport", "run_workflows", "read_state", "main"]

W = StateType.WORKFLOWS


@dataclass
class RunReport:
    """What a run of N workflows did, and what it left in the state store."""

    mode: str
    steps: int
    ids: list[str]
    fingerprints: dict[str, str]  # workflow id -> digest of the credentials it was started with
    args: dict[str, dict] = field(default_factory=dict)  # workflow id -> the arguments saved for it
    args_saved_s: float = 0.0
    results: dict[str, WorkflowResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    args_not_found: list[str] = field(default_factory=list)  # workflows whose get_workflow_args found nothing
    completion_s: dict[str, float] = field(default_factory=dict)  # start -> result, per workflow
    wall_s: float = 0.0
    final_states: dict[str, dict | None] = field(default_factory=dict)
    events_applied: int | None = None  # processed, per the states' producer records (statestore mode)

    def expected_state(self, workflow_id: str) -> dict[str, Any]:
        """What workflow ``workflow_id`` must leave: with statestore its arguments and its
        progress are one state; rmw writes the progress to a key of its own."""
        return expected_state(workflow_id, self.steps, self.args.get(workflow_id) if self.mode == "statestore" else None)

    def states_as_written(self) -> list[str]:
        """Ids whose final state differs from what the workflow wrote."""
        return [i for i in self.ids if self.final_states.get(i) != self.expected_state(i)]

    def args_read_back(self) -> int:
        """Workflows whose get_workflow_args found their arguments. A read that finds nothing
        is not retried (the workflow fails: ``args_not_found``), so each of these is a read
        that found them."""
        return sum(1 for r in self.results.values() if r.args is not None)

    def args_read_at_first_attempt(self) -> int:
        """Of those, the ones read by the activity's first attempt (a later attempt runs
        only when Temporal lost one: a worker or server too slow to report it in time)."""
        return sum(1 for r in self.results.values() if r.args is not None and r.args.read_attempt == 1)

    def progress_events_published(self) -> int:
        """Events the activities sent: 1 per update of every attempt, failed ones included
        (at most: an attempt Temporal lost before the worker ran it sent nothing)."""
        return sum(s.events * s.attempt for r in self.results.values() for s in r.steps) + sum(
            r.finish.events for r in self.results.values() if r.finish
        )

    def progress_events_certain(self) -> int:
        """Events certainly sent: by the recorded attempts, and by the first attempts that
        failed on purpose after writing (``fail_once_at_step``)."""
        injected = sum(s.events for r in self.results.values() if r.args for s in r.steps
                       if s.step == r.args.fail_once_at_step and s.attempt > 1)  # fmt: skip
        return sum(s.events for r in self.results.values() for s in r.steps) + injected + sum(
            r.finish.events for r in self.results.values() if r.finish
        )

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
        published = self.progress_events_published()
        return {
            "mode": self.mode,
            "workflows": len(self.ids),
            "completed": len(self.results),
            "failed": len(self.failures),
            "args_saved_s": round(self.args_saved_s, 2),
            "args_read_back": self.args_read_back(),
            "args_read_at_first_attempt": self.args_read_at_first_attempt(),
            "args_not_found": len(self.args_not_found),
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

    ``progress`` gets a status line every 0.5 s; ``started`` is set once the arguments
    are saved and the workflows are being started (bench/temporal slows the store then)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if count < 1 or steps < 1:
        raise ValueError(f"count and steps must be at least 1 (got {count} and {steps})")
    tag = uuid.uuid4().hex[:8]
    ids = [f"temporal-{mode}-{tag}-{n}" for n in range(count)]
    configs = {i: {"host": f"db-{n}.internal", "port": 5432, "username": f"svc{n}", "password": secrets.token_hex(16)}
               for n, i in enumerate(ids)}  # fmt: skip
    report = RunReport(mode, steps, ids, {i: credential_fingerprint(c) for i, c in configs.items()})
    # The arguments of every workflow, credentials replaced by their guid (saved in
    # batches), each saved with save_state_object: stored when this returns. The
    # arguments are in statestore in both modes (mode says how the activities write).
    batcher = CredentialBatcher()
    jobs = {i: {"credentials": configs[i], "steps": steps, "mode": mode, "fail_once_at_step": fail_once_at_step} for i in ids}
    begun = time.perf_counter()
    report.args = dict(zip(ids, await asyncio.gather(*(save_workflow_args(i, jobs[i], batcher) for i in ids))))
    report.args_saved_s = time.perf_counter() - begun

    t0 = time.perf_counter()

    async def one(workflow_id: str) -> None:
        begun = time.perf_counter()
        try:  # started with its id only, no sync() since its arguments were saved
            report.results[workflow_id] = await client.execute_workflow(
                StateStoreWorkflow.run, WorkflowInput(workflow_id),
                id=workflow_id, task_queue=task_queue(), result_type=WorkflowResult,
            )  # fmt: skip
            report.completion_s[workflow_id] = time.perf_counter() - begun
        except Exception as exc:  # reported in the summary, with the reason
            cause = _innermost(exc)
            if isinstance(cause, ApplicationError) and cause.type == ARGS_NOT_FOUND:
                report.args_not_found.append(workflow_id)
            report.failures[workflow_id] = f"{type(cause).__name__}: {cause}"

    runs = asyncio.gather(*(one(i) for i in ids))
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
        # The final replace is stored; the progress events it superseded are published
        # (each step flushed them), applied by the subscriber when it gets to them.
        runtime = StateStore.runtime()
        starter = {runtime.producer_id, runtime.confirmed_producer_id}  # the arguments' replaces
        report.events_applied = await settled_count(
            lambda: events_applied(ids, exclude=starter), report.progress_events_certain()
        )  # fmt: skip
    return report


def _innermost(exc: BaseException) -> BaseException:
    """The root cause of a workflow's failure (WorkflowFailureError > ActivityError > ...)."""
    while getattr(exc, "cause", None) is not None or exc.__cause__ is not None:
        exc = getattr(exc, "cause", None) or exc.__cause__
    return exc


async def events_applied(ids: list[str], exclude: set[str] = frozenset()) -> int:
    """How many events the subscriber applied to these workflow states: the sequence
    numbers each state's producer records say were processed (re-sent events included),
    but those of the producer ids ``exclude``."""
    sidecar = SidecarClient()
    try:
        documents = await StateQueryClient(sidecar, get_settings().statestore_name).get_documents(ids, W)
    finally:
        await sidecar.close()
    return sum(p.upto + len(p.ahead) for d in documents.values() for name, p in d.producers.items() if name not in exclude)


def print_summary(summary: dict[str, Any]) -> None:
    """The same summary as the Dapr Workflows example's run."""

    def pct(name: str) -> str:
        p = summary[name]
        return f"p50 {p.get('p50_ms', 0):.1f} ms, p99 {p.get('p99_ms', 0):.1f} ms over {p.get('n', 0)}"

    n = summary["workflows"]
    print(f"summary of app {caller_app_name()} (Temporal, activities write with {summary['mode']}):")
    print(f"  workflows completed  {summary['completed']}/{n} in {summary['wall_s']:.2f} s ({summary['failed']} failed)")
    print(f"  workflow args        read back {summary['args_read_back']}/{n}, {summary['args_read_at_first_attempt']} "
          f"at the first attempt ({summary['args_not_found']} reads found nothing); saved in {summary['args_saved_s']:.2f} s")
    print(f"  progress events      {summary['progress_events_published']} published "
          f"({summary['progress_events_resent_by_retries']} re-sent by retried activities), "
          f"{summary['progress_events_applied']} applied; "
          f"{summary['step_records_applied']}/{summary['step_records_expected']} step records in the final states")  # fmt: skip
    print(f"  activity time        {pct('activity_ms')} step activities")
    print(f"  publish-to-visible   {pct('publish_to_visible_ms')} final writes (save_state_object until it returns)")
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
    ok = (summary["completed"] == summary["final_states_as_written"] == summary["credentials_read_back"]
          == summary["args_read_back"] == count and summary["args_not_found"] == 0)  # fmt: skip
    return 0 if ok else 1
