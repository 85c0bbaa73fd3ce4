"""The scale profile's servers as the issue asks for them: Kafka partitions keyed by state,
one consumer group for the replicas; S3 with enforced credentials that keeps objects
across a restart."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
import uuid

import pytest

from statestore import StateStore, StateType
from statestore.core.partitioning import partition_for
from statestore.core.settings import get_settings

pytestmark = pytest.mark.profile("scale")

GROUP_TOOL = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"


async def test_records_are_keyed_by_state_and_land_on_that_keys_partition(stack):
    ids = [f"part-{uuid.uuid4().hex[:8]}-{n}" for n in range(40)]
    for r in range(3):
        for state_id in ids:
            await StateStore.save_state("r", r, state_id, StateType.WORKFLOWS)
    await StateStore.sync_many(ids, StateType.WORKFLOWS, timeout=60)
    kafka = stack.servers["kafka"]
    out = await asyncio.to_thread(
        kafka.tool, CONSOLE_CONSUMER, "--topic", get_settings().topic, "--from-beginning",
        "--max-messages", "100000", "--timeout-ms", "8000",
        "--property", "print.key=true", "--property", "print.partition=true", "--property", "print.value=false",
    )  # fmt: skip
    records = [line.split("\t") for line in out.splitlines() if line.startswith("Partition:")]
    keyed = [(int(p.split(":")[1]), key) for p, key, *_ in records if key != "null"]
    ours = [(p, key) for p, key in keyed if key.split("/")[-1] in ids]
    assert ours, out[-2000:]
    partitions = get_settings().partitions
    assert all(p == partition_for(key, partitions) for p, key in keyed)
    assert len({p for p, _ in ours}) > 1  # spread over partitions, not all on one


def test_replicas_share_one_consumer_group_that_owns_every_partition(stack):
    out = stack.servers["kafka"].tool(GROUP_TOOL, "--describe", "--group", "statestore-subscriber")
    rows = [line.split() for line in out.splitlines() if line.startswith("statestore-subscriber")]
    events = [row for row in rows if row[1] == get_settings().topic]
    assert sorted(int(row[2]) for row in events) == list(range(get_settings().partitions))
    consumers = {row[6] for row in events}
    assert "-" not in consumers  # every partition has an owner
    assert len(consumers) == len(stack.subscriber_pairs())  # one member per replica


async def test_s3_refuses_requests_without_credentials(stack, subscriber_objects):
    s3 = stack.servers["s3"]
    bucket = s3.component_metadata()["bucket"]
    key = f"persistent-artifacts/apps/anon/workflows/{uuid.uuid4().hex[:8]}/config.json"
    await subscriber_objects.put(key, b'{"secret": 1}')
    for method, path, body in [("GET", f"{bucket}?list-type=2", None), ("GET", f"{bucket}/{key}", None),
                               ("PUT", f"{bucket}/anon.json", b"{}")]:  # fmt: skip
        request = urllib.request.Request(f"{s3.endpoint}/{path}", data=body, method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 403, (method, path)



async def test_s3_keeps_objects_across_a_restart(stack, subscriber_objects):
    key = f"persistent-artifacts/apps/restart/workflows/{uuid.uuid4().hex[:8]}/config.json"
    await subscriber_objects.put(key, b'{"kept": true}', conditional=True)
    s3 = stack.servers["s3"]
    await asyncio.to_thread(s3.stop)
    await asyncio.to_thread(s3.start)
    assert await subscriber_objects.get(key) == b'{"kept": true}'
    await subscriber_objects.put(key, b'{"kept": 2}', conditional=True)  # its version survived too
    assert await subscriber_objects.get(key) == b'{"kept": 2}'
