"""Start, watch and stop the stack's processes; check ports; wait for health."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "StackError",
    "ManagedProcess",
    "ensure_port_free",
    "free_port",
    "port_open",
    "wait_until",
    "http_ok",
]


class StackError(RuntimeError):
    """The local stack could not start or stop; the message says what to do."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def ensure_port_free(port: int, what: str) -> None:
    """Raise StackError naming the port when it is already taken."""
    # As servers do: a port with connections in TIME_WAIT is still free to listen on.
    if not _can_bind(port, reuse_address=True):
        if not port_open(port):
            # Nothing listens: a closed connection that used the port as its own
            # ephemeral client port (Dapr's ports lie in Linux's ephemeral range) is
            # still in TIME_WAIT, and blocks a listener for up to 60 s.
            raise StackError(
                f"port {port} ({what}) cannot be listened on yet: nothing listens there, but a "
                f"recent connection still holds it (`ss -tan 'sport = :{port}'` shows it in "
                "TIME_WAIT). It frees within 60 s: run the command again then."
            )
        raise StackError(
            f"port {port} ({what}) is already in use on 127.0.0.1. Stop whatever listens "
            f"there (`ss -ltnp 'sport = :{port}'` shows it; `make down` stops our stack)."
        )


def _can_bind(port: int, reuse_address: bool) -> bool:
    """Whether a socket can bind ``port`` on 127.0.0.1 now (``reuse_address``: past TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_ISSUED: set[int] = set()  # ports free_port handed out in this process


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections take those)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port that is free on 127.0.0.1 right now, below the kernel's ephemeral range.

    A port the kernel picks (bind to 0) lies in that range, so any outgoing connection may
    take it between this call and the server binding it (a daprd of the test suite failed
    so: "bind: address already in use"). Below the range only a server that binds it can.
    Never the same port twice in one process."""
    low = _ephemeral_low()
    floor = 10_000 if low > 12_000 else 1024
    for _ in range(500):
        port = random.randint(floor, low - 1)
        if port in _ISSUED:
            continue
        if not _can_bind(port, reuse_address=False):  # in use, or held in TIME_WAIT
            continue
        _ISSUED.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # the range is crowded: the kernel's pick
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_ok(url: str) -> bool:
    """True when a GET of ``url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class ManagedProcess:
    """One child process in its own process group, logging to a file, with a pid file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        pid_path: Path,
        cwd: Path,
        env: dict[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal  # the signal for a clean, prompt shutdown
        self.argv = list(argv)
        self.log_path = log_path
        self.pid_path = pid_path
        self.cwd = cwd
        self.env = env
        self.popen: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        if self.popen is not None:
            return self.popen.pid
        return read_pid(self.pid_path)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(self.env or {})}
        with open(self.log_path, "ab") as log:
            try:
                self.popen = subprocess.Popen(
                    self.argv,
                    cwd=self.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except FileNotFoundError:
                raise StackError(
                    f"cannot start {self.name}: {self.argv[0]} not found. Run `make setup`."
                ) from None
        self.pid_path.write_text(str(self.popen.pid))

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        pid = self.pid
        return pid is not None and pid_alive(pid)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(text[-lines:])

    def wait_healthy(self, check: Callable[[], bool], timeout: float) -> None:
        """Wait for ``check``; raise StackError with the log's tail if it exits or times out."""
        ok = wait_until(lambda: check() or not self.alive(), timeout)
        if ok and self.alive():
            return
        state = "exited" if not self.alive() else f"did not become healthy within {timeout:g} s"
        self.stop()
        raise StackError(
            f"{self.name} {state}; read {self.log_path}. Last lines:\n{self.log_tail()}"
        )

    def signal(self, sig: int) -> None:
        pid = self.pid
        if pid is not None:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> None:
        """Send the stop signal (SIGTERM) to the group, SIGKILL after ``timeout``; remove the pid file."""
        if self.alive():
            self.signal(self.stop_signal)
            if not wait_until(lambda: not self.alive(), timeout):
                self.signal(signal.SIGKILL)
                wait_until(lambda: not self.alive(), 5.0)
        self.signal(signal.SIGKILL)  # anything the group left behind
        if self.popen is not None:
            self.popen.wait(timeout=5)
        self.pid_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, for fault tests)."""
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)
        else:
            wait_until(lambda: not self.alive(), 5.0)
        self.pid_path.unlink(missing_ok=True)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
