"""The confirmed replace of ``save_state_object``: the object is stored when the call returns.

1. The replace is an ``object_replaced`` event (a confirmed delete, of the successor's
   interface: ``state_deleted``) stamped by the process's confirmed-write producer id
   (``Runtime.stamp(confirmed=True)``): a write that fails leaves no gap in a sequence
   ``sync`` waits on (that id is retired instead).
2. **Written ahead of the subscriber**, through the caller's own sidecar: the state's
   document is read, the event merged into it with the subscriber's own merge
   (statestore.core.document.written_ahead), and the result written with the document's
   ETag, marked provisional. A conflict (the subscriber or another writer wrote in between)
   reads and merges again; a read that finds the event applied already writes nothing.
   When the document read holds a stamp at or after the event's (a writer whose clock is
   ahead, or one this process's clock has not seen yet), the event is stamped again after
   it (``restamp``): a replace supersedes everything stored when it is written, as a
   caller who replaces a state expects, instead of losing to a stamp from "the future". A
   state this process has not written or read before is first tried as new: one
   first-write insert, no read (a workflow's arguments, saved under a new id); if it
   exists after all, the insert fails and the read-merge-write follows.
3. **Then queued for the subscriber**, on the credentials pipeline (``hand_over``): the
   event is published within STATESTORE_HANDOVER_WINDOW_MS, with the other replaces of that
   window (one publish and one subscriber write per burst), never behind the process's progress queue
   nor the progress backlog in the broker, and the subscriber's apply of it writes the
   snapshot and indexes the id. The call does not wait for it.

So the stored state is what applying every event in stamp order gives, as for any other
write: a replace never overwrites a field written after it, nor loses one written before
it to a race. A write that fails publishes nothing: the stored state is unchanged.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from statestore.core.document import StateDocument, decode_document, encode_document, is_applied, written_ahead
from statestore.core.errors import InvalidValueError, SidecarUnavailableError, StateDecodeError, StateNotStoredError
from statestore.core.events import AnyEvent
from statestore.core.sidecar import EtagMismatchError, SidecarClient, SidecarTimeoutError, StoredItem, Upsert

__all__ = ["ConfirmedLane", "write_confirmed"]

MAX_CONFLICTS = 20
# Retries while the sidecar or its state store refuses: the first delay (doubling, with jitter) and its cap.
BACKOFF_S = (0.1, 1.0)


class ConfirmedLane:
    """Where a confirmed replace goes: the caller's sidecar and state store, and what queues
    its event once it is stored."""

    def __init__(
        self,
        sidecar: SidecarClient,
        store: str,
        max_document_bytes: int,
        hand_over: Callable[[AnyEvent], Awaitable[None]],
        restamp: Callable[[AnyEvent, tuple[int, int]], AnyEvent],
    ) -> None:
        self.sidecar = sidecar
        self.store = store
        self.max_document_bytes = max_document_bytes
        self.hand_over = hand_over
        self.restamp = restamp  # the event stamped again after a time read from the store


async def write_confirmed(event: AnyEvent, lane: ConfirmedLane, timeout: float, known: bool) -> StateDocument | None:
    """Store ``event``'s effect, then queue the event (module docstring); StateNotStoredError
    if it cannot be stored within ``timeout`` seconds. ``known``: this process wrote the
    state before (so it is read first, not tried as new). Returns the document read before
    the write (None when there was none, or none was read)."""
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        before, event = await _store(event, lane, deadline, known)
    except SidecarTimeoutError as exc:  # the last try was cut off: it may have landed
        raise StateNotStoredError(
            f"state {event.state_id!r}: the replace was not confirmed within {timeout:g} s ({exc}); the sidecar"
            " did not answer its last write in time, which may still have landed. Read the state to see.",
            event.state_id, stored=None,
        ) from None
    except (SidecarUnavailableError, StateDecodeError, InvalidValueError, EtagMismatchError) as exc:
        raise StateNotStoredError(
            f"state {event.state_id!r} was not replaced within {timeout:g} s: writing it through the caller's"
            f" sidecar failed ({exc}). The stored state is unchanged. Is the caller's Dapr sidecar running, and"
            " its state store (`make up`)? Then call save_state_object again.",
            event.state_id, stored=False,
        ) from None
    await lane.hand_over(event)
    return before


async def _store(
    event: AnyEvent, lane: ConfirmedLane, deadline: float, known: bool
) -> tuple[StateDocument | None, AnyEvent]:
    """Merge ``event`` into the stored document and write it with its ETag, until it sticks;
    the document it was merged into, and the event as written (stamped again, perhaps)."""
    loop = asyncio.get_running_loop()
    delay, conflicts = BACKOFF_S[0], 0
    item: StoredItem | None = None
    read = known
    while True:
        try:
            if read:
                item = await lane.sidecar.get_state(lane.store, event.key)
            current = decode_document(event.key, item.value) if item else None
            latest = current.latest_stamp() if current else None
            if latest is not None and (latest[0], latest[1]) >= tuple(event.hlc) and not is_applied(current, event):
                event = lane.restamp(event, (latest[0], latest[1]))
            document = written_ahead(current, event)
            if document is current:
                return current, event  # the subscriber applied it first
            await lane.sidecar.save_state(lane.store, _upsert(event, document, item, lane), max(deadline - loop.time(), 0.001))
            return current, event
        except EtagMismatchError:
            conflicts += 1  # another writer was first (or the state was not new): merge over what is stored
            if conflicts > MAX_CONFLICTS or loop.time() >= deadline:
                raise
            if read:
                await asyncio.sleep(random.uniform(0, 0.002 * conflicts))
        except SidecarTimeoutError:
            raise
        except SidecarUnavailableError:
            left = deadline - loop.time()
            if left <= 0:
                raise
            await asyncio.sleep(min(delay * random.uniform(0.5, 1.0), left))
            delay = min(delay * 2, BACKOFF_S[1])
        read = True


def _upsert(event: AnyEvent, document: StateDocument, stored: StoredItem | None, lane: ConfirmedLane) -> Upsert:
    """The write of ``document``: with the ETag of what was read, first-write when nothing was."""
    encoded = encode_document(document)
    if len(encoded) > lane.max_document_bytes:
        raise InvalidValueError(
            f"its document would be {len(encoded)} bytes, over STATESTORE_MAX_DOCUMENT_BYTES"
            f" ({lane.max_document_bytes}): store fewer or smaller fields in one state"
        )
    return Upsert(event.key, encoded, stored.etag if stored else None, document.ttl_s)
