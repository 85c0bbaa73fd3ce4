"""Issue 3 end to end: the reference examples, concurrency, duplicates, poison, crashes."""

import asyncio
import json
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from statestore.devstack.stack import PROJECT_ROOT
from statestore import (
    SidecarUnavailableError,
    StateDecodeError,
    StateStore,
    StateType,
    SyncTimeoutError,
    build_state_store_path,
)
from statestore.publisher.query import StateQueryClient
from statestore.core.document import replay_in_order
from statestore.core.events import cloudevent_id, encode_cloudevent
from statestore.core.settings import SidecarSettings
from statestore.core.sidecar import SidecarClient
from tests.integration.conftest import dead_letter_bodies, eventually, python_env, subscriber_logs
from tests.strategies import field_updated, object_replaced

W, C = StateType.WORKFLOWS, StateType.CREDENTIALS


def new_id(prefix="wf"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def snapshot(state_id, state_type=W):
    """The snapshot file's content; None while it is missing or being rewritten (the
    local-storage binding truncates, then writes: a read in between sees a partial file)."""
    path = Path(build_state_store_path(state_id, state_type))
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


async def assert_snapshot_matches(state_id, state_type=W):
    """The object-store file equals get_state (it is written right after the state)."""
    expected = await StateStore.get_state(state_id, state_type)

    async def matches():
        return snapshot(state_id, state_type) == expected

    await eventually(matches, timeout=30)  # S3 and three replicas on a loaded machine: seconds


# -- the reference text's examples -------------------------------------------------------


async def test_save_state_updates_one_field():
    wf = new_id()
    await StateStore.save_state(key="progress", value=75, id=wf, type=StateType.WORKFLOWS)
    await StateStore.sync(wf, W)
    state = await StateStore.get_state(wf, StateType.WORKFLOWS)
    assert state == {"progress": 75}
    assert f"Current status: {state.get('status', 'unknown')}" == "Current status: unknown"
    await assert_snapshot_matches(wf)


@pytest.mark.parametrize("value", [75, "running", {"batch_size": 1000}, [1, 2, 3], True, None, 2.5])
async def test_every_json_value_kind_round_trips(value):
    wf = new_id()
    await StateStore.save_state("config", value, wf, W)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == {"config": value}


async def test_save_state_object_replaces_the_whole_state():
    wf = new_id()
    await StateStore.save_state("stale_field", "from before", wf, W)
    workflow_state = {
        "status": "running",
        "current_step": "data_processing",
        "progress": 50,
        "config": {"batch_size": 1000},
    }
    updated = await StateStore.save_state_object(id=wf, value=workflow_state, type=StateType.WORKFLOWS)
    assert updated == workflow_state and len(updated) == 4
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == workflow_state  # a replace, not a merge
    await assert_snapshot_matches(wf)


async def test_credentials_and_workflow_args_like_the_reference():
    cred = new_id("db-cred")
    await StateStore.save_state_object(cred, {"database": "mydb", "host": "localhost", "port": 5432}, C)
    wf = new_id("workflow")
    args = {"workflow_id": wf, "workflow_run_id": "run-456", "output_prefix": "out", "output_path": "/data/output"}
    await StateStore.save_state_object(wf, args, W)
    await asyncio.gather(StateStore.sync(cred, C), StateStore.sync(wf, W))
    creds = await StateStore.get_state(cred, StateType.CREDENTIALS)
    assert creds.get("database") == "mydb"
    assert await StateStore.get_state(wf, W) == args  # get_workflow_args
    assert await StateStore.get_state(wf, C) is None  # the type is part of the identity
    await assert_snapshot_matches(cred, C)


async def test_sync_many_waits_for_every_state_in_one_poll_loop():
    ids = [new_id("many") for _ in range(300)]
    for n, state_id in enumerate(ids):
        await StateStore.save_state("n", n, state_id, W)
    await StateStore.sync_many(ids, W)
    from statestore.publisher.store import StateStore as Store

    documents = await Store._runtime().query.get_documents(ids, W)
    assert {i: documents[i].to_state() for i in ids} == {i: {"n": n} for n, i in enumerate(ids)}


async def test_the_caller_packs_by_partitions_only_where_the_pubsub_has_them(profile, caller_sidecar):
    # Redis Streams (local) has no partitions: a batch travels in full messages. Kafka
    # (scale) has 12: each message holds one partition's events.
    expected_type, expected_partitions = {"local": ("pubsub.redis", 1), "scale": ("pubsub.kafka", 12)}[profile]
    assert await caller_sidecar.component_type("pubsub") == expected_type
    assert await caller_sidecar.component_type("no-such-component") is None
    state_id = new_id("packed")
    await StateStore.save_state("n", 1, state_id, W)
    await StateStore.sync(state_id, W)
    from statestore.publisher.store import StateStore as Store

    pipeline = Store._runtime().pipelines[("pubsub", "statestore-events")]
    assert await pipeline._topic_partitions() == expected_partitions


async def test_missing_state_is_none():
    assert await StateStore.get_state(new_id(), W) is None


# -- concurrency, order, duplicates ------------------------------------------------------


async def test_sixteen_concurrent_producer_processes_lose_no_field(stack):
    wf, producers, fields = new_id("shared"), 16, 25
    # Half pack their events into batch CloudEvents (the default), half send one each.
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.integration.producer_process", wf, str(i), str(fields)],
                         cwd=PROJECT_ROOT, env={**python_env(stack), "STATESTORE_PACK_EVENTS": str(1 + 99 * (i % 2))},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for i in range(producers)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    state = await StateStore.get_state(wf, W)
    assert state == {f"p{i:02d}-f{j:03d}": j for i in range(producers) for j in range(fields)}
    await assert_snapshot_matches(wf)


async def test_a_normal_exit_publishes_what_is_still_queued(stack):
    """No flush, no sync: the process ends right after its fire-and-forget writes."""
    wf = new_id("exit")
    script = (
        "import asyncio\n"
        "from statestore import StateStore, StateType\n"
        "async def main():\n"
        "    for n in range(500):\n"
        f"        await StateStore.save_state(f'f{{n}}', n, '{wf}', StateType.WORKFLOWS)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=python_env(stack), timeout=60)
    assert done.returncode == 0

    async def all_applied():
        state = await StateStore.get_state(wf, W)
        return state if state and len(state) == 500 else None

    assert await eventually(all_applied) == {f"f{n}": n for n in range(500)}


async def test_one_producers_updates_apply_in_publish_order():
    wf = new_id()
    for i in range(300):
        await StateStore.save_state("counter", i, wf, W)
        if i % 50 == 0:
            await StateStore.save_state_object(wf, {"counter": i, "reset_at": i}, W)
    await StateStore.sync(wf, W)
    assert await StateStore.get_state(wf, W) == {"counter": 299, "reset_at": 250}


async def raw_publish(sidecar, events):
    failed = await sidecar.bulk_publish("pubsub", "statestore-events",
                                        [(cloudevent_id(e) + f"#{n}", encode_cloudevent(e)) for n, e in enumerate(events)])  # fmt: skip
    assert failed == {}


async def wait_applied(query, state_id, events):
    last = {}
    for e in events:
        last[e.producer] = max(last.get(e.producer, 0), e.seq)

    async def done():
        doc = await query.get_document(state_id, W)
        return doc is not None and all(doc.processed_upto(p) >= s for p, s in last.items())

    await eventually(done)


async def test_duplicated_and_shuffled_deliveries_converge_to_the_oracle(caller_sidecar):
    rng = random.Random(7)
    wf = new_id("dup")
    events, clocks = [], {}
    for n in range(120):
        producer = f"dup-{rng.randrange(4)}-{wf[-6:]}"
        seq = sum(1 for e in events if e.producer == producer) + 1
        clocks[producer] = clocks.get(producer, 1_700_000_000_000) + rng.randrange(0, 3)
        stamp = dict(producer=producer, seq=seq, hlc=(clocks[producer], seq), state_id=wf)
        if rng.random() < 0.1:
            events.append(object_replaced({"base": n, rng.choice("abc"): n}, **stamp))
        else:
            events.append(field_updated(rng.choice("abcdef"), n, **stamp))
    delivered = events + rng.sample(events, 60)
    rng.shuffle(delivered)
    await raw_publish(caller_sidecar, delivered[:90])
    await raw_publish(caller_sidecar, delivered[90:] + delivered[:30])  # and a redelivery
    await wait_applied(StateQueryClient(caller_sidecar, "statestore"), wf, events)
    assert await StateStore.get_state(wf, W) == replay_in_order(events)
    await assert_snapshot_matches(wf)


# -- poison and faults -------------------------------------------------------------------


async def test_malformed_events_go_to_the_dead_letter_topic_and_later_events_still_apply(stack, caller_sidecar):
    marker = uuid.uuid4().hex
    good = field_updated("a", 1, producer=f"ok-{marker[:8]}", state_id=new_id("poison"))
    bad_data = {**json.loads(encode_cloudevent(good))["data"], "seq": "not a number", "marker": marker}
    poison = [
        json.dumps({"specversion": "1.0", "id": f"bad-{marker}", "source": "test", "type": "io.statestore.field_updated.v1",
                    "datacontenttype": "application/json", "data": bad_data}).encode(),
        json.dumps({"specversion": "1.0", "id": f"v9-{marker}", "source": "test", "type": "io.statestore.field_updated.v9",
                    "datacontenttype": "application/json", "data": {"marker": marker}}).encode(),
    ]  # fmt: skip
    failed = await caller_sidecar.bulk_publish("pubsub", "statestore-events", [(f"p{i}", body) for i, body in enumerate(poison)])
    assert failed == {}
    await caller_sidecar.publish("pubsub", "statestore-events", json.dumps({"not": "a statestore event", "marker": marker}).encode(), "application/json")
    await raw_publish(caller_sidecar, [good])

    async def dead_lettered():
        return sum(marker.encode() in body for body in await asyncio.to_thread(dead_letter_bodies, stack)) == 3

    assert await eventually(dead_lettered)
    await wait_applied(StateQueryClient(caller_sidecar, "statestore"), good.state_id, [good])
    log = subscriber_logs(stack)
    assert f"rejected event bad-{marker} to the dead-letter topic: malformed" in log
    assert f"rejected event v9-{marker} to the dead-letter topic: unknown event type or schema version" in log


@pytest.mark.profile("local")  # one subscriber; scale: test_faults_scale.py kills one of three
async def test_subscriber_killed_with_sigkill_mid_stream_loses_nothing(stack):
    ids = [new_id("crash") for _ in range(20)]
    expected = {}

    async def produce(rounds):
        for r in range(rounds):
            for i, wf in enumerate(ids):
                await StateStore.save_state(f"f{r % 7}", r, wf, W)
                expected.setdefault(wf, {})[f"f{r % 7}"] = r
            await asyncio.sleep(0.005)

    producer = asyncio.create_task(produce(60))
    await asyncio.sleep(0.2)
    stack.subscriber_app.kill()
    stack.subscriber_sidecar.kill()
    try:
        with pytest.raises(SyncTimeoutError, match="not all applied after"):
            await StateStore.sync(ids[0], W, timeout=1)
    finally:
        stack.start_subscriber()
    await producer
    await asyncio.gather(*(StateStore.sync(wf, W, timeout=90) for wf in ids))
    for wf in ids:
        assert await StateStore.get_state(wf, W) == expected[wf]
        await assert_snapshot_matches(wf)


async def test_undecodable_stored_state_is_an_error_not_empty(caller_sidecar):
    from statestore.core.sidecar import Upsert

    wf = new_id("corrupt")
    await caller_sidecar.transact("statestore", [Upsert(f"workflows/{wf}", b'{"not": "a document"}', None)])
    with pytest.raises(StateDecodeError, match=f"workflows/{wf}"):
        await StateStore.get_state(wf, W)


async def test_unreachable_sidecar_is_an_error_not_empty():
    from statestore.devstack.processes import free_port

    dead = SidecarClient(SidecarSettings(dapr_grpc_port=free_port(), DAPR_API_TIMEOUT_SECONDS=1))
    try:
        with pytest.raises(SidecarUnavailableError, match="did not answer.*make up"):
            await StateQueryClient(dead, "statestore").get_state("wf-1", W)
    finally:
        await dead.close()


async def test_events_that_cannot_be_published_are_returned_not_dropped():
    from statestore.devstack.processes import free_port
    from statestore.publisher.pipeline import PublishPipeline, QueuedEvent
    from statestore.publisher.runtime import SidecarTransport
    from statestore.core.errors import PublishError
    from statestore.core.settings import Settings

    settings = Settings(outage_budget_s=0.5, publish_backoff_ms=10)
    dead = SidecarClient(SidecarSettings(dapr_grpc_port=free_port(), DAPR_API_TIMEOUT_SECONDS=1))
    pipeline = PublishPipeline(SidecarTransport(dead, settings.pubsub_name, settings.topic), settings)
    event = field_updated("a", 1)
    await pipeline.submit(QueuedEvent.of(event))
    try:
        with pytest.raises(PublishError, match="1 state events could not be published") as info:
            await pipeline.flush()
        assert info.value.events == [event]
    finally:
        await dead.close()
