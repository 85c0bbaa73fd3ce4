"""PostgreSQL from the machine's binaries, initdb'd under local/postgres, on 127.0.0.1.

initdb and postgres refuse to run as root: as root they run as the ``postgres`` system
user (created when missing), which then owns the data and socket folders. The server
runs in the foreground under the stack's process supervision; SIGINT is its fast
shutdown (SIGTERM would wait for every client, daprd's pools included, to leave).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import stat
import subprocess
from pathlib import Path

from statestore.devstack.processes import ManagedProcess, StackError
from statestore.devstack.servers.base import Server

__all__ = ["PostgresServer", "DATABASE", "USER"]

USER = "postgres"
DATABASE = "postgres"
SYSTEM_USER = "postgres"


def bindir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin, or where pg_ctl is on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise StackError("PostgreSQL is not installed: run `make setup` (installs Debian's postgresql).")


def as_server_user() -> list[str]:
    """The argv prefix that drops root to the postgres system user (nothing when not root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER], check=True)
    return ["setpriv", f"--reuid={SYSTEM_USER}", f"--regid={SYSTEM_USER}", "--init-groups", "--"]


def hand_to_server_user(folder: Path) -> None:
    """Make ``folder`` the server user's and let that user reach it through its parents."""
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam(SYSTEM_USER)
    os.chown(folder, user.pw_uid, user.pw_gid)
    for parent in folder.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:  # e.g. pytest's 0700 temporary folders
            parent.chmod(mode | stat.S_IXOTH)


class PostgresServer(Server):
    name = "postgres"
    label = "PostgreSQL"

    @classmethod
    def install(cls, runtime: Path) -> None:
        bindir()  # the binaries come from Debian's package (scripts/setup.sh)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.data = self.home / "data"
        self.sockets = self.home / "sockets"
        self.process = self.spawn(
            "postgres",
            [
                *as_server_user(), str(bindir() / "postgres"),
                "-D", str(self.data),
                "-p", str(self.main_port),
                "-k", str(self.sockets),
                "-c", "listen_addresses=127.0.0.1",
            ],  # fmt: skip
            stop_signal=signal.SIGINT,
        )

    def processes(self) -> list[ManagedProcess]:
        return [self.process]

    def prepare(self) -> None:
        for folder in (self.home, self.sockets):
            folder.mkdir(parents=True, exist_ok=True)
            hand_to_server_user(folder)
        if (self.data / "PG_VERSION").exists():
            return
        result = subprocess.run(
            [*as_server_user(), str(bindir() / "initdb"), "-D", str(self.data), "-U", USER,
             "-A", "trust", "-E", "UTF8", "--no-locale"],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"PostgreSQL initdb in {self.data} failed:\n{(result.stdout + result.stderr)[-2000:]}")

    def healthy(self) -> bool:
        # The port opens before the server accepts sessions ("the database system is
        # starting up"): ask the server itself.
        ready = subprocess.run(
            [str(bindir() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.main_port), "-U", USER, "-t", "1"]
        )
        return ready.returncode == 0

    def connection_string(self) -> str:
        return f"host=127.0.0.1 port={self.main_port} user={USER} dbname={DATABASE} sslmode=disable"

    def component_metadata(self) -> dict[str, str]:
        return {"connectionString": self.connection_string()}
