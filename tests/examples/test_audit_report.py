"""The main job's audit pieces: the probe's service-time fit, the projection check's rows, the
report's ``workload`` section and how the renderers show them (no serving: fast)."""

from __future__ import annotations

from html import unescape
from types import SimpleNamespace

import numpy as np
import pytest

from examples.audit import (
    BILL_FIXED_SCHEDULE_NOTE,
    SPEED_MATCHED_NOTE,
    applied_title,
    compare,
    comparison_lines,
    speed_row,
    workload_section,
)
from examples.loadgen import LengthScale, ReplayPlan, build_plan, fit_service_time
from examples.scenario import achieved_utilisation, summary_lines
from examples.workload import Workload, WorkloadRequest, trace_window
from inferaudit_analyzer.report import _fmt
from inferaudit_analyzer.report.html import render_html
from inferaudit_analyzer.report.markdown import render_markdown


def _true_s(p: int, o: int) -> float:
    return 0.004 + 0.0001 * p + 0.003 * o


def test_probe_fit_predicts_the_whole_mix_not_the_probes_mean() -> None:
    """Probes with short outputs would under-state the plan's mean service time."""
    probed = [(8 + 4 * i, 2 + i % 4) for i in range(16)]
    everything = [(10 + 3 * i, 4 + i % 20) for i in range(200)]
    mean_s, info = fit_service_time(probed, [_true_s(p, o) for p, o in probed], everything)
    want = float(np.mean([_true_s(p, o) for p, o in everything]))
    assert mean_s == pytest.approx(want, rel=1e-6)
    assert info["method"].startswith("lstsq")
    assert info["probe_mean_s"] < 0.8 * want  # what the plain mean would have offered


def test_degenerate_probe_fit_falls_back_to_the_mean() -> None:
    probed = [(16, 4)] * 8  # one distinct point: no slope to fit
    mean_s, info = fit_service_time(probed, [0.01 * (1 + i % 2) for i in range(8)], [(50, 30)])
    assert mean_s == pytest.approx(0.015) and info["method"] == "mean"
    assert "fallback_reason" in info


def _window_workload() -> Workload:
    reqs = [WorkloadRequest(0.3 * i + 0.5 * (i // 5), 800 + 40 * (i % 9),
                            60 + 17 * (i % 7)) for i in range(120)]
    return trace_window(Workload(tuple(reqs), "trace:/x.csv"), 40)


def test_plan_and_report_name_the_window_and_the_scaling() -> None:
    w = _window_workload()
    plan = build_plan(w, None, lengths=LengthScale(), target_utilisation=0.6,
                      probe_service_s=0.1, probe_info={"method": "mean"})
    s = plan.scale
    start = w.window["start"]
    assert s.source == f"trace:/x.csv[{start}:{start + 40}]" and s.window == w.window
    assert ReplayPlan.from_json(plan.to_json()) == plan
    seq = SimpleNamespace(achieved_utilisation=0.58)
    sec = workload_section(plan, seq)
    assert sec["window"]["start"] == start and sec["window"]["stats"] == w.window["stats"]
    assert sec["lengths"]["prompt_cap"] == 256 and sec["lengths"]["output_cap"] == 64
    assert sec["achieved_utilisation"]["sequential"] == 0.58
    assert sec["target_utilisation"] == 0.6
    assert sec["token_ratio"]["trace"] > sec["token_ratio"]["replayed"] > 0
    report = {"workload": sec}
    for text in (render_markdown(report), unescape(render_html(report))):
        assert "Workload replayed" in text
        assert f"rows {start}..{start + 39} of 120" in text
        assert "prompt x1/16" in text and "cap 256" in text and "output x1/8" in text
        assert "target 60.0%" in text and "sequential 58.0%" in text
    assert any("trace window: rows" in line for line in summary_lines(plan, []))


def test_achieved_utilisation_is_busy_time_over_the_arrival_span() -> None:
    assert achieved_utilisation(14.0, 20.0) == pytest.approx(0.7)
    assert achieved_utilisation(1.0, 0.0) is None


def _item() -> dict:
    return {"intervention": "continuous_batching", "title": "Dynamic batching up to 8",
            "params": {"max_batch": 8},
            "projected": {"cost_per_request_usd": 4.0e-6, "busy_cost_per_request_usd": 1.0e-6,
                          "latency_ms": {"p95": 480.0}}}


def test_bill_row_is_shown_not_checked_and_speed_rows_are_diagnostics() -> None:
    measured = {"cost_per_request_usd": 4.0e-6, "busy_cost_per_request_usd": 1.1e-6,
                "p95_ms": 500.0}
    baseline = {"cost_per_request_usd": 4.5e-6, "busy_cost_per_request_usd": 1.4e-6,
                "p95_ms": 4900.0}
    cmp = compare(_item(), measured, baseline)
    bill, busy, p95 = cmp["rows"]
    assert bill["within_target"] is None and bill["note"] == BILL_FIXED_SCHEDULE_NOTE
    assert bill["diff_ratio"] == pytest.approx(0.0)
    assert busy["within_target"] is True and p95["within_target"] is True
    speed = speed_row("p95 (ms) @ host speed x0.928", "ms", 499.0, 500.0)
    assert speed["within_target"] is None and speed["speed_matched"] is True
    cmp["rows"].append(speed)
    assert cmp["title"] == "Dynamic batching up to 8 (static, request-level)"
    text = "\n".join(comparison_lines(cmp))
    assert f"n/a ({BILL_FIXED_SCHEDULE_NOTE})" in text and f"n/a ({SPEED_MATCHED_NOTE})" in text
    report = {"validation": cmp}
    for rendered in (render_markdown(report), unescape(render_html(report))):
        assert f"n/a ({SPEED_MATCHED_NOTE})" in rendered
        assert f"n/a ({BILL_FIXED_SCHEDULE_NOTE})" in rendered
        assert "(static, request-level)" in rendered


def test_applied_title_only_marks_batching() -> None:
    assert applied_title(_item()).endswith("(static, request-level)")
    assert applied_title({"intervention": "prefix_cache", "title": "Cache"}) == "Cache"


def test_summary_does_not_sell_a_capacity_saving_as_a_lower_bill() -> None:
    """Same replicas: a different projected bill is the replay's window, not a saving."""
    item = {**_item(), "rank": 1, "risk": {"score": 2}}
    item["projected"] = {**item["projected"], "saving_kind": "capacity", "replicas": 1}
    report = {"baseline": {"overall": {"cost_per_request_usd": 4.5e-6}}, "roadmap": [item]}
    top = next(line for line in _fmt.executive_summary(report) if "Top intervention" in line)
    assert "unchanged on the bill" in top and _fmt.usd(4.0e-6) not in top
    item["projected"]["saving_kind"] = "bill"
    top = next(line for line in _fmt.executive_summary(report) if "Top intervention" in line)
    assert f"{_fmt.usd(4.0e-6)} (bill)" in top
