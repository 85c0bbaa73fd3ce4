"""The Dapr Workflows engine for the local stack: placement and scheduler on 127.0.0.1.

Only what needs workflows starts them (`make run`, the workflow tests, the workflow
bench); `make up` and the rest of the tests stay without them. A workflow app's sidecar
gets ``WorkflowEngine.daprd_flags()``; its actor state store is the component
``workflowstate`` (components/workflowstate.yaml), scoped to the workflow app ids.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from statestore.devstack.processes import ManagedProcess, StackError, ensure_port_free, free_port, http_ok
from statestore.devstack.stack import PROJECT_ROOT, SidecarSpec, Stack

__all__ = ["EnginePorts", "WorkflowEngine", "workflow_sidecar", "workflow_app", "PLACEMENT", "SCHEDULER", "WORKFLOW_APP_IDS"]

BIN = PROJECT_ROOT / ".runtime" / ".dapr" / "bin"
PLACEMENT = BIN / "placement"
SCHEDULER = BIN / "scheduler"
# The app ids that run workflows; the components' scopes name the same ids.
WORKFLOW_APP_IDS = ("statestore-workflows", "statestore-workflows-orders")
HEALTH_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class EnginePorts:
    """Every port placement and scheduler listen on (all 127.0.0.1)."""

    placement: int = 50005
    placement_raft: int = 8201
    placement_healthz: int = 8081
    placement_metrics: int = 9095
    scheduler: int = 50006
    scheduler_healthz: int = 8082
    scheduler_metrics: int = 9096
    scheduler_etcd_client: int = 2379
    scheduler_etcd_peer: int = 2380

    @classmethod
    def free(cls) -> EnginePorts:
        """Ports that are free now: for an engine beside another one (tests)."""
        return cls(*(free_port() for _ in range(9)))

    def named(self) -> dict[str, int]:
        """Each port by what listens there (for "port in use" errors)."""
        return {f"{name.replace('_', ' ')}": port for name, port in self.__dict__.items()}


def _listen_flags(port: int, healthz: int, metrics: int) -> list[str]:
    """The flags placement and scheduler share: their API, health and metrics ports, on 127.0.0.1 only."""
    return [
        "--port", str(port), "--listen-address", "127.0.0.1",
        "--healthz-port", str(healthz), "--healthz-listen-address", "127.0.0.1",
        "--metrics-port", str(metrics), "--metrics-listen-address", "127.0.0.1",
    ]  # fmt: skip


class WorkflowEngine:
    """placement and scheduler as managed processes of the stack folder ``local``: logs in
    ``local/logs``, pid files in ``local/run``, the scheduler's embedded etcd in
    ``local/scheduler-etcd`` (placement keeps its tables in memory)."""

    def __init__(self, local: Path, ports: EnginePorts | None = None) -> None:
        self.ports = ports or EnginePorts()
        self.local = Path(local)
        p = self.ports
        logs, run = self.local / "logs", self.local / "run"
        etcd = self.local / "scheduler-etcd"
        self.placement = ManagedProcess(
            "placement",
            [
                str(PLACEMENT),
                *_listen_flags(p.placement, p.placement_healthz, p.placement_metrics),
                # raft binds its own port: the default (8201) would clash with a second engine
                "--initial-cluster", f"dapr-placement-0=127.0.0.1:{p.placement_raft}",
                "--log-level", "warn",
            ],  # fmt: skip
            log_path=logs / "placement.log",
            pid_path=run / "placement.pid",
            cwd=self.local,
        )
        self.scheduler = ManagedProcess(
            "scheduler",
            [
                str(SCHEDULER),
                *_listen_flags(p.scheduler, p.scheduler_healthz, p.scheduler_metrics),
                "--etcd-data-dir", str(etcd),
                "--etcd-client-port", str(p.scheduler_etcd_client),
                "--etcd-client-listen-address", "127.0.0.1",
                "--etcd-initial-cluster", f"dapr-scheduler-server-0=http://127.0.0.1:{p.scheduler_etcd_peer}",
                "--log-level", "warn",
            ],  # fmt: skip
            log_path=logs / "scheduler.log",
            pid_path=run / "scheduler.pid",
            cwd=self.local,
        )

    def processes(self) -> list[ManagedProcess]:
        return [self.placement, self.scheduler]

    def daprd_flags(self) -> list[str]:
        """What a workflow app's daprd needs to reach the engine."""
        return [
            "--placement-host-address", f"127.0.0.1:{self.ports.placement}",
            "--scheduler-host-address", f"127.0.0.1:{self.ports.scheduler}",
        ]  # fmt: skip

    def start(self) -> None:
        """Start both and return once both answer /healthz; raise StackError otherwise."""
        for binary in (PLACEMENT, SCHEDULER):
            if not binary.exists():
                raise StackError(f"{binary} is missing: run `make setup` (runtime/build.sh dapr builds it).")
        for what, port in self.ports.named().items():
            ensure_port_free(port, what)
        try:
            for proc, healthz in ((self.placement, self.ports.placement_healthz),
                                  (self.scheduler, self.ports.scheduler_healthz)):  # fmt: skip
                proc.start()
                proc.wait_healthy(lambda port=healthz: http_ok(f"http://127.0.0.1:{port}/healthz"), HEALTH_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> list[str]:
        """Stop both (also ones a killed `make run` left behind, found by pid file);
        returns the names of those that were running."""
        stopped = []
        for proc in reversed(self.processes()):
            if proc.alive():
                stopped.append(proc.name)
            proc.stop()
        return stopped


def workflow_sidecar(stack: Stack, engine: WorkflowEngine, spec: SidecarSpec) -> ManagedProcess:
    """A daprd for a workflow app of ``stack``, connected to ``engine`` (not started)."""
    return stack._process(f"{spec.app_id}-daprd", stack._daprd_argv(spec) + engine.daprd_flags())


def workflow_app(stack: Stack, spec: SidecarSpec, mode: str, env: dict[str, str]) -> ManagedProcess:
    """``python -m examples.workflows mode`` using the sidecar ``spec`` (not started)."""
    env = {**stack.caller_env(), "DAPR_GRPC_PORT": str(spec.grpc_port), "DAPR_HTTP_PORT": str(spec.http_port),
           "PYTHONPATH": str(PROJECT_ROOT), **env}  # fmt: skip
    return stack._process(f"{spec.app_id}-app", [sys.executable, "-m", "examples.workflows", mode], env=env)
