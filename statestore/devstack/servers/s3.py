"""S3Proxy 4.x: an S3-compatible server (SigV4 auth enforced, objects as plain files).

Jars come from Maven Central (runtime/s3proxy/pom.xml) into .runtime/s3proxy/lib.
Objects live under local/s3/data/<bucket>/<key>, so they survive a restart; the
bucket (a folder of the filesystem backend) is created before the server starts. Every
request must be signed with the stack's key pair: anonymous ones are refused. The
access key pair is made once per stack folder (local/s3/credentials.json).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from statestore.devstack.processes import ManagedProcess
from statestore.devstack.servers.base import PROJECT_ROOT, Server
from statestore.devstack.servers.maven import install_jars, java

__all__ = ["S3Server", "BUCKET", "REGION"]

POM = PROJECT_ROOT / "runtime" / "s3proxy" / "pom.xml"
BUCKET = "statestore"
REGION = "us-east-1"

# Without a configuration logback logs every request at DEBUG.
LOGBACK = """<configuration>
  <appender name="out" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{ISO8601} %-5level %logger{20} %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="out"/></root>
</configuration>
"""


class S3Server(Server):
    name = "s3"
    label = "S3"

    @classmethod
    def lib(cls, runtime: Path) -> Path:
        return runtime / "s3proxy" / "lib"

    @classmethod
    def install(cls, runtime: Path) -> None:
        install_jars(POM, cls.lib(runtime), "S3Proxy")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.data = self.home / "data"
        self.conf = self.home / "s3proxy.conf"
        self.logback = self.home / "logback.xml"
        self.credentials_file = self.home / "credentials.json"
        # umask 077: the filesystem backend reads "others may read" on a bucket folder or
        # object file as public-read, which would let anonymous requests read snapshots.
        self.process = self.spawn(
            "s3proxy",
            ["/bin/sh", "-c", 'umask 077 && exec "$@"', "s3proxy", java(), "-Xmx256m", f"-Dlogback.configurationFile={self.logback}",
             "-cp", f"{self.lib(self.runtime)}/*", "org.gaul.s3proxy.Main", "--properties", str(self.conf)],
        )  # fmt: skip

    @property
    def bucket_folder(self) -> Path:
        """Where the bucket's objects are, one plain file per key."""
        return self.data / BUCKET

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.main_port}"

    def processes(self) -> list[ManagedProcess]:
        return [self.process]

    def credentials(self) -> dict[str, str]:
        """{"accessKey", "secretKey"}: made on first use, then kept."""
        if not self.credentials_file.exists():
            self.credentials_file.parent.mkdir(parents=True, exist_ok=True)
            pair = {"accessKey": "statestore-" + secrets.token_hex(4), "secretKey": secrets.token_urlsafe(30)}
            self.credentials_file.write_text(json.dumps(pair))
            self.credentials_file.chmod(0o600)
        return json.loads(self.credentials_file.read_text())

    def prepare(self) -> None:
        self.install(self.runtime)
        self.bucket_folder.mkdir(parents=True, exist_ok=True)
        self.bucket_folder.chmod(0o700)  # private: see the umask above
        pair = self.credentials()
        self.logback.write_text(LOGBACK)
        self.conf.write_text(
            "\n".join(
                [
                    f"s3proxy.endpoint={self.endpoint}",
                    "s3proxy.authorization=aws-v2-or-v4",
                    f"s3proxy.identity={pair['accessKey']}",
                    f"s3proxy.credential={pair['secretKey']}",
                    "jclouds.provider=filesystem",
                    f"jclouds.filesystem.basedir={self.data}",
                    "",
                ]
            )
        )

    def component_metadata(self) -> dict[str, str]:
        return {"endpoint": self.endpoint, "bucket": BUCKET, "region": REGION, **self.credentials()}

    def subscriber_env(self) -> dict[str, str]:
        """The subscriber writes the snapshots to the bucket itself (statestore.subscriber.objectstore);
        the key pair travels in its environment only, as a Kubernetes secret would."""
        pair = self.credentials()
        return {
            "STATESTORE_OBJECTSTORE_URL": f"s3://{BUCKET}",
            "STATESTORE_OBJECTSTORE_ENDPOINT": self.endpoint,
            "STATESTORE_OBJECTSTORE_REGION": REGION,
            "AWS_ACCESS_KEY_ID": pair["accessKey"],
            "AWS_SECRET_ACCESS_KEY": pair["secretKey"],
        }
