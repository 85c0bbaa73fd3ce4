"""The three ways to keep workflow state that the benchmark compares, on one stack.

- ``statestore``: this project (events, subscriber, direct reads).
- ``plain-dapr``: what a user writes instead: each field update is a synchronous
  read-modify-write of the JSON object through the Dapr SDK's DaprClient against the
  sqlite store, with ETag retry so it loses nothing.
- ``reference``: the reference system's algorithm, re-implemented from its description:
  read the whole JSON object from the object-store binding, change it, write a local
  file, upload it. No ETag, no lock.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any, Protocol

from statestore.core.sidecar import is_write_conflict
from statestore.devstack.servers import Profile, get_profile

__all__ = ["Peer", "StateStorePeer", "PlainDaprPeer", "ReferencePeer", "with_reference_binding"]

BENCH_COMPONENTS = Path(__file__).resolve().parent / "components"


def with_reference_binding(profile: str) -> Profile:
    """``profile`` with the object-store binding the reference design uses (bench/components):
    statestore writes its snapshots without one."""
    base = get_profile(profile)
    extra = (BENCH_COMPONENTS,) if base.name == "local" else (BENCH_COMPONENTS, BENCH_COMPONENTS / "scale")
    return dataclasses.replace(base, component_folders=(*base.component_folders, *extra))


class Peer(Protocol):
    name: str
    synchronous: bool  # a write is visible when the call returns

    async def save_field(self, state_id: str, key: str, value: Any) -> None: ...
    async def get(self, state_id: str) -> dict | None: ...
    async def settle(self, state_ids: list[str]) -> None: ...
    async def close(self) -> None: ...


class StateStorePeer:
    name = "statestore"
    synchronous = False

    def __init__(self) -> None:
        from statestore import StateStore, StateType

        self._store, self._type = StateStore, StateType.WORKFLOWS

    async def save_field(self, state_id, key, value):
        await self._store.save_state(key, value, state_id, self._type)

    async def get(self, state_id):
        return await self._store.get_state(state_id, self._type)

    async def settle(self, state_ids):
        for i in range(0, len(state_ids), 2000):
            await self._store.sync_many(state_ids[i : i + 2000], self._type, timeout=600)

    async def close(self):
        await self._store.flush()


class PlainDaprPeer:
    name = "plain-dapr"
    synchronous = True
    STORE = "statestore"

    def __init__(self, http_port: int, grpc_port: int, token: str | None) -> None:
        from dapr.conf import settings

        settings.DAPR_HTTP_PORT, settings.DAPR_API_TOKEN = http_port, token
        from dapr.aio.clients import DaprClient
        from dapr.clients.grpc._state import Concurrency, StateOptions

        self._client = DaprClient(address=f"127.0.0.1:{grpc_port}")
        self._first_write = StateOptions(concurrency=Concurrency.first_write)
        self.conflicts = 0

    @staticmethod
    def key(state_id: str) -> str:
        return f"plain/{state_id}"

    async def save_field(self, state_id, key, value):
        await self.update(state_id, {key: value})

    async def update(self, state_id: str, fields: dict[str, Any]) -> None:
        """Read the object, set ``fields``, write it back if nobody wrote in between."""
        while True:
            current = await self._client.get_state(self.STORE, self.key(state_id))
            state = json.loads(current.data) if current.data else {}
            state.update(fields)
            try:
                await self._client.save_state(
                    self.STORE, self.key(state_id), json.dumps(state), etag=current.etag or None,
                    options=self._first_write, state_metadata={"contentType": "application/json"},
                )  # fmt: skip
                return
            except Exception as exc:  # ETag mismatch: someone wrote in between; read again
                if not is_write_conflict(str(exc)) and "aborted" not in str(exc).lower():
                    raise
                self.conflicts += 1

    async def get(self, state_id):
        current = await self._client.get_state(self.STORE, self.key(state_id))
        return json.loads(current.data) if current.data else None

    async def settle(self, state_ids):
        pass

    async def close(self):
        await self._client.close()


class ReferencePeer:
    """Read the object, change it in memory, write a local file, upload it; no ETag.
    Through the binding ``with_reference_binding`` adds to the stack."""

    name = "reference"
    synchronous = True
    BINDING = "objectstore"

    def __init__(self, sidecar) -> None:
        self._sidecar = sidecar  # a sidecar that may use the object-store binding
        self._tmp = Path(tempfile.mkdtemp(prefix="reference-peer-"))
        self.torn_reads = 0  # concurrent uploads interleaved: the file is not JSON

    @staticmethod
    def key(state_id: str) -> str:
        return f"persistent-artifacts/apps/bench-reference/workflows/{state_id}/config.json"

    async def _read(self, state_id):
        try:
            raw = await self._sidecar.invoke_binding(self.BINDING, "get", b"", {"fileName": self.key(state_id)})
        except Exception:
            return {}  # as the reference does: a failed read is "no state"
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            self.torn_reads += 1
            return {}  # the next save then overwrites whatever was there

    async def save_field(self, state_id, key, value):
        state = await self._read(state_id)
        state[key] = value
        local = self._tmp / f"{state_id}.json"
        local.write_text(json.dumps(state))
        await self._sidecar.invoke_binding(self.BINDING, "create", local.read_bytes(), {"fileName": self.key(state_id)})

    async def get(self, state_id):
        return await self._read(state_id) or None

    async def settle(self, state_ids):
        pass

    async def close(self):
        pass
