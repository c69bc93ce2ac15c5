"""PyTorch-profiler (Kineto) trace analysis.

One entry point::

    from inferaudit_analyzer.kineto import analyze_kineto

    report = analyze_kineto(["profiles/step1.json.gz", "profiles/"])  # files and/or dirs
    report.to_json()   # the report's "kernels" section: aggregate + "files" + "errors"
    report.findings    # tuple[Finding, ...], most severe first; merge into the run's findings
    report.files[0].temporal.idle_pct  # per-file typed results (TraceSummary)

Spans reference traces by ``inferaudit.profile.trace_path`` (``semconv.PROFILE_TRACE_PATH``),
relative to the directory of the file holding the span; ``resolve_profile_path(span_file,
value)`` turns it into a path to pass here.
Pass ``phase="decode"`` (and ``memory_utilization_ratio`` from NVML) when the spans say so.

Unreadable files never raise (unless ``strict=True``): they are listed in ``report.errors``
and as a ``kineto_trace_unreadable`` coverage finding. Definitions, agreement with Holistic
Trace Analysis and deliberate differences: docs/kineto-analysis.md.

Modules: :mod:`.load` (incremental JSON/gzip/zstd reader), :mod:`.events` (integer-ns
interval arrays, launch-API classification), :mod:`.temporal`, :mod:`.idle`, :mod:`.kernels`,
:mod:`.launches`, :mod:`.copies`, :mod:`.findings`, :mod:`.summary`.
"""

from __future__ import annotations

from .events import TraceEvents, classify_launch, read_events
from .kernels import classify_kernel
from .load import KinetoTraceError
from .summary import KinetoReport, TraceSummary, analyze_kineto, resolve_profile_path

__all__ = [
    "KinetoReport",
    "KinetoTraceError",
    "TraceEvents",
    "TraceSummary",
    "analyze_kineto",
    "classify_kernel",
    "classify_launch",
    "read_events",
    "resolve_profile_path",
]
