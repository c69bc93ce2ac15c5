"""Fit the service-time curve of a model from what was measured.

The simulator needs ``call_ns(b, in, out, ragged)`` (``simulate.ServiceCurve``); we fit its five
non-negative coefficients by non-negative least squares on model calls'
(batch size, padded input tokens per row, longest output, rows of unequal length) -> wall
duration. Wall duration, not
device time, because it is what a waiting request sees; the busy-time floor is scaled separately.

Where the points come from, best first:

1. a calibration sweep (``inferaudit calibrate``) that ran the model over batch sizes and lengths:
   it pins the batch dimension; when spans were measured too, the swept curve is *anchored* to
   them by one scale factor (total measured over total predicted time), because a sweep outside the
   server misses the server's own per-call overhead;
2. the spans alone, when they hold at least two batch sizes (beyond the largest one seen the curve
   is an extrapolation, and the fit says so);
3. spans at one batch size only: the batch dimension is unidentified, so the per-sequence share of a
   decode step comes from a roofline prior (peak FLOP/s and memory bandwidth of the device from
   ``devices.json``), marked as an assumption.

Padded batches: a batch whose rows have unequal lengths is left-padded and its attention runs
with a mask, a per-step cost a single row or equal-length rows do not pay. The fit has a column
for it (``ragged_step_ns``); a call is ragged when its members' prompt lengths differ (spans) or
its drawn rows do (sweep). Without it the linear batch dimension is bent between b=1 and b>1,
and a curve anchored to unbatched spans under-states every padded call (~10 % on the example).

Terms the points cannot estimate: where a token column's coefficient is not pinned by the
points (identical calls, one prompt length: its least-squares coefficient within 3 standard
errors of zero beside the other columns), any split of its time is the noise's or the solver's,
not the data's (~200 ms identical calls gave quantisation "no saving" at 512/128 tokens and
-43 % p95 at 20/100). Such a column is left out, its time stays in fixed_ns (or prefill), and the
fit carries an assumption and a warning (``Fit.warnings``). A column that varies little but
over many precise calls is estimable and kept.

Goodness of fit: R^2 and MAPE on the points used, plus residuals for the report's plot.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from importlib import resources as importlib_resources
from typing import Any

import numpy as np

from inferaudit_analyzer.roi.simulate import ServiceCurve, correlation_block

MAX_RESIDUALS_KEPT = 400  # points carried to the plot; enough to see a trend


@dataclass(frozen=True)
class CallPoints:
    """Measured model calls: batch size, padded input tokens per row, longest output, wall ns,
    (spans only) whether the call started on an idle server (its first member arrived after
    the server's previous call had ended; ``idle`` is None where unknown), and whether its rows
    had unequal lengths (``ragged``: padded, so the attention ran masked; None: no call was).
    """

    batch: np.ndarray
    in_tokens: np.ndarray
    out_tokens: np.ndarray
    duration_ns: np.ndarray
    idle: np.ndarray | None = None
    ragged: np.ndarray | None = None

    @classmethod
    def of(cls, batch, in_tokens, out_tokens, duration_ns, idle=None, ragged=None
           ) -> CallPoints:
        arrs = [np.asarray(x, dtype=np.float64) for x in (batch, in_tokens, out_tokens,
                                                          duration_ns)]
        ok = np.all([np.isfinite(a) for a in arrs], axis=0) & (arrs[0] >= 1) & (arrs[3] > 0)
        flags = None if idle is None else np.asarray(idle, dtype=bool)[ok]
        rag = None if ragged is None else np.asarray(ragged, dtype=bool)[ok]
        return cls(*(a[ok] for a in arrs), flags, rag)

    def time_scaled(self, factor: float) -> CallPoints:
        """The same calls, each taking ``factor`` times as long."""
        return self if factor == 1.0 else replace(self, duration_ns=self.duration_ns * factor)

    def ragged_flags(self) -> np.ndarray:
        """Per call, 1.0 where its rows had unequal lengths (0.0 where unknown)."""
        if self.ragged is None:
            return np.zeros(self.batch.size)
        return self.ragged.astype(np.float64)

    def __len__(self) -> int:
        return int(self.batch.size)

    def take(self, idx: np.ndarray) -> CallPoints:
        return CallPoints(self.batch[idx], self.in_tokens[idx], self.out_tokens[idx],
                          self.duration_ns[idx], None if self.idle is None else self.idle[idx],
                          None if self.ragged is None else self.ragged[idx])


def design(pts: CallPoints) -> np.ndarray:
    """Columns matching ServiceCurve: 1, b*in, out, out*b, out*ragged."""
    b, tin, tout = pts.batch, pts.in_tokens, pts.out_tokens
    return np.column_stack([np.ones_like(b), b * tin, tout, tout * b,
                            tout * pts.ragged_flags()])


def _unit_columns(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` with each column scaled to unit norm (an all-zero column left as is), and the
    norms divided by: token counts and the constant term then weigh alike in a solver or a
    rank test, and a solution of the scaled system is one of ``a``'s over ``norms``."""
    norms = np.linalg.norm(a, axis=0)
    norms[norms == 0] = 1.0
    return a / norms, norms


def nnls(a: np.ndarray, y: np.ndarray, max_iter: int = 200) -> np.ndarray:
    """Lawson-Hanson non-negative least squares (scipy is not a dependency), on the
    :func:`_unit_columns` of ``a``."""
    a_s, norms = _unit_columns(a)
    n = a_s.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    w = a_s.T @ (y - a_s @ x)
    for _ in range(max_iter):
        if passive.all() or not np.any(w[~passive] > 1e-12 * max(1.0, np.abs(w).max())):
            break
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a_s[:, passive], y, rcond=None)[0]
            if np.all(z[passive] > 0):
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
            x[~passive] = 0.0
            if not passive.any():
                break
        w = a_s.T @ (y - a_s @ x)
    return x / norms


def goodness(pred: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """R^2 (1 - SSres/SStot) and mean absolute percentage error (0-1 ratio)."""
    if y.size == 0:
        return {"r2": None, "mape_ratio": None}
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    ss_res = float(np.sum((y - pred) ** 2))
    r2 = None if ss_tot <= 0 else 1.0 - ss_res / ss_tot
    return {"r2": r2, "mape_ratio": float(np.mean(np.abs(pred - y) / y))}


def load_devices() -> dict[str, Any]:
    text = importlib_resources.files("inferaudit_analyzer.roi").joinpath("devices.json").read_text()
    return json.loads(text)


def match_device(name: str | None, table: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The devices.json row whose pattern matches a GPU model string or ``"cpu"``."""
    if not name:
        return None
    for row in (table or load_devices())["devices"]:
        if re.search(row["pattern"], name, flags=re.IGNORECASE):
            return row
    return None


def roofline_per_seq_share(device: dict[str, Any], bytes_per_param: float) -> float:
    """Share of a batch-1 decode step that grows with each extra sequence, by the roofline.

    One decode step reads every weight once (``P * bytes / BW``) and does ``2 P`` FLOPs per
    sequence (``2 P / F``); the step is the larger of the two, so adding a sequence adds
    ``2P/F`` over a batch-1 step of ``max(P bytes/BW, 2P/F)``. P cancels.
    """
    compute = 2.0 / float(device["flops_per_s"])
    memory = bytes_per_param / float(device["hbm_bytes_per_s"])
    return compute / max(compute, memory)


@dataclass(frozen=True)
class Fit:
    """A fitted curve plus everything the report says about how good and how assumed it is."""

    curve: ServiceCurve
    source: str  # "calibration" | "calibration+spans" | "spans" | "spans+roofline_prior"
    n_points: int
    batch_sizes_seen: tuple[int, ...]
    goodness: dict[str, float | None]
    anchor_scale: float | None = None
    span_goodness: dict[str, float | None] | None = None
    assumptions: tuple[str, ...] = ()
    residuals: tuple[dict[str, float], ...] = field(default=(), repr=False)
    idle_start_calls: int = 0  # measured idle-start calls behind curve.idle_factor
    # what the projections should be read with (e.g. a term the points cannot estimate)
    warnings: tuple[str, ...] = ()
    # the design() columns the fit estimated (the others were left out as unestimable): a
    # bootstrap refit estimates the same ones (fit_curve's ``columns``)
    columns: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        c = self.curve
        return {
            "source": self.source,
            "coefficients_ns": {"fixed_ns": c.fixed_ns,
                                "prefill_ns_per_token": c.prefill_ns_per_token,
                                "step_ns": c.step_ns, "step_ns_per_seq": c.step_ns_per_seq,
                                "ragged_step_ns": c.ragged_step_ns},
            "formula": ("call_ns = fixed_ns + prefill_ns_per_token * b * in_tokens + out_tokens "
                        "* (step_ns + step_ns_per_seq * b + ragged_step_ns * ragged); in/out = "
                        "longest in the batch, ragged = its rows' lengths differ (padded)"),
            "n_points": self.n_points,
            "batch_sizes_seen": list(self.batch_sizes_seen),
            "r2": self.goodness.get("r2"),
            "mape_ratio": self.goodness.get("mape_ratio"),
            "anchor_scale": self.anchor_scale,
            "span_r2": None if self.span_goodness is None else self.span_goodness.get("r2"),
            "span_mape_ratio": (None if self.span_goodness is None
                                else self.span_goodness.get("mape_ratio")),
            "idle_start_factor": c.idle_factor,
            "idle_start_calls": self.idle_start_calls,
            "noise": {"factors": len(c.noise),
                      "cv": float(np.std(c.noise)) if c.noise else None,
                      "block_calls": c.noise_block,
                      # how many consecutive calls the residuals stay correlated over (slow
                      # spells); reported, not replayed (docs/roi-model.md, service-time noise)
                      "correlation_calls": (correlation_block(np.log(np.asarray(c.noise)))
                                            if c.noise else None)},
            "assumptions": list(self.assumptions),
            "warnings": list(self.warnings),
        }


def _residuals(curve: ServiceCurve, pts: CallPoints, kind: str) -> list[dict[str, float]]:
    step = max(1, len(pts) // MAX_RESIDUALS_KEPT)
    out = []
    for i in range(0, len(pts), step):
        b, tin, tout = pts.batch[i], pts.in_tokens[i], pts.out_tokens[i]
        ragged = bool(pts.ragged[i]) if pts.ragged is not None else False
        out.append({"batch": float(b), "in_tokens": float(tin), "out_tokens": float(tout),
                    "ragged": ragged, "measured_ns": float(pts.duration_ns[i]),
                    "predicted_ns": curve.call_ns(int(b), tin, tout, ragged), "kind": kind})
    return out


MIN_IDLE_GROUP_CALLS = 10  # calls needed on each side (idle-start, back-to-back) to estimate


def idle_start_factor(pred_ns: np.ndarray, pts: CallPoints) -> tuple[float, int]:
    """How much slower a call that starts on an idle server runs than one that follows another
    call (measured / predicted, ratio of sums, idle-start over back-to-back), and how many
    idle-start calls it rests on. 1.0 when the spans cannot tell (no flags, < 10 calls a side).

    Why: on a shared host a model thread that just woke up runs measurably slower than one
    that has been running (the example: ~10-20 % on a loaded 2-core VM, the whole call, not a
    fixed delay). A sequential audit under load is mostly back-to-back calls; a batched server
    at lower utilisation starts most calls idle, so a curve anchored to the former would
    under-state the latter. The factor is measured on the audited spans, not assumed.
    """
    if pts.idle is None or not len(pts):
        return 1.0, 0
    idle = pts.idle
    n_idle, n_busy = int(idle.sum()), int((~idle).sum())
    if n_idle < MIN_IDLE_GROUP_CALLS or n_busy < MIN_IDLE_GROUP_CALLS:
        return 1.0, n_idle
    y = pts.duration_ns
    r_idle = y[idle].sum() / max(pred_ns[idle].sum(), 1.0)
    r_busy = y[~idle].sum() / max(pred_ns[~idle].sum(), 1.0)
    return float(np.clip(r_idle / r_busy, 0.5, 2.0)), n_idle


def _with_idle(curve: ServiceCurve, pts: CallPoints, given: float | None = None
               ) -> tuple[ServiceCurve, int]:
    """``curve`` carrying the idle-start factor (``given``, from a calibration sweep that
    measured it side by side, else estimated on the spans), its level re-set so the spans'
    total measured time is kept (the factor moves time from back-to-back to idle-start calls).
    """
    pred = _predict(curve, pts)
    if given is not None and given > 0:
        factor = float(np.clip(given, 0.5, 2.0))
        n_idle = 0 if pts.idle is None else int(pts.idle.sum())
    else:
        factor, n_idle = idle_start_factor(pred, pts)
    if factor == 1.0:
        return curve, n_idle
    if pts.idle is None or not pts.idle.any():
        return replace(curve, idle_factor=factor), n_idle
    weight = np.where(pts.idle, factor, 1.0)
    level = float(pts.duration_ns.sum() / max((pred * weight).sum(), 1.0))
    return replace(curve.scaled(level), idle_factor=factor), n_idle


def _local_pred(curve: ServiceCurve, pts: CallPoints) -> np.ndarray:
    """The spans' own best fit (same formula, same idle-start factor): what their noise is
    measured around. Residuals around the anchored sweep curve would also hold its shape error
    (e.g. short calls under-, long ones over-predicted), which is tied to a call's size, not
    random: reshuffled over calls as noise it widens the service-time spread and inflates the
    replayed tail (by ~30 % on the example)."""
    w = np.ones(len(pts)) if pts.idle is None else np.where(pts.idle, curve.idle_factor, 1.0)
    a = design(pts)
    return (a @ nnls(a, pts.duration_ns / w)) * w


def predict_calls(curve: ServiceCurve, pts: CallPoints) -> np.ndarray:
    """Predicted duration of each measured call, idle-start factor included."""
    pred = _predict(curve, pts)
    if pts.idle is not None and curve.idle_factor != 1.0:
        pred = pred * np.where(pts.idle, curve.idle_factor, 1.0)
    return pred


def curve_from_json(fit_json: dict[str, Any]) -> ServiceCurve:
    """The curve a report's ``roi.fit`` (:meth:`Fit.to_json`) describes: its coefficients and
    idle-start factor (the noise factors are not in the JSON).

    Raises:
        KeyError: a coefficient is missing.
    """
    c = fit_json["coefficients_ns"]
    return ServiceCurve(float(c["fixed_ns"]), float(c["prefill_ns_per_token"]),
                        float(c["step_ns"]), float(c["step_ns_per_seq"]),
                        float(c.get("ragged_step_ns") or 0.0),
                        idle_factor=float(fit_json.get("idle_start_factor") or 1.0))


def _curve_of(coef: np.ndarray) -> ServiceCurve:
    return ServiceCurve(*(float(max(0.0, v)) for v in coef))


def _predict(curve: ServiceCurve, pts: CallPoints) -> np.ndarray:
    return design(pts) @ np.array([curve.fixed_ns, curve.prefill_ns_per_token, curve.step_ns,
                                   curve.step_ns_per_seq, curve.ragged_step_ns])


def fit_curve(spans: CallPoints, *, calibration: CallPoints | None = None,
              max_batch: int = 8, device: dict[str, Any] | None = None,
              bytes_per_param: float = 2.0, keep_residuals: bool = True,
              idle_factor: float | None = None,
              columns: tuple[int, ...] | None = None) -> Fit:
    """Fit the curve (see the module docstring for which source wins). ``idle_factor``: the
    calibration sweep's measured idle-start factor (preferred to the spans' estimate, which
    is confounded with the host's drift: a loaded run's idle-start calls all come early).
    ``columns``: estimate exactly these (a point fit's ``Fit.columns``) instead of deciding
    which the points can estimate. A bootstrap replicate refits the point's terms: deciding
    again on each resample moved the decode time between terms from one replicate to the
    next (step_ns 0 and a 7 ms ragged step against 0.15), and the replays of those curves,
    not the data's uncertainty, made a 90 % interval of 107 ms - 16.6 s around 127 ms.

    Raises:
        ValueError: neither spans nor a calibration hold a usable point.
    """
    assumptions: list[str] = []
    if calibration is not None and len(calibration):
        calibration = _separable(calibration, _ALL_COLUMNS, assumptions)
        coef, lost, kept = _fit_estimable(design(calibration), calibration.duration_ns,
                                          _ALL_COLUMNS, columns)
        curve = _curve_of(coef)
        warnings = _unestimable_notes(lost, "sweep points", assumptions)
        good = goodness(_predict(curve, calibration), calibration.duration_ns)
        seen = tuple(sorted({int(b) for b in calibration.batch}))
        res = _residuals(curve, calibration, "calibration") if keep_residuals else []
        assumptions.append(
            f"service-time curve from a calibration sweep over batch sizes {list(seen)}")
        assumptions += _ragged_note(calibration, max_batch)
        if max_batch > max(seen):
            assumptions.append(f"batch sizes above {max(seen)} are extrapolated from the sweep")
        scale = None
        span_good = None
        source = "calibration"
        if len(spans):
            # ratio of sums, not a median: it keeps the measured total busy time, which is
            # what decides queueing (and so p95) in the replay
            scale = float(spans.duration_ns.sum() / max(_predict(curve, spans).sum(), 1.0))
            curve = curve.scaled(scale)
            source = "calibration+spans"
            assumptions.append(
                f"swept curve anchored to the measured calls by x{scale:.3f} (total measured / "
                "total swept-predicted time): the sweep's shape, the server's level")
            curve, n_idle = _with_idle(curve, spans, idle_factor)
            assumptions += _idle_note(curve, n_idle, idle_factor is not None)
            span_good = goodness(predict_calls(curve, spans), spans.duration_ns)
            curve = curve.with_noise(spans.duration_ns, _local_pred(curve, spans))
            if keep_residuals:
                res = _residuals(curve, replace(calibration, duration_ns=calibration.duration_ns
                                                * scale), "calibration")
                res += _residuals(curve, spans, "spans")
        if not curve.noise:
            curve = curve.with_noise(calibration.duration_ns, _predict(curve, calibration))
        return Fit(curve, source, len(calibration), seen, good, scale, span_good,
                   tuple(assumptions), tuple(res), n_idle if len(spans) else 0,
                   tuple(warnings), tuple(kept))
    if not len(spans):
        raise ValueError("no model call with a batch size and a duration to fit a curve to")
    seen = tuple(sorted({int(b) for b in spans.batch}))
    spans = _separable(spans, _ALL_COLUMNS if len(seen) >= 2 else _ONE_BATCH_COLUMNS,
                       assumptions)
    a = design(spans)
    usable = _ALL_COLUMNS if len(seen) >= 2 else _ONE_BATCH_COLUMNS
    if columns is not None and len(seen) < 2 and 3 in columns:
        # one batch size (a replicate of a multi-batch fit can draw one): the per-row step is
        # the step times a constant here, fitted as the step and split by the prior below
        columns = (*columns, 2)
    coef, lost, kept = _fit_estimable(a, spans.duration_ns, usable, columns)
    warnings = _unestimable_notes(lost, "measured calls", assumptions)
    if len(seen) >= 2:
        curve = _curve_of(coef)
        source = "spans"
        if max_batch > max(seen):
            assumptions.append(
                f"measured batch sizes reach {max(seen)} only; up to {max_batch} the fitted "
                "curve is an extrapolation")
    else:
        # b is constant: fit 1, b*in, out (the whole step at b0) and the ragged column, then
        # split the step by the prior.
        b0 = float(seen[0])
        dev = device or match_device("cpu")
        share = roofline_per_seq_share(dev, bytes_per_param) if dev else 0.1
        step, per_seq = split_step(float(coef[2]), share, b0)
        curve = ServiceCurve(float(coef[0]), float(coef[1]), step, per_seq, float(coef[4]))
        source = "spans+roofline_prior"
        assumptions.append(
            f"all measured calls have batch size {int(b0)}: the per-sequence share of a decode "
            f"step ({share:.3g}) is a roofline prior for {dev['device'] if dev else 'unknown'} "
            f"({bytes_per_param:g} bytes/param; {dev['source'] if dev else 'default 0.1'}), not "
            "a measurement; run `inferaudit calibrate` to pin it")
    assumptions += _ragged_note(spans, max_batch)
    curve, n_idle = _with_idle(curve, spans, idle_factor)
    assumptions += _idle_note(curve, n_idle, idle_factor is not None)
    pred = predict_calls(curve, spans)
    good = goodness(pred, spans.duration_ns)
    curve = curve.with_noise(spans.duration_ns, pred)
    res = _residuals(curve, spans, "spans") if keep_residuals else []
    return Fit(curve, source, len(spans), seen, good, None, None, tuple(assumptions), tuple(res),
               n_idle, tuple(warnings), tuple(kept))


_ALL_COLUMNS = [0, 1, 2, 3, 4]  # of design(): 1, b*in, out, out*b, out*ragged
_ONE_BATCH_COLUMNS = [0, 1, 2, 4]  # one batch size: out*b is out times a constant


# A token column whose coefficient the points cannot pin: its time would be set by the noise
# (or, at zero spread, by the solver's arbitrary split), so it is left to the columns it moves
# with. Decided by precision: the column's least-squares coefficient, beside the other columns,
# must stand MIN_COLUMN_T standard errors (from the residual variance and n) clear of zero. A
# small relative spread alone is no reason: 2000 calls whose prompts vary by 2.4 % pin a
# 20 us/token prefill within 1 %, and dropping it put 20 ms of prefill into fixed_ns (a batch
# of 8 then projected at 101 ms against 216).
MIN_COLUMN_T = 3.0
# Beyond the other columns, a spread under this share of a column's norm is collinearity to
# float precision: no standard error is meaningful there, the column is left out outright.
EXACT_COLLINEAR_SPREAD = 1e-6
# Under this relative spread around its mean a left-out column is called constant: its time
# went to fixed_ns (the wording of the assumption only).
CONSTANT_COLUMN_SPREAD = 0.05
# Order in which columns claim time they cannot be told apart by: the per-call constant first
# (no token-scaling intervention gets credit for it), then prefill before decode (quantisation
# only scales decode steps). The ragged column is left to _separable.
_ESTIMATE_ORDER = (0, 1, 2, 3)
_COLUMN_NAMES = {1: "prefill tokens (batch x input tokens)", 2: "output tokens (decode steps)",
                 3: "output tokens x batch size (per-sequence decode steps)"}


def _spread(col: np.ndarray, basis: np.ndarray) -> float:
    """Norm of ``col`` left after its least-squares projection on ``basis``, over its norm."""
    norm = float(np.linalg.norm(col))
    if norm == 0 or basis.shape[1] == 0:
        return 1.0 if norm else 0.0
    unit, _ = _unit_columns(basis)
    coef = np.linalg.lstsq(unit, col / norm, rcond=None)[0]
    return float(np.linalg.norm(col / norm - unit @ coef))


def _t_values(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|coefficient| / standard error of each column of an ordinary least-squares fit of ``y``
    on ``a`` (full column rank), with the residual variance on n - p degrees of freedom; inf
    where the fit is exact or there are no degrees of freedom to tell."""
    n, k = a.shape
    unit, _ = _unit_columns(a)
    q, r = np.linalg.qr(unit)
    coef = np.linalg.solve(r, q.T @ y)
    rss = float(np.sum((y - unit @ coef) ** 2))
    if n <= k or rss <= 0:
        return np.full(k, np.inf)
    r_inv = np.linalg.inv(r)
    se = np.sqrt(rss / (n - k) * np.sum(r_inv ** 2, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, np.abs(coef) / se, np.inf)


def _fit_estimable(a: np.ndarray, y: np.ndarray, columns: list[int],
                   fixed: tuple[int, ...] | None = None
                   ) -> tuple[np.ndarray, list[tuple[int, bool]], list[int]]:
    """NNLS on the columns of ``a`` (design()) among ``columns`` that the points can estimate;
    the others get 0, so their time goes to the columns they move with (fixed_ns first).
    ``fixed``: the columns to fit, decided before (a point fit's, for its bootstrap refits).

    A token column is left out when it is collinear with the columns before it to float
    precision, or, among the rest, when its coefficient is within ``MIN_COLUMN_T`` standard
    errors of zero (backward elimination, the least precise first, the fit redone each time).

    Returns the five coefficients, per column left out (column, whether it is constant, i.e.
    its time went to fixed_ns), and the columns fitted."""
    if fixed is not None:
        kept = [j for j in columns if j in fixed]
        coef = np.zeros(a.shape[1])
        coef[kept] = nnls(a[:, kept], y)
        return coef, [], kept
    kept: list[int] = []
    dropped: list[int] = []
    for j in _ESTIMATE_ORDER:
        if j not in columns:
            continue
        if j == 0 or not np.linalg.norm(a[:, j]) or _spread(a[:, j], a[:, kept]) >= \
                EXACT_COLLINEAR_SPREAD:
            kept.append(j)  # an all-zero column is kept: it has no time to apportion
        else:
            dropped.append(j)
    # The ragged column is not this function's to leave out: _separable decided on it before
    # (its flags are dropped where it is a mix of the other columns), so it is always fitted,
    # all-zero (no padded call: nnls gives it 0) or independent. It joins the basis the token
    # columns are tested against only where it is nonzero and not collinear with them to float
    # precision, because _t_values needs full column rank; that is a filter for the test, not a
    # decision to drop it, hence ``kept += ragged`` below and not ``+= in_test``.
    ragged = [j for j in columns if j not in _ESTIMATE_ORDER]
    in_test = [j for j in ragged if np.linalg.norm(a[:, j])
               and _spread(a[:, j], a[:, kept]) >= EXACT_COLLINEAR_SPREAD]
    while True:
        tested = [j for j in kept if j != 0 and np.linalg.norm(a[:, j])]
        if not tested:
            break
        fit_cols = [j for j in kept if np.linalg.norm(a[:, j])] + in_test
        t = dict(zip(fit_cols, _t_values(a[:, fit_cols], y), strict=True))
        worst = min(tested, key=lambda j: t[j])
        if t[worst] >= MIN_COLUMN_T:
            break
        kept.remove(worst)
        dropped.append(worst)
    kept += ragged
    coef = np.zeros(a.shape[1])
    coef[kept] = nnls(a[:, kept], y)
    lost = [(j, _absorbing(a, j, kept)) for j in sorted(dropped)]
    return coef, lost, sorted(kept)


def _absorbing(a: np.ndarray, j: int, kept: list[int]) -> int:
    """The fitted column that takes most of left-out column ``j``'s time: the largest positive
    term of its least-squares projection on the kept columns (scaled to unit norm; a negative
    term gives time back, it takes none); 0 (fixed_ns) for a column that is constant, where no
    token column is kept, or where no term is positive. Among the per-call and token columns
    only: the padded step is paid by padded calls alone, no home for a token term."""
    if _spread(a[:, j], a[:, [0]]) < CONSTANT_COLUMN_SPREAD:
        return 0
    cols = [k for k in kept if k in _ESTIMATE_ORDER and np.linalg.norm(a[:, k])]
    if not cols:
        return 0
    unit, _ = _unit_columns(a[:, cols])
    coef = np.linalg.lstsq(unit, a[:, j] / np.linalg.norm(a[:, j]), rcond=None)[0]
    best = int(np.argmax(coef))
    return cols[best] if coef[best] > 0 else 0


# Where a left-out column's time went (the term _absorbing names), and what that does to the
# projections: a per-call or per-step term that batching shares across the rows of a batch, or
# that token-scaling interventions do (or do not) scale.
_ABSORBED = {
    0: ("per-call time (fixed_ns)",
        "token-scaling interventions (quantisation, routing) get no credit for it, so they are "
        "projected low; batching shares it across the batch, so it may be projected high"),
    1: ("the prefill term (prefill_ns_per_token)",
        "it is scaled as prompt work: interventions that act on decode alone are projected "
        "low, those that act on prefill high"),
    2: ("the decode step (step_ns, per output token, the same at any batch size)",
        "a decode step is taken to cost no more with more rows in it, so batching may be "
        "projected high"),
    3: ("the per-row decode step (step_ns_per_seq)",
        "batching pays it per row, so batching may be projected low"),
}


def _unestimable_notes(lost: list[tuple[int, int]], what: str, assumptions: list[str]
                       ) -> list[str]:
    """An assumption per column the fit left out (appended to ``assumptions``) and the warning
    the report shows: the split of time between those terms is not measured, it is chosen.
    Each names the term that took the time (``lost``: column, absorbing column) and what that
    term's reading does to the projections."""
    if not lost:
        return []
    for j, to in lost:
        target, effect = _ABSORBED[to]
        assumptions.append(
            f"the {what}' {_COLUMN_NAMES[j]} do not vary enough for their cost to stand out "
            f"of the noise (coefficient under {MIN_COLUMN_T:g} standard errors beside the other "
            f"terms), so the time they cost cannot be told apart from {target}: it is fitted "
            f"there, not measured, and {effect}")
    parts = [f"the time of {_COLUMN_NAMES[j]} is kept mostly in {_ABSORBED[to][0]}: "
             f"{_ABSORBED[to][1]}" for j, to in lost]
    return [f"the {what} do not vary enough for the curve to tell what each term costs; "
            + "; ".join(parts) + "; a calibration sweep over lengths and batch sizes "
            "(`inferaudit calibrate`) measures it"]


def split_step(step_total: float, share: float, b0: float) -> tuple[float, float]:
    """(step_ns, step_ns_per_seq) of a decode step measured as ``step_total`` ns per output
    token at batch size ``b0``, where ``share`` is the per-sequence share of a *batch-1* step
    (roofline_per_seq_share): ``step_total = step1 * (1 + (b0 - 1) * share)``."""
    step1 = max(step_total, 0.0) / (1.0 + (max(b0, 1.0) - 1.0) * share)
    return (1.0 - share) * step1, share * step1


def _rank(a: np.ndarray) -> int:
    return int(np.linalg.matrix_rank(_unit_columns(a)[0]))


def _separable(pts: CallPoints, columns: list[int], assumptions: list[str]) -> CallPoints:
    """``pts``, without its ragged flags where the ragged column is a mix of the others (every
    multi-row call padded and no one-row call, or one batch size, all padded): the solver would
    split the step between the two at random. The padded extra then stays in ``step_ns``, and
    the assumptions say so."""
    if pts.ragged is None or not pts.ragged.any():
        return pts
    a = design(pts)
    if _rank(a[:, columns]) > _rank(a[:, [c for c in columns if c != 4]]):
        return pts
    assumptions.append(
        "every measured multi-row call was padded and no one-row or equal-length call sets it "
        "apart, so the extra cost of a padded decode step cannot be separated from the step "
        "itself: it is kept in step_ns (one-row calls may be over-stated)")
    return replace(pts, ragged=None)


def _ragged_note(pts: CallPoints, max_batch: int) -> list[str]:
    """Where the calls say none of them was padded, the ragged-step cost is unmeasured (left at
    0), which is not the same as zero; silent where raggedness was not recorded at all."""
    if max_batch <= 1 or pts.ragged is None or pts.ragged.any():
        return []
    return ["no measured call had rows of unequal lengths, so the extra cost of a padded "
            "(masked) decode step is not measured and left at 0: projected padded batches may "
            "be under-stated; a calibration sweep drawn from the workload's lengths pins it"]


def _idle_note(curve: ServiceCurve, n_idle: int, from_sweep: bool) -> list[str]:
    if curve.idle_factor == 1.0:
        return []
    where = ("measured by the calibration sweep, idle-start and back-to-back calls side by side"
             if from_sweep else f"estimated on {n_idle} idle-start calls of the audited spans")
    return [f"a call that starts on an idle server runs x{curve.idle_factor:.3f} as long as one "
            f"that follows another call ({where}); the replay applies it to every call that "
            "starts on an idle replica"]


def is_ragged(rows: Any) -> bool:
    """Rows of (prompt tokens, ...) whose prompts differ in length: the batch runs left-padded,
    with a mask."""
    return len({r[0] for r in rows if isinstance(r, (list, tuple)) and r}) > 1


def _point_ragged(point: dict[str, Any]) -> bool:
    """A sweep point's ``ragged`` flag; older files without it: from its drawn ``rows``."""
    if "ragged" in point:
        return bool(point["ragged"])
    rows = point.get("rows")
    return isinstance(rows, list) and is_ragged(rows)


def calibration_points(doc: dict[str, Any]) -> CallPoints:
    """Points of a calibration JSON (``inferaudit calibrate`` output, docs/roi-model.md).

    Raises:
        ValueError: the document is not a calibration (names the missing key).
    """
    pts = doc.get("points")
    if not isinstance(pts, list) or not pts:
        raise ValueError("calibration file has no 'points' list")
    try:
        return CallPoints.of([p["batch"] for p in pts], [p["in_tokens"] for p in pts],
                             [p["out_tokens"] for p in pts], [p["duration_ns"] for p in pts],
                             ragged=[_point_ragged(p) for p in pts])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"calibration point lacks {exc}") from exc
