"""A per-GPU ring buffer of NVML samples and the aggregate over one span's window.

Samples are rows of :data:`FIELDS` (float64, NaN where a counter is unsupported) stamped with
the sampler's monotonic clock in ns. Each row is written twice, at ``i`` and ``i + capacity``,
so the newest ``capacity`` rows are always one contiguous slice: readers never copy the whole
buffer or stitch two halves.

Aggregation model. NVML reports utilisation, power and PCIe throughput as averages over the
period just before the reading, so a sample stamped ``t`` is taken to hold over
``(previous sample, t]``. A window ``[start, end]`` is covered by the samples after ``start`` up
to the first one at or after ``end``; where no sample covers the tail yet (the span ends before
the next reading), the newest sample's values are held. Means are weighted by the time each
sample covers inside the window. Energy is the total-energy counter interpolated linearly at
``start`` and ``end``, and past the newest sample (where a span that ends before the next
reading lies) extrapolated with the counter's slope over the last sample period. Power is that
energy over the window's length: on Ampere and newer ``nvmlDeviceGetPowerUsage`` is a moving
average over about a second, so the readings inside a span shorter than that still carry the
load before it, while the counter accumulates what was drawn. Where the counter cannot say
(unsupported, one reading only, or an interval the window uses where it did not advance:
refreshed more slowly than the sampler ticks, or reset), energy is the power readings × time
and power their time-weighted mean, as it is for a zero-length window.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any

import numpy as np

from inferaudit_sdk import semconv

FIELDS = (
    "sm_util_ratio",
    "mem_util_ratio",
    "mem_used_bytes",
    "mem_total_bytes",
    "sm_clock_mhz",
    "power_w",
    "energy_mj",
    "pcie_tx_kbps",
    "pcie_rx_kbps",
    "throttle_reasons",
)
F = {name: i for i, name in enumerate(FIELDS)}
_KB = 1024  # NVML's PCIe throughput is in KB/s


class Ring:
    """Fixed-capacity sample history of one GPU. One writer (the sampler thread), many
    readers; both sides hold the lock only for array copies, never during NVML calls."""

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError(f"ring capacity must be >= 2, got {capacity}")
        self.capacity = capacity
        self._ts = np.zeros(2 * capacity, dtype=np.int64)
        self._data = np.full((2 * capacity, len(FIELDS)), np.nan)
        self._n = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return min(self._n, self.capacity)

    def append(self, ts_ns: int, row: np.ndarray) -> None:
        with self._lock:
            i = self._n % self.capacity
            self._ts[i] = ts_ns
            self._ts[i + self.capacity] = ts_ns
            self._data[i] = row
            self._data[i + self.capacity] = row
            self._n += 1

    def _view(self) -> tuple[np.ndarray, np.ndarray]:
        n = self._n
        if n <= self.capacity:
            return self._ts[:n], self._data[:n]
        w = n % self.capacity
        return self._ts[w : w + self.capacity], self._data[w : w + self.capacity]

    def latest(self) -> tuple[int, np.ndarray] | None:
        with self._lock:
            if self._n == 0:
                return None
            i = (self._n - 1) % self.capacity
            return int(self._ts[i]), self._data[i].copy()

    def window(self, start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Copies of the rows relevant to ``[start_ns, end_ns]`` (two before, through the
        first at/after the end) and how many lie strictly inside."""
        with self._lock:
            ts, data = self._view()
            n = len(ts)
            if n == 0:
                return ts[:0].copy(), data[:0].copy(), 0
            i0 = int(np.searchsorted(ts, start_ns, side="right"))
            i1 = int(np.searchsorted(ts, end_ns, side="left"))
            inside = max(i1 - i0, 0)
            lo = max(i0 - 2, 0)  # two before: the energy counter's slope into the window
            hi = min(i1 + 1, n)
            if lo >= hi:  # every sample is before the window: keep the newest two
                lo, hi = max(n - 2, 0), n
            return ts[lo:hi].copy(), data[lo:hi].copy(), inside


def _nan(v: float) -> bool:
    return v != v


def _weighted_mean(rows: list[list[float]], col: int, weights: list[float]) -> float | None:
    num = den = 0.0
    for row, w in zip(rows, weights, strict=True):
        v = row[col]
        if w > 0 and not _nan(v):
            num += v * w
            den += w
    return num / den if den > 0 else None


def _counter_energy_j(ts: list[int], rows: list[list[float]], start: int, end: int
                      ) -> float | None:
    """Energy over ``[start, end]`` from the total-energy counter (mJ), read linearly between
    its readings and, beyond them, along the nearest interval's slope (a moving-average power
    reading would carry the load of the second before). None, so that the power readings are
    used instead, without two counter readings or when an interval the window uses did not
    advance: a counter the driver refreshes more slowly than the sampler ticks (or one that
    was reset) would otherwise give 0 J for a span drawing hundreds of watts."""
    col = F["energy_mj"]
    pts = [(t, r[col]) for t, r in zip(ts, rows, strict=True) if not _nan(r[col])]
    if len(pts) < 2:
        return None
    times = [t for t, _ in pts]
    last = len(pts) - 2  # the last interval's index
    first_used = min(max(bisect.bisect_right(times, start) - 1, 0), last)
    last_used = min(max(bisect.bisect_left(times, end) - 1, 0), last)
    for k in range(first_used, last_used + 1):
        (ta, ea), (tb, eb) = pts[k], pts[k + 1]
        if not (tb > ta and eb > ea):
            return None

    def at(t: int, k: int) -> float:  # the counter at t along interval k
        (ta, ea), (tb, eb) = pts[k], pts[k + 1]
        return ea + (eb - ea) * (t - ta) / (tb - ta)

    return (at(end, last_used) - at(start, first_used)) / 1000.0


def _power_energy_j(rows: list[list[float]], weights_ns: list[float]) -> float | None:
    """Energy as the power readings × the time each covers; None without readings."""
    p_col = F["power_w"]
    total = None
    for row, w in zip(rows, weights_ns, strict=True):
        p = row[p_col]
        if w > 0 and not _nan(p):
            total = (total or 0.0) + p * w / 1e9
    return total


def aggregate(ts_arr: np.ndarray, data_arr: np.ndarray, inside: int, start: int, end: int
              ) -> dict[str, Any]:
    """The ``inferaudit.gpu.*`` span attributes over ``[start, end]`` (ns, sampler clock).

    Pure Python over the few rows a span covers: on a handful of values that is several
    times cheaper than numpy's per-call overhead, and this runs at span end."""
    n = len(ts_arr)
    if n == 0 or end < start:
        return {}
    ts = ts_arr.tolist()
    rows = data_arr.tolist()
    # Weight of row k: the part of (ts[k-1], ts[k]] inside the window; the newest row also
    # holds after its own stamp when nothing newer covers the end yet.
    weights: list[float] = []
    prev = None
    for k, t in enumerate(ts):
        lo = start if prev is None else max(prev, start)
        hi = end if (k == n - 1 and t < end) else min(t, end)
        weights.append(float(max(hi - lo, 0)))
        prev = t
    if end == start:  # zero-length window: the covering sample alone
        cover = min(int(np.searchsorted(ts_arr, start, side="left")), n - 1)
        weights = [1.0 if k == cover else 0.0 for k in range(n)]
    out: dict[str, Any] = {semconv.GPU_SAMPLES: int(inside)}
    for key, field in (
        (semconv.GPU_UTILIZATION_RATIO, "sm_util_ratio"),
        (semconv.GPU_MEMORY_UTILIZATION_RATIO, "mem_util_ratio"),
        (semconv.GPU_POWER_W, "power_w"),  # replaced below where the energy counter exists
        (semconv.GPU_SM_CLOCK_MHZ, "sm_clock_mhz"),
    ):
        mean = _weighted_mean(rows, F[field], weights)
        if mean is not None:
            out[key] = round(mean, 6)
    used = [row for row, w in zip(rows, weights, strict=True) if w > 0]
    mem = [r[F["mem_used_bytes"]] for r in used if not _nan(r[F["mem_used_bytes"]])]
    if mem:
        out[semconv.GPU_MEMORY_USED_BYTES] = int(max(mem))
    thr = [r[F["throttle_reasons"]] for r in used if not _nan(r[F["throttle_reasons"]])]
    if thr:
        mask = 0
        for v in thr:
            mask |= int(v)
        out[semconv.GPU_THROTTLE_REASONS] = mask
    if end > start:
        for key, field in (
            (semconv.GPU_PCIE_TX_BYTES, "pcie_tx_kbps"),
            (semconv.GPU_PCIE_RX_BYTES, "pcie_rx_kbps"),
        ):
            col = F[field]
            vals = [(r[col], w) for r, w in zip(rows, weights, strict=True)
                    if w > 0 and not _nan(r[col])]
            if vals:
                out[key] = round(sum(v * _KB * w / 1e9 for v, w in vals))
        counted = _counter_energy_j(ts, rows, start, end)
        energy = counted if counted is not None else _power_energy_j(rows, weights)
        if energy is not None:
            out[semconv.GPU_ENERGY_J] = round(energy, 6)
        if counted is not None:
            out[semconv.GPU_POWER_W] = round(counted / ((end - start) / 1e9), 6)
    return out
