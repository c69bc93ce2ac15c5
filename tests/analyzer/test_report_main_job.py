"""The main job's projected-vs-measured step (pure functions; the job itself runs in
``python -m examples.main_job``, too slow for the unit suite)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
main_job = pytest.importorskip("examples.main_job")


def _item(intervention: str, applicable: bool, p95: float = 100.0) -> dict:
    return {"intervention": intervention, "applicable_in_example": applicable,
            "params": {"max_batch": 8}, "interval": {},
            "projected": {"cost_per_request_usd": 2.0, "busy_cost_per_request_usd": 1.0,
                          "latency_ms": {"p95": p95}}}


def test_top_applicable_skips_items_the_example_cannot_apply() -> None:
    report = {"roadmap": [_item("prompt_cache", False), _item("continuous_batching", True)]}
    assert main_job.top_applicable(report)["intervention"] == "continuous_batching"
    assert main_job.top_applicable({"roadmap": [_item("prompt_cache", False)]}) is None


def test_compare_reports_the_relative_difference_against_15_percent() -> None:
    measured = {"cost_per_request_usd": 2.2, "busy_cost_per_request_usd": 1.5, "p95_ms": 90.0}
    baseline = {"cost_per_request_usd": 3.0, "busy_cost_per_request_usd": 2.0, "p95_ms": 400.0}
    cmp = main_job.compare(_item("continuous_batching", True), measured, baseline)
    diffs = [round(r["diff_ratio"], 6) for r in cmp["rows"]]
    assert diffs == [0.1, 0.5, -0.1]
    # the bill row is shown, not checked: a fixed-schedule replay makes both windows the
    # arrival span whatever batching does
    assert [r["within_target"] for r in cmp["rows"]] == [None, False, True]
    assert [r["metric"] for r in cmp["rows"]] == [
        "cost per request (bill, USD)", "cost per request (busy floor, USD)", "p95 latency (ms)"]
    lines = main_job.comparison_lines(cmp)
    assert any("+10.0%" in line and "n/a (fixed-schedule" in line for line in lines)
    assert any("+50.0%" in line and "NO" in line for line in lines)


def test_measured_p95_interval_brackets_the_p95_and_widens_with_fewer_requests() -> None:
    import numpy as np

    from examples.audit import p95_interval_ms

    rng = np.random.default_rng(0)
    lat = rng.lognormal(np.log(200e6), 0.5, 2000)
    p95 = np.quantile(lat, 0.95) / 1e6
    big = p95_interval_ms(lat)
    small = p95_interval_ms(lat[:200])
    assert big["low"] <= p95 <= big["high"]
    assert small["high"] - small["low"] > big["high"] - big["low"]
    assert p95_interval_ms(lat[:3])["low"] is None


def test_comparison_lines_show_the_measured_interval() -> None:
    measured = {"cost_per_request_usd": 2.0, "busy_cost_per_request_usd": 1.0, "p95_ms": 110.0}
    cmp = main_job.compare(_item("continuous_batching", True), measured, measured)
    cmp["rows"][2]["measured_interval"] = {"low": 95.0, "high": 130.0, "replicates": 400}
    lines = main_job.comparison_lines(cmp)
    assert any("measured p95 90% interval" in line and "95-130" in line for line in lines)


def test_host_speed_compares_one_request_calls_over_the_same_curve() -> None:
    import numpy as np

    from examples.audit import MIN_SPEED_CALLS, host_speed_ratio
    from inferaudit_analyzer.roi.fit import CallPoints

    fit = {"coefficients_ns": {"fixed_ns": 1e6, "prefill_ns_per_token": 1e4, "step_ns": 2e6,
                               "step_ns_per_seq": 1e5, "ragged_step_ns": 3e5}}

    def calls(batches, level):
        rng = np.random.default_rng(len(batches))
        b = np.asarray(batches, dtype=float)
        tin, tout = rng.integers(5, 90, b.size), rng.integers(2, 40, b.size)
        ragged = b > 1
        y = [level * (1e6 + 1e4 * bb * i + o * (2e6 + 1e5 * bb + 3e5 * r))
             for bb, i, o, r in zip(b, tin, tout, ragged, strict=True)]
        return CallPoints.of(b, tin, tout, y, ragged=ragged)

    seq = calls([1] * 50, 1.1)  # the audited run: 10 % over the curve
    # the batched run's single calls ran 20 % slower than the audited ones; its batches of
    # several were off the curve by another factor, which must not leak into the speed
    bat = calls([1] * 30 + [2, 3, 4] * 10, 1.32)
    bat = CallPoints.of(bat.batch, bat.in_tokens, bat.out_tokens,
                        bat.duration_ns * np.where(bat.batch > 1, 1.5, 1.0), ragged=bat.ragged)
    speed = host_speed_ratio(seq, bat, fit)
    assert speed["ratio"] == pytest.approx(1.2)
    assert speed["audited_calls"] == 50 and speed["batched_calls"] == 30
    few = calls([1] * (MIN_SPEED_CALLS - 1) + [2] * 40, 1.0)
    assert host_speed_ratio(seq, few, fit) is None
