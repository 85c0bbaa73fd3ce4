"""What every backing server of a profile can do: install (cached), start, wait, stop."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from statestore.devstack.processes import ManagedProcess, ensure_port_free, port_open

__all__ = ["Server", "Spawn", "HEALTH_TIMEOUT_S"]

# The repository's root: the stack runs from a checkout (components/, runtime/, .runtime/).
# STATESTORE_PROJECT_ROOT names it when statestore runs installed from its wheel (make
# test-compat), where this file's own place says nothing of the checkout.
PROJECT_ROOT = Path(os.environ.get("STATESTORE_PROJECT_ROOT") or Path(__file__).resolve().parents[3])

HEALTH_TIMEOUT_S = 60.0

# Makes a ManagedProcess of the stack: (name, argv, extra env, stop signal) -> process.
Spawn = Callable[..., ManagedProcess]


class Server(ABC):
    """One server of a profile (Redis, Kafka, PostgreSQL, S3), rooted at ``local/<name>``.

    Subclasses say how to install it (``install``: idempotent, skipped when up to date),
    which processes it runs, which ports it listens on, and which component metadata
    values point Dapr at it (``component_metadata``: metadata name -> value).
    """

    name: ClassVar[str]
    label: ClassVar[str]  # for messages ("PostgreSQL")

    def __init__(self, local: Path, runtime: Path, spawn: Spawn, ports: dict[str, int]) -> None:
        self.local = local
        self.home = local / self.name
        self.runtime = runtime
        self.spawn = spawn
        self.ports = ports

    # -- what subclasses define -------------------------------------------------------

    @classmethod
    @abstractmethod
    def install(cls, runtime: Path) -> None:
        """Install what the server needs under ``runtime`` unless it is up to date."""

    @abstractmethod
    def processes(self) -> list[ManagedProcess]:
        """The server's processes, in start order."""

    @abstractmethod
    def prepare(self) -> None:
        """Create folders and configuration (idempotent: data survives a restart)."""

    def component_metadata(self) -> dict[str, str]:
        """Component metadata values that point at this server."""
        return {}

    def subscriber_env(self) -> dict[str, str]:
        """Environment the subscriber needs to use this server directly (not through Dapr)."""
        return {}

    def after_start(self) -> None:
        """Runs once the ports are open (create topics, buckets...)."""

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def main_port(self) -> int:
        """The port clients use (the first one named)."""
        return next(iter(self.ports.values()))

    def check_ports(self) -> None:
        for what, port in self.ports.items():
            ensure_port_free(port, f"{self.label} {what}".strip())

    def start(self) -> None:
        """Start the server and return once it serves (raise StackError otherwise)."""
        self.prepare()
        for proc in self.processes():
            proc.start()
            proc.wait_healthy(self.healthy, HEALTH_TIMEOUT_S)
        self.after_start()

    def healthy(self) -> bool:
        return port_open(self.main_port)

    def stop(self) -> None:
        for proc in reversed(self.processes()):
            proc.stop()

    def kill(self) -> None:
        for proc in self.processes():
            proc.kill()
