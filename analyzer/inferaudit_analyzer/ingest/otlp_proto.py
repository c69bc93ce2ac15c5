"""The Collector ``file`` exporter's ``proto`` format → the OTLP/JSON object shape.

That format (exporter/fileexporter ``exportMessageAsBuffer``) writes each
``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest`` as a 4-byte big-endian unsigned
length followed by the serialized message; with the exporter's legacy ``compression: zstd`` each
message is a zstd frame of its own, and ``format: json`` + compression is framed the same way.
The binary messages are turned into the same dict shape OTLP/JSON parses to, so one span
converter (``otlp_json.RowBuilder``) serves both encodings.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

from google.protobuf.message import DecodeError

MAX_FRAME_BYTES = 512 * 1024 * 1024
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Frame:
    """One length-prefixed message: its payload and the byte offset of its length prefix."""

    __slots__ = ("error", "offset", "payload")

    def __init__(self, payload: bytes, offset: int, error: str | None = None) -> None:
        self.payload = payload
        self.offset = offset
        self.error = error


def iter_frames(stream: BinaryIO) -> Iterator[Frame]:
    """Yield the frames of a length-prefixed file; a torn tail comes back as an error frame."""
    offset = 0
    while True:
        head = stream.read(4)
        if not head:
            return
        if len(head) < 4:
            yield Frame(b"", offset, f"truncated length prefix ({len(head)} of 4 bytes)")
            return
        (n,) = struct.unpack(">I", head)
        if n > MAX_FRAME_BYTES:
            yield Frame(b"", offset, f"frame length {n} exceeds {MAX_FRAME_BYTES} bytes; "
                                     "not a length-prefixed OTLP file, or corrupt")
            return
        payload = stream.read(n)
        if len(payload) < n:
            yield Frame(b"", offset, f"truncated frame: {len(payload)} of {n} bytes")
            return
        yield Frame(payload, offset)
        offset += 4 + n


def decompress_if_zstd(payload: bytes) -> bytes:
    if payload[:4] == _ZSTD_MAGIC:
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(payload)
    return payload


def decode(payload: bytes, prefer_metrics: bool = False) -> dict[str, Any]:
    """Parse one message as traces or metrics (the wire format cannot tell them apart).

    Both requests are ``repeated Resource* = 1``; a metrics message often parses as traces
    without error, so a parse is accepted only when its spans have 16-byte trace ids.
    """
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    def as_traces() -> dict[str, Any] | None:
        msg = ExportTraceServiceRequest()
        try:
            msg.ParseFromString(payload)
        except DecodeError:
            return None
        spans = [s for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans]
        if not spans or any(len(s.trace_id) != 16 or len(s.span_id) != 8 for s in spans):
            return None
        return traces_to_json(msg)

    def as_metrics() -> dict[str, Any] | None:
        msg = ExportMetricsServiceRequest()
        try:
            msg.ParseFromString(payload)
        except DecodeError:
            return None
        names = [m.name for rm in msg.resource_metrics for sm in rm.scope_metrics
                 for m in sm.metrics]
        if not names or not all(names):
            return None
        return metrics_to_json(msg)

    order = (as_metrics, as_traces) if prefer_metrics else (as_traces, as_metrics)
    for attempt in order:
        try:
            out = attempt()
        except (UnicodeDecodeError, ValueError):
            out = None
        if out is not None:
            return out
    raise ValueError("not an OTLP ExportTraceServiceRequest or ExportMetricsServiceRequest")


# -- protobuf → OTLP/JSON shape ----------------------------------------------------------------
def any_value_json(v: Any) -> dict[str, Any]:
    which = v.WhichOneof("value")
    if which is None:
        return {}
    if which == "string_value":
        return {"stringValue": v.string_value}
    if which == "int_value":
        return {"intValue": v.int_value}
    if which == "double_value":
        return {"doubleValue": v.double_value}
    if which == "bool_value":
        return {"boolValue": v.bool_value}
    if which == "array_value":
        return {"arrayValue": {"values": [any_value_json(e) for e in v.array_value.values]}}
    if which == "kvlist_value":
        return {"kvlistValue": {"values": kvs_json(v.kvlist_value.values)}}
    if which == "bytes_value":
        import base64

        return {"bytesValue": base64.b64encode(v.bytes_value).decode()}
    return {}


def kvs_json(kvs: Any) -> list[dict[str, Any]]:
    return [{"key": kv.key, "value": any_value_json(kv.value)} for kv in kvs]


def _scope_json(scope: Any) -> dict[str, Any]:
    return {"name": scope.name, "version": scope.version}


def traces_to_json(msg: Any) -> dict[str, Any]:
    out = []
    for rs in msg.resource_spans:
        scopes = []
        for ss in rs.scope_spans:
            spans = []
            for s in ss.spans:
                spans.append({
                    "traceId": s.trace_id.hex(),
                    "spanId": s.span_id.hex(),
                    "parentSpanId": s.parent_span_id.hex(),
                    "name": s.name,
                    "kind": s.kind,
                    "startTimeUnixNano": s.start_time_unix_nano,
                    "endTimeUnixNano": s.end_time_unix_nano,
                    "attributes": kvs_json(s.attributes),
                    "status": {"code": s.status.code, "message": s.status.message},
                    "links": [{"traceId": ln.trace_id.hex(), "spanId": ln.span_id.hex(),
                               "attributes": kvs_json(ln.attributes)} for ln in s.links],
                })
            scopes.append({"scope": _scope_json(ss.scope), "spans": spans})
        out.append({"resource": {"attributes": kvs_json(rs.resource.attributes)},
                    "scopeSpans": scopes})
    return {"resourceSpans": out}


def _number_dp(dp: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"timeUnixNano": dp.time_unix_nano,
                         "startTimeUnixNano": dp.start_time_unix_nano,
                         "attributes": kvs_json(dp.attributes)}
    which = dp.WhichOneof("value")
    if which == "as_double":
        d["asDouble"] = dp.as_double
    elif which == "as_int":
        d["asInt"] = dp.as_int
    return d


def _summary_dp(dp: Any) -> dict[str, Any]:
    return {"timeUnixNano": dp.time_unix_nano, "startTimeUnixNano": dp.start_time_unix_nano,
            "attributes": kvs_json(dp.attributes), "count": dp.count, "sum": dp.sum}


def metrics_to_json(msg: Any) -> dict[str, Any]:
    out = []
    for rm in msg.resource_metrics:
        scopes = []
        for sm in rm.scope_metrics:
            metrics = []
            for m in sm.metrics:
                d: dict[str, Any] = {"name": m.name, "unit": m.unit}
                which = m.WhichOneof("data")
                body = getattr(m, which) if which else None
                if which in ("gauge", "sum"):
                    d[which] = {"dataPoints": [_number_dp(dp) for dp in body.data_points]}
                    if which == "sum":
                        d[which]["aggregationTemporality"] = body.aggregation_temporality
                        d[which]["isMonotonic"] = body.is_monotonic
                elif which in ("histogram", "exponential_histogram", "summary"):
                    key = "exponentialHistogram" if which == "exponential_histogram" else which
                    d[key] = {"dataPoints": [_summary_dp(dp) for dp in body.data_points]}
                    if which != "summary":
                        d[key]["aggregationTemporality"] = body.aggregation_temporality
                metrics.append(d)
            scopes.append({"scope": _scope_json(sm.scope), "metrics": metrics})
        out.append({"resource": {"attributes": kvs_json(rm.resource.attributes)},
                    "scopeMetrics": scopes})
    return {"resourceMetrics": out}
