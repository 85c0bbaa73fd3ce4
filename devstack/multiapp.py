"""`make run`: Redis, then the Dapr multi-app run of dapr.yaml until the demo ends.

The Dapr CLI keeps running after an app exits, so the demo writes its exit status to a
file; we then stop the CLI (which stops both apps and sidecars) and Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from devstack.processes import StackError, wait_until
from devstack.stack import CONFIG, PROJECT_ROOT, Ports, Stack

__all__ = ["run_multiapp", "DAPR_CLI", "RUN_FILE"]

DAPR_CLI = PROJECT_ROOT / ".runtime" / "bin" / "dapr"
RUN_FILE = PROJECT_ROOT / "dapr.yaml"


def render_run_file(stack: Stack, demo_env: dict[str, str]) -> Path:
    """dapr.yaml with this stack's folder, ports, components and Python."""
    doc = yaml.safe_load(RUN_FILE.read_text())
    common = doc["common"]
    common["resourcesPath"] = str(stack.resources)
    common["configFilePath"] = str(CONFIG)
    common["runtimePath"] = str(DAPR_CLI.parent.parent)
    common.setdefault("env", {})["PYTHONPATH"] = str(PROJECT_ROOT)
    specs = {stack.ports.subscriber.app_id: stack.ports.subscriber}
    for app in doc["apps"]:
        spec = specs.get(app["appID"], stack.ports.caller)
        app["appDirPath"] = str(stack.base)
        app["command"] = [sys.executable, *app["command"][1:]]
        app["daprHTTPPort"], app["daprGRPCPort"] = spec.http_port, spec.grpc_port
        app["daprInternalGRPCPort"], app["metricsPort"] = spec.internal_grpc_port, spec.metrics_port
        if "appPort" in app:
            app["appPort"] = spec.app_port
        else:
            app["env"] = {**app.get("env", {}), **demo_env}
    path = stack.run / "dapr.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_multiapp(
    base: Path = PROJECT_ROOT,
    ports: Ports | None = None,
    demo_env: dict[str, str] | None = None,
    timeout: float = 900.0,
    output=None,
) -> int:
    """Run dapr.yaml's apps until the demo finishes; return the demo's exit status."""
    if not DAPR_CLI.exists():
        raise StackError(f"{DAPR_CLI} is missing: run `make setup` to build the Dapr CLI.")
    stack = Stack(base, ports or Ports())
    done_file = stack.run / "demo.exit"
    stack.prepare()
    done_file.unlink(missing_ok=True)
    run_file = render_run_file(stack, {**(demo_env or {}), "STATESTORE_DEMO_DONE_FILE": str(done_file)})
    stack.start_redis()
    cli = None
    try:
        cli = subprocess.Popen(
            [str(DAPR_CLI), "run", "-f", str(run_file)],
            cwd=stack.base,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
        )  # the CLI makes its own process group (pgid = its pid)
        if not wait_until(lambda: done_file.exists() or cli.poll() is not None, timeout, 0.2):
            raise StackError(f"the demo did not finish within {timeout:g} s; logs are in {stack.base / '.dapr' / 'logs'}")
        if not done_file.exists():
            raise StackError(f"dapr run exited ({cli.returncode}) before the demo finished; see its output above")
        return int(done_file.read_text() or 1)
    finally:
        if cli is not None and cli.poll() is None:
            cli.send_signal(signal.SIGTERM)
            try:
                cli.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(cli.pid, signal.SIGKILL)
                cli.wait(timeout=10)
        stack.redis.stop()
