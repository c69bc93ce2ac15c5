"""The bottleneck verdict: ordered cases, named thresholds, confidence scaled by coverage."""

from __future__ import annotations

from pathlib import Path

import pytest
from _analysis_fixtures import MS, T0, FixtureDb, batched_db, unbatched_db

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.analyze import AnalyzeParams, analyze, analyze_connection
from inferaudit_analyzer.bottleneck import CASES, Signals, decide
from inferaudit_analyzer.findings import Finding

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "traces"


def _verdict(db: FixtureDb) -> dict:
    return analyze_connection(db.con, AnalyzeParams())["bottleneck"]


def test_saturated_batched_server_is_model_bound():
    v = _verdict(batched_db(n_batches=30, size=8))
    assert v["layer"] == "model" and v["case"] == "model_saturated"
    assert v["decided_by"][0]["fingerprint"] == "device_utilization"
    assert v["decided_by"][0]["value"] >= th.SATURATED_UTILIZATION_RATIO


def test_unbatched_queueing_server_is_runtime_bound():
    v = _verdict(unbatched_db())
    assert (v["layer"], v["case"]) == ("runtime", "runtime_unbatched")


def test_copy_bound_server_is_hardware_bound():
    db = FixtureDb()
    for i in range(120):
        s = T0 + i * 10 * MS
        r = db.request(s, s + 10 * MS, input_tokens=10, output_tokens=1)
        db.batch(s, s + 10 * MS, [r], device_time_ns=10 * MS, copy_time_ns=5 * MS,
                 h2d_bytes=64 << 20)
    v = _verdict(db)
    assert (v["layer"], v["case"]) == ("hardware", "hardware_data_movement")
    assert v["confidence"] == pytest.approx(0.75)


def test_case_order_first_match_wins():
    names = [n for n, _ in CASES]
    assert names.index("hardware_data_movement") < names.index("runtime_unbatched")
    assert names.index("runtime_unbatched") < names.index("model_saturated")
    s = Signals(device_utilization=0.95, copy_time_ratio=0.5, requests=200, batches=200)
    assert decide(s).layer == "hardware"  # saturated but starved by copies
    s = Signals(device_utilization=0.95, copy_time_ratio=0.01, requests=200, batches=200)
    assert decide(s).layer == "model"


def test_dram_bound_decode_does_not_make_it_hardware():
    dram = Finding("dram_bound_decode", "t", "info", "model", {"memory_util_ratio": 0.9})
    s = Signals(device_utilization=0.9, requests=500, batches=100, findings=(dram,))
    v = decide(s)
    assert v.layer == "model"
    assert any(d["fingerprint"] == "finding:dram_bound_decode" for d in v.decided_by)


def test_confidence_scales_with_coverage_and_volume():
    full = decide(Signals(device_utilization=0.9, requests=1000, batches=100))
    half = decide(Signals(device_utilization=0.9, requests=1000, batches=100, coverage_ratio=0.5))
    few = decide(Signals(device_utilization=0.9, requests=10, batches=10))
    assert half.confidence == pytest.approx(full.confidence * 0.5)
    assert few.confidence == pytest.approx(full.confidence * 10 / th.MIN_REQUESTS_FOR_CONFIDENCE)


def test_no_data_is_unknown_with_zero_confidence():
    v = decide(Signals())
    assert v.layer == "unknown" and v.confidence == 0


def test_underused_without_other_signals_is_runtime():
    v = decide(Signals(device_utilization=0.2, requests=500, batches=500))
    assert (v.layer, v.case) == ("runtime", "runtime_underused")


@pytest.mark.parametrize(("name", "layer"), [
    ("tracelens/vllm_decode_cudagraph_mi300x_bs32.json.gz", "model"),
    ("hta/simple_add.json.gz", "runtime"),
])
def test_real_kineto_traces(name, layer):
    p = SHARED / name
    if not p.is_file():
        pytest.skip(f"real Kineto trace absent: {p}")
    rep = analyze([p], AnalyzeParams(cache=False))
    assert rep["bottleneck"]["layer"] == layer, rep["bottleneck"]
    assert rep["kernels"]["temporal_breakdown"]["idle_pct"] is not None


def test_high_span_runtime_finding_is_wasted_work_not_kernel_gaps():
    red = Finding("redundant_compute", "t", "high", "runtime", {"cacheable_ratio": 0.3})
    v = decide(Signals(device_utilization=0.95, requests=500, batches=100, findings=(red,)))
    assert (v.layer, v.case) == ("runtime", "runtime_wasted_work")
    gap = Finding("device_idle_host_bound", "t", "high", "runtime", {})
    v = decide(Signals(device_utilization=0.95, requests=500, batches=100, findings=(gap,),
                       kineto_finding_ids=frozenset({"device_idle_host_bound"})))
    assert v.case == "runtime_kernel_inefficiency"


def test_unknown_utilisation_judges_no_layer():
    # the model layer's fingerprint is a busy device: with nothing measuring it, say so
    v = decide(Signals(device_utilization=None, requests=50, batches=0))
    assert (v.layer, v.case, v.confidence) == ("unknown", "utilization_unknown", 0.0)
    assert "unknown" in v.detail and "instrument_model" in v.detail
    low = Finding("short_kernels", "t", "low", "runtime", {})
    kernel_only = decide(Signals(kernel_profiles=1, findings=(low,)))
    assert kernel_only.case == "utilization_unknown"
    assert "ProfilerActivity.CUDA" in kernel_only.detail and "short_kernels" in kernel_only.detail
    known = decide(Signals(device_utilization=0.6, requests=50, batches=50))
    assert known.case == "model_default" and "moderately busy" in known.detail


def test_saturation_at_batch_one_does_not_claim_healthy_batching():
    v = decide(Signals(device_utilization=0.95, requests=200, batches=200, batch_size_p50=1))
    assert v.layer == "model" and "batches well" not in v.detail
    w = decide(Signals(device_utilization=0.95, requests=200, batches=50, batch_size_p50=4))
    assert "batches well" in w.detail
