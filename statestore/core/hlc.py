"""A hybrid logical clock: wall-clock milliseconds plus a counter that never goes back."""

from __future__ import annotations

import threading
import time
from typing import Callable

__all__ = ["HybridClock", "HlcTime"]

HlcTime = tuple[int, int]
"""(wall_ms, logical): ordered as a tuple."""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridClock:
    """Issues strictly increasing (wall_ms, logical) timestamps.

    ``observe`` folds in a timestamp seen elsewhere (for example in a state read back),
    so a write made after reading another producer's write is stamped later than it,
    even when this host's clock is behind.
    """

    def __init__(self, wall_ms: Callable[[], int] = _wall_ms) -> None:
        self._wall_ms = wall_ms
        self._last: HlcTime = (0, 0)
        self._lock = threading.Lock()

    def now(self) -> HlcTime:
        """A new timestamp, greater than every one issued or observed before."""
        with self._lock:
            wall = self._wall_ms()
            last_wall, last_logical = self._last
            self._last = (wall, 0) if wall > last_wall else (last_wall, last_logical + 1)
            return self._last

    @property
    def last(self) -> HlcTime:
        """The latest time issued or observed (read without the lock: safe after fork)."""
        return self._last

    def observe(self, seen: HlcTime) -> None:
        """Make every later ``now()`` greater than ``seen``."""
        with self._lock:
            if tuple(seen) > self._last:
                self._last = (int(seen[0]), int(seen[1]))
