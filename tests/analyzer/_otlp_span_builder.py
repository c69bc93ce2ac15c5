"""OTLP/JSON lines built by hand for the request-identity and clock tests: spans of several
instrumentation scopes and resources in one export request, as the file exporter writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def otlp_span(tid: str, sid: str, start: int, end: int, attrs: dict[str, Any], *,
              parent: str | None = None, kind: int = 1,
              links: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": tid, "spanId": sid, "name": "s", "kind": kind,
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(end),
        "attributes": [attr(k, v) for k, v in attrs.items()]}
    if parent:
        span["parentSpanId"] = parent
    if links:
        span["links"] = [{"traceId": a, "spanId": b} for a, b in links]
    return span


def resource(attrs: dict[str, Any], scope: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resource": {"attributes": [attr(k, v) for k, v in attrs.items()]},
            "scopeSpans": [{"scope": {"name": scope}, "spans": spans}]}


def write_line(path: Path, line: dict[str, Any]) -> Path:
    path.write_text(json.dumps(line) + "\n")
    return path


def summary(rep: dict[str, Any]) -> dict[str, Any]:
    """What the engine comparisons hold equal: counts, latency, concurrency, findings, verdict."""
    o = rep["baseline"]["overall"]
    return {"requests": o["requests"], "input_tokens": o["input_tokens"],
            "latency_p50": o["latency_ms"]["p50"], "concurrency": o["concurrency"],
            "findings": sorted(f["id"] for f in rep["findings"]),
            "verdict": rep["bottleneck"]["case"]}


def on_both_engines(tmp_path: Path, line: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same OTLP line analysed on DuckDB (from a file) and on ClickHouse (chDB): the two
    reports, for a test to compare what it holds equal. Skips where chDB is not installed."""
    import pytest

    pytest.importorskip("chdb")
    from _engine_fixtures import chdb_with

    from inferaudit_analyzer.analyze import AnalyzeParams, analyze
    from inferaudit_analyzer.engines.clickhouse_analyze import analyze_clickhouse

    params = AnalyzeParams(cache=False)
    duck = analyze([str(write_line(tmp_path / "traces-1.jsonl", line))], params)
    ch = analyze_clickhouse("chdb://?table=otel_traces", params,
                            backend=chdb_with([line], tmp_path))
    return duck, ch
