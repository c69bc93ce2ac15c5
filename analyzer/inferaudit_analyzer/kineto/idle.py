"""Idle-time breakdown: host wait / kernel wait / other, per stream and per device.

HTA's three categories (``BreakdownAnalysis._analyze_idle_time_for_stream``), applied to each
idle gap before a GPU op, the op being the one that ends the gap. HTA gives the *whole* gap to
one category; we split a gap where HTA's host-wait test holds, at the moment the launching host
call returned (docs/kineto-analysis.md, "Deliberate differences"):

* **host wait**: the host call that launched the op *started* after the previous op ended (HTA's
  test), and only for the part of the gap before that call *returned*: until then the work was
  not queued and the device waited for the CPU. After the call returned the work was queued;
  if the device still did not start it, the host is not the reason;
* **kernel wait**: the rest of the gap (all of it when the host-wait test fails), if shorter
  than :data:`KERNEL_WAIT_THRESHOLD_NS`: the ordinary cost of starting queued work;
* **other**: the rest, if longer: the queued op waited on something else (a cross-stream event,
  a peer rank, synchronisation, work the trace does not show).

Per stream, gaps are between consecutive ops on that stream (HTA's view; streams overlap, so
per-stream idle does not add up to device idle). Per device (our addition), gaps are the holes
in the union of all its ops, so the three categories add up exactly to the temporal
breakdown's ``idle_ns``.

A device hole that is "other" for at least :data:`UNTRACED_WAIT_SPAN_RATIO` of the device's span
means the device waited, for most of the window, on something the trace does not show (SGLang
decode: a kernel queued 44 us after the previous op waits 463 ms on an event); such devices are
counted in ``devices_waiting_untraced`` and the summary marks the timeline incomplete.

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

__all__ = [
    "KERNEL_WAIT_THRESHOLD_NS",
    "LONG_HOST_WAIT_NS",
    "UNTRACED_WAIT_SPAN_RATIO",
    "IdleBreakdown",
    "idle_breakdown",
]

# HTA's ``consecutive_kernel_delay`` default is 30, documented as "nanoseconds", but HTA's
# trace frame holds ts/dur in integer microseconds, so the threshold it applies is 30 us.
# We keep the value HTA actually applies, in ns. (docs/kineto-analysis.md, "Deliberate
# differences".)
KERNEL_WAIT_THRESHOLD_NS = 30_000
# A host-wait gap this long is the host doing other work (data loading, Python, a sync), not
# the cost of a launch: HTA's launch-delay outlier cutoff (launch_delay_cutoff=100 us).
LONG_HOST_WAIT_NS = 100_000
# House rule: one "other" device hole covering a quarter of the device's span is a wait the trace
# cannot explain that dominates the window; idle shares (and verdicts drawn from them) would be
# about that one wait. The shared traces fall far apart: the longest such hole is 0.98 and 0.50
# of the span in the two SGLang traces, <= 0.05 in every other (sampled_rank-0's NCCL waits).
UNTRACED_WAIT_SPAN_RATIO = 0.25


@dataclass(frozen=True)
class IdleBreakdown:
    """Idle ns by cause. ``streams`` holds one row per (device, stream) lane.

    ``max_other_gap_ns`` is the longest "other" part of one device hole;
    ``devices_waiting_untraced`` counts devices where one such part is at least
    :data:`UNTRACED_WAIT_SPAN_RATIO` of the device's span, and ``untraced_wait_ns`` sums those
    parts (the time the trace cannot speak for).
    """

    host_wait_ns: int = 0
    kernel_wait_ns: int = 0
    other_ns: int = 0
    gaps: int = 0
    in_graph_ns: int = 0
    host_wait_long_ns: int = 0
    streams: tuple[dict[str, object], ...] = field(default_factory=tuple)
    max_other_gap_ns: int = 0
    devices_waiting_untraced: int = 0
    untraced_wait_ns: int = 0

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
                "max_other_gap_ns": self.max_other_gap_ns,
                "devices_waiting_untraced": self.devices_waiting_untraced,
                "untraced_wait_ns": self.untraced_wait_ns,
            },
            "streams": [dict(s) for s in self.streams],
            "kernel_wait_threshold_ns": KERNEL_WAIT_THRESHOLD_NS,
            "long_host_wait_ns": LONG_HOST_WAIT_NS,
            "untraced_wait_span_ratio": UNTRACED_WAIT_SPAN_RATIO,
        }


def _split_gaps(
    gap_ns: np.ndarray, prev_end_ns: np.ndarray, rt_start_ns: np.ndarray, rt_end_ns: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per gap, its (host wait, kernel wait, other) ns; rt start < 0 means no host call known.

    Host wait is the part of the gap before the launching call returned, and only when the call
    started after the previous op ended (HTA's test); the rest is kernel wait when short, else
    other. A call still running when the op started (a blocking copy) gives the host it all.
    """
    pos = gap_ns > 0
    late = pos & (rt_start_ns >= 0) & (rt_start_ns > prev_end_ns)
    host = np.where(late, np.clip(rt_end_ns - prev_end_ns, 0, gap_ns), 0)
    rest = np.where(pos, gap_ns - host, 0)
    kern = np.where(rest < KERNEL_WAIT_THRESHOLD_NS, rest, 0)
    return host, kern, rest - kern


def idle_breakdown(ev: TraceEvents, rt_index: np.ndarray) -> IdleBreakdown:
    """Classify idle gaps of every device and stream of ``ev``.

    Args:
        ev: the normalised trace.
        rt_index: :func:`.events.runtime_of_gpu` of ``ev``.
    """
    if ev.n_gpu == 0:
        return IdleBreakdown()
    rt_start = take(ev.rt_start_ns, rt_index, -1)
    rt_end = take(ev.rt_end_ns, rt_index, -1)
    in_graph_op = take(ev.rt_launch, rt_index, -1) == LAUNCH_GRAPH

    # Sort once by (device, stream, start) for the per-stream view.
    order = np.lexsort((ev.gpu_start_ns, ev.gpu_stream, ev.gpu_device))
    dev, stream = ev.gpu_device[order], ev.gpu_stream[order]
    start, end = ev.gpu_start_ns[order], ev.gpu_end_ns[order]
    lane_start = np.ones(order.size, dtype=bool)
    lane_start[1:] = (dev[1:] != dev[:-1]) | (stream[1:] != stream[:-1])
    bounds = np.append(np.nonzero(lane_start)[0], order.size)
    rs_sorted, re_sorted = rt_start[order], rt_end[order]
    by_dev = {d.key: d for d in ev.devices}
    streams: list[dict[str, object]] = []
    for lo, hi in pairwise(bounds.tolist()):
        s, e = start[lo:hi], end[lo:hi]
        prev_end = np.maximum.accumulate(e)[:-1]  # ops on one stream may still overlap
        parts = _split_gaps(s[1:] - prev_end, prev_end, rs_sorted[lo + 1 : hi],
                            re_sorted[lo + 1 : hi])  # fmt: skip
        h, k, o = (int(x.sum()) for x in parts)
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
    host = kern = other = gaps = in_graph = host_long = max_other = untraced = untraced_ns = 0
    for d in ev.devices:
        idx = np.nonzero(ev.gpu_device == d.key)[0]
        if idx.size < 2:
            continue
        o = idx[np.argsort(ev.gpu_start_ns[idx], kind="stable")]
        s, e = ev.gpu_start_ns[o], np.maximum.accumulate(ev.gpu_end_ns[o])
        opens = np.nonzero(s[1:] > e[:-1])[0] + 1  # op index that ends each hole
        if opens.size == 0:
            continue
        prev_end = e[opens - 1]
        hole = s[opens] - prev_end
        h, k, x = _split_gaps(hole, prev_end, rt_start[o][opens], rt_end[o][opens])
        host, kern, other = host + int(h.sum()), kern + int(k.sum()), other + int(x.sum())
        host_long += int(h[h >= LONG_HOST_WAIT_NS].sum())
        dev_max_other = int(x.max())
        max_other = max(max_other, dev_max_other)
        if dev_max_other >= UNTRACED_WAIT_SPAN_RATIO * int(e[-1] - s[0]):
            untraced += 1
            untraced_ns += dev_max_other
        gaps += int(opens.size)
        in_graph += int(hole[in_graph_op[o][opens] & (rt_start[o][opens] <= prev_end)].sum())
    return IdleBreakdown(
        host, kern, other, gaps, in_graph, host_long, tuple(streams), max_other, untraced,
        untraced_ns,
    )
