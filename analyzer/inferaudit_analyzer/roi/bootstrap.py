"""Bootstrap intervals for projections: refit the curve and replay a resampled workload.

Each replicate (seeded, so a report is reproducible):

1. resamples the measured model calls (and calibration points) with replacement and refits the
   curve, which carries the fit's uncertainty;
2. resamples the workload by a moving-block bootstrap over requests (blocks of consecutive
   requests keep their inter-arrival gaps and sizes), which keeps local burstiness, the thing
   p95 is made of, while varying the traffic mix;
3. replays baseline and scenario on that workload at the projection's replica count.

The interval is the replicates' 5th-95th percentiles relative to their median, placed around
the point projection (``point x q / median``): near saturation the replicates' *level* is biased
(a resampled workload reshuffles the bursts a p95 is made of, typically lowering it), while
their relative spread still measures the uncertainty; a plain percentile interval could then
miss its own point. Without a point the plain percentile interval is given. B is kept small
(default 100, fewer on large inputs) because every replicate is a full replay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from inferaudit_analyzer.roi.fit import CallPoints, Fit
from inferaudit_analyzer.roi.simulate import Workload, block_index

LOW_Q, HIGH_Q = 0.05, 0.95
REPLAY_BUDGET_REQUESTS = 3_000_000  # B x requests x projections kept under this
MIN_REPLICATES = 5


@dataclass(frozen=True)
class Resample:
    curve_fit: Fit
    work: Workload
    repeats: np.ndarray


def block_resample(work: Workload, repeats: np.ndarray, rng: np.random.Generator
                   ) -> tuple[Workload, np.ndarray]:
    """Moving-block bootstrap of the request sequence (block ~ sqrt(n) requests)."""
    n = len(work)
    if n < 4:
        return work, repeats
    block = max(2, round(np.sqrt(n)))
    gaps = np.diff(work.arrival_ns, prepend=work.arrival_ns[0])
    idx = block_index(n, n, block, rng)
    g = gaps[idx].copy()
    g[0] = 0.0
    arr = np.cumsum(g)
    return Workload(arr, work.input_tokens[idx], work.output_tokens[idx]), repeats[idx]


def replicates(b: int, n_requests: int, projections: int) -> int:
    """How many replicates fit the replay budget (at least 5 unless asked for fewer)."""
    if b <= 0:
        return 0
    fit_budget = REPLAY_BUDGET_REQUESTS // max(1, n_requests * max(1, projections))
    return int(min(b, max(min(b, MIN_REPLICATES), fit_budget)))


def resamples(calls: CallPoints, calibration: CallPoints | None, work: Workload,
              repeats: np.ndarray, refit: Callable[[CallPoints, CallPoints | None], Fit],
              b: int, seed: int) -> list[Resample]:
    """``b`` seeded resamples; a replicate whose refit fails is skipped (counted by absence)."""
    rng = np.random.default_rng(seed)
    out: list[Resample] = []
    for _ in range(b):
        # sorted: the calls stay in time order (the fit reads their noise's correlation length)
        c = calls.take(np.sort(rng.integers(0, len(calls), len(calls)))) if len(calls) else calls
        cal = None
        if calibration is not None and len(calibration):
            cal = calibration.take(rng.integers(0, len(calibration), len(calibration)))
        try:
            f = refit(c, cal)
        except ValueError:
            continue
        w, r = block_resample(work, repeats, rng)
        out.append(Resample(f, w, r))
    return out


def interval(values: list[float], point: float | None = None) -> dict[str, float | None]:
    """The 90 % interval of ``values``, around ``point`` when one is given (module docstring)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not v.size:
        return {"low": None, "high": None, "replicates": 0}
    low, high = float(np.quantile(v, LOW_Q)), float(np.quantile(v, HIGH_Q))
    med = float(np.median(v))
    if point is not None and np.isfinite(point) and med > 0:
        low, high = point * low / med, point * high / med
    return {"low": low, "high": high, "replicates": int(v.size)}
