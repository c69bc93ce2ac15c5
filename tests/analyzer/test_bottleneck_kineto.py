"""The verdict on kernel-trace evidence: communication is not data movement, the kernel trace's
busy ratio stands in for unknown utilisation, and an incomplete timeline judges nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_kineto_synthetic import gpu, write

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.analyze import AnalyzeParams, analyze
from inferaudit_analyzer.bottleneck import Signals, decide
from inferaudit_analyzer.findings import Finding

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "traces"
KINETO_ONLY = {"kernel_profiles": 1}


def test_communication_share_is_not_data_movement():
    # HTA non-compute 40% of the span, all of it NCCL, no copies: not the hardware layer.
    s = Signals(kineto_non_compute_pct=40.0, kineto_busy_ratio=0.9,
                kineto_exposed_host_copy_ratio=0.0, **KINETO_ONLY)  # fmt: skip
    assert decide(s).layer != "hardware"
    starved = Signals(kineto_non_compute_pct=40.0, kineto_busy_ratio=0.9,
                      kineto_exposed_host_copy_ratio=0.35, **KINETO_ONLY)  # fmt: skip
    v = decide(starved)
    assert (v.layer, v.case) == ("hardware", "hardware_data_movement")
    assert v.decided_by[0]["fingerprint"] == "kineto_exposed_host_copy_ratio"
    assert v.decided_by[0]["threshold"] == th.KINETO_EXPOSED_HOST_COPY_RATIO_HARDWARE


def test_nccl_trace_without_copies_is_not_called_copy_bound(tmp_path: Path):
    events = [gpu("ncclKernel_AllReduce_RING_LL_Sum_float", i * 100.0, 40.0, stream=11)
              for i in range(20)]  # fmt: skip
    events += [gpu("ampere_sgemm_128x64_nn", i * 100.0 + 40.0, 55.0) for i in range(20)]
    rep = analyze([write(tmp_path, events)], AnalyzeParams(cache=False))
    assert rep["kernels"]["temporal_breakdown"]["non_compute_pct"] >= 30.0  # old trigger
    assert rep["bottleneck"]["layer"] != "hardware", rep["bottleneck"]


def test_kernel_busy_ratio_stands_in_for_unknown_utilisation():
    v = decide(Signals(kineto_busy_ratio=0.3, **KINETO_ONLY))
    assert (v.layer, v.case) == ("runtime", "runtime_underused")
    assert v.decided_by[0]["fingerprint"] == "kineto_busy_ratio"
    v = decide(Signals(kineto_busy_ratio=0.6, **KINETO_ONLY))
    assert v.case == "model_default"
    assert "unknown" not in v.detail and "moderately busy" in v.detail


def test_medium_host_bound_idle_makes_the_verdict_runtime():
    f = Finding("device_idle_host_bound", "t", "medium", "runtime", {})
    v = decide(Signals(kineto_busy_ratio=0.6, findings=(f,),
                       kineto_finding_ids=frozenset({f.id}), **KINETO_ONLY))  # fmt: skip
    assert (v.layer, v.case) == ("runtime", "runtime_kernel_inefficiency")


@pytest.mark.parametrize("how", ["field", "finding"])
def test_an_incomplete_timeline_does_not_judge_idle(how: str):
    cov = Finding("device_wait_not_traced", "t", "low", "coverage", {})
    kw = ({"kineto_timeline_complete": False} if how == "field" else
          {"findings": (cov,), "kineto_finding_ids": frozenset({cov.id})})  # fmt: skip
    v = decide(Signals(kineto_idle_pct=98.0, kineto_busy_ratio=0.02, **kw, **KINETO_ONLY))
    assert (v.layer, v.case) == ("unknown", "kernel_trace_incomplete")
    complete = decide(Signals(kineto_idle_pct=98.0, kineto_busy_ratio=0.02, **KINETO_ONLY))
    assert complete.case == "runtime_kernel_inefficiency"


@pytest.mark.parametrize(("name", "layer", "case"), [
    ("kineto/v100_resnet50_num_workers_0.json.gz", "runtime", "runtime_kernel_inefficiency"),
    ("tracelens/sglang_qwen3-8b_decode_mi300x_bs32.json.gz", "unknown",
     "kernel_trace_incomplete"),
])  # fmt: skip
def test_real_kineto_verdicts(name: str, layer: str, case: str):
    p = SHARED / name
    if not p.is_file():
        pytest.skip(f"real Kineto trace absent: {p}")
    rep = analyze([p], AnalyzeParams(cache=False))
    b = rep["bottleneck"]
    assert (b["layer"], b["case"]) == (layer, case), b
    assert "utilisation is unknown" not in b["detail"]
    # the report shows the kernel trace's busy share as utilisation only where the verdict
    # could read it (not for a timeline the trace cannot account for)
    util = rep["baseline"]["overall"]["device_utilization"]
    assert (util is None) == (case == "kernel_trace_incomplete"), util


def test_a_copy_starved_kernel_trace_is_the_hardware_layer_end_to_end(tmp_path: Path):
    # Through analyze(): the report's exposed host-copy share reaches the verdict.
    events = []
    for i in range(20):
        t = i * 100.0
        events.append(gpu("Memcpy HtoD (Pinned -> Device)", t, 60.0, cat="gpu_memcpy",
                          stream=9, bytes=4_000_000))
        events.append(gpu("ampere_sgemm_128x64_nn", t + 60.0, 35.0))
    rep = analyze([write(tmp_path, events)], AnalyzeParams(cache=False))
    v = rep["bottleneck"]
    assert (v["layer"], v["case"]) == ("hardware", "hardware_data_movement"), v
    fingerprints = {fp["fingerprint"]: fp["value"] for fp in v["decided_by"]}
    assert fingerprints["kineto_exposed_host_copy_ratio"] == pytest.approx(0.6, abs=0.01)
