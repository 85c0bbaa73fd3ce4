"""This process's writes that a read may not find stored yet: read-your-writes for get_state.

Every event a process queues (``save_state``, ``delete_field``, ``delete_state``, a
fire-and-forget ``save_state_object``) is kept here until a read of its state shows it
applied. ``get_state`` merges what is kept over the stored document with the subscriber's
own merge (statestore.core.document.apply_events), so a process reads its own writes at
once, whatever the pipeline, the broker and the subscriber still hold.

Bounded: per state only what can still change a read is kept, the newest own event of
each field and the newest own replace or state delete (an older own event of the same
field, or any own event below the newest own replace, cannot change what the merge
returns), and at most ``max_events`` in all. Past that the oldest go, and their state is
marked: a read of a marked state first waits until this process's events of it are
applied (``StateStore.sync``), then reads. Events are compared by their clock time
(``hlc``): one process's clock never repeats a time, so that orders its own events.

Thread-safe: any thread's loop may write or read.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from statestore.core.document import StateDocument, is_applied
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
        self._order: OrderedDict[tuple[str, str], None] = OrderedDict()  # (key, slot), oldest first
        self._marked: set[str] = set()  # keys that lost an event to the bound, not yet seen applied

    def __len__(self) -> int:
        return len(self._order)

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
                    del kept[name]
                    del self._order[(key, name)]
            kept[slot] = event
            self._order[(key, slot)] = None
            self._order.move_to_end((key, slot))
            while len(self._order) > self.max_events:
                (old_key, old_slot), _ = self._order.popitem(last=False)
                slots = self._by_key[old_key]
                del slots[old_slot]
                if not slots:
                    del self._by_key[old_key]
                self._marked.add(old_key)

    def pending(self, key: str) -> tuple[list[AnyEvent], bool]:
        """The kept events of ``key``, and whether the bound made it lose some."""
        with self._lock:
            return list(self._by_key.get(key, {}).values()), key in self._marked

    def settle(self, key: str, document: StateDocument | None, all_applied: bool = False) -> list[AnyEvent]:
        """Forget the events of ``key`` that ``document`` (just read) shows applied, and those
        too old to be proven applied; returns the rest. ``all_applied``: every event this
        process wrote to the state is applied (a sync saw it), so the mark goes too."""
        now_ms = time.time() * 1000
        with self._lock:
            if all_applied:
                self._marked.discard(key)
            kept = self._by_key.get(key)
            if not kept:
                return []
            for slot, event in list(kept.items()):
                if is_applied(document, event) or self._expired(event, now_ms):
                    del kept[slot]
                    del self._order[(key, slot)]
            if not kept:
                del self._by_key[key]
            return list(kept.values())

    def discard(self, events: list[AnyEvent]) -> None:
        """Forget ``events``: handed back by a PublishError, they will not be applied
        unless the caller republishes them (which keeps them again)."""
        with self._lock:
            for event in events:
                key, slot = event.key, _slot(event)
                kept = self._by_key.get(key)
                if kept is not None and kept.get(slot) is event:
                    del kept[slot]
                    del self._order[(key, slot)]
                    if not kept:
                        del self._by_key[key]

    def _expired(self, event: AnyEvent, now_ms: float) -> bool:
        # A write with a TTL may be applied and gone (expired) by the time of the read; the
        # document then cannot show it, and keeping it would bring the state back.
        wall = event.hlc[0]
        ttl = getattr(event, "ttl_seconds", None)
        return now_ms - wall > self._retention_ms or (ttl is not None and now_ms - wall > ttl * 1000)
