"""OTLP/JSON spans → ``otel_traces`` rows, written the way the Collector's ClickHouse exporter does.

Used to load test fixtures, benchmarks and local OTLP files into chDB so the ClickHouse path sees
exactly what a production ``otel_traces`` holds: attribute values through ``AsString`` (ints in
decimal, doubles in shortest form, bools ``true``/``false``, arrays and maps as JSON), kind and
status as ``SPAN_KIND_*`` / ``STATUS_CODE_*`` names (``traceutil.SpanKindStr``), ``Timestamp`` the
span start, ``Duration`` end - start in ns, the scope in ``ScopeName`` / ``ScopeVersion``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from inferaudit_analyzer.ingest.otlp_values import any_value, hex_id

__all__ = ["as_string", "insert_metric_rows", "insert_rows", "otel_metric_rows", "otel_rows"]

_KIND = {0: "SPAN_KIND_UNSPECIFIED", 1: "SPAN_KIND_INTERNAL", 2: "SPAN_KIND_SERVER",
         3: "SPAN_KIND_CLIENT", 4: "SPAN_KIND_PRODUCER", 5: "SPAN_KIND_CONSUMER"}
_STATUS = {0: "STATUS_CODE_UNSET", 1: "STATUS_CODE_OK", 2: "STATUS_CODE_ERROR"}


def as_string(v: Any) -> str:
    """pcommon.Value.AsString: what the exporter stores in the attribute maps."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        text = repr(v)
        if "e" in text or "E" in text:  # Go's FormatFloat(v, 'f', -1, 64): no exponent
            text = format(v, "f").rstrip("0").rstrip(".") if v != int(v) else str(int(v))
        return text
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return "" if v is None else str(v)


def _attrs(kvs: Any) -> dict[str, str]:
    return {kv["key"]: as_string(any_value(kv.get("value") or {})) for kv in kvs or ()}


def _enum(v: Any, names: dict[int, str]) -> str:
    return names.get(v, "") if isinstance(v, int) else str(v or "")


def otel_rows(requests: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One ``otel_traces`` row (a dict keyed by column) per span of each OTLP/JSON request."""
    for req in requests:
        for rs in req.get("resourceSpans") or ():
            res = _attrs((rs.get("resource") or {}).get("attributes"))
            for ss in rs.get("scopeSpans") or ():
                scope = ss.get("scope") or {}
                for s in ss.get("spans") or ():
                    start = int(s["startTimeUnixNano"])
                    links = s.get("links") or ()
                    yield {
                        "ts_ns": start,
                        "TraceId": hex_id(s.get("traceId")) or "",
                        "SpanId": hex_id(s.get("spanId")) or "",
                        "ParentSpanId": hex_id(s.get("parentSpanId")) or "",
                        "TraceState": s.get("traceState") or "",
                        "SpanName": s.get("name") or "",
                        "SpanKind": _enum(s.get("kind", 0), _KIND),
                        "ServiceName": res.get("service.name", ""),
                        "ResourceAttributes": res,
                        "ScopeName": scope.get("name") or "",
                        "ScopeVersion": scope.get("version") or "",
                        "SpanAttributes": _attrs(s.get("attributes")),
                        "Duration": int(s["endTimeUnixNano"]) - start,
                        "StatusCode": _enum((s.get("status") or {}).get("code", 0), _STATUS),
                        "StatusMessage": (s.get("status") or {}).get("message") or "",
                        "LinksTraceId": [hex_id(ln.get("traceId")) or "" for ln in links],
                        "LinksSpanId": [hex_id(ln.get("spanId")) or "" for ln in links],
                        "LinksTraceState": [ln.get("traceState") or "" for ln in links],
                        "LinksAttributes": [_attrs(ln.get("attributes")) for ln in links],
                    }


_STAGE_STRUCTURE = (
    "ts_ns Int64, TraceId String, SpanId String, ParentSpanId String, TraceState String, "
    "SpanName String, SpanKind String, ServiceName String, "
    "ResourceAttributes Map(String, String), ScopeName String, ScopeVersion String, "
    "SpanAttributes Map(String, String), Duration UInt64, StatusCode String, "
    "StatusMessage String, LinksTraceId Array(String), LinksSpanId Array(String), "
    "LinksTraceState Array(String), LinksAttributes Array(Map(String, String))"
)

_INSERT = (
    "INSERT INTO {table} (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, "
    "SpanKind, ServiceName, ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, "
    "Duration, StatusCode, StatusMessage, `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, "
    "`Links.Attributes`) SELECT fromUnixTimestamp64Nano(ts_ns), TraceId, SpanId, ParentSpanId, "
    "TraceState, SpanName, SpanKind, ServiceName, ResourceAttributes, ScopeName, ScopeVersion, "
    "SpanAttributes, Duration, StatusCode, StatusMessage, LinksTraceId, LinksSpanId, "
    "LinksTraceState, LinksAttributes FROM file('{path}', 'JSONEachRow', '{structure}')"
)


def insert_rows(backend: Any, table: str, rows: Iterable[dict[str, Any]],
                scratch_dir: str, batch_rows: int = 200_000) -> int:
    """Insert rows through a JSONEachRow file (chDB reads local files); returns rows written.

    ``Timestamp`` goes in as integer ns through ``fromUnixTimestamp64Nano``: exact, and
    independent of the session time zone.
    """
    import os

    path = os.path.join(scratch_dir, "otel_rows.jsonl")
    total = 0
    buf: list[str] = []

    def flush() -> None:
        nonlocal buf
        if not buf:
            return
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(buf))
            fh.write("\n")
        backend.command(_INSERT.format(table=table, path=path.replace("'", "\\'"),
                                       structure=_STAGE_STRUCTURE))
        buf = []

    for row in rows:
        buf.append(json.dumps(row, separators=(",", ":")))
        total += 1
        if len(buf) >= batch_rows:
            flush()
    flush()
    if os.path.exists(path):
        os.remove(path)
    return total


def otel_metric_rows(requests: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("gauge" | "sum", row)`` per number data point, as the exporter's metrics tables hold
    them (``Value`` a double even for ``asInt``; histograms are not produced here)."""
    for req in requests:
        for rm in req.get("resourceMetrics") or ():
            res = _attrs((rm.get("resource") or {}).get("attributes"))
            for sm in rm.get("scopeMetrics") or ():
                scope = sm.get("scope") or {}
                for m in sm.get("metrics") or ():
                    for kind in ("gauge", "sum"):
                        body = m.get(kind)
                        if body is None:
                            continue
                        for dp in body.get("dataPoints") or ():
                            v = dp.get("asDouble", dp.get("asInt"))
                            if v is None:
                                continue
                            row = {
                                "ResourceAttributes": res, "ScopeName": scope.get("name") or "",
                                "ServiceName": res.get("service.name", ""),
                                "MetricName": m.get("name") or "",
                                "Attributes": _attrs(dp.get("attributes")),
                                "start_ns": int(dp.get("startTimeUnixNano") or 0),
                                "ts_ns": int(dp.get("timeUnixNano") or 0), "Value": float(v),
                            }
                            if kind == "sum":
                                t = body.get("aggregationTemporality", 0)
                                row["AggregationTemporality"] = t if isinstance(t, int) else {
                                    "AGGREGATION_TEMPORALITY_DELTA": 1,
                                    "AGGREGATION_TEMPORALITY_CUMULATIVE": 2}.get(t, 0)
                                row["IsMonotonic"] = bool(body.get("isMonotonic", False))
                            yield kind, row


def insert_metric_rows(backend: Any, prefix: str, requests: Iterable[dict[str, Any]],
                       scratch_dir: str) -> int:
    """Insert gauges into ``{prefix}_gauge`` and sums into ``{prefix}_sum``; rows written."""
    import os

    by_kind: dict[str, list[str]] = {"gauge": [], "sum": []}
    for kind, row in otel_metric_rows(requests):
        by_kind[kind].append(json.dumps(row, separators=(",", ":")))
    common = ("ResourceAttributes Map(String, String), ScopeName String, ServiceName String, "
              "MetricName String, Attributes Map(String, String), start_ns Int64, ts_ns Int64, "
              "Value Float64")
    for kind, lines in by_kind.items():
        if not lines:
            continue
        path = os.path.join(scratch_dir, f"otel_{kind}.jsonl")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        extra_cols = ", AggregationTemporality, IsMonotonic" if kind == "sum" else ""
        extra_struct = ", AggregationTemporality Int32, IsMonotonic Bool" if kind == "sum" else ""
        backend.command(
            f"INSERT INTO {prefix}_{kind} (ResourceAttributes, ScopeName, ServiceName, MetricName, "
            f"Attributes, StartTimeUnix, TimeUnix, Value{extra_cols}) SELECT ResourceAttributes, "
            "ScopeName, ServiceName, MetricName, Attributes, fromUnixTimestamp64Nano(start_ns), "
            f"fromUnixTimestamp64Nano(ts_ns), Value{extra_cols} FROM file('{path}', "
            f"'JSONEachRow', '{common}{extra_struct}')")
        os.remove(path)
    return sum(len(v) for v in by_kind.values())
