"""deploy/kubernetes renders (kustomize, built by setup) and agrees with the project:
app ids, component names, types, scopes and metadata with statestore/core/settings.py and
components/scale/, the app port, the partition count everywhere, a consistent shutdown."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from statestore.devstack.stack import CALLER_APP_ID, SUBSCRIBER_APP_ID
from statestore.core.settings import Settings
from tests.unit.test_configuration import metadata, scale_components

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / ".runtime" / "bin" / "kustomize"
DEPLOY = ROOT / "deploy" / "kubernetes"
# Locally: plaintext Kafka and S3 over HTTP; in a cluster: SASL and TLS.
SECURED_DIFFERENTLY = {"authType", "disableSSL"}


def render(target: str) -> list[dict]:
    assert KUSTOMIZE.exists(), "kustomize is built by `make setup` (runtime/build.sh kustomize)"
    out = subprocess.run([str(KUSTOMIZE), "build", str(DEPLOY / target)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def env_entries(deployment: dict) -> dict[str, dict]:
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def env(deployment: dict) -> dict[str, str]:
    """The plain values (not those from secrets)."""
    return {name: e["value"] for name, e in env_entries(deployment).items() if "value" in e}


@pytest.fixture(scope="module", params=["base", "overlays/production"])
def docs(request) -> list[dict]:
    return render(request.param)


def test_components_match_the_settings_and_the_scale_profile(docs):
    s = Settings()
    components = by_kind(docs, "Component")
    local = scale_components()
    for name in (s.pubsub_name, s.credentials_pubsub_name, s.statestore_name, s.secretstore_name):
        assert name in components, name
    assert not [name for name, doc in components.items() if doc["spec"]["type"].startswith("bindings.")]
    for name in (s.pubsub_name, s.credentials_pubsub_name, s.statestore_name):
        ours, theirs = components[name]["spec"], local[name]["spec"]
        assert (ours["type"], ours["version"]) == (theirs["type"], theirs["version"]), name
        plain = {i["name"]: i["value"] for i in ours["metadata"] if "value" in i}
        # Every plain setting of the local scale profile has the same value here, except
        # addresses and credentials (secrets) and how the connection is secured.
        for key, value in metadata(local[name]).items():
            if key in plain and key not in SECURED_DIFFERENTLY:
                assert plain[key] == value, (name, key)
        secret = [i for i in ours["metadata"] if "secretKeyRef" in i]
        assert all("value" not in i for i in secret)
    for item in components[s.statestore_name]["spec"]["metadata"]:
        if item["name"] == "connectionString":
            assert "secretKeyRef" in item, item["name"]


def test_the_subscriber_writes_snapshots_to_s3_configured_from_a_secret(docs):
    """No object-store binding: the subscriber's settings (statestore.subscriber.objectstore)
    and the AWS key pair come from the statestore-s3 secret, never as plain values."""
    entries = env_entries(by_kind(docs, "Deployment")["statestore-subscriber"])
    named = {f"STATESTORE_{field.upper()}" for field in Settings.model_fields if field.startswith("objectstore_")}
    for name in [*named, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
        assert entries[name]["valueFrom"]["secretKeyRef"]["name"] == "statestore-s3", name
        assert "value" not in entries[name]


def test_scopes_admit_the_subscriber_and_the_caller_only(docs):
    components = by_kind(docs, "Component")
    for name in ("pubsub", "statestore"):
        assert set(components[name]["scopes"]) == {SUBSCRIBER_APP_ID, CALLER_APP_ID}
    assert components["secretstore"]["scopes"] == [CALLER_APP_ID]
    assert by_kind(docs, "Resiliency")["statestore-resiliency"]["scopes"] == [SUBSCRIBER_APP_ID]


def test_the_subscriber_deployment_has_its_dapr_annotations_and_a_consistent_shutdown(docs):
    deployment = by_kind(docs, "Deployment")["statestore-subscriber"]
    pod = deployment["spec"]["template"]
    notes = pod["metadata"]["annotations"]
    assert notes["dapr.io/app-id"] == SUBSCRIBER_APP_ID
    assert notes["dapr.io/app-port"] == str(Settings().subscriber_port) == env(deployment)["STATESTORE_SUBSCRIBER_PORT"]
    assert notes["dapr.io/app-protocol"] == "grpc"
    assert notes["dapr.io/config"] in by_kind(docs, "Configuration")
    from statestore.devstack.stack import MAX_BODY_SIZE

    # Every sidecar takes the request sizes the code cuts for (as devstack starts them).
    for name, app in by_kind(docs, "Deployment").items():
        assert app["spec"]["template"]["metadata"]["annotations"]["dapr.io/max-body-size"] == MAX_BODY_SIZE, name
    # preStop, then the app's 10 s drain inside the sidecar's wait, all inside the grace period.
    pre_stop = int(pod["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
    sidecar_wait = int(notes["dapr.io/graceful-shutdown-seconds"])
    assert pre_stop + 10 <= sidecar_wait < pod["spec"]["terminationGracePeriodSeconds"]
    pdb = by_kind(docs, "PodDisruptionBudget")["statestore-subscriber"]
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_autoscaling_follows_consumer_lag_and_stops_at_the_partition_count(docs):
    s = Settings()
    deployments = by_kind(docs, "Deployment")
    scaled = by_kind(docs, "ScaledObject")["statestore-subscriber"]
    partitions = {env(d)["STATESTORE_PARTITIONS"] for d in deployments.values()}
    assert partitions == {str(scaled["spec"]["maxReplicaCount"])}
    assert scaled["spec"]["scaleTargetRef"]["name"] == "statestore-subscriber"
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert (trigger["metadata"]["topic"], trigger["metadata"]["consumerGroup"]) == (s.topic, SUBSCRIBER_APP_ID)
    assert deployments["statestore-caller"]["spec"]["template"]["metadata"]["annotations"]["dapr.io/app-id"] == CALLER_APP_ID


def test_the_resiliency_policy_is_the_projects():
    assert yaml.safe_load((DEPLOY / "base" / "resiliency.yaml").read_text()) == yaml.safe_load(
        (ROOT / "components" / "resiliency.yaml").read_text()
    )


def test_the_base_uses_the_default_partition_count():
    deployments = by_kind(render("base"), "Deployment")
    assert {env(d)["STATESTORE_PARTITIONS"] for d in deployments.values()} == {str(Settings().partitions)}


def test_the_subscriber_probes_use_its_health_endpoints_on_its_metrics_port(docs):
    from statestore.subscriber.metrics import DEFAULT_PORT

    deployment = by_kind(docs, "Deployment")["statestore-subscriber"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["metrics"] == int(env(deployment)["STATESTORE_METRICS_PORT"]) == DEFAULT_PORT == Settings().metrics_port
    # The kubelet reaches the pod address, not the container's loopback.
    assert env(deployment)["STATESTORE_METRICS_HOST"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz/live", "port": "metrics"}


def test_every_subscriber_sidecar_probes_its_app_as_devstack_does(docs):
    """Issue 27: the app health probe on, with devstack's (and dapr.yaml's) values."""
    from statestore.devstack.stack import APP_HEALTH_PROBE

    notes = by_kind(docs, "Deployment")["statestore-subscriber"]["spec"]["template"]["metadata"]["annotations"]
    assert notes["dapr.io/enable-app-health-check"] == "true"
    assert notes["dapr.io/app-health-probe-interval"] == str(APP_HEALTH_PROBE.interval_s)
    assert notes["dapr.io/app-health-probe-timeout"] == str(APP_HEALTH_PROBE.timeout_ms)
    assert notes["dapr.io/app-health-threshold"] == str(APP_HEALTH_PROBE.threshold)
