"""``analyze_kineto``: the one entry point of the Kineto analysis.

Reads each trace file, runs every analysis per file and over all files together (devices and
correlation ids stay distinct across files), judges findings per file and merges them by id
(:func:`.findings.merge_across_files`), and returns a frozen :class:`KinetoReport`. A file that
cannot be read is recorded in ``errors`` (and as a coverage finding) without losing the others,
unless ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from inferaudit_analyzer.findings import Finding, sort_findings

from .copies import CopyStats, copy_stats
from .events import TraceEvents, concat, read_events, runtime_of_gpu
from .idle import (
    KERNEL_WAIT_THRESHOLD_NS,
    UNTRACED_WAIT_SPAN_RATIO,
    IdleBreakdown,
    idle_breakdown,
)
from .kernels import (
    ElementwiseChains,
    elementwise_chains,
    kernel_type_breakdown,
    op_types,
    top_kernels,
)
from .launches import (
    LAUNCH_DELAY_CUTOFF_NS,
    RUNTIME_CUTOFF_NS,
    GraphLaunches,
    LaunchStats,
    graph_launches,
    launch_stats,
)
from .load import KinetoTraceError
from .temporal import TemporalBreakdown, temporal_by_device

__all__ = [
    "KinetoReport",
    "TraceSummary",
    "analyze_kineto",
    "find_trace_files",
    "resolve_profile_path",
    "summarise",
]

TRACE_SUFFIXES = (".json", ".json.gz", ".json.zst")


@dataclass(frozen=True)
class TraceSummary:
    """Every Kineto analysis of one trace file, or of several files together."""

    source: str
    temporal: TemporalBreakdown | None
    devices: tuple[dict[str, object], ...]
    idle: IdleBreakdown
    kernel_types: tuple[dict[str, object], ...]
    top_kernels: tuple[dict[str, object], ...]
    launches: LaunchStats
    graphs: GraphLaunches
    copies: CopyStats
    chains: ElementwiseChains
    gpu_ops: int
    profiler_ranges: int = 0
    counter_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def timeline_complete(self) -> bool:
        """False when the trace cannot account for the device's idle time: graph launches ran
        without their GPU ops in the trace (idle overstated), or a device waited most of the
        window on something the trace does not show (:data:`.idle.UNTRACED_WAIT_SPAN_RATIO`)."""
        return self.graphs.launches_without_ops == 0 and self.idle.devices_waiting_untraced == 0

    def type_ratio(self, *types: str) -> float:
        """Summed share (0-1) of GPU-op time of the given kernel types."""
        return sum(float(r["time_pct"]) for r in self.kernel_types if r["type"] in types) / 100.0  # type: ignore[arg-type]

    def to_json(self) -> dict[str, object]:
        temporal = self.temporal.to_json() if self.temporal else None
        if temporal is not None:
            temporal["timeline_complete"] = self.timeline_complete
        return {
            "source": self.source,
            "temporal_breakdown": temporal,
            "devices": [dict(d) for d in self.devices],
            "idle_breakdown": self.idle.to_json(),
            "kernel_types": [dict(r) for r in self.kernel_types],
            "top_kernels": [dict(r) for r in self.top_kernels],
            "launch_stats": self.launches.to_json(),
            "graph_launches": self.graphs.to_json(),
            "copy_bandwidth": self.copies.to_json(),
            "elementwise_chains": self.chains.to_json(),
            "gpu_ops": self.gpu_ops,
            "profiler_ranges": self.profiler_ranges,
            "counter_names": list(self.counter_names),
            "notes": list(self.notes),
        }


def summarise(ev: TraceEvents, source: str) -> TraceSummary:
    """Run every analysis on normalised events."""
    types = op_types(ev)
    rt_index = runtime_of_gpu(ev)
    per_dev = temporal_by_device(ev, types)
    total: TemporalBreakdown | None = None
    devices: list[dict[str, object]] = []
    for info, tb in per_dev:
        total = tb if total is None else total + tb
        devices.append(
            {"source": info.source, "device": info.device_id, "name": info.name, **tb.to_json()}
        )
    graphs = graph_launches(ev, rt_index)
    notes = list(ev.notes)
    if ev.n_gpu == 0:
        if ev.profiler_ranges:
            notes.append(
                f"no GPU timeline: {ev.profiler_ranges} cuda_profiler_range events (CUPTI "
                "range-profiler mode replays and serialises kernels, so their times are not "
                "a timeline); counters are listed in counter_names"
            )
        else:
            notes.append("no GPU ops (kernel/memcpy/memset) in the trace")
    if graphs.launches_without_ops:
        notes.append(
            f"{graphs.launches_without_ops} of {graphs.launches} graph launches have no GPU op "
            "in the trace; device time during those replays is unknown, so idle_pct is an "
            "upper bound"
        )
    idle = idle_breakdown(ev, rt_index)
    if idle.devices_waiting_untraced:
        notes.append(
            f"{idle.devices_waiting_untraced} device(s) waited with work queued for at least "
            f"{UNTRACED_WAIT_SPAN_RATIO:.0%} of the span (longest {idle.max_other_gap_ns} ns) "
            "on something the trace does not show; idle time there is not attributable"
        )
    return TraceSummary(
        source=source,
        temporal=total,
        devices=tuple(devices),
        idle=idle,
        kernel_types=tuple(kernel_type_breakdown(ev, types)),
        top_kernels=tuple(top_kernels(ev, types)),
        launches=launch_stats(ev, rt_index),
        graphs=graphs,
        copies=copy_stats(ev),
        chains=elementwise_chains(ev, types),
        gpu_ops=ev.n_gpu,
        profiler_ranges=ev.profiler_ranges,
        counter_names=ev.counter_names,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class KinetoReport:
    """Result of :func:`analyze_kineto`.

    ``to_json()`` is the report's ``kernels`` section: the aggregate over all files at the top
    level (``temporal_breakdown``, ``idle_breakdown``, ``kernel_types``, ``top_kernels``,
    ``launch_stats``, ``copy_bandwidth``, ``graph_launches``, ...) and one entry per file in
    ``files``. Findings are in :attr:`findings` (not repeated in ``to_json()``).
    """

    files: tuple[TraceSummary, ...]
    aggregate: TraceSummary | None
    findings: tuple[Finding, ...]
    errors: tuple[KinetoTraceError, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = self.aggregate.to_json() if self.aggregate else {}
        body.pop("source", None)
        body["files"] = [f.to_json() for f in self.files]
        body["errors"] = [str(e) for e in self.errors]
        body["thresholds"] = {
            "kernel_wait_threshold_ns": KERNEL_WAIT_THRESHOLD_NS,
            "launch_delay_cutoff_ns": LAUNCH_DELAY_CUTOFF_NS,
            "runtime_cutoff_ns": RUNTIME_CUTOFF_NS,
        }
        return body


def resolve_profile_path(span_file: str | Path, trace_path: str) -> Path:
    """Where a span's ``inferaudit.profile.trace_path`` points (docs/data-model.md).

    Relative paths are relative to the directory of the file holding the span; absolute paths
    are kept.
    """
    p = Path(trace_path)
    return p if p.is_absolute() else Path(span_file).parent / p


def find_trace_files(path: Path) -> list[Path]:
    """A directory's Kineto files (``*.json``, ``*.json.gz``, ``*.json.zst``), sorted."""
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(TRACE_SUFFIXES))


def analyze_kineto(
    paths: str | Path | Iterable[str | Path],
    *,
    strict: bool = False,
    phase: str | None = None,
    memory_utilization_ratio: float | None = None,
) -> KinetoReport:
    """Analyse one or more Kineto trace files (or directories of them).

    Args:
        paths: a file, a directory (its ``*.json[.gz|.zst]`` files), or an iterable of these.
        strict: raise :class:`KinetoTraceError` on the first unreadable file instead of
            recording it in ``errors``.
        phase: ``"decode"``/``"prefill"`` when the caller knows which phase the profiled
            calls ran (from the spans); sharpens the DRAM-bound-decode finding.
        memory_utilization_ratio: mean device memory-controller utilisation (0-1, NVML) over
            the profiled window, if the caller has it; evidence for the same finding.

    Returns:
        A frozen :class:`KinetoReport`. Never raises for bad files unless ``strict``.
    """
    from .findings import kineto_findings, merge_across_files

    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[Path] = []
    for item in items:
        p = Path(item)
        files.extend(find_trace_files(p) if p.is_dir() else [p])
    parts: list[TraceEvents] = []
    summaries: list[TraceSummary] = []
    errors: list[KinetoTraceError] = []
    for path in files:
        try:
            ev = read_events(path, file_index=len(parts))
        except KinetoTraceError as exc:
            if strict:
                raise
            errors.append(exc)
            continue
        parts.append(ev)
        summaries.append(summarise(ev, str(path)))
    aggregate: TraceSummary | None = None
    if len(summaries) == 1:
        aggregate = summaries[0]
    elif summaries:
        aggregate = summarise(concat(parts), f"{len(summaries)} files")
    per_file = [
        kineto_findings(s, phase=phase, memory_utilization_ratio=memory_utilization_ratio)
        for s in summaries
    ]
    findings = merge_across_files(per_file, len(summaries)) + kineto_findings(None, errors)
    return KinetoReport(
        files=tuple(summaries),
        aggregate=aggregate,
        findings=tuple(sort_findings(findings)),
        errors=tuple(errors),
    )
