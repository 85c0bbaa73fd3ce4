"""Apache Kafka 4.x in KRaft mode, one node (broker and controller in one JVM).

Jars come from Maven Central (runtime/kafka/pom.xml) into .runtime/kafka/lib. The first
start formats the storage under local/kafka/data; later starts reuse it (messages and
consumer offsets survive a restart). The topics are created with the ``partitions``
setting's count (STATESTORE_PARTITIONS, 12: the publisher packs per partition with the
same count) once the broker listens.
"""

from __future__ import annotations

import base64
import subprocess
import uuid
from pathlib import Path

from statestore.devstack.processes import ManagedProcess, StackError
from statestore.devstack.servers.base import PROJECT_ROOT, Server
from statestore.devstack.servers.maven import install_jars, java
from statestore.core.settings import get_settings

__all__ = ["KafkaServer", "topics"]

POM = PROJECT_ROOT / "runtime" / "kafka" / "pom.xml"
CREATE_TOPICS = PROJECT_ROOT / "runtime" / "kafka" / "CreateTopics.java"
HEAP = "-Xmx512m"  # the default max heap is a quarter of RAM
# Larger than the biggest packed message (pack_max_bytes, 1 MiB, plus its envelope).
MAX_MESSAGE_BYTES = 4 << 20

# Warnings and errors, plus the broker's start and stop lines, to the process log.
LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
"""


def topics() -> list[str]:
    """Every topic the stack publishes to, including the dead-letter topic."""
    settings = get_settings()
    names = [settings.topic, settings.deadletter_topic, settings.credentials_topic, settings.parked_topic]
    return [name for name in dict.fromkeys(names) if name]



def storage_format_args(cluster_id: str, properties: Path) -> list[str]:
    """StorageTool's format command. The id is joined to its option with ``=``: a random
    base64url id starts with ``-`` one time in 64, and argparse would read it as an option."""
    return ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", f"--config={properties}"]

class KafkaServer(Server):
    name = "kafka"
    label = "Kafka"

    @classmethod
    def lib(cls, runtime: Path) -> Path:
        return runtime / "kafka" / "lib"

    @classmethod
    def install(cls, runtime: Path) -> None:
        install_jars(POM, cls.lib(runtime), "Apache Kafka")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.properties = self.home / "server.properties"
        self.data = self.home / "data"
        self.log_config = self.home / "log4j2.properties"
        self.process = self.spawn(
            "kafka",
            [java(), HEAP, f"-Dlog4j2.configurationFile={self.log_config}",
             "-cp", f"{self.lib(self.runtime)}/*", "kafka.Kafka", str(self.properties)],
        )  # fmt: skip

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['broker']}"

    def processes(self) -> list[ManagedProcess]:
        return [self.process]

    def prepare(self) -> None:
        self.install(self.runtime)
        self.data.mkdir(parents=True, exist_ok=True)
        broker, controller = self.ports["broker"], self.ports["controller"]
        self.properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{controller}",
                    f"listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{broker}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={self.data}",
                    f"num.partitions={get_settings().partitions}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=12",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "min.insync.replicas=1",
                    f"message.max.bytes={MAX_MESSAGE_BYTES}",
                    f"replica.fetch.max.bytes={MAX_MESSAGE_BYTES}",
                    # Tests start replicas one after another: rebalance at once.
                    "group.initial.rebalance.delay.ms=0",
                    "",
                ]
            )
        )
        self.log_config.write_text(LOG4J2)
        if not (self.data / "meta.properties").exists():
            self._format()

    def _format(self) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self._java(*storage_format_args(cluster_id, self.properties))

    def tool(self, main_class: str, *args: str) -> str:
        """Run one of Kafka's command-line tools against this broker; its stdout."""
        return self._java(main_class, "--bootstrap-server", self.bootstrap, *args)

    def _java(self, *args: str) -> str:
        result = subprocess.run(
            [java(), "-cp", f"{self.lib(self.runtime)}/*", *args], capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise StackError(f"Kafka: `{' '.join(args[:2])}` failed:\n{(result.stdout + result.stderr)[-2000:]}")
        return result.stdout

    def after_start(self) -> None:
        self._java(str(CREATE_TOPICS), self.bootstrap, str(get_settings().partitions), *topics())

    def component_metadata(self) -> dict[str, str]:
        return {"brokers": self.bootstrap}
