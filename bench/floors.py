"""What Dapr, the servers and the snapshot writes cost per operation on this machine: the
floor under every statestore figure.

    python -m bench.floors                  # local profile: section "floors" of docs/benchmarks.md
    python -m bench.floors --profile scale  # Kafka, PostgreSQL, S3: section "floors" of docs/scaling.md

Raw calls, with none of statestore's logic: the state-store operations go through the
subscriber's sidecar (the one that does this work in the pipeline), the publish and a new
credential's direct write through the caller's. For each operation: the CPU per item of
the writing side (that sidecar; for a snapshot also the process that sends it) and of the
servers of the profile (Redis; or Kafka, PostgreSQL and S3Proxy), from /proc, and the wall
time per item (a serial loop, or 16 writes in flight for snapshots, as the flusher keeps them).

Snapshots are measured both ways: through the object-store binding (the old path, the one
the reference design uses) and written directly by this process with the subscriber's own
adapter (statestore.subscriber.objectstore, a conditional put), beside the other clients
considered for it (obstore into a local folder, blocking and async; obstore's blocking
S3 put). This process stands in for the subscriber: its CPU (all its threads) is what the
subscriber would spend.

From these follows the floor under a fleet update (100,000 ids x 2, ``bench/measures.py:
fleet``): at least half a state's creation (first-write insert) and half an ETag update,
one bulk-read row to merge, one published event, and half a snapshot write. Everything
statestore adds (the apps, the delivery from the broker, the caller's reads) comes on top.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.measures import ProcessMeter
from bench.cleanup import stop

ROWS = 5000  # items per operation
PER_CALL = 250  # rows per transaction / bulk read: the subscriber's max_states_per_commit
EVENTS_PER_MESSAGE = 100  # the publisher's pack_events
IN_FLIGHT = 16  # snapshot writes at once (the flusher keeps up to 32)
DOCUMENT = json.dumps({"fields": {"status": {"v": "RUNNING", "t": [1, 0, "p"]}}, "pad": "x" * 300}).encode()
SNAPSHOT = json.dumps({"status": "RUNNING", "progress": "x" * 300}, indent=2).encode()
TOPIC = "statestore-bench-floor"  # nobody subscribes: only the publish is measured
FLEET_IDS = 100_000  # issue 9's fleet: 100,000 ids x 2 updates
# Issue 29: every process together at most 330 µs of CPU per fleet update.
CPU_BUDGET_US = 330
SNAPSHOT_DEPTH = "bench-floor/apps/floor/workflows"  # the reference path's depth, outside its tree


@dataclass
class _Meter:
    """CPU seconds of several processes together (a sidecar and the servers behind it)."""

    meters: list[ProcessMeter]

    def cpu_s(self) -> float:
        return sum(meter.cpu_s() for meter in self.meters)


async def _timed(writer: _Meter, servers: _Meter, items: int, run: Awaitable[None]) -> dict:
    cpu0, server0, start = writer.cpu_s(), servers.cpu_s(), time.perf_counter()
    await run
    wall = time.perf_counter() - start
    cpu, server = writer.cpu_s() - cpu0, servers.cpu_s() - server0
    return {"items": items, "cpu_us": round(1e6 * (cpu + server) / items, 1), "writer_cpu_us": round(1e6 * cpu / items, 1),
            "server_cpu_us": round(1e6 * server / items, 1), "wall_us": round(1e6 * wall / items, 1)}  # fmt: skip


async def _in_flight(keys: list[str], write: Callable[[str], Awaitable[object]]) -> None:
    """``write`` every key, IN_FLIGHT at a time."""
    queue = iter(keys)

    async def lane() -> None:
        for key in queue:
            await write(key)

    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))


def _snapshot_key(key: str, writer: str = "binding") -> str:
    return f"{SNAPSHOT_DEPTH}/{writer}/{key}/config.json"  # each writer its own objects


def snapshot_candidates(stack) -> dict[str, Callable[[str], Awaitable[object]]]:
    """The clients considered for the subscriber's snapshot writes, each a write of one
    object (this process does the work): the adapter the subscriber uses, and the others."""
    import obstore

    from statestore.core.settings import Settings
    from statestore.subscriber.objectstore import open_object_store

    saved = dict(os.environ)
    os.environ.update(stack.objectstore_env())
    try:
        adapter = open_object_store(Settings())
        store = adapter.store if stack.profile.name == "scale" else obstore.store.LocalStore(str(stack.object_root), mkdir=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)

    async def ours(key: str) -> None:
        await adapter.put(_snapshot_key(key, "direct"), SNAPSHOT, timeout=5.0, conditional=True)

    async def blocking(key: str) -> None:
        obstore.put(store, _snapshot_key(key, "blocking"), SNAPSHOT)

    async def in_async(key: str) -> None:
        await obstore.put_async(store, _snapshot_key(key, "async"), SNAPSHOT)

    if stack.profile.name == "scale":
        return {"snapshot_direct": ours, "snapshot_obstore_blocking": blocking}
    return {"snapshot_direct": ours, "snapshot_obstore_blocking": blocking, "snapshot_obstore_async": in_async}


async def measure(stack, say=print, rows: int = ROWS) -> dict:
    """Per-item cost of each raw operation, and the fleet floor they imply."""
    from bench.peers import ReferencePeer
    from statestore.core.settings import SidecarSettings, get_settings
    from statestore.core.sidecar import SidecarClient, Upsert

    settings = get_settings()
    store = settings.statestore_name
    worker = SidecarClient(SidecarSettings(dapr_grpc_port=stack.ports.subscriber.grpc_port))
    caller = SidecarClient(SidecarSettings(dapr_grpc_port=stack.ports.caller.grpc_port))
    servers = _Meter([ProcessMeter(proc.pid) for server in stack.servers.values() for proc in server.processes()])
    worker_cpu = _Meter([ProcessMeter(stack.subscriber_sidecar.pid)])
    caller_cpu = _Meter([ProcessMeter(stack.caller_sidecar.pid)])
    # The snapshot writers: this process (the subscriber's part), and its sidecar for the binding.
    binding_cpu = _Meter([ProcessMeter(os.getpid()), ProcessMeter(stack.subscriber_sidecar.pid)])
    direct_cpu = _Meter([ProcessMeter(os.getpid())])
    etags: dict[str, str] = {}

    def calls(keys: list[str]) -> list[list[str]]:
        return [keys[i : i + PER_CALL] for i in range(0, len(keys), PER_CALL)]

    async def insert(keys: list[str]) -> None:
        for call in calls(keys):
            await worker.transact(store, [Upsert(key, DOCUMENT, None) for key in call])

    async def insert_overwrite(keys: list[str]) -> None:  # a new credential's direct write (caller's sidecar)
        for call in calls(keys):
            await caller.transact(store, [Upsert(f"{key}-ahead", DOCUMENT, None, overwrite=True) for key in call])

    async def read(keys: list[str]) -> None:
        for call in calls(keys):
            etags.update({key: item.etag for key, item in (await worker.get_bulk_state(store, call)).items()})

    async def update(keys: list[str]) -> None:
        for call in calls(keys):
            await worker.transact(store, [Upsert(key, DOCUMENT, etags[key]) for key in call])

    async def snapshot_binding(keys: list[str]) -> None:
        async def one(key: str) -> None:
            name = _snapshot_key(key)
            await worker.invoke_binding(ReferencePeer.BINDING, "create", SNAPSHOT, {"fileName": name, "key": name})

        await _in_flight(keys, one)

    def snapshots(write: Callable[[str], Awaitable[object]]) -> Callable[[list[str]], Awaitable[None]]:
        async def run(keys: list[str]) -> None:
            await _in_flight(keys, write)

        return run

    event = {"key": "workflows/x", "kind": "field", "field": "status", "value": "RUNNING", "pad": "x" * 200}
    body = json.dumps({"specversion": "1.0", "id": "m", "source": "bench", "type": "io.statestore.event_batch.v1",
                       "datacontenttype": "application/json", "data": [event] * EVENTS_PER_MESSAGE}).encode()  # fmt: skip

    async def publish(keys: list[str]) -> None:  # one event a key
        messages = len(keys) // EVENTS_PER_MESSAGE
        for start in range(0, messages, 10):  # the pipeline's bulk publish: several packed messages a call
            await caller.bulk_publish(settings.pubsub_name, TOPIC, [(str(n), body) for n in range(start, start + 10)])

    ops = {  # name: (operation, the writing side, items)
        "state_insert_first_write": (insert, worker_cpu, rows),
        "state_insert_overwrite": (insert_overwrite, caller_cpu, rows),
        "state_bulk_read": (read, worker_cpu, rows),
        "state_update_etag": (update, worker_cpu, rows),
        "snapshot_binding": (snapshot_binding, binding_cpu, rows // 5),
        **{name: (snapshots(write), direct_cpu, rows // 5) for name, write in snapshot_candidates(stack).items()},
        "publish_event": (publish, caller_cpu, rows),
    }
    result: dict = {}
    try:
        await worker.wait_ready(30)
        await caller.wait_ready(30)
        # A round first: connections, the broker's topic, a JVM's JIT are not the per-item cost.
        warm = [f"bench-floor-warm-{n}" for n in range(PER_CALL * 4)]
        for run, _, _ in ops.values():
            await run(warm)
        say(f"floors: raw operations, {rows} items each ({rows // 5} snapshots)")
        keys = [f"bench-floor-{uuid.uuid4().hex}" for _ in range(rows)]
        for name, (run, meter, items) in ops.items():
            result[name] = await _timed(meter, servers, items, run(keys[:items]))
    finally:
        await worker.close()
        await caller.close()
    cpu = {name: row["cpu_us"] for name, row in result.items()}
    # Before an update is visible: half a create and half an update (two updates a state),
    # one read row (the subscriber's merge), one published event. Then one snapshot a state.
    visible = (cpu["state_insert_first_write"] + cpu["state_update_etag"]) / 2 + cpu["state_bulk_read"] + cpu["publish_event"]
    return {**result, "visible_cpu_us": round(visible, 1),
            "update_old_cpu_us": round(visible + cpu["snapshot_binding"] / 2, 1),
            "update_new_cpu_us": round(visible + cpu["snapshot_direct"] / 2, 1),
            "cores": os.cpu_count() or 1, "profile": stack.profile.name}  # fmt: skip


LABELS = {
    "state_insert_first_write": "state: create (first-write insert, 250 a transaction)",
    "state_insert_overwrite": "state: create without the first-write check (250 a transaction; a new credential's direct write)",
    "state_update_etag": "state: update with ETag (250 a transaction)",
    "state_bulk_read": "state: bulk read (250 keys a call)",
    "publish_event": f"pub/sub: publish one event ({EVENTS_PER_MESSAGE} a packed message, 10 messages a call)",
    "snapshot_binding": f"snapshot: one config.json through the object-store binding, {IN_FLIGHT} in flight (the old path)",
    "snapshot_direct": f"snapshot: one config.json by statestore.subscriber.objectstore, conditional, {IN_FLIGHT} in flight (the new path)",
    "snapshot_obstore_blocking": "snapshot: obstore's blocking put, serial (a candidate)",
    "snapshot_obstore_async": f"snapshot: obstore's put_async, {IN_FLIGHT} in flight (a candidate)",
}


def section(record: dict) -> str:
    """The markdown section: the table, the floor under a fleet update and what it leaves."""
    f = record["results"]
    servers = {"local": "Redis", "scale": "Kafka, PostgreSQL and S3Proxy"}.get(f["profile"], "the servers")
    writer = "the sidecar" if f["profile"] == "local" else "the sidecar; for snapshots also this process"
    rows = [(label, f[key]) for key, label in LABELS.items() if key in f]
    lines = [
        "## The floor: what Dapr, the servers and a snapshot cost per operation",
        "",
        f"`python -m bench.floors --profile {f['profile']}` (part of `make bench`), {record['time']}:",
        f"raw calls with none of statestore's logic. Writing side: {writer} (for snapshots",
        f"also this process, which stands in for the subscriber); servers: {servers}. Wall is per item",
        f"of a serial loop ({IN_FLIGHT} in flight for snapshots); CPU is the figure to trust on a shared machine.",
        "",
        "| operation | CPU µs per item, all | writing side | servers | wall µs per item |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {label} | {r['cpu_us']} | {r['writer_cpu_us']} | {r['server_cpu_us']} | {r['wall_us']} |" for label, r in rows),
        "",
        "Before one fleet update is visible the sidecars and servers spend at least half a",
        "create, half an ETag update (two updates a state), one read row and one published",
        f"event: {f['visible_cpu_us']} µs, so at most **{f['cores'] * 1e6 / f['visible_cpu_us']:,.0f} updates/s on"
        f" {f['cores']} cores** if nothing else ran and no snapshot were written. With half a snapshot",
        f"(each state's snapshot written once for its two updates) a fleet update costs at least",
        f"**{f['update_new_cpu_us']} µs** written directly, against {f['update_old_cpu_us']} µs through the binding:",
        f"{FLEET_IDS:,} x 2 needs at least {2 * FLEET_IDS * f['update_new_cpu_us'] / 1e6:.0f} CPU-s"
        f" (was {2 * FLEET_IDS * f['update_old_cpu_us'] / 1e6:.0f}). A flusher that keeps up writes a snapshot"
        f" after each of the two updates (they are {FLEET_IDS:,} updates apart): then"
        f" {f['visible_cpu_us'] + f['snapshot_direct']['cpu_us']:.1f} µs (was"
        f" {f['visible_cpu_us'] + f['snapshot_binding']['cpu_us']:.1f}).",
    ]
    if f["profile"] == "local":  # issue 29's CPU budget is for this profile
        left = CPU_BUDGET_US - f["update_new_cpu_us"]
        lines.append(
            f"Of issue 29's budget of {CPU_BUDGET_US} µs per fleet update for every process together, the floor"
            f" leaves **{left:.0f} µs** for statestore's own work: the caller's `save_state` and packing, the"
            " broker's delivery, decoding, merging and encoding in the subscriber, and the caller's reads."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.report import replace_section
    from statestore.devstack import Ports, Stack
    from statestore.devstack.stack import PROJECT_ROOT

    parser = argparse.ArgumentParser(prog="python -m bench.floors", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--profile", choices=["local", "scale"], default=os.environ.get("PROFILE") or "local")
    parser.add_argument("--rows", type=int, default=ROWS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the stack is stopped
    from bench.peers import with_reference_binding

    stack = Stack(Path(tempfile.mkdtemp(prefix="statestore-bench-floors-")), Ports.free(),
                  profile=with_reference_binding(args.profile))  # fmt: skip
    stack.up()
    os.environ.update(stack.caller_env())
    try:
        results = asyncio.run(measure(stack, rows=args.rows))
    finally:
        stop(stack)
    record = {"time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": results}
    out_dir = PROJECT_ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-floors-{args.profile}.json").write_text(json.dumps(record, indent=2))
    doc = PROJECT_ROOT / "docs" / ("scaling.md" if args.profile == "scale" else "benchmarks.md")
    doc.write_text(replace_section(doc.read_text(), "floors", section(record)))
    print(section(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
