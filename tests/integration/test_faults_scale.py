"""Issue 11's faults on the scale profile (Kafka, PostgreSQL, S3, three replicas): after
each one the stored state and the snapshots equal the oracle, nothing lost, nothing
applied twice. `make chaos PROFILE=scale` runs each CHAOS_ROUNDS times."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.faults import Load, run_across_fault
from tests.integration.test_faults import CHAOS_ROUNDS, assert_clean

pytestmark = pytest.mark.profile("scale")


async def restart_server(stack, name: str, hold_s: float, fault: str) -> None:
    server = stack.servers[name]

    async def inject():
        await asyncio.to_thread(server.stop)

    async def recover():
        await asyncio.to_thread(server.start)

    for _ in range(CHAOS_ROUNDS):
        result = await run_across_fault(fault, inject, recover, hold_s=hold_s, load=Load(states=24))
    assert_clean(result)


async def test_one_replica_sigkilled_under_load_its_partitions_move(stack):
    """Replica 2 (app and sidecar) dies; the group gives its partitions to the others
    (after the session timeout) and they finish the load without it."""
    app, sidecar = stack.replicas[0]
    for _ in range(CHAOS_ROUNDS):

        async def inject():
            app.kill()
            sidecar.kill()

        async def nothing():
            pass

        try:
            result = await run_across_fault("scale: one of 3 replicas SIGKILLed", inject, nothing, hold_s=0.5, load=Load(states=36))
        finally:
            await asyncio.to_thread(stack.start_replica, (app, sidecar))
    assert_clean(result)


async def test_kafka_broker_restarted(stack):
    await restart_server(stack, "kafka", 1.0, "scale: Kafka broker stop and restart")


async def test_postgresql_restarted(stack):
    await restart_server(stack, "postgres", 1.0, "scale: PostgreSQL fast stop and restart")


async def test_s3_server_down_for_5_s_snapshots_catch_up(stack):
    await restart_server(stack, "s3", 5.0, "scale: S3 server down 5 s")
