"""The publisher runtime without a sidecar: sequence numbers under threads, identity
rotation, fork, loop release, and the signal chaining rule."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading

import pytest

from statestore.publisher import runtime as runtime_module
from statestore.publisher.runtime import Runtime, get_runtime, set_runtime
from statestore.core.settings import Settings


@pytest.fixture
def fresh_runtime():
    old = set_runtime(None)
    yield
    set_runtime(old)


def test_sequence_numbers_from_many_threads_are_unique_and_gapless():
    runtime = Runtime(Settings())
    got: list[list[int]] = [[] for _ in range(8)]

    def stamp(n: int) -> None:
        for _ in range(5000):
            got[n].append(runtime.stamp("workflows/shared").seq)

    threads = [threading.Thread(target=stamp, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = sorted(s for g in got for s in g)
    assert every == list(range(1, 40_001))
    assert runtime.waits("workflows/shared") == {runtime.producer_id: 40_000}


def test_the_producer_id_rotates_and_sync_waits_on_every_id_used(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(runtime_module.time, "monotonic", lambda: now[0])
    runtime = Runtime(Settings(producer_retention_s=3600))
    first = runtime.stamp("workflows/a")
    now[0] += 3600 / 4  # a quarter of the retention later: a new id
    second = runtime.stamp("workflows/a")
    assert second.producer != first.producer and second.seq == 1
    assert runtime.waits("workflows/a") == {first.producer: 1, second.producer: 1}
    now[0] += 3600  # the first id is past the retention: no longer waited on
    runtime.stamp("workflows/a")
    assert first.producer not in runtime.waits("workflows/a")


def test_stamps_rise_across_threads():
    runtime = Runtime(Settings())
    stamps = [runtime.stamp("k").hlc for _ in range(1000)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 1000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_a_forked_child_gets_a_new_identity_and_the_parent_keeps_its_own(fresh_runtime):
    parent = get_runtime()
    parent.stamp("workflows/x")
    parent.stamp("workflows/x")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            child = get_runtime()
            stamp = child.stamp("workflows/x")
            ok = (
                child is not parent
                and child.forked
                and stamp.producer != parent.producer_id
                and stamp.seq == 1
                and stamp.hlc > parent.clock.last
            )
            os.write(write, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 10)
    os.waitpid(pid, 0)
    assert answer == b"ok"
    assert get_runtime() is parent and parent.stamp("workflows/x").seq == 3


async def test_a_finished_loop_is_released(fresh_runtime):
    runtime = get_runtime()

    def in_thread() -> None:
        async def use() -> None:
            runtime.loop_runtime()
            runtime.pipeline()

        asyncio.run(use())

    threads = [threading.Thread(target=in_thread) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert runtime.loops() == 0  # each loop's channel and pipelines went with it


SIGNAL_SCRIPT = r"""
import asyncio, os, signal, sys, time
from statestore.publisher import runtime as rt
calls = []
if sys.argv[1] == "app-handler":
    signal.signal(signal.SIGTERM, lambda s, f: (calls.append(s), print("app handler ran", flush=True), sys.exit(7)))
drained = []
class Fake(rt.Runtime):
    def drain(self, timeout=None):
        drained.append(1)
        print("drained", flush=True)
        return 0
rt.set_runtime(Fake())
async def main():
    rt.get_runtime().loop_runtime()  # first use from the main thread installs the handlers
    print("ready", flush=True)
    time.sleep(30)  # the loop is blocked: the handler still runs
asyncio.run(main())
"""


@pytest.mark.parametrize("mode", ["default", "app-handler"])
def test_sigterm_drains_then_hands_the_signal_on(mode):
    proc = subprocess.Popen([sys.executable, "-c", SIGNAL_SCRIPT, mode], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "DAPR_GRPC_PORT": "1"})  # fmt: skip
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out = proc.stdout.read()
    code = proc.wait(timeout=20)
    assert out.splitlines()[0] == "drained"
    if mode == "default":
        assert code == -signal.SIGTERM  # the default action still happens, after the drain
    else:
        assert "app handler ran" in out and code == 7  # the app's handler is chained, not replaced


def test_sigint_still_raises_keyboard_interrupt_after_the_drain():
    script = SIGNAL_SCRIPT.replace("asyncio.run(main())", "try:\n    asyncio.run(main())\nexcept KeyboardInterrupt:\n    print('KeyboardInterrupt', flush=True)")
    proc = subprocess.Popen([sys.executable, "-c", script, "default"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    out = proc.stdout.read()
    assert proc.wait(timeout=20) == 0
    assert out.splitlines()[:2] == ["drained", "KeyboardInterrupt"]  # (then the exit drain)


async def test_stats_sum_the_live_pipelines(fresh_runtime):
    runtime = get_runtime()
    pipeline = runtime.pipeline()
    pipeline.stats.published, pipeline.stats.outages = 7, 1
    stats = runtime.stats()
    assert stats["published"] == 7 and stats["outages"] == 1 and stats["in_outage"] is False
    assert stats["pending"] == 0 and stats["loops"] == 1 and stats["producer"] == runtime.producer_id


async def test_a_loop_flush_covers_every_topic_and_keeps_other_states_failures(fresh_runtime):
    from statestore.publisher.pipeline import PublishPipeline, QueuedEvent
    from statestore.core.errors import PublishError
    from tests.strategies import field_updated
    from tests.unit.test_pipeline import FakeTransport

    runtime = get_runtime()
    loop_runtime = runtime.loop_runtime()
    settings = Settings(outage_budget_s=0, batch_window_ms=1)
    loop_runtime.pipelines = {
        ("pubsub", "a"): PublishPipeline(FakeTransport(failures=100), settings),
        ("pubsub", "b"): PublishPipeline(FakeTransport(failures=100), settings),
    }
    mine = QueuedEvent.of(field_updated("f", 1, state_id="mine"))
    theirs = QueuedEvent.of(field_updated("f", 2, state_id="theirs"))
    other_topic = QueuedEvent.of(field_updated("g", 3, state_id="mine", seq=2))
    await loop_runtime.pipelines[("pubsub", "a")].submit(mine)
    await loop_runtime.pipelines[("pubsub", "a")].submit(theirs)
    await loop_runtime.pipelines[("pubsub", "b")].submit(other_topic)
    with pytest.raises(PublishError) as info:
        await loop_runtime.flush(lambda q: q.event.state_id == "mine")
    assert sorted(e.seq for e in info.value.events) == [1, 2]  # both topics, only "mine"
    with pytest.raises(PublishError) as info:
        await loop_runtime.flush()
    assert info.value.events == [theirs.event]  # kept for whoever flushes next
    loop_runtime.pipelines = {}
