"""Temporal breakdown of device time: idle / compute / non-compute (HTA's definition).

Per device, over its *span* (first GPU-op start to last GPU-op end, kernels, memcpys and
memsets alike, as HTA's ``kernel_time``):

* ``busy``  = length of the union of all GPU-op intervals;
* ``idle``  = span - busy;
* ``compute`` = length of the union of compute kernels (every kernel that is not
  communication; memcpy/memset are never compute);
* ``non_compute`` = busy - compute: communication and memory ops not hidden under compute
  (HTA: "time spent by communication/memory kernels [concurrent with computation] is accounted
  for under compute time").

All sums are integer ns; the three percentages add up to 100 (up to rounding). Several devices
(or files) aggregate by summing ns, i.e. a time-weighted mean. Interval unions are
O(n log n) (one sort, one running maximum).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .events import KIND_KERNEL, DeviceInfo, TraceEvents
from .kernels import T_COMM

__all__ = ["TemporalBreakdown", "merge_intervals", "temporal_by_device", "union_ns"]


def merge_intervals(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of half-open intervals ``[start, end)`` as sorted, disjoint (starts, ends).

    Touching intervals (one ends where the next starts) merge: there is no idle gap between
    them.
    """
    if start.size == 0:
        return start.astype(np.int64), end.astype(np.int64)
    order = np.argsort(start, kind="stable")
    s = start[order]
    e = np.maximum.accumulate(end[order])
    new_group = np.ones(s.size, dtype=bool)
    new_group[1:] = s[1:] > e[:-1]
    first = np.nonzero(new_group)[0]
    last = np.append(first[1:] - 1, s.size - 1)
    return s[first], e[last]


def union_ns(start: np.ndarray, end: np.ndarray) -> int:
    """Total length (ns) of the union of intervals."""
    ms, me = merge_intervals(start, end)
    return int((me - ms).sum())


@dataclass(frozen=True)
class TemporalBreakdown:
    """Idle / compute / non-compute ns over a device span (or a sum over devices)."""

    span_ns: int
    busy_ns: int
    compute_ns: int
    devices: int = 1

    @property
    def idle_ns(self) -> int:
        return self.span_ns - self.busy_ns

    @property
    def non_compute_ns(self) -> int:
        return self.busy_ns - self.compute_ns

    def _pct(self, ns: int) -> float:
        return round(100.0 * ns / self.span_ns, 3) if self.span_ns else 0.0

    @property
    def idle_pct(self) -> float:
        return self._pct(self.idle_ns)

    @property
    def busy_ratio(self) -> float:
        return self.busy_ns / self.span_ns if self.span_ns else 0.0

    def __add__(self, other: TemporalBreakdown) -> TemporalBreakdown:
        return TemporalBreakdown(
            self.span_ns + other.span_ns,
            self.busy_ns + other.busy_ns,
            self.compute_ns + other.compute_ns,
            self.devices + other.devices,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "span_ns": self.span_ns,
            "busy_ns": self.busy_ns,
            "idle_ns": self.idle_ns,
            "compute_ns": self.compute_ns,
            "non_compute_ns": self.non_compute_ns,
            "idle_pct": self.idle_pct,
            "compute_pct": self._pct(self.compute_ns),
            "non_compute_pct": self._pct(self.non_compute_ns),
            "busy_pct": self._pct(self.busy_ns),
            "devices": self.devices,
        }


def temporal_by_device(
    ev: TraceEvents, types: np.ndarray
) -> list[tuple[DeviceInfo, TemporalBreakdown]]:
    """One breakdown per device that ran at least one GPU op."""
    out: list[tuple[DeviceInfo, TemporalBreakdown]] = []
    for dev in ev.devices:
        m = ev.gpu_device == dev.key
        if not m.any():
            continue
        s, e = ev.gpu_start_ns[m], ev.gpu_end_ns[m]
        span = int(e.max() - s.min())
        busy = union_ns(s, e)
        cm = (ev.gpu_kind[m] == KIND_KERNEL) & (types[m] != T_COMM)
        compute = union_ns(s[cm], e[cm])
        out.append((dev, TemporalBreakdown(span, busy, compute)))
    return out
