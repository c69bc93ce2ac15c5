"""The production workload the example replays: a real Azure LLM trace, or a generator fitted to it.

The real trace is ``../shared/workloads/splitwise_conv.csv`` (relative to the repository root;
microsoft/vidur's Splitwise conversation trace: ``arrived_at`` in seconds, ``num_prefill_tokens``,
``num_decode_tokens``). Where that file is absent the loader falls back to a seeded generator
whose parameters were fitted to the same file and are embedded below as constants
(:data:`SPLITWISE_CONV_FIT`); :func:`fit_workload` recomputes them, and a test checks the two
agree whenever the file is present. :attr:`Workload.source` always says which one ran.

The fit, and why it has this shape:

- prompt and output lengths are multi-modal (conversation turns cluster), so a log-normal fits
  them badly; we keep their empirical quantiles (every 5 %, denser above 95 %) and sample
  by inverse CDF with log-linear interpolation. The two are nearly independent in the trace
  (log-correlation ~0.09), so they are sampled independently.
- arrivals are bursty on two time scales: inter-arrival gaps have a coefficient of variation
  above 1 (a gamma with shape < 1 fits), and the rate itself drifts minute to minute (per-minute
  counts vary ~25 %). The generator draws a per-window rate multiplier (log-normal, sigma fitted
  to the per-window counts) and gamma gaps (shape fitted on gaps normalised by their window's
  mean gap), so both kinds of burstiness survive.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The repository root is two levels up from this file (examples/workload.py).
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE_PATH = REPO_ROOT / ".." / "shared" / "workloads" / "splitwise_conv.csv"
TRACE_COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")
# Every 5 %, and denser in the tail: between the 95 % quantile and the maximum (a single
# sample) a log-linear interpolation would make the top 5 % twice as long as the trace's.
QUANTILE_LEVELS_PCT = (*range(0, 95, 5), 95, 96, 97, 98, 99, 99.5, 99.9, 100)
RATE_WINDOW_S = 60.0
# Window statistics compared when choosing which part of the trace to replay (see
# choose_window); COUNT_BIN_S is the bin of the count dispersion (var/mean of counts per bin).
WINDOW_STATS = ("gap_cv", "prompt_median", "output_median", "count_dispersion")
COUNT_BIN_S = 10.0


class WorkloadError(ValueError):
    """A workload file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class WorkloadRequest:
    """One request of the workload, in the trace's own units (seconds, tokens)."""

    arrived_at_s: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Workload:
    """An ordered list of requests plus where they came from (``trace:<path>`` or
    ``fitted:<name>(seed=N)``)."""

    requests: tuple[WorkloadRequest, ...]
    source: str
    # For a trace window: start row, size, rows in the trace, the window's statistics against
    # the whole trace's and how the start was chosen (see choose_window). None otherwise.
    window: dict | None = field(default=None, compare=False)

    @property
    def from_trace(self) -> bool:
        return self.source.startswith("trace:")

    def __len__(self) -> int:
        return len(self.requests)

    def slice(self, start: int, n: int) -> Workload:
        """Requests ``start .. start+n-1``; the source names the slice
        (``trace:<path>[start:end]``)."""
        end = min(len(self.requests), start + n)
        return Workload(self.requests[start:end], f"{self.source}[{start}:{end}]")


@dataclass(frozen=True)
class WorkloadFit:
    """What the generator needs, fitted to a trace. Lengths in tokens, times in seconds."""

    n_requests: int
    duration_s: float
    mean_interarrival_s: float
    # Gamma shape of inter-arrival gaps normalised by their window's mean gap (< 1: bursty).
    gap_gamma_shape: float
    # Std of log(per-window count / mean count): the slow drift of the arrival rate.
    rate_log_sigma: float
    prompt_quantiles: tuple[float, ...]  # at QUANTILE_LEVELS_PCT
    output_quantiles: tuple[float, ...]
    # Log-normal moments, for reference and reports only (the generator uses the quantiles).
    prompt_log_mean: float
    prompt_log_std: float
    output_log_mean: float
    output_log_std: float


# Computed by fit_workload(read_trace(DEFAULT_TRACE_PATH)); tests/examples/test_workload.py
# checks that these still match the file. Rounded to 6 significant digits.
SPLITWISE_CONV_FIT = WorkloadFit(
    n_requests=19366,
    duration_s=3501.72,
    mean_interarrival_s=0.180827,
    gap_gamma_shape=0.940592,
    rate_log_sigma=0.211588,
    prompt_quantiles=(
        2.0, 181.0, 207.0, 372.0, 387.0, 396.0, 403.0, 414.0, 703.0, 984.0, 1020.0, 1045.0,
        1071.0, 1097.0, 1130.0, 1189.0, 1315.0, 1876.25, 2734.5, 4083.0, 4086.0, 4090.0,
        4098.0, 4142.0, 4831.0, 6179.15, 14050.0,
    ),
    output_quantiles=(
        7.0, 41.0, 54.0, 67.0, 77.0, 85.0, 91.0, 96.0, 103.0, 113.0, 129.0, 151.0, 177.0,
        217.0, 384.0, 395.0, 400.0, 411.0, 424.0, 451.0, 468.0, 509.0, 540.0, 601.0, 643.175,
        954.0, 1000.0,
    ),
    prompt_log_mean=6.63331,
    prompt_log_std=0.985154,
    output_log_mean=5.019,
    output_log_std=0.859009,
)


def read_trace(path: str | Path = DEFAULT_TRACE_PATH) -> Workload:
    """Read a Splitwise/Vidur CSV. Raises :class:`WorkloadError` naming the file and line of
    the first bad row (missing column, non-number, negative or out-of-order time, length < 1)."""
    path = Path(path)
    requests: list[WorkloadRequest] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise WorkloadError(f"{path}:1: missing column(s) {', '.join(missing)}")
        last_s = 0.0
        for line_no, row in enumerate(reader, start=2):
            try:
                arrived_s = float(row["arrived_at"])
                prompt = int(row["num_prefill_tokens"])
                output = int(row["num_decode_tokens"])
            except (TypeError, ValueError) as exc:
                raise WorkloadError(f"{path}:{line_no}: not a number ({exc})") from None
            if not math.isfinite(arrived_s) or arrived_s < last_s:
                raise WorkloadError(
                    f"{path}:{line_no}: arrived_at {arrived_s} is negative, not finite, or "
                    f"earlier than the previous row ({last_s})"
                )
            if prompt < 1 or output < 1:
                raise WorkloadError(f"{path}:{line_no}: token counts must be >= 1")
            last_s = arrived_s
            requests.append(WorkloadRequest(arrived_s, prompt, output))
    if not requests:
        raise WorkloadError(f"{path}: no requests")
    return Workload(tuple(requests), source=f"trace:{path.resolve()}")


def _round6(x: float) -> float:
    return float(f"{x:.6g}")


def fit_workload(workload: Workload) -> WorkloadFit:
    """Fit the generator's parameters to a workload (see the module docstring for the model)."""
    t = np.array([r.arrived_at_s for r in workload.requests], dtype=float)
    prompt = np.array([r.prompt_tokens for r in workload.requests], dtype=float)
    output = np.array([r.output_tokens for r in workload.requests], dtype=float)
    t = t - t[0]
    duration_s = float(t[-1])
    gaps = np.diff(t)
    # Per-window rate drift over whole windows only (a partial last window would look quiet).
    n_windows = max(1, int(duration_s // RATE_WINDOW_S))
    window = np.minimum((t // RATE_WINDOW_S).astype(int), n_windows)
    counts = np.bincount(window, minlength=n_windows + 1)[:n_windows].astype(float)
    counts = np.maximum(counts, 1.0)
    # Gaps normalised by their window's mean gap, then a method-of-moments gamma shape.
    window_mean_gap = RATE_WINDOW_S / counts
    gap_window = np.minimum(window[1:], n_windows - 1)
    norm = gaps / window_mean_gap[gap_window]
    gap_shape = float(norm.mean() ** 2 / norm.var()) if len(norm) > 1 and norm.var() > 0 else 1.0
    # Count noise of a gamma renewal process adds ~cv^2/mean_count to var(log count); take it
    # out so the generator's drift plus its own noise reproduces the trace's spread.
    log_var = float(np.var(np.log(counts / counts.mean())))
    rate_log_sigma = math.sqrt(max(0.0, log_var - 1.0 / (gap_shape * float(counts.mean()))))
    levels = np.array(QUANTILE_LEVELS_PCT, dtype=float)
    lp, lo = np.log(prompt), np.log(output)
    return WorkloadFit(
        n_requests=len(workload.requests),
        duration_s=_round6(duration_s),
        mean_interarrival_s=_round6(float(gaps.mean()) if len(gaps) else 1.0),
        gap_gamma_shape=_round6(gap_shape),
        rate_log_sigma=_round6(rate_log_sigma),
        prompt_quantiles=tuple(_round6(float(q)) for q in np.percentile(prompt, levels)),
        output_quantiles=tuple(_round6(float(q)) for q in np.percentile(output, levels)),
        prompt_log_mean=_round6(float(lp.mean())),
        prompt_log_std=_round6(float(lp.std())),
        output_log_mean=_round6(float(lo.mean())),
        output_log_std=_round6(float(lo.std())),
    )


def _sample_lengths(rng: np.random.Generator, quantiles: tuple[float, ...], n: int) -> np.ndarray:
    """Inverse-CDF sampling through the quantiles, interpolating in log space."""
    levels = np.array(QUANTILE_LEVELS_PCT, dtype=float) / 100.0
    logq = np.log(np.maximum(np.array(quantiles, dtype=float), 1.0))
    u = rng.random(n)
    return np.maximum(1, np.rint(np.exp(np.interp(u, levels, logq)))).astype(int)


def generate_workload(
    n: int, *, fit: WorkloadFit = SPLITWISE_CONV_FIT, seed: int = 0, name: str = "splitwise_conv"
) -> Workload:
    """``n`` requests drawn from ``fit``; the same seed gives the same workload."""
    if n < 1:
        raise ValueError(f"generate_workload: n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    shape = fit.gap_gamma_shape
    sigma = fit.rate_log_sigma

    def window_mean_gap_s() -> float:
        # A per-window rate multiplier with mean 1 (log-normal), i.e. the slow drift.
        return fit.mean_interarrival_s / float(np.exp(rng.normal(-0.5 * sigma * sigma, sigma)))

    times = np.zeros(n)
    t = 0.0
    window_end = RATE_WINDOW_S
    mean_gap = window_mean_gap_s()
    for i in range(1, n):
        t += float(rng.gamma(shape, mean_gap / shape))
        while t >= window_end:
            window_end += RATE_WINDOW_S
            mean_gap = window_mean_gap_s()
        times[i] = t
    prompts = _sample_lengths(rng, fit.prompt_quantiles, n)
    outputs = _sample_lengths(rng, fit.output_quantiles, n)
    requests = tuple(
        WorkloadRequest(float(times[i]), int(prompts[i]), int(outputs[i])) for i in range(n)
    )
    return Workload(requests, source=f"fitted:{name}(seed={seed})")


def window_stats(requests: tuple[WorkloadRequest, ...] | list[WorkloadRequest]) -> dict:
    """What makes a stretch of the trace look like the whole: the burstiness of its gaps (CV),
    its prompt and output length medians, the dispersion (variance / mean) of its counts per
    ``COUNT_BIN_S`` seconds (a ramp or a lull inflates it), and its mean rate."""
    t = np.array([r.arrived_at_s for r in requests], dtype=float)
    gaps = np.diff(t)
    span_s = float(t[-1] - t[0]) if len(t) > 1 else 0.0
    n_bins = max(1, int(span_s // COUNT_BIN_S))
    counts = np.bincount(np.minimum(((t - t[0]) // COUNT_BIN_S).astype(int), n_bins - 1),
                         minlength=n_bins).astype(float)
    gap_mean = float(gaps.mean()) if len(gaps) else 0.0
    return {
        "gap_cv": float(gaps.std() / gap_mean) if gap_mean > 0 else 0.0,
        "prompt_median": float(np.median([r.prompt_tokens for r in requests])),
        "output_median": float(np.median([r.output_tokens for r in requests])),
        "count_dispersion": (float(counts.var() / counts.mean())
                             if n_bins > 1 and counts.mean() > 0 else 0.0),
        "rate_rps": (len(t) - 1) / span_s if span_s > 0 else 0.0,
        "span_s": span_s,
    }


def window_distance(stats: dict, whole: dict) -> float:
    """Root mean square of the log ratios of :data:`WINDOW_STATS` (scale-free: a 10 % miss
    in the output median weighs like a 10 % miss in the gap CV)."""
    logs = [math.log(max(stats[k], 1e-9) / max(whole[k], 1e-9)) for k in WINDOW_STATS]
    return math.sqrt(sum(x * x for x in logs) / len(logs))


def choose_window(full: Workload, n: int, *, stride: int | None = None) -> int:
    """The start row of the ``n``-request window most like the whole trace.

    The trace's first rows are its start-up ramp (rate, burstiness and lengths all differ from
    the rest), so replaying ``head(n)`` would audit a transient. Candidates start every
    ``stride`` rows (default ``n // 4``); the one whose :func:`window_stats` are closest to the
    whole trace's (:func:`window_distance`) wins, the earliest on a tie. Deterministic."""
    rows = len(full.requests)
    if n >= rows:
        return 0
    step = max(1, stride if stride is not None else n // 4)
    whole = window_stats(full.requests)
    best, best_d = 0, math.inf
    for start in range(0, rows - n + 1, step):
        d = window_distance(window_stats(full.requests[start:start + n]), whole)
        if d < best_d - 1e-12:
            best, best_d = start, d
    return best


def trace_window(full: Workload, n: int, start: int | None = None) -> Workload:
    """``n`` rows of ``full`` from ``start`` (``None``: :func:`choose_window`), with the
    window's statistics against the whole trace's in ``Workload.window``."""
    rows = len(full.requests)
    n = min(n, rows)
    chosen = "representative (closest window statistics to the whole trace)"
    if start is None:
        start = choose_window(full, n)
    else:
        if not 0 <= start < rows:
            raise ValueError(f"trace start {start} is outside the trace's {rows} rows")
        chosen = "given (--trace-start)"
    w = full.slice(start, n)
    stats, whole = window_stats(w.requests), window_stats(full.requests)
    info = {"start": start, "size": len(w), "trace_rows": rows, "chosen": chosen,
            "stride": max(1, n // 4), "stats": stats, "trace_stats": whole,
            "distance": window_distance(stats, whole)}
    return Workload(w.requests, w.source, window=info)


def load_workload(
    n: int | None = None,
    *,
    path: str | Path | None = None,
    seed: int = 0,
    use_trace: bool = True,
    start: int | None = None,
) -> Workload:
    """``n`` requests of the real trace when it is readable, else ``n`` fitted ones.

    From the trace, the window is :func:`trace_window`'s: ``start`` if given, else the
    ``n``-row window most like the whole trace (not its first rows: those are its start-up
    ramp). A missing file falls back (the example must run anywhere); a file that exists but is
    broken raises :class:`WorkloadError`, because silently replaying something else would
    mislead. ``n=None`` means the whole trace (or, fitted, as many requests as the trace has).
    """
    trace_path = Path(path) if path is not None else DEFAULT_TRACE_PATH
    if use_trace and trace_path.is_file():
        full = read_trace(trace_path)
        return full if n is None and start is None else trace_window(
            full, n if n is not None else len(full), start)
    count = n if n is not None else SPLITWISE_CONV_FIT.n_requests
    return generate_workload(count, seed=seed)
