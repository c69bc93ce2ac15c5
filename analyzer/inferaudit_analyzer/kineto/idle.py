"""Idle-time breakdown: host wait / kernel wait / other, per stream and per device.

HTA's rule (``BreakdownAnalysis._analyze_idle_time_for_stream``), applied to each idle gap
before a GPU op, the op being the one that ends the gap:

* **host wait**: the host call that launched the op *started* after the previous op ended:
  the device drained its queue and waited for the CPU;
* **kernel wait**: otherwise, if the gap is shorter than :data:`KERNEL_WAIT_THRESHOLD_NS`:
  the ordinary cost of starting back-to-back work;
* **other**: otherwise (cross-stream events, synchronisation, unknown).

Per stream, gaps are between consecutive ops on that stream (HTA's view; streams overlap, so
per-stream idle does not add up to device idle). Per device (our addition), gaps are the holes
in the union of all its ops, so the three categories add up exactly to the temporal
breakdown's ``idle_ns``.

Graph replays: ops of one graph share the graph-launch call, which started before every op in
it, so a gap inside a replay is never host wait; it is kernel wait or other, and is also
reported as ``in_graph_ns``. No gap is invented where a graph replay ran (a replay's kernels
are ordinary GPU ops here); graph launches whose kernels the trace lacks are flagged by
:mod:`.launches`, not hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from .events import LAUNCH_GRAPH, TraceEvents, take

__all__ = ["KERNEL_WAIT_THRESHOLD_NS", "LONG_HOST_WAIT_NS", "IdleBreakdown", "idle_breakdown"]

# HTA's ``consecutive_kernel_delay`` default is 30, documented as "nanoseconds", but HTA's
# trace frame holds ts/dur in integer microseconds, so the threshold it applies is 30 us.
# We keep the value HTA actually applies, in ns. (docs/kineto-analysis.md, "Deliberate
# differences".)
KERNEL_WAIT_THRESHOLD_NS = 30_000
# A host-wait gap this long is the host doing other work (data loading, Python, a sync), not
# the cost of a launch: HTA's launch-delay outlier cutoff (launch_delay_cutoff=100 us).
LONG_HOST_WAIT_NS = 100_000


@dataclass(frozen=True)
class IdleBreakdown:
    """Idle ns by cause. ``streams`` holds one row per (device, stream) lane."""

    host_wait_ns: int = 0
    kernel_wait_ns: int = 0
    other_ns: int = 0
    gaps: int = 0
    in_graph_ns: int = 0
    host_wait_long_ns: int = 0
    streams: tuple[dict[str, object], ...] = field(default_factory=tuple)

    @property
    def idle_ns(self) -> int:
        return self.host_wait_ns + self.kernel_wait_ns + self.other_ns

    def _pct(self, ns: int) -> float:
        return round(100.0 * ns / self.idle_ns, 3) if self.idle_ns else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "device": {
                "idle_ns": self.idle_ns,
                "host_wait_ns": self.host_wait_ns,
                "kernel_wait_ns": self.kernel_wait_ns,
                "other_ns": self.other_ns,
                "host_wait_pct": self._pct(self.host_wait_ns),
                "kernel_wait_pct": self._pct(self.kernel_wait_ns),
                "other_pct": self._pct(self.other_ns),
                "gaps": self.gaps,
                "in_graph_ns": self.in_graph_ns,
                "host_wait_long_ns": self.host_wait_long_ns,
            },
            "streams": [dict(s) for s in self.streams],
            "kernel_wait_threshold_ns": KERNEL_WAIT_THRESHOLD_NS,
            "long_host_wait_ns": LONG_HOST_WAIT_NS,
        }


def _host_mask(
    gap_ns: np.ndarray, prev_end_ns: np.ndarray, next_rt_start_ns: np.ndarray
) -> np.ndarray:
    return (gap_ns > 0) & (next_rt_start_ns >= 0) & (next_rt_start_ns > prev_end_ns)


def _classify_gaps(
    gap_ns: np.ndarray, prev_end_ns: np.ndarray, next_rt_start_ns: np.ndarray
) -> tuple[int, int, int]:
    """(host_wait, kernel_wait, other) ns of positive gaps; rt start < 0 means unknown."""
    pos = gap_ns > 0
    host = _host_mask(gap_ns, prev_end_ns, next_rt_start_ns)
    kern = pos & ~host & (gap_ns < KERNEL_WAIT_THRESHOLD_NS)
    other = pos & ~host & ~kern
    return int(gap_ns[host].sum()), int(gap_ns[kern].sum()), int(gap_ns[other].sum())


def idle_breakdown(ev: TraceEvents, rt_index: np.ndarray) -> IdleBreakdown:
    """Classify idle gaps of every device and stream of ``ev``.

    Args:
        ev: the normalised trace.
        rt_index: :func:`.events.runtime_of_gpu` of ``ev``.
    """
    if ev.n_gpu == 0:
        return IdleBreakdown()
    rt_start = take(ev.rt_start_ns, rt_index, -1)
    in_graph_op = take(ev.rt_launch, rt_index, -1) == LAUNCH_GRAPH

    # Sort once by (device, stream, start) for the per-stream view.
    order = np.lexsort((ev.gpu_start_ns, ev.gpu_stream, ev.gpu_device))
    dev, stream = ev.gpu_device[order], ev.gpu_stream[order]
    start, end = ev.gpu_start_ns[order], ev.gpu_end_ns[order]
    lane_start = np.ones(order.size, dtype=bool)
    lane_start[1:] = (dev[1:] != dev[:-1]) | (stream[1:] != stream[:-1])
    bounds = np.append(np.nonzero(lane_start)[0], order.size)
    rt_sorted = rt_start[order]
    by_dev = {d.key: d for d in ev.devices}
    streams: list[dict[str, object]] = []
    for lo, hi in pairwise(bounds.tolist()):
        s, e = start[lo:hi], end[lo:hi]
        prev_end = np.maximum.accumulate(e)[:-1]  # ops on one stream may still overlap
        h, k, o = _classify_gaps(s[1:] - prev_end, prev_end, rt_sorted[lo + 1 : hi])
        info = by_dev.get(int(dev[lo]))
        streams.append(
            {
                "source": info.source if info else "",
                "device": info.device_id if info else int(dev[lo]),
                "stream": int(stream[lo]),
                "ops": int(hi - lo),
                "idle_ns": h + k + o,
                "host_wait_ns": h,
                "kernel_wait_ns": k,
                "other_ns": o,
            }
        )

    # Device view: holes in the union of each device's ops.
    host = kern = other = gaps = in_graph = host_long = 0
    for d in ev.devices:
        idx = np.nonzero(ev.gpu_device == d.key)[0]
        if idx.size < 2:
            continue
        o = idx[np.argsort(ev.gpu_start_ns[idx], kind="stable")]
        s, e = ev.gpu_start_ns[o], np.maximum.accumulate(ev.gpu_end_ns[o])
        opens = np.nonzero(s[1:] > e[:-1])[0] + 1  # op index that ends each hole
        if opens.size == 0:
            continue
        hole = s[opens] - e[opens - 1]
        h, k, x = _classify_gaps(hole, e[opens - 1], rt_start[o][opens])
        hm = _host_mask(hole, e[opens - 1], rt_start[o][opens]) & (hole >= LONG_HOST_WAIT_NS)
        host_long += int(hole[hm].sum())
        host, kern, other = host + h, kern + k, other + x
        gaps += int(opens.size)
        in_graph += int(hole[in_graph_op[o][opens] & (rt_start[o][opens] <= e[opens - 1])].sum())
    return IdleBreakdown(host, kern, other, gaps, in_graph, host_long, tuple(streams))
