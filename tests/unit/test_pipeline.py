import asyncio

import pytest

from publisher.pipeline import PublishPipeline, QueuedEvent
from statestore.errors import PublishError, SidecarUnavailableError
from statestore.settings import Settings
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


@pytest.mark.parametrize("mode", ["raise", "entries"])
async def test_transient_failures_are_retried(mode):
    transport = FakeTransport(failures=2, mode=mode)
    pipeline = PublishPipeline(transport, settings(publish_attempts=3))
    for q in queued(5):
        await pipeline.submit(q)
    await pipeline.flush()
    assert sum(len(b) for b in transport.batches) == 5


async def test_events_that_cannot_be_published_surface_on_flush_with_the_events():
    transport = FakeTransport(failures=100)
    pipeline = PublishPipeline(transport, settings(publish_attempts=2))
    events = queued(3)
    for q in events:
        await pipeline.submit(q)
    with pytest.raises(PublishError, match="3 state events could not be published") as info:
        await pipeline.flush()
    assert info.value.events == [q.event for q in events]
    await pipeline.flush()  # reported once, then the caller owns them


async def test_a_failure_surfaces_on_the_next_submit():
    pipeline = PublishPipeline(FakeTransport(failures=100), settings(publish_attempts=1))
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

    from statestore.events import BATCH_TYPE, decode_events

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
    pipeline = PublishPipeline(FakeTransport(failures=100, mode="entries"), settings(pack_events=3, publish_attempts=1))
    events = queued(7)
    for q in events:
        await pipeline.submit(q)
    with pytest.raises(PublishError) as info:
        await pipeline.flush()
    assert info.value.events == [q.event for q in events]


def test_packs_respect_the_byte_bound():
    import itertools

    from publisher.pipeline import pack

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
