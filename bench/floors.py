"""What Dapr and the servers cost per operation on this machine: the floor under every statestore figure.

    python -m bench.floors                  # local profile: section "floors" of docs/benchmarks.md
    python -m bench.floors --profile scale  # Kafka, PostgreSQL, S3: section "floors" of docs/scaling.md

Raw calls, with none of statestore's logic: the state-store operations and the
snapshot write go through the subscriber's sidecar (the one that does this work in
the pipeline), the publish and a new credential's direct write through the caller's. For each operation: the CPU per item
of that sidecar and of every server of the profile (Redis; or Kafka, PostgreSQL and
S3Proxy), from /proc, and the wall time per item of a serial loop (the sqlite store
has one writer, so its writes are serial in the pipeline too).

From these follows the highest fleet rate any design on these components could reach
on this machine: one fleet update (100,000 ids x 2, ``bench/measures.py: fleet``) costs
at least half a state's creation (first-write insert) and half an ETag update, one
bulk-read row to merge, half a snapshot write and one published event, and the machine
has ``os.cpu_count()`` cores for all of it. Everything statestore adds (the apps, the
delivery from the broker, the caller's reads) comes on top.
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
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

from bench.measures import ProcessMeter

ROWS = 5000  # items per operation
PER_CALL = 250  # rows per transaction / bulk read: the subscriber's max_states_per_commit
EVENTS_PER_MESSAGE = 100  # the publisher's pack_events
DOCUMENT = json.dumps({"fields": {"status": {"v": "RUNNING", "t": [1, 0, "p"]}}, "pad": "x" * 300}).encode()
TOPIC = "statestore-bench-floor"  # nobody subscribes: only the publish is measured
# Issue 9's fleet: 100,000 ids x 2 updates at 12,000 updates/s, every snapshot within 30 s after.
FLEET_IDS, TARGET_PER_S, SNAPSHOTS_WITHIN_S = 100_000, 12_000, 30
SNAPSHOT_DEPTH = "bench-floor/apps/floor/workflows"  # the reference path's depth, outside its tree


@dataclass
class _Meter:
    """CPU seconds of several processes together (a sidecar and the servers behind it)."""

    meters: list[ProcessMeter]

    def cpu_s(self) -> float:
        return sum(meter.cpu_s() for meter in self.meters)


async def _timed(meter: _Meter, items: int, run: Awaitable[None]) -> dict:
    cpu0, start = meter.cpu_s(), time.perf_counter()
    await run
    wall, cpu = time.perf_counter() - start, meter.cpu_s() - cpu0
    return {"items": items, "cpu_us": round(1e6 * cpu / items, 1), "wall_us": round(1e6 * wall / items, 1)}


async def measure(stack, say=print, rows: int = ROWS) -> dict:
    """Per-item cost of each raw operation, and the fleet ceiling they imply."""
    from statestore.core.settings import SidecarSettings, get_settings
    from statestore.core.sidecar import SidecarClient, Upsert

    settings = get_settings()
    store, binding = settings.statestore_name, settings.objectstore_name
    worker = SidecarClient(SidecarSettings(dapr_grpc_port=stack.ports.subscriber.grpc_port))
    caller = SidecarClient(SidecarSettings(dapr_grpc_port=stack.ports.caller.grpc_port))
    servers = [ProcessMeter(proc.pid) for server in stack.servers.values() for proc in server.processes()]
    worker_cpu = _Meter([ProcessMeter(stack.subscriber_sidecar.pid), *servers])
    caller_cpu = _Meter([ProcessMeter(stack.caller_sidecar.pid), *servers])
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

    async def snapshot(keys: list[str]) -> None:
        for key in keys:
            name = f"{SNAPSHOT_DEPTH}/{key}/config.json"
            await worker.invoke_binding(binding, "create", DOCUMENT, {"fileName": name, "key": name})

    event = {"key": "workflows/x", "kind": "field", "field": "status", "value": "RUNNING", "pad": "x" * 200}
    body = json.dumps({"specversion": "1.0", "id": "m", "source": "bench", "type": "io.statestore.event_batch.v1",
                       "datacontenttype": "application/json", "data": [event] * EVENTS_PER_MESSAGE}).encode()  # fmt: skip

    async def publish(keys: list[str]) -> None:  # one event a key
        messages = len(keys) // EVENTS_PER_MESSAGE
        for start in range(0, messages, 10):  # the pipeline's bulk publish: several packed messages a call
            await caller.bulk_publish(settings.pubsub_name, TOPIC, [(str(n), body) for n in range(start, start + 10)])

    ops = {  # name: (operation, the process that does the work, items)
        "state_insert_first_write": (insert, worker_cpu, rows),
        "state_insert_overwrite": (insert_overwrite, caller_cpu, rows),
        "state_bulk_read": (read, worker_cpu, rows),
        "state_update_etag": (update, worker_cpu, rows),
        "snapshot_create": (snapshot, worker_cpu, rows // 5),
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
        say(f"floors: raw Dapr operations, {rows} items each")
        keys = [f"bench-floor-{uuid.uuid4().hex}" for _ in range(rows)]
        for name, (run, meter, items) in ops.items():
            result[name] = await _timed(meter, items, run(keys[:items]))
    finally:
        await worker.close()
        await caller.close()
    cpu = {name: row["cpu_us"] for name, row in result.items()}
    # Before an update is visible: half a create and half an update (two updates a state),
    # one read row (the subscriber's merge), one published event. Then one snapshot a state.
    visible = (cpu["state_insert_first_write"] + cpu["state_update_etag"]) / 2 + cpu["state_bulk_read"] + cpu["publish_event"]
    fleet_cpu_s = FLEET_IDS * (2 * visible + cpu["snapshot_create"]) / 1e6
    return {**result, "visible_cpu_us": round(visible, 1), "fleet_cpu_s": round(fleet_cpu_s, 1),
            "cores": os.cpu_count() or 1, "profile": stack.profile.name}  # fmt: skip


LABELS = {
    "state_insert_first_write": "state: create (first-write insert, 250 a transaction)",
    "state_insert_overwrite": "state: create without the first-write check (250 a transaction; a new credential's direct write)",
    "state_update_etag": "state: update with ETag (250 a transaction)",
    "state_bulk_read": "state: bulk read (250 keys a call)",
    "snapshot_create": "object store: create one config.json",
    "publish_event": f"pub/sub: publish one event ({EVENTS_PER_MESSAGE} a packed message, 10 messages a call)",
}


def section(record: dict) -> str:
    """The markdown section: the table and what it leaves for statestore's own work."""
    f = record["results"]
    servers = {"local": "Redis", "scale": "Kafka, PostgreSQL and S3Proxy"}.get(f["profile"], "the servers")
    lines = [
        "## The floor: what Dapr and the servers cost per operation",
        "",
        f"`python -m bench.floors --profile {f['profile']}` (part of `make bench`), {record['time']}:",
        "raw calls through the sidecars with none of statestore's logic. CPU is the sidecar's",
        f"plus {servers}'s, per item; wall is per item of a serial loop.",
        "",
        "| operation | CPU µs per item | wall µs per item |",
        "| --- | --- | --- |",
        *(f"| {label} | {f[key]['cpu_us']} | {f[key]['wall_us']} |" for key, label in LABELS.items() if key in f),
        "",
        "Before one fleet update is visible the sidecars and servers spend at least half a",
        "create, half an ETag update (two updates a state), one read row and one published",
        f"event: {f['visible_cpu_us']} µs, so at most **{f['cores'] * 1e6 / f['visible_cpu_us']:,.0f} updates/s on"
        f" {f['cores']} cores** if nothing else ran and no snapshot were written. Each state's",
        f"snapshot adds {f['snapshot_create']['cpu_us']} µs: fleet {FLEET_IDS:,} x 2 with every snapshot needs at least"
        f" {f['fleet_cpu_s']} CPU-s of them.",
    ]
    if f["profile"] == "local":  # issue 9's targets are for this profile
        updates = 2 * FLEET_IDS
        wall_s = updates / TARGET_PER_S + SNAPSHOTS_WITHIN_S
        left_us = (f["cores"] * wall_s - f["fleet_cpu_s"]) * 1e6 / updates
        lines.append(
            f"At {TARGET_PER_S:,} updates/s that fleet would last {updates / TARGET_PER_S:.1f} s; with"
            f" {SNAPSHOTS_WITHIN_S} s more for the last snapshots, {f['cores']} cores give {f['cores'] * wall_s:.0f}"
            f" CPU-s, which leaves **{left_us:.0f} µs per update** for everything else: the caller's"
            " `save_state`, packing, the broker's delivery to the subscriber, decoding, merging,"
            " encoding and the caller's reads."
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
    stack = Stack(Path(tempfile.mkdtemp(prefix="statestore-bench-floors-")), Ports.free(), profile=args.profile)
    stack.up()
    os.environ.update(stack.caller_env())
    try:
        results = asyncio.run(measure(stack, rows=args.rows))
    finally:
        stack.down()
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
