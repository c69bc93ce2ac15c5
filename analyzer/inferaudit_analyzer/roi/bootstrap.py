"""Bootstrap intervals for projections: refit the curve and replay a resampled workload.

Each replicate (seeded, so a report is reproducible):

1. resamples the measured model calls (and calibration points) with replacement and refits the
   curve, which carries the fit's uncertainty. Calls are resampled in moving blocks of
   consecutive calls, because their residuals around the curve are correlated in time (slow
   spells of a shared host: lag-1..5 autocorrelation 0.28-0.11 on the example), and resampling
   them one at a time under-states the spread of the curve's level (90 % width 0.019 against
   0.030 with blocks of 8 there). The block length is Politis & White's (2004, with Patton,
   Politis & White's 2009 correction) automatic choice for the residuals' log-ratios: about
   ``n^(1/3)`` scaled by how far their autocorrelation reaches, 1 (one call at a time) when they
   are uncorrelated. Calibration points are a shuffled sweep and are resampled one at a time;
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

from inferaudit_analyzer.roi.fit import CallPoints, Fit, predict_calls
from inferaudit_analyzer.roi.simulate import Workload, block_index

LOW_Q, HIGH_Q = 0.05, 0.95
REPLAY_BUDGET_REQUESTS = 3_000_000  # B x requests x projections kept under this
MIN_REPLICATES = 5


@dataclass(frozen=True)
class Resample:
    curve_fit: Fit
    work: Workload
    repeats: np.ndarray
    call_block: int = 1  # consecutive calls resampled together (block_length)


def block_length(x: np.ndarray) -> int:
    """Block length for a moving-block bootstrap of a statistic like the mean of the series
    ``x``: Politis & White (2004), corrected by Patton, Politis & White (2009).

    The correlogram is cut where it turns negligible (``K_N`` = 5 consecutive lags inside
    ``2 sqrt(log10(n) / n)``, at lag ``m``); with a flat-top window over lags up to ``2m``,
    ``G = sum |k| R(k)`` and ``g = sum R(k)`` give ``b = (3/2 G^2 / g^2)^(1/3) n^(1/3)``, capped at
    ``min(3 sqrt(n), n / 3)``. Uncorrelated ``x``: G ~ 0, so 1.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n < 8:
        return 1
    d = x - x.mean()
    if float(d @ d) <= 0:
        return 1
    kn = 5
    m_max = min(int(np.ceil(np.sqrt(n))) + kn, n - 1)
    acov = np.array([float(d[:n - k] @ d[k:]) / n for k in range(m_max + 1)])
    rho = np.abs(acov / acov[0])
    band = 2.0 * np.sqrt(np.log10(n) / n)
    m_hat = next((m for m in range(m_max - kn + 1) if np.all(rho[m + 1:m + 1 + kn] < band)),
                 m_max)
    m = min(2 * max(m_hat, 1), m_max)
    k = np.arange(1, m + 1)
    lam = np.where(k / m <= 0.5, 1.0, 2.0 * (1.0 - k / m))
    g_big = float(2.0 * np.sum(lam * k * acov[1:m + 1]))
    g0 = float(acov[0] + 2.0 * np.sum(lam * acov[1:m + 1]))
    if g0 <= 0:
        return 1
    b = (1.5 * g_big ** 2 / g0 ** 2) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    return int(min(max(1, round(b)), np.ceil(min(3.0 * np.sqrt(n), n / 3.0))))


def call_block(calls: CallPoints, point: Fit) -> int:
    """Block length for resampling ``calls``: of their log residuals around ``point``'s curve
    (idle-start factor included), in time order."""
    if len(calls) < 8:
        return 1
    pred = predict_calls(point.curve, calls)
    ok = pred > 0
    return block_length(np.log(calls.duration_ns[ok] / pred[ok]))


def method(block: int) -> str:
    """How the intervals were made, for the report (``interval.method``)."""
    calls = ("one call at a time (their residuals are uncorrelated)" if block <= 1 else
             f"in blocks of {block} consecutive calls (their residuals are correlated in time; "
             "Politis-White block length)")
    return (f"bootstrap: model calls resampled {calls} and the curve refitted, requests "
            "block-resampled; the replicates' 5-95 % spread relative to their median, around "
            "the point")


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
              b: int, seed: int, point: Fit | None = None) -> list[Resample]:
    """``b`` seeded resamples; a replicate whose refit fails is skipped (counted by absence).
    Calls go in blocks of :func:`call_block` consecutive calls, from the fit to all of them:
    ``point`` where the caller has it (the projection's own fit: refitting every call again
    would give the same curve), else ``refit(calls, calibration)``."""
    rng = np.random.default_rng(seed)
    out: list[Resample] = []
    block = 1
    if b > 0 and len(calls) >= 8:
        try:
            block = call_block(calls, point if point is not None else refit(calls, calibration))
        except ValueError:
            block = 1
    n = len(calls)
    for _ in range(b):
        # sorted: the calls stay in time order (the fit reads their noise's correlation length)
        c = calls.take(np.sort(block_index(n, n, block, rng))) if n else calls
        cal = None
        if calibration is not None and len(calibration):
            cal = calibration.take(rng.integers(0, len(calibration), len(calibration)))
        try:
            f = refit(c, cal)
        except ValueError:
            continue
        w, r = block_resample(work, repeats, rng)
        out.append(Resample(f, w, r, block))
    return out


def control_adjusted(values: list[float | None], control: list[float | None],
                     control_point: float | None) -> list[float | None]:
    """``values`` with the part that goes with ``control`` taken out: ``v + beta (c* - c)``,
    ``beta`` the least-squares slope of ``values`` on ``control`` over the replicates where
    both are finite, ``c*`` the control's point value (a control variate). A value that moves
    with the control keeps only its own spread; one that does not (beta ~ 0) is unchanged.
    Unchanged too where there is no point, or fewer than 3 pairs to take a slope from."""
    v = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)
    c = np.asarray([np.nan if x is None else x for x in control], dtype=np.float64)
    if control_point is None or not np.isfinite(control_point) or v.size != c.size:
        return values
    ok = np.isfinite(v) & np.isfinite(c)
    if ok.sum() < 3:
        return values
    dc = c[ok] - c[ok].mean()
    var = float(dc @ dc)
    if var <= 0:
        return values
    beta = float(dc @ (v[ok] - v[ok].mean())) / var
    out = v + beta * (control_point - c)
    return [float(x) if np.isfinite(x) else None for x in out]


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
