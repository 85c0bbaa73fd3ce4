"""A thin async adapter over one Dapr sidecar's gRPC API.

The only module that speaks to Dapr for publishing and reading state. It uses the
generated stubs from the Dapr SDK (through statestore.core.dapr_sdk, which evens out
the SDK releases) over ``grpc.aio`` directly: no health wait at
construction (the SDK's DaprClient blocks up to 60 s), a deadline on every call, and
gRPC failures turned into statestore errors that say what to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc

from statestore.core.dapr_sdk import binding_pb2, bulk_publish, common_pb2, dapr_pb2_grpc, pubsub_pb2
from statestore.core.dapr_sdk import metadata_pb2, secret_pb2, state_pb2
from statestore.core.envelope import CONTENT_TYPE
from statestore.core.errors import SidecarUnavailableError
from statestore.core.settings import SidecarSettings, get_sidecar_settings

__all__ = [
    "SidecarClient",
    "StoredItem",
    "Upsert",
    "Delete",
    "EtagMismatchError",
    "MessageTooLargeError",
    "SidecarTimeoutError",
    "JSON_METADATA",
    "MAX_KEYS_PER_READ",
]

JSON_METADATA = {"contentType": "application/json"}


# sqlite binds at most 32,766 parameters; other stores are slower with huge key lists.
MAX_KEYS_PER_READ = 1000


class EtagMismatchError(Exception):
    """A state write lost a race: the key changed (or appeared) since it was read."""


class SidecarTimeoutError(SidecarUnavailableError):
    """A call's deadline passed before the sidecar answered: it may or may not have done
    what was asked (a write may have landed, a message may have been published)."""


class MessageTooLargeError(SidecarUnavailableError):
    """A request or its answer is larger than the sidecar's message limit (daprd
    ``--max-body-size``); retrying it unchanged fails the same way."""


@dataclass(frozen=True)
class StoredItem:
    """A state-store value with its ETag."""

    value: bytes
    etag: str


@dataclass(frozen=True)
class Upsert:
    """One write of a transaction. ``etag=None`` creates the key, failing if it exists;
    with ``overwrite`` as well it writes whatever is there (last-write), which is only
    safe for a key no other writer can know yet (a new credential's guid)."""

    key: str
    value: bytes
    etag: str | None
    ttl_s: int | None = None  # the store's own expiry (Dapr ``ttlInSeconds``); None: none
    overwrite: bool = False

    def request_bytes(self) -> int:
        """About what it adds to a transaction request (for statestore.core.cutting)."""
        return len(self.value) + len(self.key) + 64


@dataclass(frozen=True)
class Delete:
    """One delete of a transaction; with an ETag, only if the key is unchanged."""

    key: str
    etag: str | None = None
# How stores report a write that lost to another writer: an ETag mismatch, or, from
# state.postgresql v2, a first-write insert that found the key ("no item was updated").
_CONFLICT_MARKERS = ("etag", "no item was updated")


def is_write_conflict(details: str) -> bool:
    """True when a store's error text says the write lost to another writer."""
    return any(marker in details.lower() for marker in _CONFLICT_MARKERS)


# A restarted sidecar is reached within about a second: gRPC's default reconnect backoff
# grows to two minutes. (Not grpc.min_reconnect_backoff_ms: gRPC also uses it as the
# connect timeout, and 100 ms fails connections to a busy sidecar.)
MAX_RECONNECT_BACKOFF_S = 1.0
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", int(MAX_RECONNECT_BACKOFF_S * 1000)),
]
# How long a channel may take to reach a sidecar that is back: gRPC adds up to 20% jitter
# to the longest backoff, and the connect itself takes time on a busy machine.
RECONNECT_WITHIN_S = MAX_RECONNECT_BACKOFF_S * 1.2 + 1.0


class SidecarClient:
    """Calls to one Dapr sidecar. Create inside a running event loop; ``close()`` when done.

    ``blocking=True`` uses gRPC's synchronous channel from worker threads instead of
    ``grpc.aio``: grpc.aio cannot be used again in a process forked while the parent had
    a grpc.aio channel open (it hangs), the synchronous stack can.
    """

    def __init__(self, settings: SidecarSettings | None = None, blocking: bool = False) -> None:
        self._settings = settings or get_sidecar_settings()
        self._blocking = blocking
        make_channel = grpc.insecure_channel if blocking else grpc.aio.insecure_channel
        self._channel = make_channel(self._settings.grpc_target, options=CHANNEL_OPTIONS)
        self._stub = dapr_pb2_grpc.DaprStub(self._channel)
        token = self._settings.dapr_api_token
        self._metadata = (("dapr-api-token", token),) if token else None

    @property
    def target(self) -> str:
        return self._settings.grpc_target

    async def close(self) -> None:
        if self._blocking:
            self._channel.close()
        else:
            await self._channel.close()

    async def _call(self, method, request, what: str, timeout: float | None = None):
        # `is None`, not `or`: a deadline already at 0 (a write window just closed) must
        # stay 0, not become the default 10 s.
        options = {"timeout": self._settings.call_timeout_s if timeout is None else timeout, "metadata": self._metadata}
        try:
            if self._blocking:
                return await asyncio.to_thread(method, request, **options)
            return await method(request, **options)
        except grpc.RpcError as exc:
            raise self._error(exc, what) from None

    async def component_type(self, name: str) -> str | None:
        """The type of the sidecar's component ``name`` (``pubsub.redis``, ``pubsub.kafka``, ...),
        from its metadata; None when it has no component of that name."""
        response = await self._call(self._stub.GetMetadata, metadata_pb2.GetMetadataRequest(), "metadata")
        return next((component.type for component in response.registered_components if component.name == name), None)

    async def is_ready(self, timeout: float) -> bool:
        """True once the sidecar's gRPC port accepts connections, False after ``timeout`` s."""
        try:
            if self._blocking:
                ready = grpc.channel_ready_future(self._channel)
                try:
                    await asyncio.to_thread(ready.result, timeout)
                finally:
                    ready.cancel()
            else:
                await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except (asyncio.TimeoutError, grpc.FutureTimeoutError):
            return False
        return True

    def _error(self, exc: grpc.RpcError, what: str) -> Exception:
        code = exc.code()
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return MessageTooLargeError(
                f"{what}: larger than the Dapr sidecar's message limit ({exc.details()}); cut the request,"
                " or raise daprd --max-body-size and STATESTORE_SIDECAR_MAX_BODY_BYTES together"
            )
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            error = SidecarTimeoutError if code == grpc.StatusCode.DEADLINE_EXCEEDED else SidecarUnavailableError
            return error(
                f"{what}: the Dapr sidecar at {self.target} did not answer ({code.name}). "
                "Start it (`make up`), or point DAPR_GRPC_PORT at the sidecar's gRPC port."
            )
        if code == grpc.StatusCode.ABORTED or is_write_conflict(exc.details() or ""):
            return EtagMismatchError(exc.details())
        return SidecarUnavailableError(f"{what}: the Dapr sidecar at {self.target} answered {code.name}: {exc.details()}")

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the sidecar's gRPC port accepts calls, or raise SidecarUnavailableError."""
        if not await self.is_ready(timeout):
            raise SidecarUnavailableError(
                f"the Dapr sidecar at {self.target} was not reachable within {timeout:g} s. "
                "Start it (`make up`), or point DAPR_GRPC_PORT at the sidecar's gRPC port."
            ) from None

    async def bulk_publish(
        self,
        pubsub: str,
        topic: str,
        cloudevents: Sequence[tuple[str, bytes] | tuple[str, bytes, str]],
        timeout: float | None = None,
    ) -> dict[str, str]:
        """Publish structured CloudEvents ``(entry_id, body[, partition_key])``; returns failed ids -> error.

        A partition key (Kafka: the record key, so the partition) travels as the entry's
        ``partitionKey`` metadata; brokers without partitions ignore it. ``timeout``: the
        call's deadline (default the sidecar call timeout).
        """
        request = pubsub_pb2.BulkPublishRequest(
            pubsub_name=pubsub,
            topic=topic,
            entries=[
                pubsub_pb2.BulkPublishRequestEntry(
                    entry_id=entry[0],
                    event=entry[1],
                    content_type=CONTENT_TYPE,
                    metadata={"partitionKey": entry[2]} if len(entry) > 2 else None,
                )
                for entry in cloudevents
            ],
        )
        response = await self._call(bulk_publish(self._stub), request, "bulk publish", timeout)
        return {entry.entry_id: entry.error for entry in response.failedEntries}

    async def publish(self, pubsub: str, topic: str, data: bytes, content_type: str) -> None:
        """Publish one message as is (used for raw and dead-letter tooling)."""
        request = pubsub_pb2.PublishEventRequest(
            pubsub_name=pubsub, topic=topic, data=data, data_content_type=content_type
        )
        await self._call(self._stub.PublishEvent, request, "publish")

    async def get_state(self, store: str, key: str) -> StoredItem | None:
        """The value and ETag stored under ``key``, or None."""
        request = state_pb2.GetStateRequest(store_name=store, key=key)
        response = await self._call(self._stub.GetState, request, f"read state {key!r}")
        if not response.etag and not response.data:
            return None
        return StoredItem(response.data, response.etag)

    async def get_bulk_state(self, store: str, keys: Iterable[str]) -> dict[str, StoredItem]:
        """Values and ETags of the keys that exist.

        Reads at most MAX_KEYS_PER_READ keys per call; an answer larger than the sidecar's
        message limit is read again in halves (the size of an answer is known only once
        it is read), so any number of keys of any size up to the limit each is read.
        """
        keys = list(dict.fromkeys(keys))
        found: dict[str, StoredItem] = {}
        for start in range(0, len(keys), MAX_KEYS_PER_READ):
            await self._read_split(store, keys[start : start + MAX_KEYS_PER_READ], found)
        return found

    async def _read_split(self, store: str, keys: list[str], found: dict[str, StoredItem]) -> None:
        try:
            found.update(await self._read(store, keys))
        except MessageTooLargeError:
            if len(keys) == 1:
                raise
            half = len(keys) // 2
            await self._read_split(store, keys[:half], found)
            await self._read_split(store, keys[half:], found)

    async def _read(self, store: str, keys: list[str]) -> dict[str, StoredItem]:
        request = state_pb2.GetBulkStateRequest(store_name=store, keys=keys, parallelism=1)
        response = await self._call(self._stub.GetBulkState, request, "read states")
        found: dict[str, StoredItem] = {}
        for item in response.items:
            if item.error:
                raise SidecarUnavailableError(f"reading state {item.key!r} failed: {item.error}")
            if item.etag or item.data:
                found[item.key] = StoredItem(item.data, item.etag)
        return found

    async def transact(self, store: str, operations: Sequence[Upsert | Delete], timeout: float | None = None) -> None:
        """Write all ``operations`` atomically; EtagMismatchError if any key moved on.

        The caller cuts transactions by bytes (statestore.core.cutting); one larger than the
        sidecar's limit raises MessageTooLargeError before anything is sent. ``timeout``:
        the call's deadline (default the sidecar call timeout).
        """
        request = state_pb2.ExecuteStateTransactionRequest(
            storeName=store, operations=[_operation(op) for op in operations]
        )
        size = request.ByteSize()
        if size > self._settings.max_body_bytes:
            raise MessageTooLargeError(
                f"state transaction of {len(operations)} operations is {size} bytes, over the sidecar's"
                f" limit of {self._settings.max_body_bytes}: cut it (statestore.core.cutting)"
            )
        await self._call(self._stub.ExecuteStateTransaction, request, "state transaction", timeout)

    async def save_state(self, store: str, upsert: Upsert, timeout: float | None = None) -> None:
        """Write one key (SaveState: cheaper than a one-operation transaction); with its ETag,
        first-write when it has none (EtagMismatchError if the key moved on or appeared)."""
        request = state_pb2.SaveStateRequest(store_name=store, states=[_state_item(upsert)])
        await self._call(self._stub.SaveState, request, f"save state {upsert.key!r}", timeout)

    async def invoke_binding(
        self,
        name: str,
        operation: str,
        data: bytes = b"",
        metadata: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Invoke an output binding; returns the binding's response data (statestore uses
        none: the benchmarks' reference design does). ``timeout``: the call's gRPC deadline."""
        request = binding_pb2.InvokeBindingRequest(
            name=name, operation=operation, data=data, metadata=metadata or {}
        )
        response = await self._call(self._stub.InvokeBinding, request, f"binding {name}.{operation}", timeout)
        return response.data

    async def get_secret(self, store: str, name: str) -> dict[str, str]:
        """A secret (all its values) from a Dapr secret store."""
        request = secret_pb2.GetSecretRequest(store_name=store, key=name)
        response = await self._call(self._stub.GetSecret, request, f"secret {store}/{name}")
        return dict(response.data)


def _operation(op: Upsert | Delete) -> state_pb2.TransactionalStateOperation:
    if isinstance(op, Delete):
        item = common_pb2.StateItem(key=op.key)
        if op.etag is not None:
            item.etag.value = op.etag
        return state_pb2.TransactionalStateOperation(operationType="delete", request=item)
    return state_pb2.TransactionalStateOperation(operationType="upsert", request=_state_item(op))


def _state_item(op: Upsert) -> common_pb2.StateItem:
    metadata = JSON_METADATA if op.ttl_s is None else {**JSON_METADATA, "ttlInSeconds": str(op.ttl_s)}
    item = common_pb2.StateItem(key=op.key, value=op.value, metadata=metadata)
    if op.etag is None and not op.overwrite:
        item.options.concurrency = common_pb2.StateOptions.CONCURRENCY_FIRST_WRITE
    elif op.etag is not None:
        item.etag.value = op.etag
    return item
