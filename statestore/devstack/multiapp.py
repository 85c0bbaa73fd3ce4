"""`make run`: Redis, placement and scheduler, then the Dapr multi-app run of dapr.yaml
until the caller apps end.

The Dapr CLI keeps running after an app exits, so each caller app writes its exit status
to a file of its own; once all have, we stop the CLI (which stops every app and sidecar),
the workflow engine and Redis. The caller apps share one tag (DEMO_TAG, WORKFLOWS_TAG), so
they write the same state ids, each in its own app namespace.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from statestore.devstack.processes import StackError, free_port, wait_until
from statestore.devstack.stack import CONFIG, PROJECT_ROOT, Ports, SidecarSpec, Stack
from statestore.devstack.workflow_engine import EnginePorts, WorkflowEngine

__all__ = ["run_multiapp", "DAPR_CLI", "RUN_FILE"]

DAPR_CLI = PROJECT_ROOT / ".runtime" / "bin" / "dapr"
RUN_FILE = PROJECT_ROOT / "dapr.yaml"


def render_run_file(stack: Stack, demo_env: dict[str, str], engine: EnginePorts) -> tuple[Path, list[Path]]:
    """dapr.yaml with this stack's folder, ports, components, workflow engine and Python;
    and the file each caller app writes its exit status to."""
    doc = yaml.safe_load(RUN_FILE.read_text())
    common = doc["common"]
    common["resourcesPath"] = str(stack.resources)
    common["configFilePath"] = str(CONFIG)
    common["runtimePath"] = str(DAPR_CLI.parent.parent)
    common.setdefault("env", {})["PYTHONPATH"] = str(PROJECT_ROOT)
    callers = [stack.ports.caller]  # the first demo app uses the stack's caller ports
    done_files = []
    for app in doc["apps"]:
        if app["appID"] == stack.ports.subscriber.app_id:
            spec = stack.ports.subscriber
        else:
            spec = callers.pop() if callers else _declared_or_free(app, stack.ports == Ports())
            done = stack.run / f"demo-{app['appID']}.exit"
            done_files.append(done)
            app["env"] = {**app.get("env", {}), **demo_env, "STATESTORE_DEMO_DONE_FILE": str(done)}
        app["appDirPath"] = str(stack.base)
        app["command"] = [sys.executable, *app["command"][1:]]
        app["daprHTTPPort"], app["daprGRPCPort"] = spec.http_port, spec.grpc_port
        app["daprInternalGRPCPort"], app["metricsPort"] = spec.internal_grpc_port, spec.metrics_port
        if "appPort" in app:
            app["appPort"] = spec.app_port
        if app.get("placementHostAddress"):  # a workflow app: this run's engine
            app["placementHostAddress"] = f"127.0.0.1:{engine.placement}"
            app["schedulerHostAddress"] = f"127.0.0.1:{engine.scheduler}"
    path = stack.run / "dapr.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, done_files


def _declared_or_free(app: dict, declared: bool) -> SidecarSpec:
    """A further caller app's ports: as dapr.yaml declares them for `make run`, free ones
    for a stack beside another (tests)."""
    if declared:
        ports = (app["daprHTTPPort"], app["daprGRPCPort"], app["metricsPort"], app["daprInternalGRPCPort"])
    else:
        ports = (free_port(), free_port(), free_port(), free_port())
    return SidecarSpec(app["appID"], *ports)


def run_multiapp(
    base: Path = PROJECT_ROOT,
    ports: Ports | None = None,
    demo_env: dict[str, str] | None = None,
    timeout: float = 900.0,
    output=None,
) -> int:
    """Run dapr.yaml's apps until every caller app finishes; return the worst exit status."""
    if not DAPR_CLI.exists():
        raise StackError(f"{DAPR_CLI} is missing: run `make setup` to build the Dapr CLI.")
    stack = Stack(base, ports or Ports())
    stack.prepare()
    engine = WorkflowEngine(stack.local, EnginePorts() if stack.ports == Ports() else EnginePorts.free())
    tag = secrets.token_hex(3)
    run_file, done_files = render_run_file(stack, {"DEMO_TAG": tag, "WORKFLOWS_TAG": tag, **(demo_env or {})}, engine.ports)
    for done_file in done_files:
        done_file.unlink(missing_ok=True)
    stack.start_redis()
    cli = None
    try:
        engine.start()
        cli = subprocess.Popen(
            [str(DAPR_CLI), "run", "-f", str(run_file)],
            cwd=stack.base,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
        )  # the CLI makes its own process group (pgid = its pid)
        def finished() -> bool:
            return all(done.exists() for done in done_files)

        if not wait_until(lambda: finished() or cli.poll() is not None, timeout, 0.2):
            raise StackError(f"the demos did not finish within {timeout:g} s; logs are in {stack.base / '.dapr' / 'logs'}")
        if not finished():
            raise StackError(f"dapr run exited ({cli.returncode}) before the demos finished; see its output above")
        return max(int(done.read_text() or 1) for done in done_files)
    finally:
        if cli is not None and cli.poll() is None:
            cli.send_signal(signal.SIGTERM)
            try:
                cli.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(cli.pid, signal.SIGKILL)
                cli.wait(timeout=10)
        engine.stop()
        stack.redis.stop()
