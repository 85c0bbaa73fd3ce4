"""The confirmed replace of ``save_state_object``: the object is stored when the call returns.

1. The replace is an ``object_replaced`` event stamped by the process's confirmed-write
   producer id (``Runtime.stamp(confirmed=True)``), so a replace that fails leaves no gap
   in a sequence ``sync`` waits on.
2. The event is published on the confirmed lane (the credentials topic's pipeline: never
   behind the process's progress backlog) while the state's document is read through the
   caller's own sidecar. The call waits for the publish: from then on the event is in the
   broker and the subscriber applies it (writes the snapshot, indexes the id) whatever
   happens to this process. If the publish fails, nothing was written: the stored state
   is unchanged.
3. The event is merged into the document read, with the subscriber's own merge
   (statestore.core.document.written_ahead), and the result is written with the document's
   ETag (first-write when there was none), marked provisional. A conflict (the subscriber
   or another writer wrote in between) reads and merges again; a read that finds the event
   applied already (the subscriber was first) writes nothing.

So the stored state is what applying every event in stamp order gives, as for any other
write: a replace never overwrites a field written after it, nor loses one written before
it to a race. A sidecar or broker outage is ridden out for the call's timeout (default
STATESTORE_OUTAGE_BUDGET_S), then StateNotStoredError says what became of the replace.
"""

from __future__ import annotations

import asyncio
import random

from statestore.core.document import decode_document, encode_document, written_ahead
from statestore.core.errors import PublishError, SidecarUnavailableError, StateDecodeError, StateNotStoredError
from statestore.core.events import ObjectReplaced
from statestore.core.sidecar import EtagMismatchError, SidecarClient, StoredItem, Upsert
from statestore.publisher.pipeline import PublishPipeline, QueuedEvent

__all__ = ["replace_confirmed"]

MAX_CONFLICTS = 20
_BACKOFF_S = (0.1, 1.0)  # first retry delay (doubling) and its cap, while the store refuses writes


async def replace_confirmed(
    event: ObjectReplaced,
    pipeline: PublishPipeline,
    sidecar: SidecarClient,
    store: str,
    timeout: float,
    max_document_bytes: int,
) -> None:
    """Publish ``event`` and store its effect (module docstring); StateNotStoredError if it
    cannot be confirmed within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    read = asyncio.ensure_future(sidecar.get_state(store, event.key))
    try:
        await pipeline.publish(QueuedEvent.of(event), timeout)
    except BaseException as exc:
        _abandon(read)
        if isinstance(exc, PublishError):
            raise StateNotStoredError(
                f"state {event.state_id!r} was not replaced: its event was not published ({exc}). Nothing was"
                " written: the stored state is unchanged. Is the caller's Dapr sidecar running, and its broker"
                " (`make up`)? Then call save_state_object again.",
                event.state_id, published=False,
            ) from None
        if isinstance(exc, asyncio.TimeoutError):
            raise StateNotStoredError(
                f"state {event.state_id!r}: the replace was not confirmed within {timeout:g} s: its event was"
                " being sent when the time ran out, so it may still be published, and then applied.",
                event.state_id, published=None,
            ) from None
        raise
    try:
        await _store(event, read, sidecar, store, deadline, max_document_bytes)
    except (SidecarUnavailableError, StateDecodeError, EtagMismatchError) as exc:
        raise StateNotStoredError(
            f"state {event.state_id!r}: the replace was not confirmed stored within {timeout:g} s: writing it"
            f" through the caller's sidecar failed ({exc}). Its event is published: the subscriber applies it"
            " once the state store takes writes again.",
            event.state_id, published=True,
        ) from None


def _abandon(read: asyncio.Future) -> None:
    """Drop the read of a replace that will not be written (and its error, if it failed)."""
    if read.done():
        if not read.cancelled():
            read.exception()
    else:
        read.cancel()


async def _store(
    event: ObjectReplaced,
    read: asyncio.Future[StoredItem | None],
    sidecar: SidecarClient,
    store: str,
    deadline: float,
    max_document_bytes: int,
) -> None:
    """Merge ``event`` into the stored document and write it with its ETag, until it sticks."""
    loop = asyncio.get_running_loop()
    delay, conflicts = _BACKOFF_S[0], 0
    while True:
        try:
            item = await read
            current = decode_document(event.key, item.value) if item else None
            document = written_ahead(current, event)
            if document is current:
                return  # the subscriber applied it first
            encoded = encode_document(document)
            if len(encoded) > max_document_bytes:
                raise SidecarUnavailableError(
                    f"the state's document would be {len(encoded)} bytes, over STATESTORE_MAX_DOCUMENT_BYTES"
                    f" ({max_document_bytes}); the subscriber refuses it too (dead letter)"
                )
            upsert = Upsert(event.key, encoded, item.etag if item else None, document.ttl_s)
            await sidecar.transact(store, [upsert], max(deadline - loop.time(), 0.001))
            return
        except EtagMismatchError:
            conflicts += 1  # another writer was first: merge again over what it wrote
            if conflicts > MAX_CONFLICTS or loop.time() >= deadline:
                raise
            await asyncio.sleep(random.uniform(0, 0.002 * conflicts))
        except SidecarUnavailableError:
            if loop.time() + delay >= deadline:
                raise
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _BACKOFF_S[1])
        read = asyncio.ensure_future(sidecar.get_state(store, event.key))
