"""Union of time intervals: device busy time is the covered time, not the sum of durations.

Kernels on several streams, or events of overlapping calls, overlap; summing them would count
the same device time twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T", int, float)


def interval_union(intervals: Iterable[tuple[T, T]]) -> tuple[T, T, T] | None:
    """(covered length, first start, last end) of ``[start, end)`` intervals, or ``None`` if
    there are none; a reversed interval (end before start) is ignored."""
    covered = None
    first = end = None
    for lo, hi in sorted(intervals):
        if hi < lo:
            continue
        if end is None:
            first, end, covered = lo, hi, hi - lo
        elif lo > end:
            covered += hi - lo
            end = hi
        elif hi > end:
            covered += hi - end
            end = hi
    if covered is None:
        return None
    return covered, first, end
