"""Backing servers (one module each) and the profiles that combine them.

A profile is a list of servers, the component folders Dapr loads (a later folder's file
replaces the earlier one of the same name) and how many subscriber replicas run:

- ``local``: Redis Streams, sqlite, local files (components/), one subscriber;
- ``scale``: Kafka, PostgreSQL (state.postgresql v2), S3 (components/ overridden by
  components/scale/), three subscriber replicas, each with its own sidecar, which probes
  its app's health (``Profile.app_health_check``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from statestore.devstack.servers.base import PROJECT_ROOT, Server
from statestore.devstack.servers.kafka import KafkaServer
from statestore.devstack.servers.postgres import PostgresServer
from statestore.devstack.servers.redis import RedisServer
from statestore.devstack.servers.s3 import S3Server

__all__ = ["Profile", "PROFILES", "BULK_NATIVE_PUBSUB", "Server", "RedisServer", "KafkaServer", "PostgresServer", "S3Server", "get_profile"]

COMPONENTS = PROJECT_ROOT / "components"
# Pub/sub types whose component bulk-subscribes by itself. Any other goes through Dapr
# 1.18's default bulk subscriber, and with pubsub.redis its delivery workers block for
# good once the subscriptions stop and start again (what the app health check does when
# the app turns unhealthy, then healthy): docs/scaling.md, "When a replica dies or hangs".
BULK_NATIVE_PUBSUB = frozenset({"pubsub.kafka"})


@dataclass(frozen=True)
class Profile:
    """Which servers run, which components Dapr loads, how many subscriber replicas."""

    name: str
    servers: tuple[type[Server], ...]
    component_folders: tuple[Path, ...]
    replicas: int = 1

    def component_documents(self) -> dict[str, dict]:
        """File name -> parsed component, a later folder replacing an earlier one's file.

        A replacement without ``scopes`` keeps the scopes of the file it replaces, so the
        app ids that may load a component are listed once (components/).
        """
        docs: dict[str, dict] = {}
        for folder in self.component_folders:
            for path in sorted(folder.glob("*.yaml")):
                doc = yaml.safe_load(path.read_text())
                if "scopes" not in doc and path.name in docs and "scopes" in docs[path.name]:
                    doc["scopes"] = docs[path.name]["scopes"]
                docs[path.name] = doc
        return docs

    @property
    def app_health_check(self) -> bool:
        """Whether the subscriber sidecars probe their app's health (and stop delivering to
        an unhealthy one): only where every pub/sub component bulk-subscribes by itself."""
        types = {doc["spec"]["type"] for doc in self.component_documents().values()
                 if doc.get("kind") == "Component" and doc["spec"]["type"].startswith("pubsub.")}  # fmt: skip
        return bool(types) and types <= BULK_NATIVE_PUBSUB


PROFILES = {
    "local": Profile("local", (RedisServer,), (COMPONENTS,), replicas=1),
    "scale": Profile("scale", (KafkaServer, PostgresServer, S3Server), (COMPONENTS, COMPONENTS / "scale"), replicas=3),
}


def get_profile(name: str | Profile) -> Profile:
    """The profile called ``name`` (a Profile passes through)."""
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)} (PROFILE=...)") from None
