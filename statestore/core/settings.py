"""Settings, read once from the environment.

Every name that must agree between the caller, the subscriber and the Dapr component
files (components/*.yaml) is defined here and nowhere else in the Python code; a unit
test checks that the YAML files use the same names.
"""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "SidecarSettings", "get_settings", "get_sidecar_settings"]


class Settings(BaseSettings):
    """statestore settings; each field is read from ``STATESTORE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="STATESTORE_", frozen=True)

    app_name: str = Field(
        default_factory=lambda: os.environ.get("APP_ID") or "default",
        description="The caller's application name: its namespace of states and the {app_name} of"
        " object-store paths. Default: the Dapr app id `dapr run` gives the app (APP_ID), else 'default'.",
    )
    tmp_root: str = Field("./local/tmp", description="Root of the object-store folder.")

    statestore_name: str = "statestore"
    secretstore_name: str = "secretstore"
    keyring_secret: str = Field("statestore-keyring", description="Secret holding the credential keys.")
    keyring_cache_s: float = Field(60.0, ge=0, description="How long a read keyring is reused.")
    pubsub_name: str = "pubsub"
    topic: str = "statestore-events"
    # Credentials travel on a topic of their own, through a pub/sub component of their
    # own (same broker): the Redis component's delivery workers are shared by all its
    # subscriptions, so a progress backlog would otherwise hold credentials back.
    credentials_pubsub_name: str = "pubsub-credentials"
    credentials_topic: str = "statestore-credentials"
    deadletter_topic: str = "statestore-deadletter"
    # Events stamped more than max_clock_skew_s ahead of the subscriber's clock wait here
    # (the subscriber republishes them until they are due), so they never block the topic.
    parked_topic: str = "statestore-parked"
    # StateStore.list_states reads an id index the subscriber keeps in shard documents,
    # changed in the transaction of every state that starts or stops existing. It costs the
    # many-new-states load about 25-30% (docs/benchmarks.md), so it is off unless asked for.
    list_index: bool = Field(False, description="Keep the id index that list_states reads (subscriber).")

    # Publishing: pending events go out in one bulk publish when this many are
    # waiting or when the oldest has waited batch_window_ms.
    batch_max_events: int = Field(200, ge=1, le=10_000)
    batch_window_ms: float = Field(5.0, ge=0)
    # A credential save waits until its events are published: a batch of credentials goes
    # out in one bulk publish of up to this many, not in several of batch_max_events.
    credentials_batch_max_events: int = Field(1000, ge=1, le=10_000)
    # That topic also carries the events of confirmed replaces, stored before they are
    # queued: nobody waits for their publish (only the snapshot and the id listing follow
    # it), so they wait this long for company. One publish, and one subscriber write, per
    # burst of replaces instead of per replace keeps that work off the next replace's path.
    # (A credential save flushes: it never waits this out.)
    handover_window_ms: float = Field(
        100.0, ge=0, description="How long a confirmed replace's event waits to share a publish."
    )
    # Events per pub/sub message: up to pack_events events (and pack_max_bytes) travel as
    # one io.statestore.event_batch.v1 CloudEvent; 1 sends one CloudEvent per event.
    pack_events: int = Field(100, ge=1, le=1000)
    pack_max_bytes: int = Field(1 << 20, ge=1024)
    # Partitions of the event topic (Kafka): a packed message holds one partition's
    # events and is keyed by a state key (statestore.core.partitioning). 1: pack regardless.
    partitions: int = Field(12, ge=1, le=10_000)
    # Outages: a batch that cannot be published is retried (capped exponential backoff
    # with jitter, probing the sidecar's readiness in between) for outage_budget_s; only
    # then does PublishError hand its events back.
    outage_budget_s: float = Field(60.0, ge=0, description="How long publishing rides out an outage.")
    publish_backoff_ms: float = Field(100.0, ge=0, description="First retry delay; doubles.")
    publish_backoff_max_ms: float = Field(1000.0, ge=0, description="Longest retry delay.")
    max_pending_events: int = Field(100_000, ge=1, description="Queue bound: save_state waits beyond it.")
    # Read-your-writes (publisher.own_writes): the newest own event per field of each state
    # is kept until a read shows it applied. Those still queued are always kept (the queue
    # bound covers them); of those published, at most this many: a read of a state that
    # lost one to the bound waits until the subscriber has applied it.
    own_writes_max_events: int = Field(
        20_000, ge=0, description="Published own writes get_state overlays until seen applied, at most."
    )
    # daprd takes 4 MiB per gRPC message by default: a bulk publish request stays well under.
    bulk_publish_max_bytes: int = Field(3 << 20, ge=1024, description="Bytes per bulk publish request.")
    shutdown_grace_s: float = Field(5.0, ge=0, description="SIGTERM/SIGINT/exit drain time limit.")
    handle_signals: bool = Field(True, description="Drain on SIGTERM/SIGINT (chained to earlier handlers).")
    # A state keeps a producer's record for this long, measured on the document's own
    # newest stamp; a process changes its producer id every retention/4.
    # At most 4 h: an id is used for retention/4, and must stop writing before the
    # subscriber can drop its record (1 h after its last write, statestore.core.document).
    producer_retention_s: float = Field(3600.0, ge=60, le=14_400, description="Producer id lifetime x 4.")
    max_value_bytes: int = Field(1 << 20, ge=1024, description="Largest encoded value.")
    max_clock_skew_s: float = Field(
        300.0, gt=0, description="Events stamped further ahead of the subscriber's clock are parked until due."
    )
    credential_timeout_s: float = Field(
        30.0, gt=0, description="How long save_secret(s) waits until its credentials are stored."
    )
    # Retention: a workflow state written without ttl_seconds expires after this many
    # seconds (None: never). Credentials have no default retention: they never expire
    # unless a write asks for it.
    ttl_workflows_s: int | None = Field(None, ge=1, description="Default expiry of workflow states.")

    # Subscriber.
    subscriber_port: int = Field(
        50051,
        validation_alias=AliasChoices("STATESTORE_SUBSCRIBER_PORT", "APP_PORT"),
        description="gRPC port the subscriber app serves (the Dapr CLI sets APP_PORT).",
    )
    subscriber_batch_max: int = Field(1000, ge=1, description="Most messages per bulk delivery.")
    subscriber_batch_wait_ms: int = Field(10, ge=1)
    # A bulk delivery must fit the app's gRPC receive limit whatever the messages hold:
    # the subscription asks for at most max_delivery_bytes // pack_max_bytes messages.
    subscriber_max_delivery_bytes: int = Field(64 << 20, ge=1 << 20, description="App gRPC receive limit.")
    subscriber_deliveries_per_topic: int = Field(2, ge=1, description="Deliveries applied at once, per topic.")
    subscriber_replica_id: str = Field("", description="Outbox name of this replica (default: random per start).")
    # Requests are cut well under the sidecar's limit (SidecarSettings.max_body_bytes).
    request_max_bytes: int = Field(2 << 20, ge=64 << 10, description="Target size of one read or transaction.")
    max_document_bytes: int = Field(12 << 20, ge=1 << 20, description="Largest stored document; beyond: dead letter.")
    snapshot_lease_s: float = Field(5.0, gt=0, description="Snapshot flusher lease period.")
    # The subscriber writes the snapshots itself (statestore.subscriber.objectstore).
    objectstore_url: str = Field(
        "", description="Where the subscriber writes snapshots: empty (the folder STATESTORE_TMP_ROOT), a folder,"
        " or s3://bucket[/prefix] (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the platform's role).",
    )
    objectstore_endpoint: str = Field("", description="URL of an S3-compatible server (http:// allowed); empty: AWS S3.")
    objectstore_region: str = Field("", description="The bucket's region; empty: AWS_REGION, else us-east-1.")
    # After a round that caught up, the flusher waits this long: further updates of the
    # same states meanwhile share one snapshot write (hot states are written once per
    # pause, not once per update). An idle flusher still looks every 20 ms.
    snapshot_coalesce_s: float = Field(1.0, ge=0, le=10, description="Pause after a flush round that caught up.")
    # Expired states' snapshots: the lease holder sweeps due expiry markers this often;
    # markers are filed in time buckets this wide (fixed when the first marker is filed).
    expiry_sweep_s: float = Field(60.0, gt=0, description="How often expired states' snapshots are swept.")
    expiry_bucket_s: int = Field(60, ge=1, le=86_400, description="Width of an expiry marker bucket.")
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="Port of the subscriber's /metrics and /healthz/* (0: off)."
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address of /metrics and /healthz/* (0.0.0.0 in a pod, for its probes)."
    )
    trace_file: str = Field(
        "", description="Append the subscriber's finished spans to this file as JSON lines (empty: no file)."
    )
    stuck_delivery_s: float = Field(
        120.0, gt=0, description="A delivery in flight longer than this fails /healthz/live and /healthz/ready."
    )

    @property
    def subscriber_delivery_messages(self) -> int:
        """Messages per bulk delivery: a delivery of full packed messages still fits."""
        return max(1, min(self.subscriber_batch_max, self.subscriber_max_delivery_bytes // self.pack_max_bytes))


class SidecarSettings(BaseSettings):
    """Where the caller's own Dapr sidecar listens (Dapr's standard variables)."""

    model_config = SettingsConfigDict(frozen=True)

    dapr_grpc_port: int = 50001
    dapr_http_port: int = 3500
    dapr_api_token: str | None = None
    sidecar_host: str = Field("127.0.0.1", alias="DAPR_RUNTIME_HOST")
    call_timeout_s: float = Field(10.0, alias="DAPR_API_TIMEOUT_SECONDS", gt=0)
    # daprd --max-body-size of the sidecar (the project starts every sidecar with 16Mi).
    max_body_bytes: int = Field(16 << 20, alias="STATESTORE_SIDECAR_MAX_BODY_BYTES", ge=1 << 20)

    @property
    def grpc_target(self) -> str:
        return f"{self.sidecar_host}:{self.dapr_grpc_port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read on first use, not at import)."""
    return Settings()


@lru_cache(maxsize=1)
def get_sidecar_settings() -> SidecarSettings:
    """The process-wide sidecar address (read on first use, not at import)."""
    return SidecarSettings()
