"""The intervention registry: user values stay under their ceiling, defaults are
labelled assumed, a measured zero stays zero."""

from __future__ import annotations

import pytest

from inferaudit_analyzer.roi.interventions import Knobs, applicable
from inferaudit_analyzer.roi.project import Scenario


def _plan(findings: list[dict], knobs: Knobs = Knobs(), ctx: dict | None = None):
    plans = applicable(findings, knobs, ctx or {})
    assert len(plans) == 1
    return plans[0]


def _f(fid: str, **evidence) -> dict:
    return {"id": fid, "evidence": evidence}


def test_a_given_graph_speedup_is_capped_at_the_measured_idle_share() -> None:
    plan = _plan([_f("kernel_launch_overhead", launch_idle_ratio=0.1)], Knobs(graph_speedup=5.0))
    ceiling = 1.0 / 0.9
    assert plan.params["graph_speedup"] == pytest.approx(ceiling)
    assert plan.apply(Scenario()).overhead_factor == pytest.approx(0.9)
    assert "capped" in plan.assumptions[0] and "measured" in plan.assumptions[0]
    # under the ceiling the given value is what is projected
    plan = _plan([_f("kernel_launch_overhead", launch_idle_ratio=0.1)], Knobs(graph_speedup=1.05))
    assert plan.params["graph_speedup"] == pytest.approx(1.05)


def test_an_unmeasured_launch_idle_share_is_called_assumed() -> None:
    plan = _plan([_f("short_kernels")])
    text = plan.assumptions[0]
    assert "assumed" in text and "measured launch-idle" not in text
    assert plan.params["launch_idle_ratio_measured"] is False
    measured = _plan([_f("kernel_launch_overhead", launch_idle_ratio=0.2)])
    assert "the measured launch-idle share (0.200)" in measured.assumptions[0]
    assert measured.params["launch_idle_ratio_measured"] is True


def test_an_unmeasured_copy_share_is_called_assumed_and_a_measured_zero_stays_zero() -> None:
    plan = _plan([_f("pageable_copies")])
    assert "assumed" in plan.assumptions[0] and "the measured copy" not in plan.assumptions[0]
    assert plan.params["copy_time_ratio_measured"] is False
    zero = _plan([_f("pageable_copies")], ctx={"copy_time_ratio": 0.0})
    assert zero.params["copy_time_ratio"] == 0.0
    assert zero.apply(Scenario()).all_factor == 1.0  # nothing measured to hide, nothing saved
    assert "the measured copy time (0.000" in zero.assumptions[0]


def test_a_given_quantization_speedup_is_not_called_assumed() -> None:
    given = _plan([_f("dram_bound_decode")], Knobs(quantization_speedup=1.8))
    assert "given" in given.assumptions[0] and "assumed" not in given.assumptions[0]
    assert "assumed" in _plan([_f("dram_bound_decode")]).assumptions[0]
