"""Kineto interpretation rules a review found wrong: each test pins the corrected rule on a
small hand-built trace whose every number is known (and fails under the old rule)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from test_kineto_synthetic import gpu, rt, write

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.kineto import (
    KinetoTraceError,
    analyze_kineto,
    classify_kernel,
    read_events,
)
from inferaudit_analyzer.kineto.idle import LONG_HOST_WAIT_NS, UNTRACED_WAIT_SPAN_RATIO


def _ids(events: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    return {f.id: f for f in analyze_kineto(write(tmp_path, events)).findings}


# --- 1. host wait ends when the launch call returns -------------------------------------------


def _queued_then_waiting() -> list[dict[str, Any]]:
    """SGLang decode's shape: the next kernel is launched 38 us after the previous op ends and
    the call returns at 44 us; the host then blocks in a copy call while the queued kernel waits
    460 ms on an event the trace does not show."""
    return [
        rt("hipLaunchKernel", -10.0, 5.0, 1), gpu("k_prev", 0.0, 10.0, 1),
        rt("hipStreamWaitEvent", 27.0, 10.0, -1),
        rt("hipLaunchKernel", 48.0, 6.0, 2), gpu("resolve_kernel", 460_000.0, 10.0, 2),
        rt("hipMemcpyWithStream", 60.0, 459_990.0, 3),
        gpu("Memcpy DtoH (Device -> Host)", 460_010.0, 30.0, 3, cat="gpu_memcpy", bytes=64),
    ]  # fmt: skip


def test_host_wait_is_only_the_gap_before_the_launch_call_returned(tmp_path: Path) -> None:
    s = analyze_kineto(write(tmp_path, _queued_then_waiting())).files[0]
    # Gap 10 us .. 460,000 us: host until the launch call returned at 54 us, then other.
    assert s.idle.host_wait_ns == 44_000
    assert s.idle.host_wait_long_ns == 0  # 44 us: a launch, not the host busy elsewhere
    assert s.idle.other_ns == 460_000_000 - 54_000
    assert s.idle.idle_ns == s.temporal.idle_ns  # type: ignore[union-attr]
    (lane,) = [r for r in s.idle.streams if r["stream"] == 7]
    assert lane["host_wait_ns"] == 44_000


def test_a_device_waiting_on_untraced_work_marks_the_timeline_incomplete(tmp_path: Path) -> None:
    r = analyze_kineto(write(tmp_path, _queued_then_waiting()))
    s = r.files[0]
    assert s.idle.devices_waiting_untraced == 1
    assert s.idle.max_other_gap_ns >= UNTRACED_WAIT_SPAN_RATIO * s.temporal.span_ns  # type: ignore[union-attr]
    assert not s.timeline_complete
    assert r.to_json()["temporal_breakdown"]["timeline_complete"] is False  # type: ignore[index]
    ids = {f.id for f in r.findings}
    assert "device_wait_not_traced" in ids and "device_idle_host_bound" not in ids
    assert any("does not show" in n for n in s.notes)


def test_a_host_that_launches_late_is_still_host_wait(tmp_path: Path) -> None:
    events = [
        rt("cudaLaunchKernel", -10.0, 5.0, 1), gpu("k1", 0.0, 10.0, 1),
        rt("cudaLaunchKernel", 400.0, 5.0, 2), gpu("k2", 410.0, 10.0, 2),  # data loader
    ]  # fmt: skip
    s = analyze_kineto(write(tmp_path, events)).files[0]
    assert s.idle.host_wait_ns == s.idle.host_wait_long_ns == 395_000  # until the call returned
    assert s.idle.kernel_wait_ns == 5_000 and s.idle.other_ns == 0
    assert s.timeline_complete


def test_a_blocking_copy_call_gives_the_host_the_whole_gap(tmp_path: Path) -> None:
    events = [
        rt("cudaLaunchKernel", -10.0, 5.0, 1), gpu("k1", 0.0, 10.0, 1),
        rt("cudaMemcpyAsync", 30.0, 400.0, 2),  # pageable: returns when the copy is done
        gpu("Memcpy HtoD (Pageable -> Device)", 300.0, 120.0, 2, cat="gpu_memcpy", bytes=1 << 20),
    ]  # fmt: skip
    idle = analyze_kineto(write(tmp_path, events)).files[0].idle
    assert (idle.host_wait_ns, idle.kernel_wait_ns, idle.other_ns) == (290_000, 0, 0)
    assert idle.host_wait_long_ns == 290_000 >= LONG_HOST_WAIT_NS


# --- 2. host-bound severity by the share of the window the host took ---------------------------


def _data_loader_bound() -> list[dict[str, Any]]:
    """Busy ~0.7 of the span, but long host waits take 0.3 of it (the V100 ResNet shape)."""
    return [
        rt("cudaLaunchKernel", -10.0, 5.0, 1), gpu("volta_sgemm_128x64_nn", 0.0, 600.0, 1),
        rt("cudaLaunchKernel", 896.0, 5.0, 2), gpu("volta_sgemm_128x64_nn", 905.0, 95.0, 2),
    ]  # fmt: skip


def test_host_bound_severity_follows_the_share_of_the_window(tmp_path: Path) -> None:
    f = _ids(_data_loader_bound(), tmp_path)["device_idle_host_bound"]
    assert f.evidence["busy_ratio"] > th.UNDERUSED_UTILIZATION_RATIO  # old rule: "low"
    assert f.evidence["host_wait_long_share_of_span"] == pytest.approx(0.301)
    assert f.severity == "medium"
    assert th.HOST_WAIT_SPAN_MEDIUM_RATIO <= 0.301 < th.HOST_WAIT_SPAN_HIGH_RATIO


# --- 3/4. communication is neither copies nor a kernel to tune ---------------------------------


def _nccl_heavy() -> list[dict[str, Any]]:
    events = [gpu("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t", 0.0, 650.0, stream=11)]
    events += [gpu("ampere_sgemm_128x64_nn", 650.0 + i * 50.0, 50.0) for i in range(5)]
    events += [gpu("vectorized_elementwise_kernel", 900.0 + i * 10.0, 10.0) for i in range(10)]
    return events


def test_hot_kernel_is_the_top_non_communication_kernel(tmp_path: Path) -> None:
    s = analyze_kineto(write(tmp_path, _nccl_heavy())).files[0]
    assert s.top_kernels[0]["type"] == "communication"  # 65% of GPU time
    f = _ids(_nccl_heavy(), tmp_path)["hot_kernels"]
    assert f.evidence["kernel_type"] == "gemm" and "nccl" not in f.evidence["kernel"]
    assert f.evidence["kernel_time_ratio"] == pytest.approx(0.25)


def test_only_communication_gives_no_hot_kernel(tmp_path: Path) -> None:
    events = [gpu("ncclKernel_AllReduce_RING_LL_Sum_float", i * 10.0, 9.0) for i in range(20)]
    assert "hot_kernels" not in _ids(events, tmp_path)


# --- 5. a blocking copy is not clock skew, nor launch overhead ---------------------------------


def test_pageable_copy_starting_inside_its_call_is_not_clock_skew(tmp_path: Path) -> None:
    events = [
        rt("cudaLaunchKernel", 0.0, 5.0, 1), gpu("k1", 7.0, 2.0, 1),  # delay 2 us
        rt("cudaMemcpyAsync", 100.0, 500.0, 2),  # returns when the copy is done
        gpu("Memcpy HtoD (Pageable -> Device)", 150.0, 440.0, 2, cat="gpu_memcpy", bytes=1 << 24),
    ]  # fmt: skip
    ls = analyze_kineto(write(tmp_path, events)).files[0].launches
    assert ls.skewed_launch_delays == 0 and ls.to_json()["clock_skew_suspected"] is False
    assert ls.negative_launch_delays == 0  # kernels only; the copy's -450 us is its blocking
    assert dict(ls.launch_delay_ns)["min_ns"] == dict(ls.launch_delay_ns)["max_ns"] == 2_000
    assert dict(ls.runtime_ns)["max_ns"] == 5_000
    assert ls.launch_api_time_ns == 5_000 and ls.memcpy_api_time_ns == 500_000
    assert ls.launches == 2 and ls.kernel_launches == 1


def test_memset_calls_count_with_the_copy_calls_not_nowhere(tmp_path: Path) -> None:
    events = [
        rt("cudaLaunchKernel", 0.0, 5.0, 1), gpu("k1", 7.0, 2.0, 1),
        rt("cudaMemsetAsync", 100.0, 30.0, 2),
        gpu("Memset (Device)", 120.0, 5.0, 2, cat="gpu_memset", bytes=4096),
    ]  # fmt: skip
    ls = analyze_kineto(write(tmp_path, events)).files[0].launches
    assert ls.launch_api_time_ns == 5_000 and ls.memcpy_api_time_ns == 30_000


def test_an_op_before_its_call_started_is_still_clock_skew(tmp_path: Path) -> None:
    events = [
        rt("cudaMemcpyAsync", 1000.0, 500.0, 2),
        gpu("Memcpy HtoD (Pinned -> Device)", 700.0, 10.0, 2, cat="gpu_memcpy", bytes=64),
    ]  # fmt: skip
    ls = analyze_kineto(write(tmp_path, events)).files[0].launches
    assert ls.skewed_launch_delays == 1 and ls.to_json()["clock_skew_suspected"] is True


# --- 7. a copy breaks an elementwise chain -----------------------------------------------------


def test_a_memcpy_between_elementwise_kernels_breaks_the_chain(tmp_path: Path) -> None:
    ew = "void at::native::vectorized_elementwise_kernel<4>(int)"
    events = [gpu(ew, 0.0, 2.0), gpu(ew, 10.0, 2.0)]
    events += [gpu("Memcpy DtoD (Device -> Device)", 20.0, 2.0, cat="gpu_memcpy", bytes=64)]
    events += [gpu(ew, 30.0, 2.0), gpu(ew, 40.0, 2.0)]
    ch = analyze_kineto(write(tmp_path, events)).files[0].chains
    assert ch.chains == 0 and ch.elementwise_kernels == 4
    unbroken = [e for e in events if e["cat"] == "kernel"]
    assert analyze_kineto(write(tmp_path, unbroken)).files[0].chains.chains == 1


# --- 8. collective names must start a word -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("small_gather_kernel", "elementwise"),
        ("overall_reduce_kernel", "reduction"),
        ("fused_allreduce_rmsnorm_kernel", "communication"),
        ("customAllReduce", "communication"),
        ("all_gather_into_tensor_kernel", "communication"),
        ("ReduceScatterKernel", "communication"),
    ],
)
def test_collective_names_match_at_word_starts(name: str, kind: str) -> None:
    assert classify_kernel(name) == kind


# --- 9. small fixes --------------------------------------------------------------------------


def test_truncated_small_gzip_reports_where_decoding_stops(tmp_path: Path) -> None:
    doc = {"traceEvents": [gpu("k", float(i), 1.0) for i in range(300)]}
    text = json.dumps(doc)
    data = gzip.compress(text.encode())
    p = tmp_path / "small.json.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(KinetoTraceError) as exc:
        read_events(p)
    assert exc.value.position is not None and 0 < exc.value.position < len(text)


def test_one_rocm_device_gets_the_one_listed_name(tmp_path: Path) -> None:
    p = tmp_path / "rocm.json"
    p.write_text(json.dumps({
        "deviceProperties": [{"id": 0, "name": "AMD Instinct MI300X"}],
        "traceEvents": [gpu("k", 0.0, 1.0, device=9)],
    }))  # fmt: skip
    (d,) = read_events(p).devices
    assert (d.device_id, d.name) == (9, "AMD Instinct MI300X")
