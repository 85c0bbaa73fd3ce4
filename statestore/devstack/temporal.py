"""Temporal beside the local stack, only when asked for: a Temporal dev server (the
Temporal CLI's `server start-dev`, sqlite under ``local/temporal``) and the Temporal
example's worker process with its own Dapr sidecar.

``make run ENGINE=temporal``, ``make up TEMPORAL=1`` and the Temporal tests start it;
``make down`` stops it with the rest. The binary is built by ``runtime/build.sh temporal``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from statestore.devstack.processes import ManagedProcess, StackError, ensure_port_free, free_port, http_ok, port_open
from statestore.devstack.stack import HEALTH_TIMEOUT_S, PROJECT_ROOT, SidecarSpec, Stack

__all__ = ["TEMPORAL", "WORKER_APP_ID", "TemporalPorts", "TemporalStack", "running", "run_temporal"]

TEMPORAL = PROJECT_ROOT / ".runtime" / "temporal" / "temporal"
WORKER_APP_ID = "statestore-temporal-worker"
NAMESPACE = "default"  # the dev server always creates it


@dataclass(frozen=True)
class TemporalPorts:
    """The Temporal dev server's ports and the worker's sidecar (all on 127.0.0.1)."""

    grpc: int = 7233
    http: int = 7243
    metrics: int = 7244
    worker: SidecarSpec = SidecarSpec(WORKER_APP_ID, 3520, 50040, 9093, 50041)

    @classmethod
    def free(cls) -> TemporalPorts:
        """Ports that are free now: beside another stack (tests, bench)."""
        return cls(
            free_port(), free_port(), free_port(),
            SidecarSpec(WORKER_APP_ID, free_port(), free_port(), free_port(), free_port()),
        )  # fmt: skip

    def named(self) -> dict[str, int]:
        return {"Temporal gRPC": self.grpc, "Temporal HTTP": self.http, "Temporal metrics": self.metrics,
                **self.worker.ports()}  # fmt: skip


@dataclass
class TemporalStack:
    """The Temporal dev server and the example worker (with its sidecar) of ``stack``.

    ``worker_env`` goes to the worker process, e.g. ``STATESTORE_APP_NAME``: the worker must
    share the starter's app name to read the arguments and credentials the starter saved.
    """

    stack: Stack
    ports: TemporalPorts = field(default_factory=TemporalPorts)
    worker_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder = self.stack.local / "temporal"
        self.ready_file = self.stack.run / "temporal-worker.ready"
        self.server = self.stack._process("temporal", self._server_argv())
        self.worker_sidecar = self.stack._process("temporal-worker-daprd", self.stack._daprd_argv(self.ports.worker))
        self.worker = self.stack._process(
            "temporal-worker",
            [sys.executable, "-m", "examples.temporal.worker"],
            env={
                **self.client_env(),
                "DAPR_GRPC_PORT": str(self.ports.worker.grpc_port),
                "DAPR_HTTP_PORT": str(self.ports.worker.http_port),
                "STATESTORE_TMP_ROOT": str(self.stack.local / "tmp"),
                "PYTHONPATH": str(PROJECT_ROOT),
                "TEMPORAL_WORKER_READY_FILE": str(self.ready_file),
                **self.worker_env,
            },
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    def client_env(self) -> dict[str, str]:
        """Where a Temporal client finds the server."""
        return {"TEMPORAL_ADDRESS": self.address, "TEMPORAL_NAMESPACE": NAMESPACE}

    def _server_argv(self) -> list[str]:
        return [
            str(TEMPORAL), "server", "start-dev", "--headless",
            "--ip", "127.0.0.1",
            "--port", str(self.ports.grpc),
            "--http-port", str(self.ports.http),
            "--metrics-port", str(self.ports.metrics),
            "--db-filename", str(self.folder / "temporal.db"),
            "--log-level", "error",
        ]  # fmt: skip

    def processes(self) -> list[ManagedProcess]:
        """In start order."""
        return [self.server, self.worker_sidecar, self.worker]

    def up(self) -> None:
        """Start the server, the worker's sidecar and the worker; return once all are ready.

        The rest of the stack (Redis, subscriber) must already run."""
        if not TEMPORAL.exists():
            raise StackError(f"{TEMPORAL} is missing: run `scripts/setup.sh temporal` to build the Temporal CLI.")
        for what, port in self.ports.named().items():
            ensure_port_free(port, what)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        try:
            self.server.start()
            # The HTTP API answers for the namespace once the server can take workflows.
            namespace_url = f"http://127.0.0.1:{self.ports.http}/api/v1/namespaces/{NAMESPACE}"
            self.server.wait_healthy(lambda: port_open(self.ports.grpc) and http_ok(namespace_url), HEALTH_TIMEOUT_S)
            self.stack.start_sidecar(self.worker_sidecar, self.ports.worker)
            self.worker.start()
            self.worker.wait_healthy(self.ready_file.exists, HEALTH_TIMEOUT_S)
        except BaseException:
            self.down()
            raise

    def down(self) -> list[str]:
        """Stop the worker, its sidecar and the server (also ones another `make up` started)."""
        stopped = []
        for proc in reversed(self.processes()):
            if proc.alive():
                stopped.append(proc.name)
            proc.stop()
        self.ready_file.unlink(missing_ok=True)
        return stopped


# The example's starter and worker share one app name: the worker reads the arguments and
# credentials the starter saved, in the starter's namespace.
EXAMPLE_APP_NAME = "temporal-example"


@contextmanager
def running(stack: Stack, temporal: TemporalStack, app_name: str) -> Iterator[None]:
    """Start the stack and Temporal, point this process's StateStore and Temporal client at
    them (as app ``app_name``); stop everything on the way out."""
    from statestore.core.settings import get_settings, get_sidecar_settings

    stack.up()
    try:
        temporal.up()
        os.environ.update({**stack.caller_env(), **temporal.client_env(), "STATESTORE_APP_NAME": app_name})
        get_settings.cache_clear(), get_sidecar_settings.cache_clear()
        yield
    finally:
        temporal.down()
        stack.down()


def run_temporal(base: Path = PROJECT_ROOT) -> int:
    """`make run ENGINE=temporal`: the stack, Temporal and the worker; the example's
    starter in this process; everything stopped at the end. Returns its exit status."""
    import asyncio

    from examples.temporal.run import main

    stack = Stack(base)
    temporal = TemporalStack(stack, worker_env={"STATESTORE_APP_NAME": EXAMPLE_APP_NAME})
    with running(stack, temporal, EXAMPLE_APP_NAME):
        return asyncio.run(main())
