"""Issue 5's fault matrix (short form; `make chaos` runs it longer): after each fault the
stored state and the snapshots equal the oracle, nothing lost, nothing applied twice."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import uuid

import pytest

from statestore.devstack.processes import port_open, wait_until
from statestore.devstack.stack import PROJECT_ROOT
from statestore import StateStore, StateType
from tests.integration.conftest import eventually, python_env
from tests.integration.faults import Load, run_across_fault

# `make chaos` raises both: every fault CHAOS_ROUNDS times, CHAOS_KILLS subscriber kills.
CHAOS_ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "1"))
CHAOS_KILLS = int(os.environ.get("CHAOS_KILLS", "2"))


def assert_clean(result):
    assert (result.lost, result.double_applied, result.snapshot_mismatches) == (0, 0, 0), result


async def restart_app(stack):
    stack.subscriber_app.start()
    await asyncio.to_thread(stack.subscriber_app.wait_healthy, lambda: port_open(stack.ports.subscriber.app_port), 60)


async def crash_sidecar(stack, fault, proc, spec, **timing):
    """SIGKILL a sidecar under load, start it again, check the outcome."""

    async def inject():
        proc.kill()

    async def recover():
        await asyncio.to_thread(stack.start_sidecar, proc, spec)

    for _ in range(CHAOS_ROUNDS):
        result = await run_across_fault(fault, inject, recover, **timing)
    assert_clean(result)


async def test_subscriber_app_sigkilled_at_random_points(stack):
    rng = random.Random(5)
    for _ in range(CHAOS_KILLS):

        async def inject():
            stack.subscriber_app.kill()

        result = await run_across_fault(
            "subscriber app SIGKILL", inject, lambda: restart_app(stack),
            hold_s=rng.uniform(0.05, 0.5), warmup_s=rng.uniform(0.05, 0.6),
        )  # fmt: skip
    assert_clean(result)


async def test_subscriber_sidecar_killed_and_restarted(stack):
    await crash_sidecar(stack, "subscriber sidecar SIGKILL", stack.subscriber_sidecar, stack.ports.subscriber)


async def test_caller_sidecar_killed_while_producers_keep_calling(stack):
    # Fire-and-forget replaces: the producers keep calling through the outage (a confirmed
    # replace waits it out, and test_confirmed_writes.py covers that).
    await crash_sidecar(stack, "caller sidecar SIGKILL", stack.caller_sidecar, stack.ports.caller, hold_s=0.5,
                        load=Load(confirmed=False))  # fmt: skip


@pytest.mark.profile("local")  # scale: test_faults_scale.py
async def test_redis_stopped_and_restarted(stack):
    for _ in range(CHAOS_ROUNDS):

        async def inject():
            stack.redis.stop()

        async def recover():
            await asyncio.to_thread(stack.start_redis)

        result = await run_across_fault("Redis stop and restart (AOF)", inject, recover, hold_s=1.0)
    assert_clean(result)


@pytest.mark.profile("local")
async def test_sqlite_locked_longer_than_the_busy_timeout(stack):
    db = stack.local / "dapr" / "statestore.db"
    for _ in range(CHAOS_ROUNDS):
        holder = {}

        async def inject():
            conn = sqlite3.connect(db, timeout=30, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            holder["conn"] = conn

        async def recover():
            holder["conn"].execute("ROLLBACK")
            holder["conn"].close()

        # Fire-and-forget replaces keep the events coming while the subscriber waits out the
        # lock (a confirmed replace would wait for the lock too, stalling the load).
        result = await run_across_fault("sqlite locked 7 s (busy timeout 5 s)", inject, recover, hold_s=7.0,
                                        load=Load(confirmed=False))  # fmt: skip
    assert_clean(result)


@pytest.mark.profile("local")
async def test_object_store_folder_unwritable_for_a_while(stack):
    folder = stack.local / "tmp" / "persistent-artifacts"
    for _ in range(CHAOS_ROUNDS):
        moved = folder.with_name("persistent-artifacts.moved")
        recreated: list = []

        async def inject():
            # Root ignores permission bits: a file where the folder belongs fails every write.
            folder.rename(moved)
            while True:
                try:
                    folder.write_text("not a folder")
                    return
                except IsADirectoryError:  # a snapshot write recreated the folder in between
                    recreated.append(folder.with_name(f"persistent-artifacts.recreated{len(recreated)}"))
                    folder.rename(recreated[-1])

        async def recover():
            folder.unlink()
            moved.rename(folder)
            for extra in recreated:  # snapshots written there are newer: keep them
                shutil.copytree(extra, folder, dirs_exist_ok=True)
                shutil.rmtree(extra)
            recreated.clear()

        result = await run_across_fault("object store unwritable 2 s", inject, recover, hold_s=2.0)
    assert_clean(result)


async def test_a_subscriber_replica_added_while_running(stack):
    """One more replica joins under load (a second one on local; a fourth, and a
    rebalance of the Kafka partitions, on scale)."""
    replicas = len(stack.subscriber_pairs())
    holder = {}

    async def add():
        holder["replica"] = await asyncio.to_thread(stack.add_subscriber_replica)

    async def nothing():
        pass

    try:
        result = await run_across_fault(f"a subscriber replica added to {replicas}", add, nothing, hold_s=1.5, load=Load(states=30))
        for _ in range(CHAOS_ROUNDS - 1):
            result = await run_across_fault(f"a subscriber replica added to {replicas}", nothing, nothing, hold_s=1.5, load=Load(states=30))
        assert_clean(result)
        replica = holder["replica"]
        replica_log = replica[0].log_path.read_text()
        assert "subscriber listening" in replica_log
    finally:
        if "replica" in holder:
            stack.remove_replica(holder["replica"])


async def test_producer_killed_mid_batch_leaves_only_whole_events(stack, tmp_path):
    """What the producer flushed is applied; an object replace is never half-applied."""
    state_id = f"killed-{uuid.uuid4().hex[:8]}"
    progress = tmp_path / "flushed"
    script = (
        "import asyncio, os, sys\n"
        "from statestore import StateStore, StateType\n"
        "async def main():\n"
        "    for r in range(1, 100000):\n"
        f"        await StateStore.save_state_object('{state_id}', {{'round': r, 'a': r, 'b': r}}, StateType.WORKFLOWS)\n"
        "        if r % 20 == 0:\n"
        "            await StateStore.flush()\n"
        f"            open(r'{progress}.tmp', 'w').write(str(r))\n"
        f"            os.replace(r'{progress}.tmp', r'{progress}')  # never seen half-written\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=python_env(stack))
    try:
        assert await asyncio.to_thread(wait_until, lambda: progress.exists() and int(progress.read_text()) >= 200, 60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    flushed = int(progress.read_text())

    async def flushed_rounds_applied():
        state = await StateStore.get_state(state_id, StateType.WORKFLOWS)
        return state if state and state["round"] >= flushed else None

    state = await eventually(flushed_rounds_applied)
    assert state == {"round": state["round"], "a": state["round"], "b": state["round"]}
