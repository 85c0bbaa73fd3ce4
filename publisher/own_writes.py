"""This process's writes that a read may not find stored yet: read-your-writes for get_state.

Every event a process queues (``save_state``, ``delete_field``, ``delete_state``, a
fire-and-forget ``save_state_object``) is kept here until a read of its state shows it
applied. ``get_state`` merges what is kept over the stored document with the subscriber's
own merge (statestore.core.document.apply_events), so a process reads its own writes at
once, whatever the pipeline, the broker and the subscriber still hold.

Bounded: per state only what can still change a read is kept, the newest own event of
each field and the newest own replace or state delete (an older own event of the same
field, or any own event below the newest own replace, cannot change what the merge
returns). An event still in this process's publish queue is always kept: the queue
holds it anyway (STATESTORE_MAX_PENDING_EVENTS bounds it). Once published it is kept
until a read shows it applied, at most ``max_events`` published events in all; past
that the oldest published go, and their state is marked with the sequence numbers it
lost: a read of a marked state first waits until those are applied (they are in the
broker or the subscriber by then, never behind the caller's own queue), then reads.
Events are compared by their clock time (``hlc``): one process's clock never repeats
a time, so that orders its own events.

Thread-safe: any thread's loop may write or read.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from statestore.core.document import StateDocument, is_applied, seqs_applied
from statestore.core.events import AnyEvent, ObjectReplaced, StateDeleted

__all__ = ["OwnWrites", "DEFAULT_MAX_EVENTS"]

DEFAULT_MAX_EVENTS = 20_000
_WHOLE = ""  # the slot of replaces and state deletes (a field name is never empty)


def _slot(event: AnyEvent) -> str:
    return _WHOLE if isinstance(event, (ObjectReplaced, StateDeleted)) else event.field


class OwnWrites:
    """The process's queued and in-flight events, per state key (module docstring)."""

    def __init__(self, max_events: int = DEFAULT_MAX_EVENTS, retention_s: float = 3600.0) -> None:
        self.max_events = max_events
        # An event older than this is no longer proven applied by the document (its
        # producer's record may be gone): it is dropped rather than kept for ever.
        self._retention_ms = retention_s * 1000
        self._lock = threading.Lock()
        self._by_key: dict[str, dict[str, AnyEvent]] = {}  # key -> slot -> the newest own event
        self._size = 0  # events in _by_key
        # The kept events already published, oldest first: the ones the bound may drop.
        self._published: OrderedDict[tuple[str, str], None] = OrderedDict()
        # key -> producer id -> (highest seq dropped by the bound, when it stops mattering in ms)
        self._marked: dict[str, dict[str, tuple[int, float]]] = {}

    def __len__(self) -> int:
        return self._size

    def add(self, event: AnyEvent) -> None:
        """Keep ``event`` (just queued) until a read shows it applied."""
        key, slot = event.key, _slot(event)
        with self._lock:
            kept = self._by_key.setdefault(key, {})
            whole = kept.get(_WHOLE)
            if whole is not None and event.hlc <= whole.hlc:
                return  # below the newest own replace: it cannot change a read
            current = kept.get(slot)
            if current is not None and event.hlc <= current.hlc:
                return
            if slot == _WHOLE:  # it supersedes every kept event of the state stamped before it
                for name in [name for name, older in kept.items() if older.hlc < event.hlc]:
                    self._forget(key, name, kept)
            elif current is not None:
                self._forget(key, slot, kept)
            kept[slot] = event
            self._by_key[key] = kept  # again, when forgetting the superseded emptied it
            self._size += 1

    def published(self, events: list[AnyEvent]) -> None:
        """``events`` reached the broker: from now on the bound may drop them."""
        with self._lock:
            for event in events:
                key, slot = event.key, _slot(event)
                if self._by_key.get(key, {}).get(slot) is event:
                    self._published[(key, slot)] = None
            while len(self._published) > self.max_events:
                (key, slot), _ = self._published.popitem(last=False)
                kept = self._by_key[key]
                self._mark(kept[slot])
                self._forget(key, slot, kept)

    def pending(self, key: str) -> tuple[list[AnyEvent], dict[str, int]]:
        """The kept events of ``key``, and the sequence numbers (per producer id) the bound
        dropped that a read has not yet seen applied."""
        now_ms = time.time() * 1000
        with self._lock:
            events = list(self._by_key.get(key, {}).values())
            marks = self._marked.get(key)
            if not marks:
                return events, {}
            for producer in [p for p, (_, until) in marks.items() if now_ms > until]:
                del marks[producer]  # expired or past the records' retention: nothing to wait for
            if not marks:
                del self._marked[key]
            return events, {producer: seq for producer, (seq, _) in marks.items()}

    def settle(self, key: str, document: StateDocument | None, all_applied: bool = False) -> list[AnyEvent]:
        """Forget the events of ``key`` that ``document`` (just read) shows applied, and those
        too old to be proven applied; returns the rest. ``all_applied``: every event this
        process wrote to the state is applied (a sync saw it), so the marks go too."""
        now_ms = time.time() * 1000
        with self._lock:
            marks = self._marked.get(key)
            if marks is not None:
                for producer in [p for p, (seq, _) in marks.items() if all_applied or seqs_applied(document, p, seq)]:
                    del marks[producer]
                if not marks:
                    del self._marked[key]
            kept = self._by_key.get(key)
            if not kept:
                return []
            for slot, event in list(kept.items()):
                if is_applied(document, event) or self._expired(event, now_ms):
                    self._forget(key, slot, kept)
            return list(kept.values())

    def discard(self, events: list[AnyEvent]) -> None:
        """Forget ``events``: handed back by a PublishError, they will not be applied
        unless the caller republishes them (which keeps them again)."""
        with self._lock:
            for event in events:
                key, slot = event.key, _slot(event)
                kept = self._by_key.get(key)
                if kept is not None and kept.get(slot) is event:
                    self._forget(key, slot, kept)

    def _forget(self, key: str, slot: str, kept: dict[str, AnyEvent]) -> None:
        """Drop the kept event of ``slot`` (lock held)."""
        del kept[slot]
        self._size -= 1
        self._published.pop((key, slot), None)
        if not kept:
            del self._by_key[key]

    def _mark(self, event: AnyEvent) -> None:
        """The bound drops ``event``: a read of its state waits until it is applied (lock held)."""
        marks = self._marked.setdefault(event.key, {})
        seq, until = marks.get(event.producer, (0, 0.0))
        ttl = getattr(event, "ttl_seconds", None)
        lasts_ms = self._retention_ms if ttl is None else min(self._retention_ms, ttl * 1000)
        marks[event.producer] = (max(seq, event.seq), max(until, event.hlc[0] + lasts_ms))

    def _expired(self, event: AnyEvent, now_ms: float) -> bool:
        # A write with a TTL may be applied and gone (expired) by the time of the read; the
        # document then cannot show it, and keeping it would bring the state back.
        wall = event.hlc[0]
        ttl = getattr(event, "ttl_seconds", None)
        return now_ms - wall > self._retention_ms or (ttl is not None and now_ms - wall > ttl * 1000)

