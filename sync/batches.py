"""Splitting long lists for queries with a bounded size (SQL ``IN``, QuickBooks' id queries)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunks(values: Sequence[T], size: int) -> Iterator[list[T]]:
    """``values`` in consecutive lists of at most ``size``."""
    for i in range(0, len(values), size):
        yield list(values[i:i + size])
