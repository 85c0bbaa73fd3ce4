"""`python -m examples.workflows [run|worker]`: the workflow example app.

``run`` (what `make run` starts): registers the workflow, saves the arguments of
WORKFLOWS_COUNT workflows and starts them through the app's sidecar (examples.workflow_args),
prints a progress line every second and ends with a summary; exit status 0 when every
workflow read its arguments at the first attempt and completed with the state it wrote,
and every credential reads back by guid. ``worker`` only serves workflows (tests start them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime, WorkflowStatus

from examples.workflow_args import CredentialBatcher, save_workflow_args
from examples.workflows.app import StateStoreWriter, WorkflowApp, WorkflowArgsNotFound, final_state
from examples.workflows.settings import WorkflowSettings
from examples.workflows.starter import schedule_all
from statestore import SecretStore, StateStore, StateType
from statestore.publisher.demo import applied_events, p50_p99, probe_visible_delays, settled_count
from statestore.core.paths import caller_app_name

log = logging.getLogger("statestore.examples.workflows")

W = StateType.WORKFLOWS


def start_worker(app: WorkflowApp, settings: WorkflowSettings) -> WorkflowRuntime:
    """The app's workflow worker, connected to its sidecar."""
    runtime = WorkflowRuntime(
        host="127.0.0.1",
        port=str(settings.dapr_grpc_port),
        maximum_concurrent_activity_work_items=settings.activity_concurrency,
    )
    app.register(runtime)
    runtime.start()
    return runtime


def credential_for(workflow_id: str, app_name: str) -> dict[str, Any]:
    return {"app": app_name, "host": "db.internal", "port": 5432, "username": f"svc-{workflow_id}",
            "password": uuid.uuid4().hex}  # fmt: skip


class Run:
    """Start the workflows, watch them, check what they left behind."""

    def __init__(self, settings: WorkflowSettings, app: WorkflowApp) -> None:
        self.settings, self.app = settings, app
        self.app_name = caller_app_name()
        self.tag = settings.tag or uuid.uuid4().hex[:6]
        self.ids = [f"wf-{self.tag}-{n}" for n in range(settings.count)]
        self.credentials = {i: credential_for(i, self.app_name) for i in self.ids}
        self.batcher = CredentialBatcher()
        self.client = DaprWorkflowClient(host="127.0.0.1", port=str(settings.dapr_grpc_port))
        self.args: dict[str, dict[str, Any]] = {}  # workflow id -> the arguments saved for it
        self.states: dict[str, Any] = {}
        self.delays_ms: list[float] = []

    async def save_args(self) -> float:
        """Save every workflow's arguments, credentials replaced by their guid; returns how
        long that took (s)."""
        start = time.perf_counter()
        jobs = {i: {"credentials": self.credentials[i], "steps": self.settings.steps} for i in self.ids}
        saved = await asyncio.gather(*(save_workflow_args(i, jobs[i], self.batcher) for i in self.ids))
        self.args = dict(zip(self.ids, saved))
        return time.perf_counter() - start

    async def schedule(self) -> tuple[float, int]:
        """Start every workflow with its id only, right after the arguments were saved: no
        sync() in between; returns how long that took (s) and the starts made again."""
        start = time.perf_counter()
        retries = await schedule_all(self.client, self.ids)
        return time.perf_counter() - start, retries

    async def watch(self, start: float) -> None:
        """Poll the unfinished workflows; print a progress line every second."""
        terminal = {WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.TERMINATED}
        deadline = start + self.settings.timeout_s
        while len(self.states) < len(self.ids) and time.perf_counter() < deadline:
            for workflow_id in [i for i in self.ids if i not in self.states]:
                try:
                    state = await asyncio.to_thread(self.client.get_workflow_state, workflow_id, fetch_payloads=True)
                except grpc.RpcError as exc:
                    # The engine can answer a status read made while it saves the
                    # workflow with a transient error ("inbox key ... missing"): read again
                    # next round; the deadline still bounds the wait.
                    log.info("status of %s not readable yet (%s); polling again", workflow_id, exc.code())
                    continue
                if state is not None and state.runtime_status in terminal:
                    self.states[workflow_id] = state
            writer = self.app.writer
            events = getattr(writer, "events", 0)
            print(f"  {time.perf_counter() - start:5.1f}s  workflows completed {len(self.states)}/{len(self.ids)}, "
                  f"activities run {sum(self.app.executions.values())}, progress events {events}", flush=True)  # fmt: skip
            await asyncio.sleep(1.0)

    async def run(self) -> bool:
        s = self.settings
        print(f"workflows {self.tag} (app {self.app_name}): {s.count} workflows x {s.steps} steps", flush=True)
        start = time.perf_counter()
        probe_stop = asyncio.Event()
        prober = asyncio.create_task(probe_visible_delays(f"workflows-probe-{self.tag}", probe_stop, self.delays_ms))
        saved_s = await self.save_args()
        watcher = asyncio.create_task(self.watch(start))
        scheduled_s, retries = await self.schedule()
        print(f"  saved the arguments of {len(self.ids)} workflows in {saved_s:.2f} s "
              f"({self.batcher.saved} credentials in {self.batcher.batches} batches), started them in {scheduled_s:.2f} s"
              + (f" ({retries} starts refused by the busy workflow store, made again)" if retries else ""),
              flush=True)  # fmt: skip
        await watcher
        elapsed = time.perf_counter() - start
        probe_stop.set()
        await prober
        return await self.check(elapsed)

    async def check(self, elapsed: float) -> bool:
        completed, right, creds_ok, results = 0, 0, 0, {}
        for workflow_id in self.ids:
            state = self.states.get(workflow_id)
            if state is None or state.runtime_status != WorkflowStatus.COMPLETED:
                failure = state.failure_details if state else None
                why = f"{failure.error_type}: {failure.message}" if failure else ""
                print(f"  NOT COMPLETED {workflow_id}: {state.runtime_status.name if state else 'timed out'} {why}", flush=True)
                continue
            completed += 1
            output = json.loads(state.serialized_output)
            guid = self.args[workflow_id]["credential_guid"]
            expected = final_state(self.args[workflow_id])
            actual = await StateStore.get_state(workflow_id, W)
            if actual == expected == output:
                right += 1
            else:
                print(f"  MISMATCH {workflow_id}: state {actual}, workflow returned {output}", flush=True)
            if await SecretStore.get_credentials(guid) == self.credentials[workflow_id]:
                creds_ok += 1
            else:
                print(f"  CREDENTIAL MISMATCH {workflow_id} ({guid})", flush=True)
            results[workflow_id] = {"state": expected, "credential_guid": guid, "credentials": self.credentials[workflow_id]}
        # This run's workflows only: the engine also resumes those an earlier run of the
        # app left unfinished (Dapr Workflows are durable), in this process.
        # The arguments' first reads: each workflow's first execution of get_workflow_args.
        first_found = sum(1 for i in self.ids if self.app.args_reads.get(i, [False])[0])
        misses = sum(self.app.args_reads.get(i, []).count(False) for i in self.ids)
        failed_on_args = sum(1 for s in self.states.values() if s.failure_details
                             and s.failure_details.error_type == WorkflowArgsNotFound.__name__)  # fmt: skip
        # The arguments' replaces and the activities' events. The progress events are
        # published, not necessarily applied yet (the final replace superseded them): wait
        # until the subscriber applied them all, to count them.
        by_workflow = getattr(self.app.writer, "events_by_workflow", {})
        published = len(self.args) + sum(by_workflow.get(i, 0) for i in self.ids)
        applied = await settled_count(lambda: applied_events([(i, W) for i in self.ids]), published)
        durations_ms = [t * 1000 for times in self.app.activity_s.values() for t in times]
        act50, act99 = p50_p99(durations_ms)
        vis50, vis99 = p50_p99(self.delays_ms)
        n = len(self.ids)
        print(f"summary of app {self.app_name}:")
        print(f"  workflows completed  {completed}/{n} in {elapsed:.2f} s")
        print(f"  workflow args        read back {first_found}/{n} at the first attempt "
              f"({misses} reads found nothing, {failed_on_args} workflows failed on it)")
        print(f"  events               {published} published ({len(self.args)} workflow args, "
              f"{published - len(self.args)} progress and final), {applied} applied")
        print(f"  activity time        p50 {act50:.1f} ms, p99 {act99:.1f} ms over {len(durations_ms)} activities")
        print(f"  publish-to-visible   p50 {vis50:.1f} ms, p99 {vis99:.1f} ms over {len(self.delays_ms)} probes")
        print(f"  credentials          {self.batcher.saved} saved in {self.batcher.batches} batches, "
              f"{creds_ok}/{n} read back by guid")
        print(f"  final states checked {right}/{n} as expected", flush=True)
        if self.settings.results_file:
            self.settings.results_file.write_text(json.dumps({"app": self.app_name, "workflows": results}))
        return completed == right == creds_ok == first_found == n and misses == 0 and applied == published


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.workflows", description=__doc__)
    parser.add_argument("mode", nargs="?", choices=["run", "worker"], default="run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = WorkflowSettings()
    app = WorkflowApp(writer=StateStoreWriter(), step_ms=settings.step_ms, crash_marker=settings.crash_marker)
    if args.mode == "worker":  # blocked before the worker's threads start, so sigwait gets them
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    runtime = start_worker(app, settings)
    ok = False
    try:
        if args.mode == "worker":
            signal.sigwait({signal.SIGTERM, signal.SIGINT})
            return 0
        ok = asyncio.run(Run(settings, app).run())
    finally:
        app.close()
        runtime.shutdown()
        done = os.environ.get("STATESTORE_DEMO_DONE_FILE")
        if done and args.mode == "run":
            Path(done).write_text("0" if ok else "1")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
