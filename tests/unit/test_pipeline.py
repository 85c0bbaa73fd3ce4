import asyncio

import pytest

from statestore.publisher.pipeline import PublishPipeline, QueuedEvent
from statestore.core.errors import PublishError, SidecarUnavailableError
from statestore.core.settings import Settings
from tests.strategies import field_updated


class FakeTransport:
    """Records batches; fails the first ``failures`` calls in the given way."""

    def __init__(self, failures=0, mode="raise"):
        self.batches = []
        self.bodies = []
        self.keys = []
        self.failures = failures
        self.mode = mode

    async def publish_batch(self, cloudevents):
        await asyncio.sleep(0)
        if self.failures:
            self.failures -= 1
            if self.mode == "raise":
                raise SidecarUnavailableError("sidecar down")
            return {entry_id: "broker said no" for entry_id, *_ in cloudevents}
        self.batches.append([entry_id for entry_id, *_ in cloudevents])
        self.bodies.extend(body for _, body, *_ in cloudevents)
        self.keys.extend(key for _, _, key in cloudevents)
        return {}

    async def wait_ready(self, timeout):
        await asyncio.sleep(timeout)
        return False


def settings(**overrides):
    return Settings(**{"batch_max_events": 10, "batch_window_ms": 1, "publish_backoff_ms": 1, "pack_events": 1,
                       **overrides})  # fmt: skip


def queued(n):
    return [QueuedEvent.of(field_updated("f", i, seq=i + 1, hlc=(i, 0))) for i in range(n)]


async def test_events_go_out_in_bounded_batches_and_flush_waits_for_all():
    transport = FakeTransport()
    pipeline = PublishPipeline(transport, settings())
    events = queued(35)
    for q in events:
        await pipeline.submit(q)
    await pipeline.flush()
    assert [eid for batch in transport.batches for eid in batch] == [q.id for q in events]
    assert max(len(b) for b in transport.batches) <= 10
    assert pipeline.published == 35 and pipeline.pending == 0


async def test_a_flush_does_not_wait_out_the_batch_window():
    transport = FakeTransport()
    pipeline = PublishPipeline(transport, settings(batch_window_ms=60_000))
    await pipeline.submit(queued(1)[0])
    await asyncio.sleep(0.05)
    assert transport.batches == []  # waiting for company
    await asyncio.wait_for(pipeline.flush(), 5)  # not the minute's window
    assert len(transport.batches) == 1


async def test_a_pipeline_can_wait_a_window_of_its_own():
    transport = FakeTransport()  # the credentials pipeline's way: confirmed replaces' events wait longer
    pipeline = PublishPipeline(transport, settings(batch_window_ms=1), batch_window_ms=60_000)
    await pipeline.submit(queued(1)[0])
    await asyncio.sleep(0.05)  # fifty of the setting's windows
    assert transport.batches == []
    await asyncio.wait_for(pipeline.flush(), 5)  # a credential save flushes: it never waits it out
    assert len(transport.batches) == 1


async def test_a_pipeline_can_publish_larger_batches_than_the_setting():
    transport = FakeTransport()
    pipeline = PublishPipeline(transport, settings(), batch_max_events=30)  # the credentials pipeline's way
    for q in queued(35):
        await pipeline.submit(q)
    await pipeline.flush()
    assert [len(b) for b in transport.batches] == [30, 5]


@pytest.mark.parametrize("mode", ["raise", "entries"])
async def test_transient_failures_are_retried(mode):
    transport = FakeTransport(failures=2, mode=mode)
    pipeline = PublishPipeline(transport, settings(outage_budget_s=5))
    for q in queued(5):
        await pipeline.submit(q)
    await pipeline.flush()
    assert sum(len(b) for b in transport.batches) == 5


async def test_events_that_cannot_be_published_surface_on_flush_with_the_events():
    transport = FakeTransport(failures=100)
    pipeline = PublishPipeline(transport, settings(outage_budget_s=0.05))
    events = queued(3)
    for q in events:
        await pipeline.submit(q)
    with pytest.raises(PublishError, match="3 state events could not be published") as info:
        await pipeline.flush()
    assert info.value.events == [q.event for q in events]
    await pipeline.flush()  # reported once, then the caller owns them


async def test_a_failure_surfaces_on_the_next_submit():
    pipeline = PublishPipeline(FakeTransport(failures=100), settings(outage_budget_s=0))
    first, second = queued(2)
    await pipeline.submit(first)
    await asyncio.wait_for(pipeline._idle.wait(), 5)
    with pytest.raises(PublishError) as info:
        await pipeline.submit(second)
    assert info.value.events == [first.event]
    assert second in pipeline._pending or pipeline._current == [second]  # queued all the same


async def test_queue_is_bounded():
    transport = FakeTransport()
    pipeline = PublishPipeline(transport, settings(), max_pending=5)
    for q in queued(50):
        await pipeline.submit(q)
        assert len(pipeline._pending) <= 5
    await pipeline.flush()
    assert sum(len(b) for b in transport.batches) == 50


async def test_events_are_packed_into_batch_cloudevents_that_decode_back_in_order():
    import json

    from statestore.core.events import BATCH_TYPE, decode_events

    transport = FakeTransport()
    pipeline = PublishPipeline(transport, settings(pack_events=4))
    events = queued(10)
    for q in events:
        await pipeline.submit(q)
    await pipeline.flush()
    envelopes = [json.loads(body) for body in transport.bodies]
    assert [e["type"] for e in envelopes] == [BATCH_TYPE] * 3
    assert len({e["id"] for e in envelopes}) == 3
    decoded = [event for e in envelopes for event in decode_events(e["type"], e["data"])[0]]
    assert decoded == [q.event for q in events]
    assert pipeline.published == 10


async def test_a_failed_pack_hands_back_every_event_it_carried():
    pipeline = PublishPipeline(FakeTransport(failures=100, mode="entries"), settings(pack_events=3, outage_budget_s=0))
    events = queued(7)
    for q in events:
        await pipeline.submit(q)
    with pytest.raises(PublishError) as info:
        await pipeline.flush()
    assert info.value.events == [q.event for q in events]


def test_packs_respect_the_byte_bound():
    import itertools

    from statestore.publisher.pipeline import pack

    big = [QueuedEvent.of(field_updated("f", "x" * 400, seq=i + 1, hlc=(i, 0))) for i in range(10)]
    messages = pack(big, max_events=100, max_bytes=1000, ids=itertools.count())
    assert all(sum(len(q.data) for q in events) <= 1000 for _, events in messages.values())
    assert [q for _, events in messages.values() for q in events] == big


async def test_a_publish_cut_off_by_shutdown_is_sent_again_not_lost():
    class HangingTransport(FakeTransport):
        async def publish_batch(self, cloudevents):
            if not self.batches:
                self.batches.append("hung")
                await asyncio.sleep(3600)  # cut off by the loop's shutdown
            return await super().publish_batch(cloudevents)

    transport = HangingTransport()
    pipeline = PublishPipeline(transport, settings(batch_max_events=5))
    events = queued(12)
    for q in events:
        await pipeline.submit(q)
    while transport.batches != ["hung"]:
        await asyncio.sleep(0.001)
    pipeline._task.cancel()  # what asyncio.run does to a task left running
    with pytest.raises(asyncio.CancelledError):
        await pipeline._task
    sent = [eid for batch in transport.batches[1:] for eid in batch]
    assert sent == [q.id for q in events]  # the cut-off batch first, then the rest


class Clock:
    """A test clock for the outage budget (time.monotonic stand-in)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class OutageTransport(FakeTransport):
    """Down until ``up`` is set; wait_ready answers at once when it is."""

    def __init__(self, clock=None, step=0.0):
        super().__init__()
        self.up = False
        self.calls = 0
        self.clock, self.step = clock, step

    async def publish_batch(self, cloudevents):
        self.calls += 1
        if self.clock:
            self.clock.now += self.step  # each try costs ``step`` seconds of outage
        if not self.up:
            raise SidecarUnavailableError("sidecar down")
        return await super().publish_batch(cloudevents)

    async def wait_ready(self, timeout):
        await asyncio.sleep(0)
        return self.up


async def test_an_outage_within_the_budget_loses_nothing_and_is_logged_once(caplog):
    transport = OutageTransport()
    pipeline = PublishPipeline(transport, settings(outage_budget_s=60, publish_backoff_ms=1, publish_backoff_max_ms=2))
    events = queued(30)
    for q in events[:10]:
        await pipeline.submit(q)
    while transport.calls < 20:  # many retries, still within the budget
        await asyncio.sleep(0.001)
    for q in events[10:]:
        await pipeline.submit(q)  # no PublishError: the caller keeps going
    assert pipeline.in_outage and pipeline.stats.outages == 1
    transport.up = True
    await asyncio.wait_for(pipeline.flush(), 5)
    assert sorted(eid for b in transport.batches for eid in b) == sorted(q.id for q in events)
    assert pipeline.stats.outages_ended == 1 and not pipeline.in_outage
    lines = [r.getMessage() for r in caplog.records]
    assert sum("publishing failed" in line for line in lines) == 1
    assert sum("publishing resumed" in line for line in lines) == 1


async def test_past_the_budget_every_unpublished_event_is_handed_back():
    clock = Clock()
    transport = OutageTransport(clock, step=1.0)
    pipeline = PublishPipeline(transport, settings(outage_budget_s=10, publish_backoff_ms=1), clock=clock)
    events = queued(25)
    for q in events:
        await pipeline.submit(q)
    with pytest.raises(PublishError, match="25 state events could not be published.*gave up") as info:
        await asyncio.wait_for(pipeline.flush(), 5)
    assert sorted(e.seq for e in info.value.events) == sorted(q.event.seq for q in events)
    assert pipeline.stats.failed_events == 25


async def test_a_full_queue_makes_the_caller_wait_and_says_so_once(caplog):
    transport = OutageTransport()
    pipeline = PublishPipeline(transport, settings(outage_budget_s=60, publish_backoff_ms=1), max_pending=5)
    events = queued(40)

    async def write():
        for q in events:
            await pipeline.submit(q)

    writer = asyncio.create_task(write())
    while pipeline.stats.backpressure_waits == 0:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    assert not writer.done() and len(pipeline._pending) <= 5
    transport.up = True
    await asyncio.wait_for(writer, 5)
    await pipeline.flush()
    assert sum(len(b) for b in transport.batches) == 40
    assert sum("queue is full" in r.getMessage() for r in caplog.records) == 1


async def test_any_transport_exception_keeps_the_batch():
    class Flaky(FakeTransport):
        broke = False

        async def publish_batch(self, cloudevents):
            if not self.broke:
                self.broke = True
                raise RuntimeError("a bug in the transport")
            return await super().publish_batch(cloudevents)

    transport = Flaky()
    pipeline = PublishPipeline(transport, settings(outage_budget_s=5))
    events = queued(7)
    for q in events:
        await pipeline.submit(q)
    await asyncio.wait_for(pipeline.flush(), 5)
    assert sorted(eid for b in transport.batches for eid in b) == sorted(q.id for q in events)


async def test_bulk_requests_are_cut_by_bytes_and_a_large_event_travels_alone():
    transport = FakeTransport()
    limit = 3000
    pipeline = PublishPipeline(transport, settings(pack_events=100, pack_max_bytes=1024, bulk_publish_max_bytes=limit))
    sizes = [300, 300, 5000, 300, 900, 900, 900, 100]
    events = [QueuedEvent.of(field_updated("f", "x" * n, seq=i + 1, hlc=(i, 0))) for i, n in enumerate(sizes)]
    for q in events:
        await pipeline.submit(q)
    await pipeline.flush()
    import json

    from statestore.core.events import decode_events

    bodies = iter(transport.bodies)
    for batch in transport.batches:
        request = [next(bodies) for _ in batch]
        assert len(request) == 1 or sum(len(b) for b in request) <= limit
    decoded = [ev for b in transport.bodies for ev in decode_events(json.loads(b)["type"], json.loads(b)["data"])[0]]
    assert decoded == [q.event for q in events]
    big = [b for b in transport.bodies if len(b) > 5000]
    assert len(big) == 1 and len(decode_events(json.loads(big[0])["type"], json.loads(big[0])["data"])[0]) == 1


async def test_sync_style_flush_raises_only_the_selected_failures():
    pipeline = PublishPipeline(FakeTransport(failures=100), settings(outage_budget_s=0))
    mine, theirs = queued(2)
    await pipeline.submit(mine)
    await pipeline.submit(theirs)
    with pytest.raises(PublishError) as info:
        await pipeline.flush(lambda q: q is mine)
    assert info.value.events == [mine.event]
    with pytest.raises(PublishError) as info:
        await pipeline.flush()
    assert info.value.events == [theirs.event]  # kept for its owner, not forgotten


async def test_a_batch_the_publisher_cannot_even_pack_is_handed_back_not_dropped(monkeypatch):
    import statestore.publisher.pipeline as module

    def broken_pack(*args, **kwargs):
        raise ValueError("cannot pack")

    monkeypatch.setattr(module, "pack", broken_pack)
    pipeline = PublishPipeline(FakeTransport(), settings())
    events = queued(3)
    for q in events:
        await pipeline.submit(q)
    with pytest.raises(PublishError, match="ValueError: cannot pack") as info:
        await asyncio.wait_for(pipeline.flush(), 5)  # never a silent success
    assert info.value.events == [q.event for q in events]


async def test_a_sidecar_that_answers_but_refuses_gets_backoff_not_a_busy_loop():
    """Broker down: the sidecar is reachable (ready at once) yet fails every entry."""

    class Refusing(FakeTransport):
        calls = 0

        async def publish_batch(self, cloudevents):
            self.calls += 1
            return {entry_id: "redis: connection refused" for entry_id, _ in cloudevents}

        async def wait_ready(self, timeout):
            return True

    transport = Refusing()
    pipeline = PublishPipeline(transport, settings(outage_budget_s=60, publish_backoff_ms=100, publish_backoff_max_ms=1000))
    await pipeline.submit(queued(1)[0])
    await asyncio.sleep(1.0)
    assert 2 <= transport.calls <= 6  # 100, 200, 400, 800 ms (with jitter), not 20 a second
    pipeline.take_unpublished()
    pipeline._task.cancel()

