"""The confirmed replace of ``save_state_object``: the object is stored when the call returns.

1. The replace is an ``object_replaced`` event stamped by the process's confirmed-write
   producer id (``Runtime.stamp(confirmed=True)``), so a replace that fails leaves no gap
   in a sequence ``sync`` waits on.
2. The event is published at once, alone, on the confirmed lane (the credentials topic
   and pub/sub component: never behind the process's progress queue, nor behind the
   progress backlog in the broker and the subscriber), while the state's document is read
   through the caller's own sidecar. The call waits for the publish: from then on the
   event is in the broker and the subscriber applies it (writes the snapshot, indexes the
   id) whatever happens to this process. If the publish fails, nothing was written: the
   stored state is unchanged. (It does not go through the publish pipeline: a replace
   given up at its timeout must not stay queued and be applied later.)
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
from statestore.core.errors import SidecarUnavailableError, StateDecodeError, StateNotStoredError
from statestore.core.events import ObjectReplaced, cloudevent_id, encode_cloudevent, encode_event
from statestore.core.sidecar import EtagMismatchError, SidecarClient, SidecarTimeoutError, StoredItem, Upsert

__all__ = ["ConfirmedLane", "replace_confirmed"]

MAX_CONFLICTS = 20
# Retries while the sidecar or the broker refuses: the first delay (doubling, with jitter) and its cap.
BACKOFF_S = (0.1, 1.0)


class ConfirmedLane:
    """Where confirmed replaces go: the caller's sidecar, its state store and the confirmed topic."""

    def __init__(self, sidecar: SidecarClient, store: str, pubsub: str, topic: str, max_document_bytes: int) -> None:
        self.sidecar = sidecar
        self.store = store
        self.pubsub = pubsub
        self.topic = topic
        self.max_document_bytes = max_document_bytes


async def replace_confirmed(event: ObjectReplaced, lane: ConfirmedLane, timeout: float) -> None:
    """Publish ``event`` and store its effect (module docstring); StateNotStoredError if it
    cannot be confirmed within ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    read = asyncio.ensure_future(lane.sidecar.get_state(lane.store, event.key))
    try:
        await _publish(event, lane, deadline)
    except BaseException as exc:
        _abandon(read)
        if isinstance(exc, SidecarTimeoutError):  # the last try was cut off: it may have gone out
            raise StateNotStoredError(
                f"state {event.state_id!r}: the replace was not confirmed within {timeout:g} s ({exc}): its"
                " event may have been published (the request was cut off), and then the subscriber applies it.",
                event.state_id, published=None,
            ) from None
        if isinstance(exc, SidecarUnavailableError):
            raise StateNotStoredError(
                f"state {event.state_id!r} was not replaced: its event could not be published within"
                f" {timeout:g} s ({exc}). Nothing was written: the stored state is unchanged. Is the caller's"
                " Dapr sidecar running, and its broker (`make up`)? Then call save_state_object again.",
                event.state_id, published=False,
            ) from None
        raise
    try:
        await _store(event, read, lane, deadline)
    except (SidecarUnavailableError, StateDecodeError, EtagMismatchError) as exc:
        raise StateNotStoredError(
            f"state {event.state_id!r}: the replace was not confirmed stored within {timeout:g} s: writing it"
            f" through the caller's sidecar failed ({exc}). Its event is published: the subscriber applies it"
            " once the state store takes writes again.",
            event.state_id, published=True,
        ) from None


async def _publish(event: ObjectReplaced, lane: ConfirmedLane, deadline: float) -> None:
    """Publish ``event`` alone, retrying until ``deadline``; SidecarUnavailableError (or
    SidecarTimeoutError when the last try was cut off) if it never went out."""
    loop = asyncio.get_running_loop()
    entry = (cloudevent_id(event), encode_cloudevent(event, encode_event(event)), event.key)
    delay = BACKOFF_S[0]
    while True:
        try:
            failed = await lane.sidecar.bulk_publish(lane.pubsub, lane.topic, [entry], max(deadline - loop.time(), 0.001))
            if not failed:
                return
            why: SidecarUnavailableError = SidecarUnavailableError(f"the broker refused it: {next(iter(failed.values()))}")
        except SidecarTimeoutError:
            raise
        except SidecarUnavailableError as exc:
            why = exc
        wait = min(delay, deadline - loop.time()) * random.uniform(0.5, 1.0)
        if wait <= 0:
            raise why
        pause = loop.time()
        # A sidecar that is back ends the wait early; one that answers but whose broker
        # refused waits the full delay.
        if await lane.sidecar.is_ready(wait) and loop.time() - pause < 0.005:
            await asyncio.sleep(wait)
        delay = min(delay * 2, BACKOFF_S[1])


def _abandon(read: asyncio.Future) -> None:
    """Drop the read of a replace that will not be written (and its error, if it failed)."""
    if read.done():
        if not read.cancelled():
            read.exception()
    else:
        read.cancel()


async def _store(event: ObjectReplaced, read: asyncio.Future[StoredItem | None], lane: ConfirmedLane, deadline: float) -> None:
    """Merge ``event`` into the stored document and write it with its ETag, until it sticks."""
    loop = asyncio.get_running_loop()
    delay, conflicts = BACKOFF_S[0], 0
    while True:
        try:
            item = await read
            current = decode_document(event.key, item.value) if item else None
            document = written_ahead(current, event)
            if document is current:
                return  # the subscriber applied it first
            encoded = encode_document(document)
            if len(encoded) > lane.max_document_bytes:
                raise StateNotStoredError(
                    f"state {event.state_id!r} was not replaced: its document would be {len(encoded)} bytes, over"
                    f" STATESTORE_MAX_DOCUMENT_BYTES ({lane.max_document_bytes}); the subscriber refuses its event"
                    " too (dead-letter topic). Store fewer or smaller fields in one state.",
                    event.state_id, published=True,
                )
            upsert = Upsert(event.key, encoded, item.etag if item else None, document.ttl_s)
            await lane.sidecar.transact(lane.store, [upsert], max(deadline - loop.time(), 0.001))
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
            delay = min(delay * 2, BACKOFF_S[1])
        read = asyncio.ensure_future(lane.sidecar.get_state(lane.store, event.key))
