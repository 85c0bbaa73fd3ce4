"""The stack: a profile's servers, the subscriber app(s) with their sidecars, and a caller sidecar.

Profile ``local`` runs Redis (sqlite and local files need no server) and one subscriber;
profile ``scale`` runs Kafka, PostgreSQL and S3Proxy and three subscriber replicas
(statestore/devstack/servers). ``make up [PROFILE=scale]`` / ``make down`` run it in ./local with
Dapr's default caller ports (3500/50001), so a plain Python process using the SDK
defaults works; the integration tests run their own copy in a temporary folder on free
ports.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from statestore.cli.metrics import health_answer
from statestore.devstack.processes import (
    ManagedProcess,
    StackError,
    ensure_port_free,
    free_port,
    http_ok,
    pid_alive,
    port_open,
)
from statestore.devstack.servers import Profile, Server, get_profile
from statestore.devstack.servers.base import HEALTH_TIMEOUT_S, PROJECT_ROOT
from statestore.publisher.keys import ensure_keyring

__all__ = ["Ports", "SidecarSpec", "Stack", "StackError", "AppHealthProbe", "APP_HEALTH_PROBE", "PROJECT_ROOT", "DAPRD", "RUNTIME"]

RUNTIME = PROJECT_ROOT / ".runtime"
DAPRD = RUNTIME / ".dapr" / "bin" / "daprd"
CONFIG = PROJECT_ROOT / "config" / "dapr-config.yaml"
# daprd --max-body-size of every sidecar the project starts; dapr.yaml's maxBodySize and
# SidecarSettings.max_body_bytes (16 MiB) agree with it (a unit test checks).
MAX_BODY_SIZE = "16Mi"

SUBSCRIBER_APP_ID = "statestore-subscriber"
CALLER_APP_ID = "statestore-caller"


@dataclass(frozen=True)
class AppHealthProbe:
    """Dapr's app health probe of every subscriber sidecar, on the profiles whose pub/sub
    allows it (``Profile.app_health_check``: scale); the Kubernetes annotations say the
    same (a unit test checks). docs/scaling.md, "When a replica dies or hangs", says why
    these values."""

    interval_s: int = 1  # daprd takes whole seconds: the shortest it allows
    timeout_ms: int = 800
    threshold: int = 3

    def daprd_flags(self) -> list[str]:
        return [
            "--enable-app-health-check",
            "--app-health-probe-interval", str(self.interval_s),
            "--app-health-probe-timeout", str(self.timeout_ms),
            "--app-health-threshold", str(self.threshold),
        ]  # fmt: skip


APP_HEALTH_PROBE = AppHealthProbe()


@dataclass(frozen=True)
class SidecarSpec:
    """The ports of one daprd."""

    app_id: str
    http_port: int
    grpc_port: int
    metrics_port: int
    internal_grpc_port: int
    app_port: int | None = None
    app_metrics_port: int | None = None  # the subscriber's /metrics and /healthz/*

    def ports(self) -> dict[str, int]:
        named = {
            f"{self.app_id} sidecar HTTP": self.http_port,
            f"{self.app_id} sidecar gRPC": self.grpc_port,
            f"{self.app_id} sidecar metrics": self.metrics_port,
            f"{self.app_id} sidecar internal gRPC": self.internal_grpc_port,
        }
        if self.app_port is not None:
            named[f"{self.app_id} app"] = self.app_port
        if self.app_metrics_port is not None:
            named[f"{self.app_id} app metrics"] = self.app_metrics_port
        return named


@dataclass(frozen=True)
class Ports:
    """Every port the stack listens on (all on 127.0.0.1)."""

    redis: int = 6379
    kafka: int = 9092
    kafka_controller: int = 9093
    postgres: int = 5432
    s3: int = 9000
    subscriber: SidecarSpec = SidecarSpec(SUBSCRIBER_APP_ID, 3501, 50002, 9091, 50012, 50051, 9464)
    caller: SidecarSpec = SidecarSpec(CALLER_APP_ID, 3500, 50001, 9090, 50011)

    @classmethod
    def free(cls) -> Ports:
        """Ports that are free now: for a stack beside another one (tests)."""
        return cls(
            redis=free_port(),
            kafka=free_port(),
            kafka_controller=free_port(),
            postgres=free_port(),
            s3=free_port(),
            subscriber=SidecarSpec(
                SUBSCRIBER_APP_ID, free_port(), free_port(), free_port(), free_port(), free_port(), free_port()
            ),
            caller=SidecarSpec(CALLER_APP_ID, free_port(), free_port(), free_port(), free_port()),
        )


@dataclass
class Stack:
    """The processes of one stack, rooted at ``base`` (daprd's working folder).

    ``base/local/`` holds the sqlite files, the object store (``local/tmp``), each
    server's data (``local/<server>``), logs (``local/logs``) and pid files (``local/run``).
    ``replicas`` (default: the profile's) subscriber apps run, each with its own sidecar.
    """

    base: Path
    ports: Ports = field(default_factory=Ports)
    extra_env: dict[str, str] = field(default_factory=dict)
    api_tokens: bool = False  # DAPR_API_TOKEN on every sidecar, APP_API_TOKEN for the subscriber
    profile: Profile | str = "local"
    replicas_wanted: int | None = None
    # Component metadata values to override by name (e.g. {"cleanupInterval": "1s"} so tests
    # see the store's TTL cleanup in seconds); only items the components already have.
    component_metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base = Path(self.base).resolve()
        self.tokens = (
            {"DAPR_API_TOKEN": secrets.token_hex(16), "APP_API_TOKEN": secrets.token_hex(16)}
            if self.api_tokens
            else {}
        )
        self.local = self.base / "local"
        self.logs = self.local / "logs"
        self.run = self.local / "run"
        self.resources = self.run / "components"
        self.keys_file = self.local / "secrets" / "statestore-keys.json"
        self.profile = get_profile(self.profile)
        self.servers: dict[str, Server] = {
            cls.name: cls(self.local, RUNTIME, self._process, self._server_ports(cls)) for cls in self.profile.servers
        }
        redis = self.servers.get("redis")
        self.redis: ManagedProcess | None = redis.processes()[0] if redis else None
        self.subscriber_app, self.subscriber_sidecar = self._subscriber_pair("subscriber", self.ports.subscriber)
        self.caller_sidecar = self._process("caller-daprd", self._daprd_argv(self.ports.caller))
        # Replicas beyond the first, on free ports: `up` saves them (run/replicas.json) so
        # that a later `make up`, `status` or `down` finds the same ones.
        self.replicas: list[tuple[ManagedProcess, ManagedProcess]] = []
        self.replica_specs: dict[str, SidecarSpec] = {}
        self._saved_specs = self._read_replica_specs()
        for _ in range(max((self.replicas_wanted or self.profile.replicas) - 1, len(self._saved_specs))):
            self._new_replica()

    def _server_ports(self, cls: type[Server]) -> dict[str, int]:
        if cls.name == "kafka":
            return {"broker": self.ports.kafka, "controller": self.ports.kafka_controller}
        return {"": getattr(self.ports, cls.name)}

    # -- layout ----------------------------------------------------------------------

    def _process(self, name: str, argv: list[str], env: dict[str, str] | None = None, **options) -> ManagedProcess:
        return ManagedProcess(
            name,
            argv,
            log_path=self.logs / f"{name}.log",
            pid_path=self.run / f"{name}.pid",
            cwd=self.base,
            env={"DAPR_HOST_IP": "127.0.0.1", **self.tokens, **self.extra_env, **(env or {})},
            **options,
        )

    def _subscriber_pair(self, name: str, spec: SidecarSpec) -> tuple[ManagedProcess, ManagedProcess]:
        env = {
            "STATESTORE_SUBSCRIBER_PORT": str(spec.app_port),
            "STATESTORE_METRICS_PORT": str(spec.app_metrics_port or 0),
            "DAPR_GRPC_PORT": str(spec.grpc_port),
            "DAPR_HTTP_PORT": str(spec.http_port),
            "PYTHONPATH": str(PROJECT_ROOT),
        }
        app = self._process(name, [sys.executable, "-m", "statestore.subscriber"], env=env)
        return app, self._process(f"{name}-daprd", self._daprd_argv(spec))

    def processes(self) -> list[ManagedProcess]:
        """In start order."""
        servers = [proc for server in self.servers.values() for proc in server.processes()]
        extra = [proc for pair in self.replicas for proc in pair]
        return [*servers, self.subscriber_app, self.subscriber_sidecar, *extra, self.caller_sidecar]

    def subscriber_pairs(self) -> list[tuple[ManagedProcess, ManagedProcess]]:
        """Every subscriber replica (app, sidecar), the first one included."""
        return [(self.subscriber_app, self.subscriber_sidecar), *self.replicas]

    @property
    def object_root(self) -> Path:
        """The folder whose files are the object store's objects, by key.

        Local files for the local profile; S3Proxy's bucket folder for the scale profile
        (its filesystem backend stores each object at ``<bucket>/<key>``).
        """
        s3 = self.servers.get("s3")
        return s3.bucket_folder if s3 is not None else self.local / "tmp"

    def objectstore_env(self) -> dict[str, str]:
        """The subscriber's object-store settings (statestore.subscriber.objectstore): the
        profile's S3 server, else the folder ``local/tmp``. Also what a tool that lists
        the snapshots needs (``statestore keys reencrypt``)."""
        env = {"STATESTORE_OBJECTSTORE_URL": str(self.local / "tmp")}
        for server in self.servers.values():
            env.update(server.subscriber_env())
        return env

    def caller_env(self) -> dict[str, str]:
        """Environment for a process that uses the caller sidecar."""
        env = {
            "DAPR_GRPC_PORT": str(self.ports.caller.grpc_port),
            "DAPR_HTTP_PORT": str(self.ports.caller.http_port),
            "STATESTORE_TMP_ROOT": str(self.object_root),
        }
        if self.tokens:
            env["DAPR_API_TOKEN"] = self.tokens["DAPR_API_TOKEN"]
        return env

    def _daprd_argv(self, spec: SidecarSpec) -> list[str]:
        argv = [
            str(DAPRD),
            "--app-id", spec.app_id,
            "--dapr-http-port", str(spec.http_port),
            "--dapr-grpc-port", str(spec.grpc_port),
            "--dapr-internal-grpc-port", str(spec.internal_grpc_port),
            "--dapr-internal-grpc-listen-address", "127.0.0.1",
            "--dapr-listen-addresses", "127.0.0.1",
            "--metrics-port", str(spec.metrics_port),
            "--metrics-listen-address", "127.0.0.1",
            "--resources-path", str(self.resources),
            "--config", str(CONFIG),
            "--log-level", "info",
            # Larger than any request statestore sends (cut at STATESTORE_REQUEST_MAX_BYTES)
            # or any document it stores (STATESTORE_MAX_DOCUMENT_BYTES): see docs/runtime.md.
            "--max-body-size", MAX_BODY_SIZE,
        ]  # fmt: skip
        if spec.app_port is not None:
            argv += ["--app-port", str(spec.app_port), "--app-protocol", "grpc",
                     "--app-channel-address", "127.0.0.1"]  # fmt: skip
            if self.profile.app_health_check:
                argv += APP_HEALTH_PROBE.daprd_flags()
        return argv

    def render_components(self) -> None:
        """Copy the profile's components into the run folder, pointing them at this stack's servers."""
        shutil.rmtree(self.resources, ignore_errors=True)
        self.resources.mkdir(parents=True)
        values = {name: value for server in self.servers.values() for name, value in server.component_metadata().items()}
        values.update(self.component_metadata)
        for name, doc in self.profile.component_documents().items():
            for item in doc.get("spec", {}).get("metadata", []) or []:
                if item.get("name") in values:
                    item["value"] = values[item["name"]]
            (self.resources / name).write_text(yaml.safe_dump(doc, sort_keys=False))

    # -- lifecycle -------------------------------------------------------------------

    def running(self) -> list[ManagedProcess]:
        return [p for p in self.processes() if p.alive()]

    def up(self) -> None:
        """Start everything and return once all are healthy; refuse to start twice
        (``resume`` starts what stopped in a running stack)."""
        if not DAPRD.exists():
            raise StackError(f"{DAPRD} is missing: run `make setup` to build daprd.")
        running = self.running()
        if running:
            names = ", ".join(p.name for p in running)
            raise StackError(f"the stack in {self.local} is already running ({names}); `make down` stops it.")
        for proc in self.processes():
            proc.pid_path.unlink(missing_ok=True)
        if self._saved_specs:  # a stack that is gone: new free ports for its replicas
            self._saved_specs = {}
            count = len(self.replicas)
            self.replicas, self.replica_specs = [], {}
            for _ in range(count):
                self._new_replica()
        self.prepare()
        self._save_replica_specs()
        (self.run / "profile").write_text(self.profile.name)
        try:
            self.start_servers()
            self.start_subscriber()
            for pair in self.replicas:
                self.start_replica(pair)
            self.start_caller()
        except BaseException:
            self.down()
            raise

    def resume(self) -> list[str]:
        """Start what stopped in a running stack: a server, a subscriber app (and its
        sidecar), the caller sidecar. Returns the names of the processes started.

        A subscriber app that died left its sidecar up. That sidecar is restarted with the
        app: it would reach the new app only at gRPC's next reconnect attempt, whose
        backoff grows to 2 minutes while the app stays down.
        """
        if not DAPRD.exists():
            raise StackError(f"{DAPRD} is missing: run `make setup` to build daprd.")
        started: list[str] = []
        for server in self.servers.values():
            if not any(proc.alive() for proc in server.processes()):
                server.start()
                started += [proc.name for proc in server.processes()]
        for app, sidecar in self.subscriber_pairs():
            if not app.alive():
                sidecar.stop()
            dead = [proc.name for proc in (app, sidecar) if not proc.alive()]
            if dead:
                self._start_pair(app, sidecar, self.spec_of(app))
                started += dead
        if not self.caller_sidecar.alive():
            self.start_caller()
            started.append(self.caller_sidecar.name)
        return started

    def problems(self) -> list[str]:
        """What is wrong with a running stack, one sentence each that says what to do."""
        found = []
        for app, sidecar in self.subscriber_pairs():
            spec = self.spec_of(app)
            if not app.alive():
                if sidecar.alive():
                    found.append(
                        f"{app.name}: the subscriber app is not running; its sidecar is up and holds its"
                        " deliveries, so events wait in the broker and nothing is lost. Restart it:"
                        f" `make up` (its log: {app.log_path})."
                    )
                else:
                    found.append(f"{app.name}: the subscriber app and its sidecar are not running. Start them: `make up`.")
                continue
            if not sidecar.alive():
                found.append(f"{app.name}: its sidecar is not running, so it gets no events. Restart it: `make up`.")
            if spec.app_metrics_port:
                ok, reason = health_answer(f"http://127.0.0.1:{spec.app_metrics_port}/healthz/ready")
                if ok is not True:
                    stops = "; its sidecar stops delivering to it until it is healthy again" if self.profile.app_health_check else ""
                    found.append(f"{app.name}: running but unhealthy ({reason}){stops} (its log: {app.log_path}).")
        if not self.caller_sidecar.alive():
            found.append("the caller sidecar is not running: writes and reads fail. Start it: `make up`.")
        return found

    def _read_replica_specs(self) -> dict[str, SidecarSpec]:
        try:
            saved = json.loads((self.run / "replicas.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {name: SidecarSpec(SUBSCRIBER_APP_ID, **ports) for name, ports in saved.items()}

    def _save_replica_specs(self) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        saved = {name: {k: v for k, v in dataclasses.asdict(spec).items() if k != "app_id"}
                 for name, spec in self.replica_specs.items()}  # fmt: skip
        (self.run / "replicas.json").write_text(json.dumps(saved, indent=1))

    def prepare(self) -> None:
        """Check every port is free, create the folders, render the components."""
        for server in self.servers.values():
            server.check_ports()
        for spec in (self.ports.subscriber, *self.replica_specs.values(), self.ports.caller):
            for what, port in spec.ports().items():
                ensure_port_free(port, what)
        for folder in ("dapr", "tmp", "logs", "run"):
            (self.local / folder).mkdir(parents=True, exist_ok=True)
        ensure_keyring(self.keys_file)
        self.render_components()

    def start_servers(self) -> None:
        for server in self.servers.values():
            server.start()

    def start_redis(self) -> None:
        self.servers["redis"].start()

    def start_subscriber(self) -> None:
        """The subscriber app, then its sidecar (daprd waits for the app's port)."""
        self._start_pair(self.subscriber_app, self.subscriber_sidecar, self.ports.subscriber)

    def _start_pair(self, app: ManagedProcess, sidecar: ManagedProcess, spec: SidecarSpec) -> None:
        """Start whichever of the two is not running (a sidecar whose app died stays up)."""
        if not app.alive():
            app.env = {**(app.env or {}), **self.objectstore_env()}  # the servers' credentials exist by now
            app.start()
            app.wait_healthy(lambda: port_open(spec.app_port), HEALTH_TIMEOUT_S)
        if not sidecar.alive():
            self.start_sidecar(sidecar, spec)
        if spec.app_metrics_port:  # ready: the app reads the state store through its sidecar
            url = f"http://127.0.0.1:{spec.app_metrics_port}/healthz/ready"
            app.wait_healthy(lambda: http_ok(url), HEALTH_TIMEOUT_S)

    def spec_of(self, app: ManagedProcess) -> SidecarSpec:
        """The ports of a subscriber replica, by its app."""
        return self.ports.subscriber if app is self.subscriber_app else self.replica_specs[app.name]

    def add_subscriber_replica(self) -> tuple[ManagedProcess, ManagedProcess]:
        """Start one more subscriber app with its sidecar (same app id and consumer group)."""
        pair = self._new_replica()
        self._save_replica_specs()
        self.start_replica(pair)
        return pair

    def remove_replica(self, pair: tuple[ManagedProcess, ManagedProcess]) -> None:
        """Stop a replica beyond the first and forget it (`make up` will not start it again)."""
        for proc in reversed(pair):
            proc.stop()
        self.replicas.remove(pair)
        del self.replica_specs[pair[0].name]
        self._save_replica_specs()

    def start_replica(self, pair: tuple[ManagedProcess, ManagedProcess]) -> None:
        """Start a replica (also again after a crash: only what is not running), app then sidecar."""
        self._start_pair(*pair, self.spec_of(pair[0]))

    def _new_replica(self) -> tuple[ManagedProcess, ManagedProcess]:
        name = f"subscriber-{len(self.replicas) + 2}"
        spec = self._saved_specs.get(name) or Ports.free().subscriber
        pair = self._subscriber_pair(name, spec)
        self.replicas.append(pair)
        self.replica_specs[pair[0].name] = spec
        return pair

    def start_caller(self) -> None:
        self.start_sidecar(self.caller_sidecar, self.ports.caller)

    def start_sidecar(self, proc: ManagedProcess, spec: SidecarSpec) -> None:
        proc.start()
        url = f"http://127.0.0.1:{spec.http_port}/v1.0/healthz"
        proc.wait_healthy(lambda: http_ok(url), HEALTH_TIMEOUT_S)

    def down(self) -> list[str]:
        """Stop every process of this stack (also ones started by another `make up`)."""
        stopped = []
        for proc in reversed(self.processes()):
            pid = proc.pid
            if pid is not None and (proc.popen is not None or pid_alive(pid)):
                stopped.append(proc.name)
            proc.stop()
        (self.run / "profile").unlink(missing_ok=True)  # no profile is up any more
        (self.run / "replicas.json").unlink(missing_ok=True)
        return stopped
