"""Faults on the scale profile (Kafka, PostgreSQL, S3, three replicas): after each one the
stored state and the snapshots equal the oracle, nothing lost, nothing applied twice.
`make chaos PROFILE=scale` runs each CHAOS_ROUNDS times, and the ones marked chaos.

Issue 27's replica faults kill or stop one replica's app while its sidecar stays up: the
sidecar's app health probe fails, it stops its subscriptions, and the Kafka consumer
group hands the replica's partitions to the live ones (docs/scaling.md, "When a replica
dies or hangs"). They measure, by condition, how long the partitions take to move and
the backlog to be applied, against the issue's bounds."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from statestore import StateType, build_state_store_path
from statestore.cli.main import PROBES
from statestore.cli.metrics import ScrapeError, scrape
from statestore.publisher.store import StateStore as Store
from statestore.devstack.processes import ManagedProcess, http_ok
from tests.integration.conftest import eventually
from tests.integration.faults import FaultResult, Load, Progress, await_handover, read_snapshot, result_row, run_across_fault
from tests.integration.test_faults import CHAOS_ROUNDS, assert_clean

pytestmark = pytest.mark.profile("scale")

# The bounds: a dead or hung replica's partitions move within 15 s, and the live
# replicas apply its partitions' events within 30 s of the fault.
MOVED_WITHIN_S = 15.0
APPLIED_WITHIN_S = 30.0
HUNG_S = 60.0  # how long the SIGSTOPped app stays stopped


async def restart_server(stack, name: str, hold_s: float, fault: str, confirmed: bool = True) -> None:
    """Stop server ``name`` under load for ``hold_s``, start it again, check the outcome.
    ``confirmed``: the load's replaces are confirmed (False: fire-and-forget, for a server
    a confirmed replace waits for, so that the load keeps calling through its outage)."""
    server = stack.servers[name]

    async def inject():
        await asyncio.to_thread(server.stop)

    async def recover():
        await asyncio.to_thread(server.start)

    for _ in range(CHAOS_ROUNDS):
        result = await run_across_fault(fault, inject, recover, hold_s=hold_s, load=Load(states=24, confirmed=confirmed))
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


# -- issue 27: one replica's app dies or hangs, its sidecar stays up -----------------------


def metrics_url(stack, app: ManagedProcess) -> str:
    return f"http://127.0.0.1:{stack.spec_of(app).app_metrics_port}/metrics"


def applied_by(stack, app: ManagedProcess) -> float:
    """Events this replica's app applied since it started (its /metrics)."""
    return scrape(metrics_url(stack, app)).total("statestore_events_applied_total")


def pick_victim(stack) -> tuple[ManagedProcess, ManagedProcess]:
    """The replica holding the snapshot lease (its flusher is then cut mid-round too),
    else the second one."""
    for pair in stack.subscriber_pairs():
        try:
            if scrape(metrics_url(stack, pair[0])).total("statestore_snapshot_lease_held") == 1:
                return pair
        except ScrapeError:
            continue
    return stack.replicas[0]


class Running:
    """A load and its progress sampler, started together, stopped together."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.progress = Progress(load)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> Running:
        """Start both; return once every state has been applied (the load runs on every partition)."""
        self._tasks = [asyncio.create_task(self.load.run(self._stop)), asyncio.create_task(self.progress.run(self._stop))]

        async def every_state_applied():
            return self.progress.samples and all(self.progress.samples[-1][1][i] > 0 for i in self.load.ids)

        try:
            await eventually(every_state_applied, timeout=60)
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


# A steady load: 48 states over the 12 partitions, each written 10 times a second (480
# events/s, well under what the two live replicas apply here, so a backlog clears).
def steady_load() -> Load:
    # Fire-and-forget replaces: every write of the load goes through the event pipeline,
    # which is what a replica's death delays (a confirmed replace is stored by the caller).
    return Load(states=48, spread=True, pause_s=0.1, confirmed=False)


def probes(stack) -> str:
    """What each sidecar's app health probes saw so far (daprd's metrics): failures and
    the mean round trip, for the report."""
    seen = []
    for app, sidecar in stack.subscriber_pairs():
        try:
            scraped = scrape(f"http://127.0.0.1:{stack.spec_of(app).metrics_port}/metrics")
        except ScrapeError:
            continue
        by_status = scraped.by(PROBES, "grpc_client_status")
        count = scraped.total("dapr_grpc_io_healthprobes_roundtrip_latency_count")
        mean_ms = scraped.total("dapr_grpc_io_healthprobes_roundtrip_latency_sum") / count if count else 0.0
        failed = {code: int(n) for code, n in by_status.items() if code != "OK"}
        seen.append(f"{app.name} {int(by_status.get('OK', 0))} OK, failed {failed or 0}, mean {mean_ms:.1f} ms")
    return "; ".join(seen)


async def handover(fault: str, inject) -> tuple[Running, float, float, float]:
    """Run a steady load, inject the fault into one replica's app (its sidecar stays up),
    and wait until the live replicas took over, within the issue's bounds. Returns the
    load (still running), when the fault began, and the seconds until the partitions
    moved and until the backlog was applied."""
    running = await Running(steady_load()).start()
    try:
        await inject()  # its last step is the signal
        started = time.monotonic()
        moved_s, applied_s, stalled = await await_handover(running.progress, started, MOVED_WITHIN_S, APPLIED_WITHIN_S)
        # The stopped replica owned partitions: some states waited for the move.
        assert stalled, "no state waited: the stopped replica had no partition of the load"
        print(f"{fault}: {len(stalled)} of {len(running.load.ids)} states waited; partitions moved after"
              f" {moved_s:.1f} s, the backlog applied after {applied_s:.1f} s")  # fmt: skip
    except BaseException:
        await running.stop()
        raise
    return running, started, moved_s, applied_s


def killing(app: ManagedProcess):
    """The fault: SIGKILL the app (its sidecar stays up)."""

    async def inject() -> None:
        app.kill()

    return inject


async def finish(running: Running, result: FaultResult) -> None:
    """Stop the load, wait until every accepted event is applied, check against the oracle."""
    await running.stop()
    settled = time.monotonic()
    await running.load.settle()
    result.recover_s.append(time.monotonic() - settled)
    result.runs += 1
    result.events += running.load.events
    await running.load.check(result)


async def test_a_replicas_app_sigkilled_and_not_restarted_its_partitions_move(stack):
    """Issue 27: one app SIGKILLed, its sidecar up, the app not restarted: the sidecar's
    health probe fails, it drops out of the consumer group, and the other two replicas apply
    its partitions' events within the bounds."""
    fault = "scale: one of 3 subscriber apps SIGKILLed, not restarted (sidecar up)"
    result = result_row(fault)
    for _ in range(CHAOS_ROUNDS):
        app, sidecar = pick_victim(stack)
        try:
            running, _, moved_s, applied_s = await handover(fault, killing(app))
            result.moved_s.append(moved_s)
            result.applied_s.append(applied_s)
            await finish(running, result)
            print(f"health probes since the stack started: {probes(stack)}")
        finally:
            await asyncio.to_thread(stack.start_replica, (app, sidecar))
    assert_clean(result)


@pytest.mark.chaos
async def test_a_replicas_app_sigstopped_60_s_resumes_without_stale_writes(stack):
    """Issue 27: one app hangs (SIGSTOP) for 60 s under load, its sidecar up. The others
    take its partitions within the bounds and apply everything; then it resumes (SIGCONT)
    and, while it comes back, writes neither an older state over a newer one nor an
    older snapshot: every document and snapshot file keeps equalling the oracle."""
    fault = f"scale: one of 3 subscriber apps SIGSTOPped {HUNG_S:g} s, then resumed (sidecar up)"
    result = result_row(fault)
    for _ in range(CHAOS_ROUNDS):
        app, sidecar = pick_victim(stack)
        before: dict[str, float] = {}
        log_at = app.log_path.stat().st_size

        async def inject(app=app):
            # Stopped while it applies a delivery if that happens within 5 s (it mostly
            # does under this load): what it has in hand is what could go back in time.
            deadline = time.monotonic() + 5.0
            while True:
                before.update(await asyncio.to_thread(counters, stack, app))
                if before["statestore_deliveries_in_flight"] > 0 or time.monotonic() > deadline:
                    break
            app.signal(signal.SIGSTOP)

        try:
            running, stopped_at, moved_s, applied_s = await handover(fault, inject)
            result.moved_s.append(moved_s)
            result.applied_s.append(applied_s)
            await finish(running, result)  # the live replicas applied it all; snapshots equal the oracle
            assert (result.lost, result.double_applied, result.snapshot_mismatches) == (0, 0, 0), result
            await asyncio.sleep(max(0.0, stopped_at + HUNG_S - time.monotonic()))  # the hang's length
        finally:
            app.signal(signal.SIGCONT)
        resumed = time.monotonic()
        # Watch every document and snapshot while the resumed app finishes what it had in
        # hand (its deliveries, a flush round, a commit) and rejoins; nothing else writes.
        stale = await watch_for_stale_writes(stack, running.load, app, resumed)
        assert not stale, f"the resumed replica wrote older data: {stale[:5]}"
        await running.load.check(result)  # and after it: values, producer records, snapshots
        # What it did on resuming (for the report): deadlines passed, ETag conflicts, the lease.
        after = counters(stack, app)
        said = [line for line in app.log_path.read_text()[log_at:].splitlines()
                if any(word in line for word in ("lease", "flush failed", "healthy", "redelivered"))]  # fmt: skip
        print(f"health probes since the stack started: {probes(stack)}")
        print(f"resumed {app.name} (held the snapshot lease: {before['statestore_snapshot_lease_held'] == 1},"
              f" deliveries in flight when stopped: {before['statestore_deliveries_in_flight']:g}):"
              f" ready and idle {time.monotonic() - resumed:.1f} s after SIGCONT; counters since the stop: "
              + ", ".join(f"{name} +{after[name] - before[name]:g}" for name in before) + "; its log: " + " | ".join(said))  # fmt: skip
    assert_clean(result)


COUNTERS = ("statestore_snapshot_lease_held", "statestore_deliveries_in_flight", "statestore_etag_conflicts_total",
            "statestore_duplicates_ignored_total", "statestore_states_written_total",
            "statestore_snapshots_written_total")  # fmt: skip


def counters(stack, app: ManagedProcess) -> dict[str, float]:
    scraped = scrape(metrics_url(stack, app))
    return {name: scraped.total(name) for name in COUNTERS}


async def watch_for_stale_writes(stack, load: Load, app: ManagedProcess, since: float, quiet_s: float = 10.0) -> list[str]:
    """What differs from the oracle in the store or the object store, sampled every 50 ms
    from ``since`` until the app is ready again, has no delivery in flight and
    ``quiet_s`` (two snapshot lease periods) have passed."""
    query = Store._runtime().query
    seen: list[str] = []
    deadline = since + 60.0
    while True:
        documents = await query.get_documents(load.ids, StateType.WORKFLOWS)
        for state_id in load.ids:
            document = documents.get(state_id)
            if (document.to_state() if document else None) != load.expected[state_id]:
                seen.append(f"state {state_id}")
            snapshot = read_snapshot(build_state_store_path(state_id, StateType.WORKFLOWS))
            if snapshot is not None and snapshot != load.expected[state_id]:
                seen.append(f"snapshot {state_id}")
        now = time.monotonic()
        if now - since >= quiet_s and await asyncio.to_thread(ready_and_idle, stack, app):
            return seen
        assert now < deadline, "the resumed replica did not become ready within 60 s"
        await asyncio.sleep(0.05)


def ready_and_idle(stack, app: ManagedProcess) -> bool:
    url = metrics_url(stack, app)
    try:
        return http_ok(url.replace("/metrics", "/healthz/ready")) and scrape(url).total("statestore_deliveries_in_flight") == 0
    except ScrapeError:
        return False


@pytest.mark.chaos
async def test_a_dead_replica_restarted_rejoins_and_takes_a_share(stack):
    """Issue 27: after its app was SIGKILLed and its partitions moved, the app is started
    again (its sidecar never stopped): the probe succeeds, the sidecar subscribes again,
    and the group gives it partitions: it applies events of the load again."""
    fault = "scale: a SIGKILLed subscriber app restarted, rejoins (moved: from its restart until it applies again)"
    result = result_row(fault)
    for _ in range(CHAOS_ROUNDS):
        app, sidecar = pick_victim(stack)
        try:
            running, *_ = await handover(fault, killing(app))  # the first row measures the way out; here the way back
            restarted = time.monotonic()
            await asyncio.to_thread(stack.start_replica, (app, sidecar))

            async def applies_again():
                return applied_by(stack, app) > 0

            await eventually(applies_again, timeout=MOVED_WITHIN_S + 60)
            result.moved_s.append(time.monotonic() - restarted)
            share = applied_by(stack, app)

            async def keeps_applying():
                return applied_by(stack, app) > share

            await eventually(keeps_applying, timeout=30)
            await finish(running, result)
        finally:
            await asyncio.to_thread(stack.start_replica, (app, sidecar))
    assert_clean(result)


async def test_kafka_broker_restarted(stack):
    await restart_server(stack, "kafka", 1.0, "scale: Kafka broker stop and restart")


async def test_postgresql_restarted(stack):
    # The caller's confirmed replaces write PostgreSQL too: fire-and-forget ones keep the
    # events coming while it is down (test_confirmed_writes.py covers a store that refuses).
    await restart_server(stack, "postgres", 1.0, "scale: PostgreSQL fast stop and restart", confirmed=False)


async def test_s3_server_down_for_5_s_snapshots_catch_up(stack):
    await restart_server(stack, "s3", 5.0, "scale: S3 server down 5 s")
