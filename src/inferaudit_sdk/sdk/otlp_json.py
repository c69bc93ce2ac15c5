"""OTLP/JSON encoding of SDK spans and metrics, as the Collector's ``file`` exporter writes it.

Spans are encoded straight from :class:`ReadableSpan` into plain dicts: going through protobuf
and ``MessageToJson`` would cost several times more per span and base64-encode the ids, where
OTLP/JSON wants lowercase hex. The output equals, field for field and key order included,
``MessageToDict(encode_spans(spans), use_integers_for_enums=True)`` of the OpenTelemetry SDK's
own OTLP encoder with the ids turned into hex (tests/sdk/test_file_sink.py checks that): default
values are omitted, 64-bit integers are strings, enums are integers.

Metrics are exported once per collection interval, so they reuse the SDK's protobuf encoder and
only the exemplar ids are rewritten to hex.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

# Proto SpanKind values (the API enum starts at INTERNAL = 0, the proto one at UNSPECIFIED = 0).
_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
# SpanFlags: the SDK always says whether it knows the parent's remoteness (bit 8), and sets
# bit 9 when the parent (or link target) is remote.
_FLAGS_HAS_IS_REMOTE = 0x100
_FLAGS_IS_REMOTE = 0x200
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_T = TypeVar("_T")


def _double(value: float) -> float | str:
    # Proto3 JSON spells the non-finite doubles as strings; json.dumps would write bare NaN.
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def encode_value(value: Any) -> dict[str, Any]:
    """One attribute value as an OTLP ``AnyValue`` dict (raises ``ValueError`` on a bad type)."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"integer {value} does not fit in int64")
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": _double(value)}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Sequence):
        values = [encode_value(v) for v in value]
        return {"arrayValue": {"values": values}} if values else {"arrayValue": {}}
    if isinstance(value, Mapping):
        kvs = [_key_value(str(k), v) for k, v in value.items()]
        return {"kvlistValue": {"values": kvs}} if kvs else {"kvlistValue": {}}
    raise ValueError(f"unsupported attribute type {type(value).__name__}")


def _key_value(key: str, value: Any) -> dict[str, Any]:
    if key:
        return {"key": key, "value": encode_value(value)}
    return {"value": encode_value(value)}


def encode_attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Attributes as OTLP ``KeyValue`` dicts; a value that cannot be encoded is left out, as the
    SDK's protobuf encoder does."""
    if not attributes:
        return []
    out = []
    for key, value in attributes.items():
        try:
            out.append(_key_value(key, value))
        except (ValueError, TypeError, RecursionError):
            continue
    return out


def _put_attributes(d: dict[str, Any], attributes: Mapping[str, Any] | None) -> None:
    if attributes:
        encoded = encode_attributes(attributes)
        if encoded:
            d["attributes"] = encoded


def encode_resource(resource: Resource | None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if resource is not None:
        _put_attributes(d, resource.attributes)
    return d


def encode_scope(scope: InstrumentationScope | None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if scope is None:
        return d
    if scope.name:
        d["name"] = scope.name
    if scope.version:
        d["version"] = scope.version
    _put_attributes(d, scope.attributes)
    return d


def _flags(context: Any) -> int:
    if context is not None and context.is_remote:
        return _FLAGS_HAS_IS_REMOTE | _FLAGS_IS_REMOTE
    return _FLAGS_HAS_IS_REMOTE


def encode_span(span: ReadableSpan) -> dict[str, Any]:
    """One span as an OTLP/JSON ``Span`` dict (keys in proto field-number order)."""
    ctx = span.get_span_context()
    d: dict[str, Any] = {"traceId": f"{ctx.trace_id:032x}", "spanId": f"{ctx.span_id:016x}"}
    trace_state = ctx.trace_state
    if trace_state:
        d["traceState"] = ",".join(f"{k}={v}" for k, v in trace_state.items())
    parent = span.parent
    if parent is not None:
        d["parentSpanId"] = f"{parent.span_id:016x}"
    if span.name:
        d["name"] = span.name
    d["kind"] = _KIND[span.kind]
    if span.start_time:
        d["startTimeUnixNano"] = str(span.start_time)
    if span.end_time:
        d["endTimeUnixNano"] = str(span.end_time)
    _put_attributes(d, span.attributes)
    if span.dropped_attributes:
        d["droppedAttributesCount"] = span.dropped_attributes
    if span.events:
        d["events"] = [_encode_event(e) for e in span.events]
    if span.dropped_events:
        d["droppedEventsCount"] = span.dropped_events
    if span.links:
        d["links"] = [_encode_link(link) for link in span.links]
    if span.dropped_links:
        d["droppedLinksCount"] = span.dropped_links
    status = span.status
    if status is not None:
        s: dict[str, Any] = {}
        if status.description:
            s["message"] = status.description
        if status.status_code.value:
            s["code"] = status.status_code.value
        d["status"] = s
    d["flags"] = _flags(parent)
    return d


def _encode_event(event: Any) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if event.timestamp:
        d["timeUnixNano"] = str(event.timestamp)
    if event.name:
        d["name"] = event.name
    _put_attributes(d, event.attributes)
    if event.dropped_attributes:
        d["droppedAttributesCount"] = event.dropped_attributes
    return d


def _encode_link(link: Any) -> dict[str, Any]:
    ctx = link.context
    # The SDK's OTLP encoder sends no trace state on links; neither do we (same bytes either way).
    d: dict[str, Any] = {"traceId": f"{ctx.trace_id:032x}", "spanId": f"{ctx.span_id:016x}"}
    _put_attributes(d, link.attributes)
    if link.dropped_attributes:
        d["droppedAttributesCount"] = link.dropped_attributes
    d["flags"] = _flags(ctx)
    return d


Grouped = dict[Resource, dict[InstrumentationScope | None, list[_T]]]


def group_spans(spans: Sequence[ReadableSpan], encode: Callable[[ReadableSpan], _T]
                ) -> Grouped[_T]:
    """Each span's ``encode`` result, grouped by resource, then by scope, in first-seen order
    (the grouping the SDK's encoder uses). Resources group by value, but each Resource object
    is hashed once: its hash JSON-encodes all its attributes (~18 µs), and the spans of a
    batch share one."""
    grouped: Grouped[_T] = {}
    by_id: dict[int, dict[InstrumentationScope | None, list[_T]]] = {}
    for span in spans:
        resource = span.resource
        scopes = by_id.get(id(resource))
        if scopes is None:
            scopes = grouped.get(resource)
            if scopes is None:
                scopes = grouped[resource] = {}
            by_id[id(resource)] = scopes
        scope = span.instrumentation_scope or None
        bucket = scopes.get(scope)
        if bucket is None:
            bucket = scopes[scope] = []
        bucket.append(encode(span))
    return grouped


def encode_spans_request(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """An ``ExportTraceServiceRequest`` dict (spans grouped as :func:`group_spans` says)."""
    grouped = group_spans(spans, encode_span)
    resource_spans = []
    for resource, scopes in grouped.items():
        scope_spans = []
        for scope, encoded in scopes.items():
            ss: dict[str, Any] = {"scope": encode_scope(scope), "spans": encoded}
            if scope is not None and scope.schema_url:
                ss["schemaUrl"] = scope.schema_url
            scope_spans.append(ss)
        rs: dict[str, Any] = {"resource": encode_resource(resource), "scopeSpans": scope_spans}
        if resource.schema_url:
            rs["schemaUrl"] = resource.schema_url
        resource_spans.append(rs)
    return {"resourceSpans": resource_spans}


def encode_metrics_request(metrics_data: Any) -> dict[str, Any]:
    """An ``ExportMetricsServiceRequest`` dict from SDK ``MetricsData`` (via the SDK's protobuf
    encoder; exemplar ids rewritten from base64 to hex as OTLP/JSON wants)."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    d = MessageToDict(encode_metrics(metrics_data), use_integers_for_enums=True)
    for rm in d.get("resourceMetrics", ()):
        for sm in rm.get("scopeMetrics", ()):
            for metric in sm.get("metrics", ()):
                for kind in metric.values():
                    if isinstance(kind, dict):
                        for point in kind.get("dataPoints", ()):
                            for ex in point.get("exemplars", ()):
                                b64_ids_to_hex(ex)
    return d


def b64_ids_to_hex(d: dict[str, Any]) -> None:
    """Rewrite protobuf-JSON base64 ``traceId``/``spanId``/``parentSpanId`` to hex, in place."""
    for key in ("traceId", "spanId", "parentSpanId"):
        value = d.get(key)
        if isinstance(value, str):
            d[key] = base64.b64decode(value).hex()


def dumps_line(obj: dict[str, Any]) -> bytes:
    """One compact JSON line, newline-terminated, UTF-8."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: escape them, still valid JSON
        data = json.dumps(obj, separators=(",", ":")).encode("ascii")
    return data + b"\n"
