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

from inferaudit_analyzer.ingest.otlp_json import any_value, hex_id

__all__ = ["as_string", "insert_rows", "otel_rows"]

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
