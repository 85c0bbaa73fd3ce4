"""Cut a sequence of items into pieces bounded by count and by bytes. Pure: no I/O.

Every request the subscriber sends to its sidecar (bulk reads, transactions, outbox
entries) goes through here, so no request exceeds the sidecar's message limit by
construction. An item larger than ``max_bytes`` on its own travels alone: whether that
one fits is the caller's rule (the applier refuses documents above
``Settings.max_document_bytes`` before they reach a transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["cut"]

T = TypeVar("T")


def cut(items: Iterable[T], size: Callable[[T], int], max_bytes: int, max_count: int) -> Iterator[list[T]]:
    """Consecutive pieces of ``items``: at most ``max_count`` items and, unless one item
    alone is larger, at most ``max_bytes`` (the sum of ``size(item)``) each. Keeps order."""
    if max_count < 1 or max_bytes < 1:
        raise ValueError(f"max_count and max_bytes must be positive, got {max_count} and {max_bytes}")
    piece: list[T] = []
    piece_bytes = 0
    for item in items:
        item_bytes = size(item)
        if piece and (len(piece) >= max_count or piece_bytes + item_bytes > max_bytes):
            yield piece
            piece, piece_bytes = [], 0
        piece.append(item)
        piece_bytes += item_bytes
    if piece:
        yield piece
