"""Redis (Debian's redis-server): the local profile's pub/sub."""

from __future__ import annotations

import shutil
from pathlib import Path

from statestore.devstack.processes import ManagedProcess, StackError
from statestore.devstack.servers.base import Server

__all__ = ["RedisServer"]


class RedisServer(Server):
    name = "redis"
    label = "Redis"

    @classmethod
    def install(cls, runtime: Path) -> None:
        # scripts/setup.sh installs Debian's package (it needs apt-get, not Python).
        if not shutil.which("redis-server"):
            raise StackError("redis-server is not installed: run `make setup` (installs Debian's redis-server).")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.process = self.spawn("redis", self._argv())

    def _argv(self) -> list[str]:
        return [
            shutil.which("redis-server") or "redis-server",
            "--bind", "127.0.0.1",
            "--port", str(self.main_port),
            "--dir", str(self.home),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
            "--daemonize", "no",
        ]  # fmt: skip

    def processes(self) -> list[ManagedProcess]:
        return [self.process]

    def prepare(self) -> None:
        self.install(self.runtime)
        self.home.mkdir(parents=True, exist_ok=True)

    def component_metadata(self) -> dict[str, str]:
        return {"redisHost": f"127.0.0.1:{self.main_port}"}
