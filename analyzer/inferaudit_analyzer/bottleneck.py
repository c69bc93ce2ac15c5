"""The bottleneck verdict: which layer, model | runtime | hardware, holds cost and latency.

Taxonomy (the three fingerprints):

- **hardware**: the device is starved by data movement (PCIe copies, host memory, NUMA):
  copies take a large share of busy time, or the kernel trace shows host<->device copies that no
  kernel hides taking a large share of the profiled window (communication kernels are not
  copies: they do not count).
  High DRAM activity in large-batch decode is *not* this: it is the model's physics.
- **runtime**: the serving stack leaves the device idle or gives it the wrong work: no batching,
  idle device while requests wait, launch gaps / unfused kernels in the kernel trace, a device paid
  for but mostly unused.
- **model**: the device is saturated with healthy batching; what remains is per-token compute or
  memory traffic the model itself requires.

Ordered cases, first match wins (Vidur's ``BottleneckAnalyzer`` shape); thresholds live in
:mod:`inferaudit_analyzer.thresholds` with their sources. Confidence is the case's base confidence
scaled by input coverage and by how many requests the verdict rests on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.findings import Finding


@dataclass(frozen=True)
class Signals:
    """What the verdict looks at; None means "not measured" (a case needing it cannot match)."""

    device_utilization: float | None = None
    copy_time_ratio: float | None = None
    idle_while_waiting_ratio: float | None = None
    batch_size_p50: int | None = None
    concurrency_while_busy: float | None = None
    kineto_idle_pct: float | None = None
    # HTA's non-compute share (copies, memsets AND communication): reported, never a verdict.
    kineto_non_compute_pct: float | None = None
    kineto_busy_ratio: float | None = None  # 1 - idle share of the profiled window
    # Host<->device copy time with no kernel running / profiled span (0-1).
    kineto_exposed_host_copy_ratio: float | None = None
    # False when the kernel trace cannot account for the device's idle time (graph replays
    # without kernels, a device waiting on untraced work): its idle share then judges nothing.
    kineto_timeline_complete: bool | None = None
    requests: int = 0
    batches: int = 0
    kernel_profiles: int = 0
    coverage_ratio: float = 1.0
    findings: tuple[Finding, ...] = ()
    kineto_finding_ids: frozenset[str] = frozenset()  # which findings came from kernel traces

    def has(self, finding_id: str) -> bool:
        return any(f.id == finding_id for f in self.findings)

    @property
    def kineto_timeline_incomplete(self) -> bool:
        """The kernel trace says so (``kineto_timeline_complete``) or raised a coverage finding
        that says so: its idle share then measures what the trace cannot see."""
        return self.kineto_timeline_complete is False or bool(
            KINETO_INCOMPLETE_FINDINGS & self.kineto_finding_ids)

    def of_layer(self, layer: str, severities: Sequence[str] = ("high", "medium")) -> list[Finding]:
        return [f for f in self.findings if f.layer == layer and f.severity in severities]


@dataclass(frozen=True)
class Verdict:
    layer: str  # model | runtime | hardware | unknown
    confidence: float
    case: str
    decided_by: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "confidence": round(self.confidence, 3),
            "case": self.case,
            "decided_by": [dict(d) for d in self.decided_by],
            "detail": self.detail,
        }


# Kernel-trace findings (inferaudit_analyzer.kineto) that mean "wrong work from the runtime" at
# medium severity already: launch-bound or unfused execution, the GPU waiting on the host.
KERNEL_WASTE_FINDINGS = frozenset({
    "kernel_launch_overhead", "unfused_elementwise_chains", "device_idle_host_bound",
})
# Kernel-trace coverage findings meaning the timeline cannot account for the device's idle time.
KINETO_INCOMPLETE_FINDINGS = frozenset({"graph_replay_not_traced", "device_wait_not_traced"})


def _fp(name: str, value: Any, threshold: Any = None, op: str = ">=") -> dict[str, Any]:
    return {"fingerprint": name, "value": value, "threshold": threshold, "op": op}


Case = Callable[[Signals], "tuple[str, float, list[dict[str, Any]], str] | None"]


def _no_data(s: Signals):
    if s.requests == 0 and s.batches == 0 and s.kernel_profiles == 0:
        return ("unknown", 0.0, [_fp("requests", 0), _fp("kernel_profiles", 0)],
                "Nothing to judge: no requests, model calls or kernel traces in the input.")
    return None


def _hardware_copies(s: Signals):
    fps = []
    if s.copy_time_ratio is not None and s.copy_time_ratio >= th.COPY_BOUND_RATIO:
        fps.append(_fp("copy_time_ratio", round(s.copy_time_ratio, 4), th.COPY_BOUND_RATIO))
    r = s.kineto_exposed_host_copy_ratio
    if r is not None and r >= th.KINETO_EXPOSED_HOST_COPY_RATIO_HARDWARE:
        fps.append(_fp("kineto_exposed_host_copy_ratio", round(r, 4),
                       th.KINETO_EXPOSED_HOST_COPY_RATIO_HARDWARE))
    fps += [_fp(f"finding:{f.id}", f.severity, None, "present")
            for f in s.of_layer("hardware", ("high",))]
    if fps:
        return ("hardware", 0.75, fps,
                "Data movement (host<->device copies) takes a large share of device time.")
    return None


def _runtime_unbatched(s: Signals):
    f = next((f for f in s.findings if f.id == "unbatched_serving"), None)
    if f is None:
        return None
    # the finding's own rule (share of one-request calls), not a median it does not test
    return ("runtime", 0.85, [
        _fp("size1_ratio", f.evidence.get("size1_ratio"), th.UNBATCHED_SIZE1_SHARE),
        _fp("concurrency_while_device_busy", s.concurrency_while_busy,
            th.UNBATCHED_MIN_CONCURRENCY),
    ], "Requests overlap but each model call serves one: the serving stack does not batch.")


def _runtime_idle_waiting(s: Signals):
    r = s.idle_while_waiting_ratio
    if r is None or r < th.IDLE_WHILE_WAITING_RATIO:
        return None
    return ("runtime", 0.7 if r < th.IDLE_WHILE_WAITING_HIGH_RATIO else 0.8,
            [_fp("idle_while_waiting_ratio", round(r, 4), th.IDLE_WHILE_WAITING_RATIO)],
            "The device sits idle while requests are in flight: time goes to the serving stack.")


def _runtime_kernel_inefficiency(s: Signals):
    fps = []
    seen: list[str] = []
    if (s.kineto_idle_pct is not None and s.kineto_idle_pct >= th.KINETO_IDLE_PCT_RUNTIME
            and not s.kineto_timeline_incomplete):
        fps.append(_fp("kineto_idle_pct", round(s.kineto_idle_pct, 2), th.KINETO_IDLE_PCT_RUNTIME))
        seen.append(f"the GPU idle {s.kineto_idle_pct:.0f}% of the profiled window")
    fired = [f for f in s.of_layer("runtime") if f.id in s.kineto_finding_ids
             and (f.severity == "high" or f.id in KERNEL_WASTE_FINDINGS)]
    fps += [_fp(f"finding:{f.id}", f.severity, None, "present") for f in fired]
    seen += [f.title[:1].lower() + f.title[1:] for f in fired]
    if fps:
        # what fired, not a list of what might have: "idle between launches" on a device
        # 92 % busy whose only finding was unfused chains sent the reader to the wrong fix
        return ("runtime", 0.65, fps,
                f"The kernel trace shows {'; '.join(dict.fromkeys(seen))}: the serving "
                "stack's doing, not the model's own arithmetic.")
    return None


def _runtime_wasted_work(s: Signals):
    fs = [f for f in s.of_layer("runtime", ("high",)) if f.id not in s.kineto_finding_ids]
    if not fs:
        return None
    return ("runtime", 0.6, [_fp(f"finding:{f.id}", f.severity, None, "present") for f in fs],
            "The serving stack makes the device do work it need not (e.g. recomputing cached "
            "answers, padding).")


def _model_saturated(s: Signals):
    u, name = s.device_utilization, "device_utilization"
    if u is None:
        u, name = s.kineto_busy_ratio, "kineto_busy_ratio"
    if u is None or u < th.SATURATED_UTILIZATION_RATIO:
        return None
    fps = [_fp(name, round(u, 4), th.SATURATED_UTILIZATION_RATIO)]
    if s.batch_size_p50 is not None:
        fps.append(_fp("batch_size_p50", s.batch_size_p50, None, "reported"))
    fps += [_fp(f"finding:{f.id}", f.severity, None, "present")
            for f in s.findings if f.layer == "model"]
    batched = s.batch_size_p50 is not None and s.batch_size_p50 > 1
    return ("model", 0.75, fps,
            ("The device is saturated with work the serving stack batches well; what remains "
             "is the model's own per-token compute and memory traffic." if batched else
             "The device is saturated and no runtime or data-movement fingerprint fired; what "
             "remains is the model's own per-token compute and memory traffic."))


def _utilization(s: Signals) -> tuple[float | None, str]:
    """Device utilisation from the spans, else the kernel trace's busy ratio when its timeline
    accounts for the idle time (the report's ``device_utilization`` falls back the same way)."""
    if s.device_utilization is not None:
        return s.device_utilization, "device_utilization"
    if s.kineto_timeline_incomplete:
        return None, "kineto_busy_ratio"
    return s.kineto_busy_ratio, "kineto_busy_ratio"


def _runtime_underused(s: Signals):
    u, name = _utilization(s)
    if u is None or u >= th.UNDERUSED_UTILIZATION_RATIO:
        return None
    return ("runtime", 0.55, [_fp(name, round(u, 4), th.UNDERUSED_UTILIZATION_RATIO, "<")],
            "Most paid device time is idle and nothing points at data movement: the deployment "
            "or serving stack does not keep the device fed.")


def _runtime_findings(s: Signals):
    fs = s.of_layer("runtime")
    if not fs:
        return None
    return ("runtime", 0.5, [_fp(f"finding:{f.id}", f.severity, None, "present") for f in fs],
            "Runtime findings of medium severity dominate.")


def _kernel_trace_incomplete(s: Signals):
    if s.device_utilization is not None or not s.kineto_timeline_incomplete:
        return None
    fps = [_fp("kineto_timeline_complete", False, True, "==")
           ] if s.kineto_timeline_complete is False else []
    fps += [_fp(f"finding:{i}", "present", None, "present")
            for i in sorted(KINETO_INCOMPLETE_FINDINGS & s.kineto_finding_ids)]
    return ("unknown", 0.0, fps,
            "The kernel trace is the only measure of the device and cannot account for its idle "
            "time (graph replays without kernels, or the device waiting on work the trace does "
            "not show), and no runtime or hardware fingerprint fired: profile a longer window, "
            "all ranks, or trace the model calls (instrument_model or ia.batch).")


def _utilization_unknown(s: Signals):
    """Nothing fired and nothing measured how busy the device was: no layer can be defended
    (the model layer's fingerprint is a busy device)."""
    if _utilization(s)[0] is not None:
        return None
    low = sorted({f.id for f in s.findings if f.layer in ("runtime", "hardware")})
    fired = (f"no medium or high runtime or hardware fingerprint fired (low: {', '.join(low)})"
             if low else "no runtime or hardware fingerprint fired")
    if s.kernel_profiles:
        how = ("the kernel trace has no device timeline to measure it (profile with "
               "ProfilerActivity.CUDA)")
    else:
        how = ("nothing in the input times the model calls: trace them (instrument_model or "
               "ia.batch)")
    return ("unknown", 0.0, [],
            f"The device's utilisation is unknown and {fired}; {how} to tell the layers "
            "apart.")


def _model_default(s: Signals):
    u, name = _utilization(s)  # known: utilization_unknown comes first
    return ("model", 0.4, [_fp(name, round(u or 0.0, 4), th.UNDERUSED_UTILIZATION_RATIO, ">=")],
            "No runtime or hardware fingerprint fired; the device is moderately busy doing "
            "the model's work.")


CASES: tuple[tuple[str, Case], ...] = (
    ("no_data", _no_data),
    ("hardware_data_movement", _hardware_copies),
    ("runtime_unbatched", _runtime_unbatched),
    ("runtime_idle_while_waiting", _runtime_idle_waiting),
    ("runtime_kernel_inefficiency", _runtime_kernel_inefficiency),
    ("runtime_wasted_work", _runtime_wasted_work),
    ("model_saturated", _model_saturated),
    ("runtime_underused", _runtime_underused),
    ("runtime_findings", _runtime_findings),
    ("kernel_trace_incomplete", _kernel_trace_incomplete),
    ("utilization_unknown", _utilization_unknown),
    ("model_default", _model_default),
)


def decide(s: Signals) -> Verdict:
    """First matching case wins; its confidence is scaled by coverage and sample size."""
    for name, case in CASES:
        hit = case(s)
        if hit is None:
            continue
        layer, base, fps, detail = hit
        n = max(s.requests, s.batches)
        volume = 1.0 if s.kernel_profiles and not n else min(
            1.0, n / th.MIN_REQUESTS_FOR_CONFIDENCE)
        conf = base * max(0.0, min(1.0, s.coverage_ratio)) * volume
        return Verdict(layer, conf, name, tuple(fps), detail)
    raise AssertionError("the last case always matches")  # pragma: no cover
