"""devstack's Kafka storage format: a cluster id that starts with '-' is still an id."""

from pathlib import Path

from statestore.devstack.servers.kafka import storage_format_args


def test_a_cluster_id_starting_with_a_dash_is_joined_to_its_option():
    # One random base64url id in 64 starts with '-'; `-t <id>` then failed the stack's start.
    args = storage_format_args("-AbCdEfGhIjKlMnOpQrStUv", Path("/x/server.properties"))
    assert "--cluster-id=-AbCdEfGhIjKlMnOpQrStUv" in args
    assert "-AbCdEfGhIjKlMnOpQrStUv" not in args  # never a separate argument
    assert args[:2] == ["kafka.tools.StorageTool", "format"] and "--config=/x/server.properties" in args
