"""Credential saves (issue 17): time until `save_secrets` returns, and so until readable.

statestore's `save_secrets` of 1 to 1,000 credentials, on an idle stack and with a
backlog of 100,000 progress updates queued ahead in the same process, beside the
reference's synchronous way: one read-modify-write per credential through a plain Dapr
client (bench.peers.PlainDaprPeer), under the same backlog. After each statestore save,
every guid is read back once (bulk) to count any that is not readable.
"""

from __future__ import annotations

import time
import uuid

__all__ = ["COUNTS", "BACKLOG", "measure", "report_section"]

COUNTS = [1, 100, 200, 1000]
BACKLOG = 100_000
BACKLOG_IDS = 1000


def _configs(n: int) -> list[dict]:
    return [{"host": f"db{k}.internal", "username": f"svc-{k}", "password": uuid.uuid4().hex} for k in range(n)]


async def _queue_backlog(size: int) -> list[str]:
    """Queue ``size`` progress updates (fire-and-forget) on BACKLOG_IDS workflows."""
    from publisher import StateStore, StateType

    ids = [f"cred-backlog-{uuid.uuid4().hex[:6]}-{n}" for n in range(BACKLOG_IDS)]
    for k in range(size):
        await StateStore.save_state("progress", k, ids[k % BACKLOG_IDS], StateType.WORKFLOWS)
    return ids


async def _drain(ids: list[str]) -> None:
    from publisher import StateStore, StateType

    if ids:
        await StateStore.sync_many(ids, StateType.WORKFLOWS, timeout=600)


async def _statestore_row(n: int, backlog: int) -> dict:
    from publisher import SecretStore, StateStore, StateType

    ids = await _queue_backlog(backlog)
    queued = StateStore._runtime().pipeline.pending
    start = time.perf_counter()
    guids = await SecretStore.save_secrets(_configs(n), timeout=120)
    took = time.perf_counter() - start
    found = await StateStore._runtime().query.get_documents(guids, StateType.CREDENTIALS)
    still_queued = StateStore._runtime().pipeline.pending
    await _drain(ids)
    return {"peer": "statestore", "credentials": n, "backlog": backlog, "seconds": round(took, 4),
            "unreadable": n - len(found), "backlog_queued_at_start": queued,
            "backlog_queued_at_return": still_queued}  # fmt: skip


async def _reference_row(peer, n: int, backlog: int) -> dict:
    from publisher.crypto import seal

    from publisher import SecretStore

    keyring = await SecretStore.keyring()
    ids = await _queue_backlog(backlog)
    start = time.perf_counter()
    for config in _configs(n):  # the reference: seal, then one synchronous RMW per credential
        guid = str(uuid.uuid4())
        await peer.save_field(f"cred-{guid}", "credential", seal(keyring, guid, config))
    took = time.perf_counter() - start
    await _drain(ids)
    return {"peer": "reference (plain RMW)", "credentials": n, "backlog": backlog, "seconds": round(took, 4), "unreadable": 0}


async def measure(stack, say=print) -> list[dict]:
    """Every row: statestore and the reference, each count, idle and with the backlog."""
    from bench.peers import PlainDaprPeer

    peer = PlainDaprPeer(stack.ports.caller.http_port, stack.ports.caller.grpc_port, stack.tokens.get("DAPR_API_TOKEN"))
    rows = []
    try:
        await _statestore_row(1, 0)  # warm up: keyring, channels
        for backlog in (0, BACKLOG):
            for n in COUNTS:
                say(f"credentials: save of {n} with {backlog} progress updates queued ahead")
                rows.append(await _statestore_row(n, backlog))
                rows.append(await _reference_row(peer, n, backlog))
    finally:
        await peer.close()
    return rows


def report_section(rows: list[dict] | None) -> list[str]:
    """The docs/benchmarks.md section (markdown lines); none when not measured."""
    if not rows:
        return []
    ours = {(r["credentials"], r["backlog"]): r for r in rows if r["peer"] == "statestore"}
    lines = [
        "## Credential saves: time until stored and readable",
        "",
        "`SecretStore.save_secrets` returns once every credential of the call is applied and",
        "readable from any process; the reference's way is one synchronous read-modify-write per",
        "credential through a plain Dapr client. The backlog is progress updates queued in the same",
        "process just before the save (fire-and-forget), then drained before the next row.",
        "",
        "| credentials | backlog ahead | statestore s | unreadable after return | plain RMW s | vs plain RMW | backlog still queued in the caller at return |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["peer"] == "statestore":
            continue
        o = ours[(r["credentials"], r["backlog"])]
        ratio = f"{r['seconds'] / o['seconds']:.1f}x" if o["seconds"] else "n/a"
        lines.append(f"| {r['credentials']} | {r['backlog']} | {o['seconds']} | {o['unreadable']} | {r['seconds']} "
                     f"| {ratio} | {o.get('backlog_queued_at_return', '')} |")  # fmt: skip
    return lines + [""]
