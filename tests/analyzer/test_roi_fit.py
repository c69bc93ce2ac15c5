"""The service-curve fit: NNLS against known curves, the roofline prior, calibration anchoring."""

from __future__ import annotations

import numpy as np
import pytest

from inferaudit_analyzer.roi.fit import (
    CallPoints,
    calibration_points,
    curve_from_json,
    fit_curve,
    match_device,
    nnls,
    predict_calls,
    roofline_per_seq_share,
)
from inferaudit_analyzer.roi.simulate import ServiceCurve

TRUE = ServiceCurve(fixed_ns=2e6, prefill_ns_per_token=5e3, step_ns=1e6, step_ns_per_seq=2e5)


def _points(curve: ServiceCurve, batches, n: int = 200, noise: float = 0.0, seed: int = 0
            ) -> CallPoints:
    rng = np.random.default_rng(seed)
    b = rng.choice(batches, n)
    tin = rng.integers(8, 200, n)
    tout = rng.integers(2, 60, n)
    y = np.array([curve.call_ns(int(bb), float(i), float(o))
                  for bb, i, o in zip(b, tin, tout, strict=True)])
    y = y * (1 + noise * rng.standard_normal(n))
    return CallPoints.of(b, tin, tout, y)


def test_nnls_recovers_nonnegative_solution_and_clamps_negative_ones() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((50, 3))
    x_true = np.array([2.0, 0.0, 5.0])
    assert np.allclose(nnls(a, a @ x_true), x_true, atol=1e-8)
    # the unconstrained optimum has a negative coefficient; NNLS must not
    y = a @ np.array([1.0, -3.0, 2.0])
    x = nnls(a, y)
    assert (x >= 0).all()
    unconstrained = np.linalg.lstsq(a, y, rcond=None)[0]
    assert np.sum((a @ x - y) ** 2) >= np.sum((a @ unconstrained - y) ** 2) - 1e-9


def test_fit_from_spans_with_several_batch_sizes_recovers_the_curve() -> None:
    fit = fit_curve(_points(TRUE, [1, 2, 4, 8]), max_batch=8)
    c = fit.curve
    assert fit.source == "spans"
    for got, want in zip((c.fixed_ns, c.prefill_ns_per_token, c.step_ns, c.step_ns_per_seq),
                         (TRUE.fixed_ns, TRUE.prefill_ns_per_token, TRUE.step_ns,
                          TRUE.step_ns_per_seq), strict=True):
        assert got == pytest.approx(want, rel=1e-6)
    assert fit.goodness["r2"] == pytest.approx(1.0)
    assert fit.goodness["mape_ratio"] < 1e-9
    assert not fit.assumptions  # measured up to the max batch asked for


def test_extrapolation_beyond_measured_batches_is_stated() -> None:
    fit = fit_curve(_points(TRUE, [1, 2]), max_batch=8)
    assert any("extrapolation" in a for a in fit.assumptions)


def test_single_batch_size_falls_back_to_roofline_prior() -> None:
    h100 = match_device("NVIDIA H100 80GB HBM3")
    assert h100 is not None and h100["device"] == "H100"
    fit = fit_curve(_points(TRUE, [1], noise=0.01), device=h100)
    assert fit.source == "spans+roofline_prior"
    assert any("roofline prior" in a for a in fit.assumptions)
    share = roofline_per_seq_share(h100, 2.0)
    # a memory-bound decode step: an extra sequence costs a tiny share of the step
    assert 0 < share < 0.01
    c = fit.curve
    b1_step = TRUE.step_ns + TRUE.step_ns_per_seq
    assert c.step_ns + c.step_ns_per_seq == pytest.approx(b1_step, rel=0.05)
    assert c.step_ns_per_seq == pytest.approx(b1_step * share, rel=0.06)


def test_calibration_shape_is_anchored_to_the_server_level() -> None:
    cal = _points(TRUE, [1, 2, 4, 8], n=40)
    spans = _points(TRUE.scaled(1.5), [1], n=60, seed=3)  # the server is 1.5x slower
    fit = fit_curve(spans, calibration=cal, max_batch=8)
    assert fit.source == "calibration+spans"
    assert fit.anchor_scale == pytest.approx(1.5, rel=1e-6)
    assert fit.curve.step_ns_per_seq == pytest.approx(TRUE.step_ns_per_seq * 1.5, rel=1e-6)
    assert fit.span_goodness["mape_ratio"] < 1e-6
    kinds = {r["kind"] for r in fit.residuals}
    assert kinds == {"calibration", "spans"}


def test_no_points_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no model call"):
        fit_curve(CallPoints.of([], [], [], []))
    with pytest.raises(ValueError, match="no 'points'"):
        calibration_points({"schema": "x"})
    with pytest.raises(ValueError, match="lacks"):
        calibration_points({"points": [{"batch": 1}]})


def _with_idle_flags(pts: CallPoints, factor: float, share: float, seed: int = 5
                     ) -> CallPoints:
    """``pts`` where a ``share`` of the calls started idle and ran ``factor`` times as long."""
    idle = np.random.default_rng(seed).random(len(pts)) < share
    return CallPoints.of(pts.batch, pts.in_tokens, pts.out_tokens,
                         pts.duration_ns * np.where(idle, factor, 1.0), idle)


def test_idle_start_factor_is_measured_on_the_spans() -> None:
    spans = _with_idle_flags(_points(TRUE, [1, 2, 4, 8]), 1.25, 0.3)
    fit = fit_curve(spans, max_batch=8)
    assert fit.curve.idle_factor == pytest.approx(1.25, rel=0.02)
    assert fit.idle_start_calls == int(spans.idle.sum())
    assert any("idle server" in a for a in fit.assumptions)
    # the replayed busy time of the measured calls is the measured one
    pred = np.array([fit.curve.call_ns(int(b), i, o) for b, i, o in
                     zip(spans.batch, spans.in_tokens, spans.out_tokens, strict=True)])
    pred *= np.where(spans.idle, fit.curve.idle_factor, 1.0)
    assert pred.sum() == pytest.approx(spans.duration_ns.sum(), rel=1e-9)


def test_too_few_idle_starts_leave_the_factor_at_one() -> None:
    spans = _points(TRUE, [1, 2, 4, 8], n=60)
    flags = np.zeros(len(spans), dtype=bool)
    flags[:3] = True
    fit = fit_curve(CallPoints.of(spans.batch, spans.in_tokens, spans.out_tokens,
                                  spans.duration_ns * np.where(flags, 2.0, 1.0), flags))
    assert fit.curve.idle_factor == 1.0


def test_a_swept_idle_factor_wins_and_keeps_the_measured_level() -> None:
    cal = _points(TRUE, [1, 2, 4, 8], n=40)
    spans = _with_idle_flags(_points(TRUE, [1], n=120, seed=3), 1.4, 0.25)
    fit = fit_curve(spans, calibration=cal, max_batch=8, idle_factor=1.1)
    assert fit.curve.idle_factor == pytest.approx(1.1)
    assert any("calibration sweep" in a for a in fit.assumptions if "idle server" in a)
    pred = np.array([fit.curve.call_ns(1, i, o) for i, o in
                     zip(spans.in_tokens, spans.out_tokens, strict=True)])
    pred *= np.where(spans.idle, 1.1, 1.0)
    assert pred.sum() == pytest.approx(spans.duration_ns.sum(), rel=1e-9)


def test_noise_is_measured_around_the_spans_own_fit_not_the_sweeps_shape() -> None:
    # the sweep's shape is off (no fixed cost) but the spans follow TRUE exactly: their spread
    # around the anchored sweep curve is shape error, not noise, and must not become noise
    wrong = ServiceCurve(fixed_ns=0.0, prefill_ns_per_token=9e3, step_ns=1.3e6,
                         step_ns_per_seq=2e5)
    fit = fit_curve(_points(TRUE, [1], n=150, seed=7), calibration=_points(wrong, [1, 4, 8]),
                    max_batch=8)
    assert fit.span_goodness["mape_ratio"] > 0.01  # the anchored shape does not fit exactly
    assert np.std(fit.curve.noise) < 1e-6  # but the calls themselves were noise-free
    noisy = fit_curve(_points(TRUE, [1], n=150, noise=0.2, seed=7),
                      calibration=_points(wrong, [1, 4, 8]), max_batch=8)
    assert 0.1 < np.std(noisy.curve.noise) < 0.3


PADDED = ServiceCurve(fixed_ns=2e6, prefill_ns_per_token=5e3, step_ns=1e6, step_ns_per_seq=2e5,
                      ragged_step_ns=1.5e5)


def _ragged_points(curve: ServiceCurve, batches, n: int = 200, seed: int = 0) -> CallPoints:
    """Calls where about 2 in 3 multi-row batches had unequal prompt lengths."""
    rng = np.random.default_rng(seed)
    b = rng.choice(batches, n)
    tin = rng.integers(8, 200, n)
    tout = rng.integers(2, 60, n)
    ragged = (b > 1) & (rng.random(n) < 0.67)
    y = np.array([curve.call_ns(int(bb), float(i), float(o), bool(r))
                  for bb, i, o, r in zip(b, tin, tout, ragged, strict=True)])
    return CallPoints.of(b, tin, tout, y, ragged=ragged)


def test_the_padded_step_cost_is_fitted_from_ragged_calls() -> None:
    fit = fit_curve(_ragged_points(PADDED, [1, 2, 4, 8]), max_batch=8)
    assert fit.curve.ragged_step_ns == pytest.approx(PADDED.ragged_step_ns, rel=1e-6)
    assert fit.curve.step_ns_per_seq == pytest.approx(PADDED.step_ns_per_seq, rel=1e-6)
    assert fit.to_json()["coefficients_ns"]["ragged_step_ns"] == pytest.approx(1.5e5)
    assert curve_from_json(fit.to_json()).ragged_step_ns == pytest.approx(1.5e5)
    assert not any("unequal lengths" in a for a in fit.assumptions)


def test_anchoring_unbatched_spans_keeps_padded_calls_right() -> None:
    # The sweep holds padded batches, the audited server ran one request at a time 20 % slower
    # than the sweep: padded calls of the batched server are predicted at that level.
    cal = _ragged_points(PADDED, [1, 2, 4, 8], n=60, seed=1)
    slow = PADDED.scaled(1.2)
    spans = _ragged_points(slow, [1], n=150, seed=2)
    fit = fit_curve(spans, calibration=cal, max_batch=8)
    batched = _ragged_points(slow, [2, 4, 8], n=100, seed=3)
    pred = predict_calls(fit.curve, batched)
    assert pred.sum() / batched.duration_ns.sum() == pytest.approx(1.0, rel=1e-6)
    # without the ragged column the same anchoring under-states them
    flat = CallPoints.of(cal.batch, cal.in_tokens, cal.out_tokens, cal.duration_ns)
    unpadded = fit_curve(spans, calibration=flat, max_batch=8)
    assert predict_calls(unpadded.curve, batched).sum() < 0.99 * batched.duration_ns.sum()


def test_unmeasured_padding_cost_is_an_assumption() -> None:
    spans = _ragged_points(PADDED, [1], n=80)  # one request at a time: never padded
    fit = fit_curve(spans, max_batch=8)
    assert fit.curve.ragged_step_ns == 0.0
    assert any("unequal lengths" in a for a in fit.assumptions)


def test_calibration_points_read_raggedness_from_the_flag_or_the_rows() -> None:
    pts = calibration_points({"points": [
        {"batch": 2, "in_tokens": 9, "out_tokens": 4, "duration_ns": 10, "ragged": True},
        {"batch": 2, "in_tokens": 9, "out_tokens": 4, "duration_ns": 10,
         "rows": [[9, 4], [5, 2]]},  # a file written before the flag existed
        {"batch": 2, "in_tokens": 9, "out_tokens": 4, "duration_ns": 10,
         "rows": [[9, 4], [9, 2]]},
        {"batch": 1, "in_tokens": 9, "out_tokens": 4, "duration_ns": 10},
    ]})
    assert pts.ragged.tolist() == [True, True, False, False]


@pytest.mark.parametrize("batches", [[4], [2, 4]])
def test_an_inseparable_padded_cost_stays_in_the_step(batches) -> None:
    # Every call padded and none of one row: the ragged column copies the step's; the solver
    # must not split the step between them (that under-stated one-row calls by ~30 %).
    rng = np.random.default_rng(4)
    b = rng.choice(batches, 200)
    tin, tout = rng.integers(8, 200, 200), rng.integers(2, 60, 200)
    y = np.array([PADDED.call_ns(int(bb), float(i), float(o), True)
                  for bb, i, o in zip(b, tin, tout, strict=True)])
    padded = fit_curve(CallPoints.of(b, tin, tout, y, ragged=np.ones(200, bool)), max_batch=8)
    unflagged = fit_curve(CallPoints.of(b, tin, tout, y), max_batch=8)
    assert padded.curve.ragged_step_ns == 0.0
    assert padded.curve.call_ns(1, 50, 30) == pytest.approx(unflagged.curve.call_ns(1, 50, 30))
    assert any("cannot be separated" in a for a in padded.assumptions)
    # the same shape with some one-row calls does separate it
    mixed = _ragged_points(PADDED, [1, *batches])
    assert fit_curve(mixed, max_batch=8).curve.ragged_step_ns == pytest.approx(1.5e5, rel=1e-6)
