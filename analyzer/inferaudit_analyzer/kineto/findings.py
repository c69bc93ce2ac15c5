"""Kineto analysis -> :class:`~inferaudit_analyzer.findings.Finding` list.

Ordered rules, each with named thresholds and their source. Layer attribution:

* launch overhead, short kernels, unfused elementwise chains, pageable or small serialised
  copies: ``runtime`` (fixed by CUDA graphs, fusion/``torch.compile``, pinned memory, batching);
* hot kernels (the top non-communication kernel): ``model`` when GEMM/attention dominate a
  saturated device (the model's math is the cost), else ``runtime``;
* host<->device copies that are large, pinned, and still dominate exposed time: ``hardware``
  (the device is starved by the link);
* DRAM-bound decode: ``model`` ("high DRAM activity in large-batch decode is the model's
  physics, not hardware");
* unreadable files, graph replays without kernels, a device waiting on work the trace does
  not show, no GPU timeline: ``coverage``.

"Saturated" / "underused" apply DCGM's SM-activity guidance (>= 0.8 necessary for effective
use, < 0.5 likely ineffective; NVIDIA DCGM User Guide, Feature Overview, Profiling Metrics) to
the trace's time-busy ratio. Time-busy is an upper bound of SM activity (a busy device may run
one small kernel), so "saturated" here is necessary, not sufficient, exactly as DCGM says.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.findings import Finding

from .idle import KERNEL_WAIT_THRESHOLD_NS, LONG_HOST_WAIT_NS, UNTRACED_WAIT_SPAN_RATIO
from .kernels import MIN_ELEMENTWISE_CHAIN, low_precision

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .load import KinetoTraceError
    from .summary import TraceSummary

__all__ = [
    "ELEMENTWISE_CHAIN_RATIO",
    "EXPOSED_COPY_RATIO_HIGH",
    "EXPOSED_COPY_RATIO_LOW",
    "HOST_BOUND_IDLE_SHARE",
    "HOST_WAIT_SPAN_HIGH_RATIO",
    "HOST_WAIT_SPAN_MEDIUM_RATIO",
    "HOT_KERNEL_RATIO",
    "LARGE_COPY_BYTES",
    "LAUNCH_IDLE_RATIO",
    "LAUNCH_IDLE_RATIO_HIGH",
    "MIN_KERNEL_LAUNCHES",
    "PAGEABLE_TIME_RATIO",
    "SATURATED_BUSY_RATIO",
    "SHORT_KERNEL_RATIO",
    "kineto_findings",
    "merge_across_files",
]

# DCGM SM-activity guidance (see module docstring), shared with the span analyses.
SATURATED_BUSY_RATIO = th.SATURATED_UTILIZATION_RATIO  # 0.8
# HTA: a short kernel runs for less time than its launch call; when half of all directly
# launched kernels are short the host cannot keep the device fed (launch-bound).
SHORT_KERNEL_RATIO = 0.5
MIN_KERNEL_LAUNCHES = 100  # fewer launches is too small a sample to call a pattern
# Launch-cost idle: kernel-wait gaps plus host-wait gaps shorter than idle.LONG_HOST_WAIT_NS
# (HTA's idle breakdown, split by HTA's 100 us launch-delay cutoff), as a share of the span.
LAUNCH_IDLE_RATIO = 0.1
LAUNCH_IDLE_RATIO_HIGH = 0.3
# Device idle while the host does other work: long host waits >= half of all idle time on a
# device that is not saturated. Severity by the share of the span those waits took (how much of
# the window the host stole), not by busy ratio: a 60%-busy data-loader-bound trace loses a third
# of its window to the host and is not "low".
HOST_BOUND_IDLE_SHARE = 0.5
HOST_WAIT_SPAN_HIGH_RATIO = th.HOST_WAIT_SPAN_HIGH_RATIO  # 0.5
HOST_WAIT_SPAN_MEDIUM_RATIO = th.HOST_WAIT_SPAN_MEDIUM_RATIO  # 0.2
# One kernel taking >= 20% of GPU-op time is worth a look on its own (HTA's kernel breakdown
# shows the kernels covering its duration_ratio=0.8 of time; one at 20% is a quarter of that).
HOT_KERNEL_RATIO = 0.2
# Unfused elementwise chains (>= 3 back-to-back elementwise kernels) holding >= 10% of kernel
# time: fusing them removes launches and DRAM round trips.
ELEMENTWISE_CHAIN_RATIO = 0.1
# Host<->device copy time not hidden by kernels, as a share of the span.
EXPOSED_COPY_RATIO_LOW = 0.05
EXPOSED_COPY_RATIO_HIGH = 0.2
# Mean copy size at or above 1 MiB: bandwidth-bound transfers; below, latency-bound (batchable).
LARGE_COPY_BYTES = 1 << 20
# Pageable copies taking >= 1% of the span are worth pinning.
PAGEABLE_TIME_RATIO = 0.01
# Name markers of decode-phase attention kernels (vLLM/SGLang/FlashInfer/aiter).
_DECODE_MARKERS = ("decode", "paged_attention", "flash_fwd_splitkv", "splitkv", "mla_decode")
_MODEL_TYPES = ("gemm", "attention")


def _r(x: float) -> float:
    return round(x, 4)


def kineto_findings(
    s: TraceSummary | None,
    errors: Sequence[KinetoTraceError] = (),
    *,
    phase: str | None = None,
    memory_utilization_ratio: float | None = None,
) -> list[Finding]:
    """All findings for one trace's summary (plus one per read error); unordered."""
    out: list[Finding] = []
    for err in errors:
        out.append(
            Finding(
                id="kineto_trace_unreadable",
                title="A profiler trace could not be read; its kernels are missing",
                severity="low",
                layer="coverage",
                evidence={"error": str(err)},
                detail="The file is truncated, corrupt or not a Kineto trace.",
                scope={"profile": err.path},
            )
        )
    if s is None:
        return out
    scope = {"profile": Path(s.source).name}
    t = s.temporal
    if t is None or t.span_ns == 0:
        out.append(
            Finding(
                id="kineto_no_gpu_timeline",
                title="The profiler trace has no GPU timeline to analyse",
                severity="info",
                layer="coverage",
                evidence={"gpu_ops": s.gpu_ops, "profiler_ranges": s.profiler_ranges},
                detail="; ".join(s.notes),
                scope=scope,
            )
        )
        return out
    busy = _traced_busy_ratio(s)
    if s.graphs.launches_without_ops:
        out.append(
            Finding(
                id="graph_replay_not_traced",
                title="Graph replays ran without kernels in the trace; device idle is overstated",
                severity="low",
                layer="coverage",
                evidence={
                    "graph_launches": s.graphs.launches,
                    "graph_launches_without_ops": s.graphs.launches_without_ops,
                    "idle_pct_upper_bound": t.idle_pct,
                },
                detail="Enable kernel tracing inside CUDA graphs to see the replayed kernels.",
                scope=scope,
            )
        )
    if s.idle.devices_waiting_untraced:
        out.append(
            Finding(
                id="device_wait_not_traced",
                title="The device waited on work the trace does not show; its idle time is not "
                "attributable",
                severity="low",
                layer="coverage",
                evidence={
                    "devices_waiting_untraced": s.idle.devices_waiting_untraced,
                    "max_other_gap_ns": s.idle.max_other_gap_ns,
                    "span_ns": t.span_ns,
                    "other_idle_ns": s.idle.other_ns,
                    "idle_pct": t.idle_pct,
                    "threshold_untraced_wait_span_ratio": UNTRACED_WAIT_SPAN_RATIO,
                },
                detail=(
                    "Work was queued (its launch call had returned) but the device did not start "
                    "it: it waited on an event, another stream or rank, or work outside the "
                    "profiled window. Profile a longer window, all ranks, or the producer of "
                    "the awaited event before reading this idle time as waste."
                ),
                scope=scope,
            )
        )
    for f in (
        _host_bound_idle(s, busy, scope),
        _launch_overhead(s, scope),
        _short_kernels(s, scope),
        _hot_kernel(s, busy, scope),
        _elementwise(s, busy, scope),
        _host_copies(s, scope),
        _pageable(s, scope),
        _decode(s, busy, phase, memory_utilization_ratio, scope),
    ):
        if f is not None:
            out.append(f)
    return out


def _traced_busy_ratio(s: TraceSummary) -> float:
    """Busy share of the span the trace can speak for: a device that waited on work the trace
    does not show (``device_wait_not_traced``) is judged over the rest of its span. Otherwise a
    saturated prefill with one untraced 0.49 s wait read as half idle, and its GEMM as a kernel
    to tune (runtime) instead of the model's math."""
    t = s.temporal
    assert t is not None
    traced = t.span_ns - s.idle.untraced_wait_ns
    return t.busy_ns / traced if traced > 0 else t.busy_ratio


def _busy_evidence(s: TraceSummary, busy: float) -> dict[str, object]:
    """``busy_ratio``, and the untraced wait it leaves out of the span where there was one."""
    out: dict[str, object] = {"busy_ratio": _r(busy)}
    if s.idle.untraced_wait_ns:
        out["busy_ratio_excludes_untraced_wait_ns"] = s.idle.untraced_wait_ns
    return out


def _host_bound_idle(s: TraceSummary, busy: float, scope: dict[str, str]) -> Finding | None:
    t, idle = s.temporal, s.idle
    assert t is not None
    if busy >= SATURATED_BUSY_RATIO or t.idle_ns == 0 or not s.timeline_complete:
        return None
    share = idle.host_wait_long_ns / t.idle_ns
    if share < HOST_BOUND_IDLE_SHARE:
        return None
    long_r = idle.host_wait_long_ns / t.span_ns
    return Finding(
        id="device_idle_host_bound",
        title=f"The host held the device idle {long_r:.0%} of the profiled window",
        severity=(
            "high"
            if long_r >= HOST_WAIT_SPAN_HIGH_RATIO
            else "medium"
            if long_r >= HOST_WAIT_SPAN_MEDIUM_RATIO
            else "low"
        ),
        layer="runtime",
        evidence={
            "busy_ratio": _r(busy),
            "idle_ns": t.idle_ns,
            "span_ns": t.span_ns,
            "host_wait_long_ns": idle.host_wait_long_ns,
            "host_wait_long_share_of_idle": _r(share),
            "host_wait_long_share_of_span": _r(long_r),
            "threshold_saturated_busy_ratio": SATURATED_BUSY_RATIO,
            "threshold_host_bound_idle_share": HOST_BOUND_IDLE_SHARE,
            "threshold_host_wait_span_high_ratio": HOST_WAIT_SPAN_HIGH_RATIO,
            "threshold_host_wait_span_medium_ratio": HOST_WAIT_SPAN_MEDIUM_RATIO,
            "threshold_long_host_wait_ns": LONG_HOST_WAIT_NS,
        },
        detail=(
            "Long gaps (>= 100 us) before the host finished launching the next work: the host "
            "was busy elsewhere (data loading, Python scheduling, synchronisation). Overlap "
            "host work with the device (async data loading, more workers, larger batches)."
        ),
        scope=scope,
    )


def _launch_overhead(s: TraceSummary, scope: dict[str, str]) -> Finding | None:
    t, ls, idle = s.temporal, s.launches, s.idle
    assert t is not None
    if ls.kernel_launches < MIN_KERNEL_LAUNCHES or ls.short_kernel_ratio < SHORT_KERNEL_RATIO:
        return None
    host_short = idle.host_wait_ns - idle.host_wait_long_ns
    launch_idle_r = (host_short + idle.kernel_wait_ns) / t.span_ns
    if launch_idle_r < LAUNCH_IDLE_RATIO:
        return None
    return Finding(
        id="kernel_launch_overhead",
        title="The device waits on kernel launches between short kernels (launch-bound)",
        severity="high" if launch_idle_r >= LAUNCH_IDLE_RATIO_HIGH else "medium",
        layer="runtime",
        evidence={
            "kernel_launches": ls.kernel_launches,
            "short_kernel_ratio": _r(ls.short_kernel_ratio),
            "short_host_wait_ns": host_short,
            "kernel_wait_ns": idle.kernel_wait_ns,
            "span_ns": t.span_ns,
            "launch_idle_ratio": _r(launch_idle_r),
            "launch_api_time_ns": ls.launch_api_time_ns,
            "graph_launches": s.graphs.launches,
            "threshold_short_kernel_ratio": SHORT_KERNEL_RATIO,
            "threshold_launch_idle_ratio": LAUNCH_IDLE_RATIO,
            "threshold_kernel_wait_ns": KERNEL_WAIT_THRESHOLD_NS,
        },
        detail=(
            "Most kernels run for less time than their launch call and the device sits idle "
            "in short gaps between them. Capture the step in a CUDA/HIP graph "
            "(vLLM/SGLang cudagraph modes, torch.compile mode='reduce-overhead') or fuse "
            "kernels."
        ),
        scope=scope,
    )


def _short_kernels(s: TraceSummary, scope: dict[str, str]) -> Finding | None:
    ls = s.launches
    if ls.kernel_launches < MIN_KERNEL_LAUNCHES or ls.short_kernel_ratio < SHORT_KERNEL_RATIO:
        return None
    return Finding(
        id="short_kernels",
        title="Most kernels are shorter than the host call that launches them",
        severity="low",
        layer="runtime",
        evidence={
            "kernel_launches": ls.kernel_launches,
            "short_kernels": ls.short_kernels,
            "short_kernel_ratio": _r(ls.short_kernel_ratio),
            "short_kernel_time_ns": ls.short_kernel_time_ns,
            "kernel_duration_p50_ns": dict(ls.kernel_dur_ns).get("p50_ns"),
            "launch_call_p50_ns": dict(ls.runtime_ns).get("p50_ns"),
            "threshold_short_kernel_ratio": SHORT_KERNEL_RATIO,
        },
        detail="HTA's short-kernel test: GPU duration below the launch call's duration.",
        scope=scope,
    )


def _model_bound(s: TraceSummary, busy: float) -> bool:
    return busy >= SATURATED_BUSY_RATIO and s.type_ratio(*_MODEL_TYPES) >= 0.5


def _hot_kernel(s: TraceSummary, busy: float, scope: dict[str, str]) -> Finding | None:
    # Communication kernels are not tuned or replaced like compute kernels: their time is
    # waiting on peers and the link (HTA reports them apart); the hot kernel is the top other one.
    top = next((k for k in s.top_kernels if k["type"] != "communication"), None)
    if top is None:
        return None
    share = float(top["time_pct"]) / 100.0  # type: ignore[arg-type]
    if share < HOT_KERNEL_RATIO:
        return None
    model = _model_bound(s, busy) and top["type"] in _MODEL_TYPES
    precision = low_precision(str(top["name"]))
    if model:
        # busy over the traced span: say so where a wait outside the trace was left out, or a
        # headline of "idle 98 %" sits beside "a saturated device"
        where = ("a device saturated while the trace ran (the wait on untraced work left out)"
                 if s.idle.untraced_wait_ns else "a saturated device")
        shrink = ("shrink or quantise the model" if precision is None else
                  f"it already computes in {precision} (kernel name), so shrink the model")
        detail = (f"GEMM/attention dominating {where} is the model's own arithmetic: {shrink}, "
                  "or change batch shape.")
    else:
        detail = "Tune or replace this kernel (library choice, tile config, fusion)."
    return Finding(
        id="hot_kernels",
        title=f"One {top['type']} kernel takes {share:.0%} of kernel time",
        severity="medium" if share >= 1.5 * HOT_KERNEL_RATIO else "low",
        layer="model" if model else "runtime",
        evidence={
            "kernel": str(top["name"])[:200],
            "kernel_type": top["type"],
            "kernel_time_ns": top["total_ns"],
            "kernel_count": top["count"],
            "kernel_time_ratio": _r(share),
            "kernel_low_precision": precision,
            "gemm_attention_ratio": _r(s.type_ratio(*_MODEL_TYPES)),
            **_busy_evidence(s, busy),
            "threshold_hot_kernel_ratio": HOT_KERNEL_RATIO,
            "threshold_saturated_busy_ratio": SATURATED_BUSY_RATIO,
        },
        detail=detail,
        scope=scope,
    )


def _elementwise(s: TraceSummary, busy: float, scope: dict[str, str]) -> Finding | None:
    c = s.chains
    if c.chains == 0 or c.time_ratio < ELEMENTWISE_CHAIN_RATIO:
        return None
    return Finding(
        id="unfused_elementwise_chains",
        title="Chains of small elementwise kernels could be fused",
        severity="medium" if c.time_ratio >= 2.5 * ELEMENTWISE_CHAIN_RATIO else "low",
        layer="model" if _model_bound(s, busy) else "runtime",
        evidence={
            "chains": c.chains,
            "kernels_in_chains": c.kernels_in_chains,
            "time_in_chains_ns": c.time_in_chains_ns,
            "time_in_chains_ratio": _r(c.time_ratio),
            "longest_chain": c.longest_chain,
            "threshold_chain_time_ratio": ELEMENTWISE_CHAIN_RATIO,
            "min_chain_length": MIN_ELEMENTWISE_CHAIN,
        },
        detail="Fuse with torch.compile / Triton or a fused op; each link re-reads DRAM.",
        scope=scope,
    )


def _host_copies(s: TraceSummary, scope: dict[str, str]) -> Finding | None:
    t, cp = s.temporal, s.copies
    assert t is not None
    ratio = cp.exposed_host_copy_ns / t.span_ns
    if ratio < EXPOSED_COPY_RATIO_LOW:
        return None
    host_copies = sum(
        int(d["count"])  # type: ignore[call-overload]
        for d in cp.directions
        if d["direction"] in ("HtoD", "DtoH", "HtoH")
    )
    mean_bytes = cp.host_copy_bytes / host_copies if host_copies else 0.0
    starved = mean_bytes >= LARGE_COPY_BYTES and cp.pageable_copies == 0
    return Finding(
        id="host_device_copies",
        title="Host<->device copies stall the device on the hot path",
        severity="high" if ratio >= EXPOSED_COPY_RATIO_HIGH else "medium",
        layer="hardware" if starved else "runtime",
        evidence={
            "exposed_host_copy_ns": cp.exposed_host_copy_ns,
            "span_ns": t.span_ns,
            "exposed_host_copy_ratio": _r(ratio),
            "host_copies": host_copies,
            "host_copy_bytes": cp.host_copy_bytes,
            "mean_copy_bytes": int(mean_bytes),
            "host_copy_gbps": round(cp.host_copy_gbps, 3),
            "pageable_copies": cp.pageable_copies,
            "threshold_exposed_copy_ratio": EXPOSED_COPY_RATIO_LOW,
            "threshold_large_copy_bytes": LARGE_COPY_BYTES,
        },
        detail=(
            "Large pinned copies still dominate: the device is starved by the host link; "
            "move less data or keep it resident."
            if starved
            else "Small or pageable copies serialise with compute: pin memory, batch copies, "
            "overlap them on a side stream (non_blocking=True)."
        ),
        scope=scope,
    )


def _pageable(s: TraceSummary, scope: dict[str, str]) -> Finding | None:
    t, cp = s.temporal, s.copies
    assert t is not None
    if cp.pageable_copies == 0 or cp.pageable_time_ns / t.span_ns < PAGEABLE_TIME_RATIO:
        return None
    return Finding(
        id="pageable_memory_copies",
        title="Copies from pageable host memory serialise the host and the device",
        severity="medium" if cp.pageable_time_ns / t.span_ns >= EXPOSED_COPY_RATIO_LOW else "low",
        layer="runtime",
        evidence={
            "pageable_copies": cp.pageable_copies,
            "pageable_bytes": cp.pageable_bytes,
            "pageable_time_ns": cp.pageable_time_ns,
            "pageable_time_ratio": _r(cp.pageable_time_ns / t.span_ns),
            "threshold_pageable_time_ratio": PAGEABLE_TIME_RATIO,
        },
        detail="Use pinned host buffers (pin_memory=True) so copies are truly asynchronous.",
        scope=scope,
    )


def _decode(
    s: TraceSummary,
    busy: float,
    phase: str | None,
    mem_util: float | None,
    scope: dict[str, str],
) -> Finding | None:
    names = " ".join(str(k["name"]).lower() for k in s.top_kernels)
    marker = next((m for m in _DECODE_MARKERS if m in names), None)
    is_decode = phase == "decode" or (phase is None and marker is not None)
    if not is_decode or not _model_bound(s, busy):
        return None
    if mem_util is not None and mem_util < th.DRAM_BOUND_MEMORY_UTIL_RATIO:
        return None  # the memory controller says DRAM is not the bound
    evidence: dict[str, object] = {
        **_busy_evidence(s, busy),
        "gemm_attention_ratio": _r(s.type_ratio(*_MODEL_TYPES)),
        "phase_source": "spans" if phase == "decode" else f"kernel name '{marker}'",
        "threshold_saturated_busy_ratio": SATURATED_BUSY_RATIO,
    }
    if mem_util is not None:
        evidence["memory_utilization_ratio"] = _r(mem_util)
    return Finding(
        id="kernel_dram_bound_decode",
        # no memory-controller reading: the title claims no measured DRAM activity
        title=("High DRAM activity in decode is the model's physics, not hardware"
               if mem_util is not None else
               "Saturated decode is memory-bound by construction (DRAM not measured): the "
               "model's physics, not hardware"),
        severity="info",
        layer="model",
        evidence=evidence,
        detail=(
            "Decode reads every weight and the KV cache once per token, so it is memory-"
            "bandwidth bound by construction; faster devices help less than larger batches, "
            "quantised weights/KV cache or speculative decoding."
        ),
        scope=scope,
    )


def merge_across_files(per_file: list[list[Finding]], files: int) -> list[Finding]:
    """One finding per (id, layer) over several traces: the most severe, with its spread.

    Findings are judged per trace (mixing a launch-bound trace with a saturated one would hide
    both); a finding that fires in several traces is reported once, from the trace where it is
    most severe, with ``profiles_with_finding`` / ``profiles`` added to its evidence. The layer
    is part of the key so that, e.g., a model-bound hot GEMM in one trace and a runtime hot
    kernel in another both survive.
    """
    if files <= 1:
        return [f for fs in per_file for f in fs]
    order = {"high": 0, "medium": 1, "low": 2, "info": 3}
    by_id: dict[tuple[str, str], list[Finding]] = {}
    for fs in per_file:
        for f in fs:
            by_id.setdefault((f.id, f.layer), []).append(f)
    out: list[Finding] = []
    for same in by_id.values():
        worst = min(same, key=lambda f: order.get(f.severity, 9))
        evidence = {**worst.evidence, "profiles_with_finding": len(same), "profiles": files}
        out.append(
            Finding(
                id=worst.id,
                title=worst.title,
                severity=worst.severity,
                layer=worst.layer,
                evidence=evidence,
                detail=worst.detail,
                scope=dict(worst.scope) if len(same) == 1 else {},
            )
        )
    return out
