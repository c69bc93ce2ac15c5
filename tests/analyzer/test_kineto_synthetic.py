"""Kineto analyses on small hand-built traces whose every number is known."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inferaudit_analyzer.kineto import analyze_kineto, classify_kernel, classify_launch
from inferaudit_analyzer.kineto.events import (
    LAUNCH_GRAPH,
    LAUNCH_KERNEL,
    LAUNCH_MEMCPY,
    LAUNCH_MEMSET,
    LAUNCH_OTHER,
    LAUNCH_SYNC,
    read_events,
)
from inferaudit_analyzer.kineto.idle import KERNEL_WAIT_THRESHOLD_NS


def gpu(name: str, ts: float, dur: float, corr: int = -1, *, cat: str = "kernel", stream: int = 7,
        device: int = 0, **args: Any) -> dict[str, Any]:  # fmt: skip
    a = {"device": device, "stream": stream, "correlation": corr, **args}
    return {"ph": "X", "cat": cat, "name": name, "pid": device, "tid": stream, "ts": ts,
            "dur": dur, "args": a}  # fmt: skip


def rt(name: str, ts: float, dur: float, corr: int) -> dict[str, Any]:
    return {"ph": "X", "cat": "cuda_runtime", "name": name, "pid": 100, "tid": 100, "ts": ts,
            "dur": dur, "args": {"correlation": corr}}  # fmt: skip


def write(tmp_path: Path, events: list[dict[str, Any]], name: str = "t.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps({"schemaVersion": 1, "traceEvents": events}))
    return p


def test_two_kernels_with_a_known_gap(tmp_path: Path) -> None:
    p = write(tmp_path, [gpu("gemm_a", 1000.0, 10.0), gpu("gemm_b", 1025.5, 4.5)])
    t = analyze_kineto(p).files[0].temporal
    assert t is not None
    assert (t.span_ns, t.busy_ns, t.idle_ns, t.compute_ns) == (30_000, 14_500, 15_500, 14_500)
    j = t.to_json()
    assert j["idle_pct"] == pytest.approx(100 * 15_500 / 30_000, abs=1e-3)
    assert j["idle_pct"] + j["compute_pct"] + j["non_compute_pct"] == pytest.approx(100, abs=1e-2)


def test_copies_and_collectives_are_non_compute_unless_hidden(tmp_path: Path) -> None:
    events = [
        gpu("elementwise_kernel", 0.0, 10.0),
        gpu("Memcpy HtoD (Pinned -> Device)", 5.0, 15.0, cat="gpu_memcpy", stream=9, bytes=1000),
        gpu("ncclKernel_AllReduce_RING_LL_Sum_float", 30.0, 10.0, stream=11),
    ]
    s = analyze_kineto(write(tmp_path, events)).files[0]
    t = s.temporal
    assert t is not None
    # span 0..40, busy [0,20)+[30,40) = 30, compute = the one compute kernel = 10.
    assert (t.span_ns, t.busy_ns, t.compute_ns, t.non_compute_ns) == (
        40_000,
        30_000,
        10_000,
        20_000,
    )
    assert s.copies.exposed_host_copy_ns == 10_000  # [10, 20) has no kernel running
    assert s.idle.idle_ns == t.idle_ns == 10_000


def test_idle_categories_follow_hta_rule(tmp_path: Path) -> None:
    # HTA's categories; a gap passing HTA's host-wait test is host wait only until the launch
    # call returned, the rest kernel wait (short) or other (long). See docs.
    events = [
        rt("cudaLaunchKernel", -5.0, 2.0, 1), gpu("k1", 0.0, 10.0, 1),
        rt("cudaLaunchKernel", 1.0, 1.0, 2), gpu("k2", 12.0, 8.0, 2),  # kernel wait: 2 us
        rt("cudaLaunchKernel", 50.0, 2.0, 3), gpu("k3", 60.0, 10.0, 3),  # host 32 + kernel 8
        rt("cudaLaunchKernel", 60.0, 1.0, 4), gpu("k4", 160.0, 10.0, 4),  # other: 90 us
        rt("cudaLaunchKernel", 400.0, 1.0, 5), gpu("k5", 410.0, 10.0, 5),  # long host 231 + 9
        rt("cudaLaunchKernel", 430.0, 2.0, 6), gpu("k6", 600.0, 10.0, 6),  # host 12 + other 168
    ]  # fmt: skip
    idle = analyze_kineto(write(tmp_path, events)).files[0].idle
    assert idle.kernel_wait_ns == 2_000 + 8_000 + 9_000
    assert idle.host_wait_ns == 32_000 + 231_000 + 12_000
    assert idle.host_wait_long_ns == 231_000
    assert idle.other_ns == 90_000 + 168_000
    assert idle.gaps == 5
    (lane,) = idle.streams
    assert (lane["stream"], lane["host_wait_ns"], lane["kernel_wait_ns"], lane["other_ns"]) == (
        7, 275_000, 19_000, 258_000,
    )  # fmt: skip
    assert KERNEL_WAIT_THRESHOLD_NS == 30_000  # HTA's applied default (30 us), see docs


def test_streams_overlap_but_device_idle_is_the_union_hole(tmp_path: Path) -> None:
    events = [
        gpu("a", 0.0, 10.0, stream=1),
        gpu("b", 5.0, 20.0, stream=2),
        gpu("c", 40, 5, stream=1),
    ]
    s = analyze_kineto(write(tmp_path, events)).files[0]
    assert s.idle.idle_ns == 15_000  # device hole [25, 40)
    per_stream = {int(r["stream"]): r["idle_ns"] for r in s.idle.streams}  # type: ignore[call-overload]
    assert per_stream == {1: 30_000, 2: 0}


def test_graph_replay_is_not_idle_nor_short_kernels(tmp_path: Path) -> None:
    events = [
        rt("hipGraphLaunch", 0.0, 500.0, 99),
        gpu("gemm_1", 10.0, 10.0, 99), gpu("gemm_2", 21.0, 9.0, 99), gpu("gemm_3", 30.0, 10.0, 99),
    ]  # fmt: skip
    s = analyze_kineto(write(tmp_path, events)).files[0]
    assert s.temporal is not None and s.temporal.idle_ns == 1_000
    assert s.idle.host_wait_ns == 0 and s.idle.kernel_wait_ns == 1_000
    assert s.idle.in_graph_ns == 1_000
    assert s.launches.launches == 0 and s.launches.short_kernels == 0
    g = s.graphs
    assert (g.launches, g.launches_with_ops, g.ops, g.replay_span_ns) == (1, 1, 3, 30_000)
    assert g.launch_api_time_ns == 500_000
    assert s.timeline_complete


def test_graph_launch_without_kernels_is_flagged_not_called_idle(tmp_path: Path) -> None:
    events = [
        rt("cudaGraphLaunch", 0.0, 5.0, 50),
        rt("cudaLaunchKernel", 0.0, 1.0, 1), gpu("k", 2.0, 1.0, 1),
        rt("cudaLaunchKernel", 900.0, 1.0, 2), gpu("k", 1000.0, 1.0, 2),
    ]  # fmt: skip
    r = analyze_kineto(write(tmp_path, events))
    s = r.files[0]
    assert s.graphs.launches_without_ops == 1 and not s.timeline_complete
    ids = {f.id for f in r.findings}
    assert "graph_replay_not_traced" in ids
    assert "device_idle_host_bound" not in ids  # idle is only an upper bound here
    assert r.to_json()["temporal_breakdown"]["timeline_complete"] is False  # type: ignore[index]


def test_launch_delay_runtime_and_short_kernels(tmp_path: Path) -> None:
    events = [
        rt("cudaLaunchKernel", 0.0, 5.0, 1), gpu("k1", 7.0, 2.0, 1),  # delay 2 us, short
        rt("cuLaunchKernelEx", 10.0, 1.0, 2), gpu("k2", 12.0, 20.0, 2),  # delay 1 us
        rt("hipExtLaunchKernel", 40.0, 60.0, 3), gpu("k3", 250.0, 3.0, 3),  # delay 150, short
        rt("cudaMemcpyAsync", 300.0, 2.0, 4),
        gpu("Memcpy DtoD (Device -> Device)", 303.0, 1.0, 4, cat="gpu_memcpy", bytes=64),
    ]  # fmt: skip
    ls = analyze_kineto(write(tmp_path, events)).files[0].launches
    assert (ls.launches, ls.kernel_launches, ls.short_kernels) == (4, 3, 2)
    assert ls.short_kernel_time_ns == 5_000
    assert ls.launch_delay_outliers == 1  # 150 us > HTA's 100 us cutoff
    assert ls.runtime_outliers == 1  # 60 us > HTA's 50 us cutoff
    assert dict(ls.launch_delay_ns)["min_ns"] == 1_000
    assert dict(ls.launch_delay_ns)["max_ns"] == 150_000
    assert dict(ls.api_counts) == {
        "cudaLaunchKernel": 1, "cuLaunchKernelEx": 1, "hipExtLaunchKernel": 1, "cudaMemcpyAsync": 1,
    }  # fmt: skip


def test_a_gpu_op_long_before_its_launch_returned_is_flagged_as_clock_skew(tmp_path: Path) -> None:
    events = [
        rt("cudaLaunchKernel", 0.0, 5.0, 1), gpu("k1", 3.0, 2.0, 1),  # 2 us early: the return
        rt("cudaLaunchKernel", 1000.0, 5.0, 2), gpu("k2", 500.0, 2.0, 2),  # 505 us early: skew
    ]  # fmt: skip
    ls = analyze_kineto(write(tmp_path, events)).files[0].launches
    assert (ls.negative_launch_delays, ls.skewed_launch_delays) == (2, 1)
    assert ls.to_json()["clock_skew_suspected"] is True
    fine = [rt("cudaLaunchKernel", 0.0, 5.0, 1), gpu("k1", 7.0, 2.0, 1)]
    ok = analyze_kineto(write(tmp_path, fine)).files[0].launches
    assert ok.to_json()["clock_skew_suspected"] is False and ok.negative_launch_delays == 0


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("cudaLaunchKernel", LAUNCH_KERNEL), ("cudaLaunchKernelExC", LAUNCH_KERNEL),
        ("cudaLaunchKernelExC_v11060", LAUNCH_KERNEL), ("cuLaunchKernel", LAUNCH_KERNEL),
        ("cuLaunchKernelEx", LAUNCH_KERNEL), ("hipLaunchKernel", LAUNCH_KERNEL),
        ("hipExtLaunchKernel", LAUNCH_KERNEL), ("hipModuleLaunchKernel", LAUNCH_KERNEL),
        ("hipExtModuleLaunchKernel", LAUNCH_KERNEL), ("cudaLaunchCooperativeKernel", LAUNCH_KERNEL),
        ("cudaGraphLaunch", LAUNCH_GRAPH), ("hipGraphLaunch", LAUNCH_GRAPH),
        ("cuGraphLaunch", LAUNCH_GRAPH), ("cudaMemcpyAsync", LAUNCH_MEMCPY),
        ("hipMemcpyWithStream", LAUNCH_MEMCPY), ("cuMemcpyHtoDAsync_v2", LAUNCH_MEMCPY),
        ("cudaMemsetAsync", LAUNCH_MEMSET), ("hipMemsetAsync", LAUNCH_MEMSET),
        ("cudaStreamSynchronize", LAUNCH_SYNC), ("hipDeviceSynchronize", LAUNCH_SYNC),
        ("cudaEventRecord", LAUNCH_OTHER), ("cudaFuncSetAttribute", LAUNCH_OTHER),
    ],
)  # fmt: skip
def test_classify_launch(name: str, kind: int) -> None:
    assert classify_launch(name) == kind


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ncclKernel_AllReduce_RING_LL_Sum_float(ncclWorkElem)", "communication"),
        ("small_gather_kernel", "elementwise"),  # "all_gather" inside a word is no collective
        ("void vllm::cross_device_reduce_1stage<__hip_bfloat16, 8>(...)", "communication"),
        ("void paged_attention_ll4mi_QKV_mfma16_kernel<...>(...)", "attention"),
        ("kernel_unified_attention_3d", "attention"),
        ("void flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<...> >(...)", "attention"),
        ("Cijk_Alik_Bljk_BBS_BH_Bias_HA_S_SAV_UserArgs_MT448x32x64", "gemm"),
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "gemm"),
        ("ampere_sgemm_32x32_sliced1x4_tn", "gemm"),
        ("void cudnn::detail::dgrad_engine<float, 512, 6, 5, 3, 3, 3, false>(int, int)", "gemm"),
        ("_matmul_ogs_NNT_bf16xbf16xmxfp4_16x128x256_swiglu", "gemm"),
        ("void at::native::reduce_kernel<512, 1, ReduceOp<float> >(...)", "reduction"),
        ("void at::native::vectorized_layer_norm_kernel<float>(...)", "reduction"),
        ("void cudnn::bn_bw_1C11_kernel_new<float, 32, true, 1>(float)", "reduction"),
        ("triton_red_fused_add_mean_0", "reduction"),
        ("void at::native::vectorized_elementwise_kernel<4, sum_functor>(int)", "elementwise"),
        ("triton_poi_fused_mul_silu_1", "elementwise"),
        ("void at::native::CatArrayBatchedCopy<float, 4>(...)", "elementwise"),
        ("void convert_fp8_kernel<float>(...)", "elementwise"),
        ("some_custom_kernel", "other"),
    ],
)  # fmt: skip
def test_classify_kernel(name: str, kind: str) -> None:
    assert classify_kernel(name) == kind


def test_copy_bandwidth_and_pageable(tmp_path: Path) -> None:
    events = [
        gpu("Memcpy HtoD (Pageable -> Device)", 0.0, 100.0, cat="gpu_memcpy", bytes=1_000_000),
        gpu("Memcpy DtoH (Device -> Pinned)", 200.0, 50.0, cat="gpu_memcpy", bytes=1_000_000),
        gpu("Memcpy DtoD (Device -> Device)", 300.0, 1.0, cat="gpu_memcpy", bytes="9216"),
        gpu("Memset (Device)", 400.0, 1.0, cat="gpu_memset", bytes=128),
    ]
    c = analyze_kineto(write(tmp_path, events)).files[0].copies
    rows = {d["direction"]: d for d in c.directions}
    assert rows["HtoD"]["bandwidth_gbps"] == pytest.approx(10.0)  # 1e6 B / 1e5 ns
    assert rows["DtoH"]["bandwidth_gbps"] == pytest.approx(20.0)
    assert rows["DtoD"]["bytes"] == 9216  # ROCm writes bytes as a string
    assert (c.pageable_copies, c.pageable_bytes, c.pageable_time_ns) == (1, 1_000_000, 100_000)
    assert c.host_copy_bytes == 2_000_000 and c.exposed_host_copy_ns == 150_000
    assert (c.memsets, c.memset_bytes) == (1, 128)


def test_elementwise_chains_per_stream(tmp_path: Path) -> None:
    ew = "void at::native::vectorized_elementwise_kernel<4>(int)"
    events = [gpu(ew, float(i * 10), 2.0) for i in range(4)]
    events += [gpu("ampere_sgemm_64x64_nn", 45.0, 5.0)]
    events += [gpu(ew, 60.0, 2.0), gpu(ew, 70.0, 2.0)]  # a run of 2: below the minimum
    events += [gpu("ampere_sgemm_64x64_nn", 15.0, 2.0, stream=3)]  # other stream: no break
    ch = analyze_kineto(write(tmp_path, events)).files[0].chains
    assert (ch.chains, ch.kernels_in_chains, ch.longest_chain) == (1, 4, 4)
    assert ch.time_in_chains_ns == 8_000 and ch.elementwise_kernels == 6


def test_launch_bound_trace_gets_runtime_findings(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    for i in range(200):  # 2 us kernels behind 5 us launch calls, 6 us apart
        events += [rt("cudaLaunchKernel", i * 8.0, 5.0, i), gpu("add_kernel", i * 8.0 + 6, 2.0, i)]
    r = analyze_kineto(write(tmp_path, events))
    by_id = {f.id: f for f in r.findings}
    f = by_id["kernel_launch_overhead"]
    assert f.layer == "runtime" and f.severity == "high"
    assert f.evidence["short_kernel_ratio"] == 1.0
    assert f.evidence["kernel_launches"] == 200
    assert by_id["short_kernels"].layer == "runtime"
    assert "unfused_elementwise_chains" in by_id


def test_saturated_gemm_decode_is_model_physics(tmp_path: Path) -> None:
    events = [gpu("Cijk_gemm_tile", i * 10.0, 9.9) for i in range(50)]
    events += [gpu("paged_attention_kernel", 500.0, 100.0)]
    plain = analyze_kineto(write(tmp_path, events))
    hot = next(f for f in plain.findings if f.id == "hot_kernels")
    assert hot.layer == "model"
    dram = next(f for f in plain.findings if f.id == "kernel_dram_bound_decode")
    assert dram.layer == "model" and dram.evidence["phase_source"].startswith("kernel name")
    told = analyze_kineto(write(tmp_path, events), phase="decode", memory_utilization_ratio=0.9)
    dram = next(f for f in told.findings if f.id == "kernel_dram_bound_decode")
    assert dram.evidence["phase_source"] == "spans"
    assert dram.evidence["memory_utilization_ratio"] == 0.9
    cool = analyze_kineto(write(tmp_path, events), phase="decode", memory_utilization_ratio=0.3)
    assert all(f.id != "kernel_dram_bound_decode" for f in cool.findings)  # DRAM not the bound
    prefill = analyze_kineto(write(tmp_path, events), phase="prefill")
    assert all(f.id != "kernel_dram_bound_decode" for f in prefill.findings)


def test_files_aggregate_without_merging_devices(tmp_path: Path) -> None:
    a = write(tmp_path, [gpu("k", 0.0, 10.0), gpu("k", 20.0, 10.0)], "a.json")
    b = write(tmp_path, [gpu("k", 0.0, 10.0)], "b.json")
    r = analyze_kineto([a, b])
    agg = r.aggregate
    assert agg is not None and agg.temporal is not None
    # Same device id 0 and same timestamps in both files: still two devices, not one.
    assert (agg.temporal.span_ns, agg.temporal.busy_ns, agg.temporal.devices) == (40_000, 30_000, 2)
    assert agg.top_kernels[0]["count"] == 3
    j = r.to_json()
    assert j["temporal_breakdown"]["idle_pct"] == 25.0  # type: ignore[index]
    assert [f["source"] for f in j["files"]] == [str(a), str(b)]  # type: ignore[index]


def test_old_kineto_spelling_and_annotations(tmp_path: Path) -> None:
    events = [
        {"ph": "X", "cat": "Runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": "1", "ts": 0,
         "dur": 3, "args": {"correlation": 7}},
        {"ph": "X", "cat": "Kernel", "name": "volta_sgemm_128x64_nn", "pid": 0, "tid": "stream 7",
         "ts": 5, "dur": 10, "args": {"correlation": 7}},
        {"ph": "X", "cat": "gpu_user_annotation", "name": "step", "pid": 0, "tid": 7, "ts": 0,
         "dur": 1000, "args": {}},
        {"ph": "X", "cat": "kernel", "name": "bad", "ts": "x", "dur": 1},
    ]  # fmt: skip
    ev = read_events(write(tmp_path, events))
    assert ev.n_gpu == 1 and int(ev.gpu_stream[0]) == 7 and ev.malformed_events == 1
    s = analyze_kineto(write(tmp_path, events)).files[0]
    assert s.temporal is not None and s.temporal.span_ns == 10_000  # annotation not counted
    assert s.launches.launches == 1


def test_items_that_are_not_objects_are_counted_as_malformed(tmp_path: Path) -> None:
    # a null or a number among traceEvents was dropped without a word
    kernel = {"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": 0, "dur": 5,
              "args": {}}
    ev = read_events(write(tmp_path, [kernel, None, 3, kernel]))  # type: ignore[list-item]
    assert ev.n_gpu == 2 and ev.malformed_events == 2
    assert any("not objects" in n for n in ev.notes)


def test_counter_only_trace_is_handled(tmp_path: Path) -> None:
    events = [
        {"ph": "X", "cat": "cuda_profiler_range", "name": "k", "pid": 0, "tid": 0, "ts": 0,
         "dur": 100, "args": {"smsp__sass_thread_inst_executed_op_ffma_pred_on.sum": 10}},
        rt("cudaLaunchKernel", 0.0, 1.0, 1),
    ]  # fmt: skip
    r = analyze_kineto(write(tmp_path, events))
    s = r.files[0]
    assert s.temporal is None and s.profiler_ranges == 1
    assert s.counter_names == ("smsp__sass_thread_inst_executed_op_ffma_pred_on.sum",)
    assert [f.id for f in r.findings] == ["kineto_no_gpu_timeline"]
    assert r.to_json()["temporal_breakdown"] is None


def test_findings_are_judged_per_trace_and_merged_by_id(tmp_path: Path) -> None:
    launch_bound: list[dict[str, Any]] = []
    for i in range(200):
        launch_bound += [rt("cudaLaunchKernel", i * 8.0, 5.0, i), gpu("add_k", i * 8.0 + 6, 2.0, i)]
    a = write(tmp_path, launch_bound, "a.json")
    b = write(tmp_path, launch_bound, "b.json")
    # A long, saturated GEMM trace that would dilute the launch-bound one if mixed together.
    c = write(tmp_path, [gpu("Cijk_gemm", i * 100.0, 99.0) for i in range(1000)], "c.json")
    r = analyze_kineto([a, b, c])
    by_key = {(f.id, f.layer): f for f in r.findings}
    assert len(r.findings) == len(by_key)  # one finding per (id, layer)
    lo = by_key["kernel_launch_overhead", "runtime"]
    assert (lo.evidence["profiles_with_finding"], lo.evidence["profiles"]) == (2, 3)
    assert lo.scope == {}
    hot = by_key["hot_kernels", "model"]  # the saturated GEMM trace keeps its own verdict
    assert hot.scope == {"profile": "c.json"} and hot.evidence["profiles_with_finding"] == 1
    assert by_key["hot_kernels", "runtime"].evidence["profiles_with_finding"] == 2


@pytest.mark.parametrize(("name", "precision"), [
    ("_matmul_ogs_NNT_bf16xbf16xmxfp4_16x256x128x1_swiglu", "fp4"),
    ("void marlin::Marlin<256, 1, 8, 8, 4, 8>(...)", "int4"),
    ("sm90_xmma_gemm_e4m3bf16_e4m3f32_f32_tn_n_tilesize128x128x128", "fp8"),
    ("cutlass_scaled_mm_w8a8_int8", "int8"),
    ("ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_32x5_tn", None),
    ("volta_sgemm_128x64_nn", None),
])  # fmt: skip
def test_the_precision_a_kernel_name_spells_out(name: str, precision: str | None) -> None:
    from inferaudit_analyzer.kineto.kernels import low_precision

    assert low_precision(name) == precision
