"""The facade: ``analyze(paths, params) -> report dict``, used by the CLI, the bench, the report
and the ROI model.

Steps: sort inputs into OTLP files and Kineto traces (by content: a JSON object with
``traceEvents``), load OTLP into the canonical tables (``store.load_store``), create the views,
run each analysis, price the window, run the Kineto analysis on the given traces plus those the
spans reference (``profile_path``), decide the bottleneck, assemble the versioned JSON.

Failure behaviour: a path that matches nothing or input with nothing readable raises
:class:`UnusableInput` (the CLI exits 2); unreadable parts are listed in ``input.errors`` and the
rest is analysed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferaudit_analyzer import bottleneck as bn
from inferaudit_analyzer.analyses._common import AnalysisParams, compute_window
from inferaudit_analyzer.analyses.baseline import baseline
from inferaudit_analyzer.analyses.batching import batch_stats, batching_findings
from inferaudit_analyzer.analyses.concurrency import analyze_concurrency, clock_skew_findings
from inferaudit_analyzer.analyses.copies import analyze_copies, copy_findings
from inferaudit_analyzer.analyses.coverage import analyze_coverage, coverage_findings
from inferaudit_analyzer.analyses.idle import idle_findings
from inferaudit_analyzer.analyses.redundancy import analyze_redundancy, redundancy_findings
from inferaudit_analyzer.analyses.routing import analyze_routing, routing_findings
from inferaudit_analyzer.analyses.runs import analyze_runs, runs_findings
from inferaudit_analyzer.analyses.utilization import analyze_utilization, dram_bound_decode
from inferaudit_analyzer.cost import CostModel, resolve_prices
from inferaudit_analyzer.findings import Finding, sort_findings
from inferaudit_analyzer.report_json import build_report
from inferaudit_analyzer.store import UnusableInput, load_store
from inferaudit_analyzer.views import create_views, drop_materialized, materialize_views

KINETO_SNIFF_BYTES = 1 << 20


@dataclass(frozen=True)
class AnalyzeParams:
    """What ``inferaudit analyze`` takes beyond the paths; see the CLI help for each."""

    bucket_s: float | None = None
    price_per_hour: float | None = None
    price_file: str | None = None
    gpu_model: str | None = None
    cache: bool = True
    sketch_alpha: float = 0.01
    near_dup_hamming: int = 3
    progress: Callable[..., Any] | None = None

    def analysis(self) -> AnalysisParams:
        return AnalysisParams(self.bucket_s, self.sketch_alpha, self.near_dup_hamming)

    def to_json(self) -> dict[str, Any]:
        return {"bucket_s": self.bucket_s, "price_per_hour": self.price_per_hour,
                "price_file": self.price_file, "gpu_model": self.gpu_model,
                "sketch_alpha": self.sketch_alpha, "near_dup_hamming_bits": self.near_dup_hamming}


def _head_text(path: str, compression: str) -> str:
    from inferaudit_analyzer.ingest.files import DECOMPRESS_ERRORS, open_stream

    try:
        with open_stream(path, compression) as s:
            head = s.read(KINETO_SNIFF_BYTES)
    except (*DECOMPRESS_ERRORS, OSError):
        return ""
    return head.decode("utf-8", errors="ignore").lstrip()


def is_kineto(path: str, compression: str = "none", head: str | None = None) -> bool:
    """A Kineto trace is one JSON object with ``traceEvents``; OTLP lines start with resource*."""
    text = _head_text(path, compression) if head is None else head
    if not text.startswith("{"):
        return False
    first_line = text.split("\n", 1)[0]
    if '"resourceSpans"' in first_line or '"resourceMetrics"' in first_line:
        return False
    return '"traceEvents"' in text


# What this project writes itself (a report, a calibration) starts with its schema name; such a
# file beside the traces is skipped, not read as broken OTLP lines (one error per line).
_OWN_OUTPUT = re.compile(r'\{\s*"schema"\s*:\s*"(inferaudit\.(?:report|calibration)/[^"]*)"')


def own_output_schema(head: str) -> str | None:
    m = _OWN_OUTPUT.match(head)
    return m.group(1) if m else None


# A Collector file exporter shared by signals writes logs and profiles requests between the
# span lines: a .json file that starts with one is OTLP lines too.
_OTLP_OR_KINETO_KEYS = ('"resourceSpans"', '"resourceMetrics"', '"resourceLogs"',
                        '"resourceProfiles"', '"traceEvents"')


def _json_document_not_otlp(head: str, path: str) -> bool:
    """A JSON document beside the traces (a manifest, a summary), not OTLP lines: pretty-printed
    (its first line a lone ``{``) with no OTLP or Kineto key near the top, or a ``.json`` file
    whose first line has none (OTLP lines hold one whole export request each)."""
    first = head.split("\n", 1)[0].strip()
    if first == "{":
        return not any(k in head[:65536] for k in _OTLP_OR_KINETO_KEYS)
    from inferaudit_analyzer.ingest.files import stem

    return (stem(path).endswith(".json") and first.startswith("{")
            and not any(k in first for k in _OTLP_OR_KINETO_KEYS))


def split_inputs(paths: Iterable[str | os.PathLike[str]]
                 ) -> tuple[list[str], list[str], list[dict[str, str]]]:
    """(OTLP files, Kineto files, skipped files with the reason) among the expanded inputs;
    raises UnusableInput if no file matches."""
    from inferaudit_analyzer.ingest.files import InputNotFound, discover

    try:
        files = discover(list(paths))
    except InputNotFound as exc:
        raise UnusableInput(exc.path, None, exc.reason) from exc
    otlp, kineto, skipped = [], [], []
    for f in files:
        head = _head_text(f.path, f.compression) if f.format == "json" else ""
        schema_name = own_output_schema(head)
        if schema_name is not None:
            skipped.append({"file": f.path, "reason": f"written by InferAudit ({schema_name})"})
        elif f.format == "json" and is_kineto(f.path, f.compression, head):
            kineto.append(f.path)
        elif f.format == "json" and _json_document_not_otlp(head, f.path):
            skipped.append({"file": f.path, "reason": "a JSON document, not OTLP lines"})
        else:
            otlp.append(f.path)
    return otlp, kineto, skipped


def _empty_connection() -> Any:
    import duckdb

    from inferaudit_analyzer.schema import create_all_sql

    con = duckdb.connect(":memory:")
    for sql in create_all_sql():
        con.execute(sql)
    return con


def _jsonable(x: Any) -> Any:
    if hasattr(x, "to_json"):
        return x.to_json()
    if hasattr(x, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return str(x)


def _profiles_referenced(con: Any) -> list[str]:
    rows = con.execute(
        "SELECT DISTINCT profile_path FROM spans WHERE profile_path IS NOT NULL").fetchall()
    return [str(r[0]) for r in rows]


def _exposed_host_copy_ratio(kernels: dict[str, Any] | None,
                             temporal: dict[str, Any]) -> float | None:
    """Host<->device copy time no kernel hid, over the kernel trace's span: the hardware
    fingerprint (communication kernels are not copies)."""
    span_ns = temporal.get("span_ns")
    copies = (kernels or {}).get("copy_bandwidth") or {}
    exposed = copies.get("exposed_host_copy_ns")
    if not span_ns or exposed is None:
        return None
    return float(exposed) / float(span_ns)


def analyze_connection(con: Any, params: AnalyzeParams | None = None,
                       kineto_paths: Iterable[str] = (),
                       input_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every analysis on a connection holding the canonical tables; returns the report.

    Separate from :func:`analyze` so tests, the bench and the ROI model can feed a fixture DB.
    """
    params = params or AnalyzeParams()
    create_views(con)
    materialize_views(con)
    try:
        return _analyze(con, params, kineto_paths, input_info)
    finally:
        drop_materialized(con)


def _analyze(con: Any, params: AnalyzeParams, kineto_paths: Iterable[str],
             input_info: dict[str, Any] | None) -> dict[str, Any]:
    ap = params.analysis()
    window = compute_window(con)
    conc = analyze_concurrency(con, window.duration_ns)
    util = analyze_utilization(con, window.duration_ns)
    total_device_ns, total_requests = con.execute(
        "SELECT COALESCE(SUM(device_ns), 0), COUNT(*) FROM requests").fetchone()
    prices = resolve_prices(con, util, price_per_hour=params.price_per_hour,
                            price_file=params.price_file, gpu_model=params.gpu_model)
    cost = CostModel(tuple(prices), window.duration_ns, int(total_device_ns), int(total_requests))
    stats = batch_stats(con)
    base = baseline(con, window, util, conc, cost, ap, stats)
    copies = analyze_copies(con)
    red = analyze_redundancy(con, ap.near_dup_hamming)
    routing = analyze_routing(con)
    cov = analyze_coverage(con)
    overall = base["overall"]
    # Requests that batches served but whose spans are not in the input (sampled out, dropped)
    # were served all the same: the bill's cost per request over them too. A lower bound on the
    # requests served, so still an upper bound on the true figure, tighter than the one above.
    served = overall["requests"] + cov.missing_requests
    overall["requests_served_at_least"] = served
    overall["cost_per_request_served_usd"] = (
        overall["cost_usd"] / served if cov.missing_requests and overall.get("cost_usd")
        is not None else overall.get("cost_per_request_usd"))
    tokens = overall["input_tokens"] + overall["output_tokens"]
    output_share = overall["output_tokens"] / tokens if tokens else None

    findings: list[Finding] = []
    findings += idle_findings(conc, util)
    findings += batching_findings(stats, conc)
    findings += redundancy_findings(red)
    findings += routing_findings(routing)
    findings += copy_findings(copies)
    findings += coverage_findings(cov)
    findings += clock_skew_findings(conc)
    findings += runs_findings(analyze_runs(con))
    findings += dram_bound_decode(util, output_share, stats.mean)

    errors: list[dict[str, Any]] = list((input_info or {}).get("errors", []))
    kineto_files = list(dict.fromkeys(list(kineto_paths)))
    for ref in _profiles_referenced(con):
        if ref in kineto_files:
            continue
        if Path(ref).is_file():
            kineto_files.append(ref)
        else:
            errors.append({"file": ref, "position": None,
                           "message": "profile referenced by a span is not there"})
    kernels: dict[str, Any] | None = None
    temporal: dict[str, Any] = {}
    kineto_ids: set[str] = set()
    if kineto_files:
        try:
            from inferaudit_analyzer.kineto import analyze_kineto
        except ImportError as exc:
            errors.append({"file": kineto_files[0], "position": None,
                           "message": f"kernel-trace analysis unavailable ({exc})"})
        else:
            phase = "decode" if output_share is not None and output_share >= 0.5 else None
            rep = analyze_kineto(kineto_files, phase=phase,
                                 memory_utilization_ratio=util.memory_util_ratio)
            kernels = rep.to_json()
            temporal = kernels.get("temporal_breakdown") or {}
            findings += list(rep.findings)
            kineto_ids = {f.id for f in rep.findings}
            for e in rep.errors:
                errors.append({"file": e.path, "message": str(e), "position": (
                    None if e.position is None else f"character {e.position}")})
    findings = sort_findings(findings)

    signals = bn.Signals(
        device_utilization=util.ratio,
        copy_time_ratio=copies.copy_time_ratio,
        idle_while_waiting_ratio=conc.idle_while_waiting_ratio,
        batch_size_p50=stats.p50,
        concurrency_while_busy=conc.mean_while_busy,
        kineto_idle_pct=temporal.get("idle_pct"),
        kineto_non_compute_pct=temporal.get("non_compute_pct"),
        kineto_busy_ratio=(None if temporal.get("idle_pct") is None
                           else 1.0 - float(temporal["idle_pct"]) / 100.0),
        kineto_exposed_host_copy_ratio=_exposed_host_copy_ratio(kernels, temporal),
        kineto_timeline_complete=temporal.get("timeline_complete"),
        requests=cov.requests,
        batches=cov.batches,
        kernel_profiles=len(kineto_files) if kernels is not None else 0,
        coverage_ratio=cov.ratio,
        findings=tuple(findings),
        kineto_finding_ids=frozenset(kineto_ids),
    )
    verdict = bn.decide(signals)
    if (overall.get("device_utilization") is None and signals.kineto_busy_ratio is not None
            and not signals.kineto_timeline_incomplete):  # as the verdict reads it
        overall["device_utilization"] = round(signals.kineto_busy_ratio, 4)
        overall["device_utilization_source"] = "kineto"
    info = dict(input_info or {})
    info["errors"] = errors
    info["kineto_files"] = kineto_files
    return build_report(
        input_info=info, coverage=cov, window=window, params=params.to_json(), baseline=base,
        cost=cost, findings=findings, verdict=verdict, kernels=kernels,
        sections={"redundancy": red.to_json(), "routing": routing.to_json(),
                  "copies": copies.to_json()},
    )


def analyze(paths: Iterable[str | os.PathLike[str]], params: AnalyzeParams | None = None,
            *, then: Callable[[Any, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Analyse trace files / directories / globs; returns the report dict (docs/report-schema.md).

    ``then(con, report)``, when given and the input has spans, runs on the same open store
    before it closes (``inferaudit report`` projects the roadmap there: one load, one cache).

    Raises:
        UnusableInput: a path matches nothing, or nothing in the input is readable.
    """
    params = params or AnalyzeParams()
    paths = [os.fspath(p) for p in paths]
    otlp, kineto, skipped = split_inputs(paths)
    if not otlp and not kineto:
        raise UnusableInput(skipped[0]["file"], None,
                            "no traces here: only JSON documents that are not OTLP "
                            "(InferAudit's own outputs, manifests)")
    info: dict[str, Any] = {"paths": paths, "files": [], "errors": [], "skipped": skipped}
    store = None
    if otlp:
        # no span at all is fine when Kineto traces came along: they are analysed alone
        store = load_store(otlp, cache=params.cache, progress=params.progress,
                           require_spans=not kineto)
        con = store.con
        info["files"] = _jsonable(getattr(store, "inputs", []))
        info["errors"] = [_error_json(e) for e in getattr(store, "errors", [])]
    else:
        con = _empty_connection()
    info["files"] = list(info["files"]) + [{"file": k, "format": "kineto"} for k in kineto]
    try:
        report = analyze_connection(con, params, kineto, info)
        if then is not None and store is not None:
            then(con, report)
    finally:
        if store is not None:
            store.close()
        else:
            con.close()
    if not otlp and report["kernels"] is None:
        first = kineto[0] if kineto else paths[0]
        raise UnusableInput(first, None, "no readable spans or kernel traces")
    if report["kernels"] is not None and not report["kernels"].get("files") and not otlp:
        errs = report["input"]["errors"]
        msg = errs[0]["message"] if errs else "no readable kernel trace"
        raise UnusableInput(kineto[0], None, msg)
    return report


def _error_json(e: Any) -> dict[str, Any]:
    return {"file": getattr(e, "file", None), "position": getattr(e, "position", None),
            "message": getattr(e, "message", str(e))}
