"""OTLP protobuf / OTLP JSON request bodies -> one canonical OTLP-JSON line.

The line is what the OpenTelemetry Collector's ``file`` exporter writes (docs/data-model.md):
``{"resourceSpans": [...]}`` or ``{"resourceMetrics": [...]}``, ids as lowercase hex, 64-bit
integers as JSON strings, enums as integers, attribute values as ``AnyValue`` objects, fields in
proto declaration order with proto3 defaults left out. Traces, the hot path, are rendered from
the protobuf wire bytes by :mod:`._wire` (``json_format.MessageToJson`` base64-encodes ids and
is several times slower), with the upb objects as the fallback; metrics, a few points a second,
go through a descriptor-driven walk that follows the same rules.

JSON bodies are parsed into the proto message first (after turning their hex ids into the bytes
the proto JSON mapping expects), so both encodings are validated by one set of rules and written
by the same walk: a line never depends on which encoding the sender chose.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError as _ProtoDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ._render import bad_ids, double_json, esc, resource_s, scope_s, span_s
from ._wire import WireFallback, walk_request

__all__ = [
    "DecodeError",
    "Encoded",
    "encode_metrics",
    "encode_traces",
    "parse_metrics",
    "parse_traces",
]

class DecodeError(ValueError):
    """A request body that is not a valid OTLP payload; the message says what and where."""


@dataclass(frozen=True)
class Encoded:
    """One request turned into an on-disk line.

    ``line`` is UTF-8 JSON ending in ``\\n`` (empty when nothing was accepted); ``accepted`` and
    ``rejected`` count spans (traces) or data points (metrics); ``error`` explains rejections for
    the OTLP partial-success response.
    """

    line: bytes
    accepted: int
    rejected: int = 0
    error: str = ""


# ------------------------------------------------------------------------------------------
# Parsing request bodies
# ------------------------------------------------------------------------------------------
def parse_traces(body: bytes, *, json_body: bool) -> ExportTraceServiceRequest:
    """Parse an ``ExportTraceServiceRequest`` from protobuf or OTLP/JSON bytes."""
    return _parse(ExportTraceServiceRequest(), body, json_body)  # type: ignore[return-value]


def parse_metrics(body: bytes, *, json_body: bool) -> ExportMetricsServiceRequest:
    """Parse an ``ExportMetricsServiceRequest`` from protobuf or OTLP/JSON bytes."""
    return _parse(ExportMetricsServiceRequest(), body, json_body)  # type: ignore[return-value]


def _parse(msg: Message, body: bytes, json_body: bool) -> Message:
    if not json_body:
        try:
            msg.ParseFromString(body)
        except (_ProtoDecodeError, RuntimeError, ValueError) as exc:
            raise DecodeError(f"invalid protobuf {msg.DESCRIPTOR.name}: {exc}") from None
        return msg
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DecodeError(f"invalid OTLP/JSON: top level is {type(doc).__name__}, not an object")
    _prepare_json(doc, msg.DESCRIPTOR, "$")
    try:
        # Unknown field names are ignored (the OTLP spec requires it); unknown enum names,
        # which this flag would drop silently too, were refused by _prepare_json.
        json_format.ParseDict(doc, msg, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise DecodeError(f"invalid OTLP/JSON {msg.DESCRIPTOR.name}: {exc}") from None
    return msg


def _fields_by_json_key(desc: Descriptor) -> dict[str, FieldDescriptor]:
    """A message's fields under both names a proto3 JSON parser accepts (cached)."""
    fields = _FIELD_KEYS.get(desc.full_name)
    if fields is None:
        fields = {}
        for fd in desc.fields:
            fields[fd.name] = fd
            fields[fd.json_name] = fd
        _FIELD_KEYS[desc.full_name] = fields
    return fields


_FIELD_KEYS: dict[str, dict[str, FieldDescriptor]] = {}
# An enum number given as a JSON string ("kind": "2"): ParseDict reads it as the number, as
# the proto3 JSON mapping's parsers do, so it is no unknown name.
_ENUM_NUMBER = re.compile(r"-?[0-9]+")


def _prepare_json(node: dict[str, Any], desc: Descriptor, where: str) -> None:
    """Walk an OTLP/JSON object along its message descriptor, in place: hex ids become the
    base64 the proto JSON mapping reads, and an enum given by an unknown name is an error
    naming its JSON path (``ParseDict(ignore_unknown_fields=True)`` would drop it silently,
    storing e.g. a span without its kind); a number, bare or quoted, is left to ParseDict.
    Unknown keys are left for ParseDict to ignore; values of the wrong type are left for it to
    refuse."""
    fields = _fields_by_json_key(desc)
    for key, value in node.items():
        fd = fields.get(key)
        if fd is None or value is None:
            continue
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            sub = fd.message_type
            if isinstance(value, dict):
                _prepare_json(value, sub, f"{where}.{key}")
            elif isinstance(value, list) and _is_repeated(fd):
                for i, item in enumerate(value):
                    if isinstance(item, dict):
                        _prepare_json(item, sub, f"{where}.{key}[{i}]")
        elif fd.type == FieldDescriptor.TYPE_ENUM:
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                if (isinstance(item, str) and item not in fd.enum_type.values_by_name
                        and not _ENUM_NUMBER.fullmatch(item)):
                    at = f"{where}.{key}[{i}]" if isinstance(value, list) else f"{where}.{key}"
                    names = ", ".join(fd.enum_type.values_by_name)
                    raise DecodeError(f"{at}: {item!r} is not a {fd.enum_type.name} "
                                      f"(one of {names}, or its number)")
        elif fd.name in _HEX_BYTES and isinstance(value, str):
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raise DecodeError(f"{where}.{key}: {value!r} is not a hex id") from None
            node[key] = base64.b64encode(raw).decode("ascii")


# ------------------------------------------------------------------------------------------
# Traces (rendering lives in _wire and _render) and AnyValue as a dict for the metrics walk
# ------------------------------------------------------------------------------------------
def _any(v: Any) -> dict[str, Any]:
    """``AnyValue`` as a dict (the metrics walk; traces use the string builders)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return {"stringValue": v.string_value}
    if kind == "int_value":
        return {"intValue": str(v.int_value)}
    if kind == "double_value":
        return {"doubleValue": double_json(v.double_value)}
    if kind == "bool_value":
        return {"boolValue": v.bool_value}
    if kind == "array_value":
        values = v.array_value.values
        return {"arrayValue": {"values": [_any(x) for x in values]} if values else {}}
    if kind == "kvlist_value":
        kvs = v.kvlist_value.values
        return {"kvlistValue": {"values": [_kv(x) for x in kvs]} if kvs else {}}
    if kind == "bytes_value":
        return {"bytesValue": base64.b64encode(v.bytes_value).decode("ascii")}
    return {}


def _kv(kv: Any) -> dict[str, Any]:
    return {"key": kv.key, "value": _any(kv.value)}


def encode_traces(req: ExportTraceServiceRequest, raw: bytes | None = None) -> Encoded:
    """Render a parsed trace request as one line; spans with malformed ids are rejected.

    ``raw`` is the request's protobuf bytes when the caller has them (an OTLP/HTTP protobuf
    body, a gRPC message), saving a re-serialization for the fast wire walk. Rejection is per
    span (the OTLP partial-success contract): the rest of the request is kept.
    """
    try:
        text, accepted, rejected, error = walk_request(
            req.SerializeToString() if raw is None else raw
        )
    except WireFallback:
        text, accepted, rejected, error = _walk_objects(req)
    if not accepted:
        return Encoded(b"", 0, rejected, error)
    return Encoded(('{"resourceSpans":[' + text + "]}\n").encode(), accepted, rejected, error)


def _walk_objects(req: ExportTraceServiceRequest) -> tuple[str, int, int, str]:
    """The same rendering from upb objects (for bytes the wire walk does not handle)."""
    accepted = rejected = 0
    first_error = ""
    rs_out: list[str] = []
    for rs in req.resource_spans:
        ss_out: list[str] = []
        for ss in rs.scope_spans:
            spans = []
            for s in ss.spans:
                bad = bad_ids(s)
                if bad:
                    rejected += 1
                    first_error = first_error or bad
                    continue
                spans.append(span_s(s))
            if not spans:
                continue
            accepted += len(spans)
            head = '{"scope":' + scope_s(ss.scope) + "," if ss.HasField("scope") else "{"
            tail = ',"schemaUrl":' + esc(ss.schema_url) + "}" if ss.schema_url else "}"
            ss_out.append(head + '"spans":[' + ",".join(spans) + "]" + tail)
        if not ss_out:
            continue
        head = '{"resource":' + resource_s(rs.resource) + "," if rs.HasField("resource") else "{"
        tail = ',"schemaUrl":' + esc(rs.schema_url) + "}" if rs.schema_url else "}"
        rs_out.append(head + '"scopeSpans":[' + ",".join(ss_out) + "]" + tail)
    return ",".join(rs_out), accepted, rejected, first_error


def _dump(doc: dict[str, Any]) -> bytes:
    # Strings come from parsed protobuf messages, hence valid UTF-8 (protobuf refuses lone
    # surrogates, with a message naming the field, while parsing a JSON body).
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode() + b"\n"



# ------------------------------------------------------------------------------------------
# Metrics: descriptor-driven walk with the same rules
# ------------------------------------------------------------------------------------------
_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_SINT64,
    }
)
_HEX_BYTES = frozenset({"trace_id", "span_id", "parent_span_id"})


def _scalar(fd: FieldDescriptor, value: Any) -> Any:
    t = fd.type
    if t == FieldDescriptor.TYPE_MESSAGE:
        return _generic(value)
    if t in _INT64_TYPES:
        return str(value)
    if t == FieldDescriptor.TYPE_BYTES:
        return value.hex() if fd.name in _HEX_BYTES else base64.b64encode(value).decode("ascii")
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return double_json(value)
    return value  # enums (as ints), bools, 32-bit ints, strings


def _generic(msg: Message) -> dict[str, Any]:
    """OTLP/JSON of any OTLP message: set fields only, in declaration order."""
    if msg.DESCRIPTOR.full_name == "opentelemetry.proto.common.v1.AnyValue":
        return _any(msg)
    fields = sorted(msg.ListFields(), key=lambda f: f[0].index)
    out: dict[str, Any] = {}
    for fd, value in fields:
        if _is_repeated(fd):
            out[fd.json_name] = [_scalar(fd, v) for v in value]
        else:
            out[fd.json_name] = _scalar(fd, value)
    return out


def _is_repeated(fd: FieldDescriptor) -> bool:
    rep = getattr(fd, "is_repeated", None)
    if rep is not None:
        return bool(rep)
    return fd.label == FieldDescriptor.LABEL_REPEATED  # older protobuf


_POINT_FIELDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")


def encode_metrics(req: ExportMetricsServiceRequest) -> Encoded:
    """Walk a parsed metrics request into one line; ``accepted`` counts data points."""
    points = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind in _POINT_FIELDS:
                    points += len(getattr(m, kind).data_points)
    if not req.resource_metrics:
        return Encoded(b"", 0)
    return Encoded(_dump(_generic(req)), points)

