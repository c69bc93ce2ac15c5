"""Review fix to the bootstrap: model calls whose residuals are correlated in time are resampled
in blocks, so the curve's interval keeps its nominal coverage."""

from __future__ import annotations

import numpy as np
import pytest

from inferaudit_analyzer.roi import bootstrap as bs
from inferaudit_analyzer.roi.fit import CallPoints, fit_curve, predict_calls
from inferaudit_analyzer.roi.simulate import ServiceCurve, Workload

TRUE = ServiceCurve(fixed_ns=2e6, prefill_ns_per_token=5e3, step_ns=1e6, step_ns_per_seq=2e5)
TINY_WORK = Workload.of(np.arange(3.0), np.ones(3), np.ones(3))  # < 4 requests: kept as is


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float = 1.0) -> np.ndarray:
    z = np.empty(n)
    z[0] = rng.standard_normal() * sd
    e = rng.standard_normal(n) * sd * np.sqrt(1 - phi ** 2)
    for i in range(1, n):
        z[i] = phi * z[i - 1] + e[i]
    return z


def _calls(seed: int, n: int = 240, phi: float = 0.6, sd: float = 0.15
           ) -> tuple[CallPoints, np.ndarray]:
    """Calls of TRUE whose log residuals are AR(1) in time, mean factor 1 (true level 1)."""
    rng = np.random.default_rng(seed)
    b, tin, tout = rng.choice([1, 2, 4], n), rng.integers(8, 200, n), rng.integers(2, 60, n)
    pred = np.array([TRUE.call_ns(int(x), float(i), float(o))
                     for x, i, o in zip(b, tin, tout, strict=True)])
    noise = np.exp(_ar1(rng, n, phi, sd) - sd ** 2 / 2)
    return CallPoints.of(b, tin, tout, pred * noise), pred


def _refit(c: CallPoints, cal: CallPoints | None):
    return fit_curve(c, calibration=cal, max_batch=4, keep_residuals=False)


def test_block_length_follows_the_correlation() -> None:
    rng = np.random.default_rng(0)
    assert bs.block_length(rng.standard_normal(1000)) <= 2
    # AR(1), phi 0.5: the optimal length is (3n/2)^(1/3) (2 phi / (1 - phi^2))^(2/3) ~ 14
    got = [bs.block_length(_ar1(rng, 1000, 0.5)) for _ in range(10)]
    assert 9 <= np.median(got) <= 18
    assert bs.block_length(np.ones(50)) == 1 and bs.block_length(np.arange(5.0)) == 1


def test_correlated_calls_get_a_wider_interval_that_covers_the_true_level() -> None:
    m_sets, b = 40, 40
    cover = {"block": 0, "iid": 0}
    width = {"block": [], "iid": []}
    blocks = []
    for m in range(m_sets):
        calls, pred = _calls(m)

        def level(fit, calls=calls, pred=pred) -> float:
            return float(predict_calls(fit.curve, calls).sum() / pred.sum())

        point = level(_refit(calls, None))
        res = bs.resamples(calls, None, TINY_WORK, np.zeros(3, bool), _refit, b, seed=m)
        blocks.append(getattr(res[0], "call_block", 1))
        # the reference: the same refit, calls resampled one at a time
        rng = np.random.default_rng(m)
        iid = [level(_refit(calls.take(np.sort(rng.integers(0, len(calls), len(calls)))),
                            None)) for _ in range(b)]
        for kind, values in (("block", [level(r.curve_fit) for r in res]), ("iid", iid)):
            iv = bs.interval(values, point)
            cover[kind] += iv["low"] <= 1.0 <= iv["high"]
            width[kind].append(iv["high"] - iv["low"])
    assert np.median(blocks) > 3
    assert np.mean(width["block"]) > 1.3 * np.mean(width["iid"])
    # nominal 0.9; at n = 240, phi = 0.6 and 40 replicates the blocks cover ~0.78 (200 sets;
    # 0.82 with 200 replicates), one call at a time ~0.6
    assert cover["block"] / m_sets >= 0.7
    assert cover["iid"] + 4 <= cover["block"]


def test_uncorrelated_calls_are_still_resampled_one_at_a_time() -> None:
    rng = np.random.default_rng(7)
    n = 240
    b, tin, tout = rng.choice([1, 2, 4], n), rng.integers(8, 200, n), rng.integers(2, 60, n)
    y = [TRUE.call_ns(int(x), float(i), float(o)) * f for x, i, o, f in
         zip(b, tin, tout, rng.lognormal(0, 0.1, n), strict=True)]
    calls = CallPoints.of(b, tin, tout, y)
    res = bs.resamples(calls, None, TINY_WORK, np.zeros(3, bool), _refit, 3, seed=0)
    assert res[0].call_block <= 2
    assert "one call at a time" in bs.method(1)
    assert "blocks of 7" in bs.method(7)


@pytest.mark.parametrize("n", [0, 5])
def test_few_calls_need_no_block(n) -> None:
    calls, _ = _calls(0, n=max(n, 1))
    calls = calls.take(np.arange(n))
    if n == 0:
        cal, _ = _calls(1, n=30)
        res = bs.resamples(calls, cal, TINY_WORK, np.zeros(3, bool), _refit, 2, seed=0)
    else:
        res = bs.resamples(calls, None, TINY_WORK, np.zeros(3, bool), _refit, 2, seed=0)
    assert all(r.call_block == 1 for r in res)


def test_a_p95_that_moves_with_the_baselines_keeps_only_its_own_spread() -> None:
    # Near saturation a resampled workload moves the scenario's p95 and the baseline's together
    # (and both well below the point replay's): the interval then held the traffic's spread
    # around a biased median, and a routing step that only removes work reached above today.
    rng = np.random.default_rng(0)
    base = rng.uniform(120, 420, 200)  # the replicates' baseline p95: traffic level
    own = rng.normal(0, 5, 200)
    scen = 0.7 * base + own
    adjusted = np.asarray(bs.control_adjusted(list(scen), list(base), 443.0))
    assert np.std(adjusted) == pytest.approx(np.std(own), rel=0.1)
    assert np.median(adjusted) == pytest.approx(0.7 * 443.0, abs=3)
    iv = bs.interval(list(adjusted), 0.7 * 443.0)
    assert iv["high"] < 443.0 and iv["high"] - iv["low"] < 25


def test_a_p95_that_does_not_follow_the_baselines_is_left_as_it_is() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(120, 420, 200)
    scen = rng.normal(120, 8, 200)  # a batched server: its tail is its own
    adjusted = np.asarray(bs.control_adjusted(list(scen), list(base), 443.0))
    assert np.quantile(adjusted, 0.95) - np.quantile(adjusted, 0.05) == pytest.approx(
        np.quantile(scen, 0.95) - np.quantile(scen, 0.05), rel=0.1)


@pytest.mark.parametrize(("values", "control", "point"), [
    ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], None),  # no point to adjust to
    ([1.0, 2.0], [1.0, 2.0], 5.0),  # too few pairs for a slope
    ([1.0, 2.0, 3.0], [4.0, 4.0, 4.0], 5.0),  # a control that does not vary
])  # fmt: skip
def test_control_adjusted_leaves_values_it_cannot_adjust(values, control, point) -> None:
    assert bs.control_adjusted(values, control, point) == values


def test_a_missing_replicate_stays_missing() -> None:
    out = bs.control_adjusted([1.0, None, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], 2.0)
    assert out[1] is None and all(isinstance(x, float) for x in (out[0], out[2], out[3]))


def test_lists_of_different_lengths_are_left_as_they_are() -> None:
    assert bs.control_adjusted([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0], 2.0) == [1.0, 2.0, 3.0, 4.0]
