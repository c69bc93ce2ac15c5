"""String builders for OTLP/JSON trace pieces, from parsed (upb) protobuf objects.

Building the JSON text directly is about twice as fast as building dicts for ``json.dumps`` on
this hot path. Strings go through the C escaper ``json.dumps`` itself uses. Shared by the
object walk in :mod:`.decode` and the wire walk in :mod:`._wire`.
"""

from __future__ import annotations

import base64
import math
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8


def double_json(x: float) -> float | str:
    """The proto3 JSON mapping spells non-finite doubles as strings; bare NaN is not JSON."""
    if math.isfinite(x):
        return x
    return "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")


esc = encode_basestring
# Rendered KeyValue JSON keyed by its serialized bytes: most attributes (model, operation,
# role, route, service) repeat across spans. Bounded: cleared when full, never grows past it.
KV_CACHE: dict[bytes, str] = {}
KV_CACHE_MAX_ENTRIES = 16384
KV_CACHE_MAX_VALUE_BYTES = 256


def any_s(v: Any) -> str:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return '{"stringValue":' + esc(v.string_value) + "}"
    if kind == "int_value":
        return f'{{"intValue":"{v.int_value}"}}'
    if kind == "double_value":
        d = v.double_value
        if math.isfinite(d):
            return f'{{"doubleValue":{d!r}}}'
        return f'{{"doubleValue":"{double_json(d)}"}}'
    if kind == "bool_value":
        return '{"boolValue":true}' if v.bool_value else '{"boolValue":false}'
    if kind == "array_value":
        values = v.array_value.values
        if not values:
            return '{"arrayValue":{}}'
        return '{"arrayValue":{"values":[' + ",".join([any_s(x) for x in values]) + "]}}"
    if kind == "kvlist_value":
        kvs = v.kvlist_value.values
        if not kvs:
            return '{"kvlistValue":{}}'
        return '{"kvlistValue":{"values":[' + kvs_s(kvs) + "]}}"
    if kind == "bytes_value":
        return '{"bytesValue":"' + base64.b64encode(v.bytes_value).decode("ascii") + '"}'
    return "{}"


def kvs_s(kvs: Any) -> str:
    parts = []
    cache = KV_CACHE
    for kv in kvs:
        raw = kv.SerializeToString()
        text = cache.get(raw)
        if text is None:
            text = '{"key":' + esc(kv.key) + ',"value":' + any_s(kv.value) + "}"
            if len(raw) <= KV_CACHE_MAX_VALUE_BYTES:
                if len(cache) >= KV_CACHE_MAX_ENTRIES:
                    cache.clear()
                cache[raw] = text
        parts.append(text)
    return ",".join(parts)


def resource_s(res: Any) -> str:
    parts = []
    if res.attributes:
        parts.append('"attributes":[' + kvs_s(res.attributes) + "]")
    if res.dropped_attributes_count:
        parts.append(f'"droppedAttributesCount":{res.dropped_attributes_count}')
    return "{" + ",".join(parts) + "}"


def scope_s(sc: Any) -> str:
    parts = []
    if sc.name:
        parts.append('"name":' + esc(sc.name))
    if sc.version:
        parts.append('"version":' + esc(sc.version))
    if sc.attributes:
        parts.append('"attributes":[' + kvs_s(sc.attributes) + "]")
    if sc.dropped_attributes_count:
        parts.append(f'"droppedAttributesCount":{sc.dropped_attributes_count}')
    return "{" + ",".join(parts) + "}"


def span_s(s: Any) -> str:
    out = '{"traceId":"' + s.trace_id.hex() + '","spanId":"' + s.span_id.hex() + '"'
    if s.trace_state:
        out += ',"traceState":' + esc(s.trace_state)
    if s.parent_span_id:
        out += ',"parentSpanId":"' + s.parent_span_id.hex() + '"'
    if s.flags:
        out += f',"flags":{s.flags}'
    out += f',"name":{esc(s.name)}'
    if s.kind:  # SPAN_KIND_UNSPECIFIED is the proto3 default: omitted, as the Collector does
        out += f',"kind":{s.kind}'
    out += (
        f',"startTimeUnixNano":"{s.start_time_unix_nano}"'
        f',"endTimeUnixNano":"{s.end_time_unix_nano}"'
    )
    if s.attributes:
        out += ',"attributes":[' + kvs_s(s.attributes) + "]"
    if s.dropped_attributes_count:
        out += f',"droppedAttributesCount":{s.dropped_attributes_count}'
    if s.events:
        out += ',"events":[' + ",".join([event_s(e) for e in s.events]) + "]"
    if s.dropped_events_count:
        out += f',"droppedEventsCount":{s.dropped_events_count}'
    if s.links:
        out += ',"links":[' + ",".join([link_s(lk) for lk in s.links]) + "]"
    if s.dropped_links_count:
        out += f',"droppedLinksCount":{s.dropped_links_count}'
    st = s.status
    if st.message or st.code:
        parts = []
        if st.message:
            parts.append('"message":' + esc(st.message))
        if st.code:
            parts.append(f'"code":{st.code}')
        return out + ',"status":{' + ",".join(parts) + "}}"
    return out + ',"status":{}}'


def event_s(e: Any) -> str:
    out = f'{{"timeUnixNano":"{e.time_unix_nano}","name":{esc(e.name)}'
    if e.attributes:
        out += ',"attributes":[' + kvs_s(e.attributes) + "]"
    if e.dropped_attributes_count:
        out += f',"droppedAttributesCount":{e.dropped_attributes_count}'
    return out + "}"


def link_s(lk: Any) -> str:
    out = '{"traceId":"' + lk.trace_id.hex() + '","spanId":"' + lk.span_id.hex() + '"'
    if lk.trace_state:
        out += ',"traceState":' + esc(lk.trace_state)
    if lk.attributes:
        out += ',"attributes":[' + kvs_s(lk.attributes) + "]"
    if lk.dropped_attributes_count:
        out += f',"droppedAttributesCount":{lk.dropped_attributes_count}'
    if lk.flags:
        out += f',"flags":{lk.flags}'
    return out + "}"


def bad_ids(s: Any) -> str:
    if len(s.trace_id) != TRACE_ID_BYTES:
        return f"span {s.name!r}: traceId must be 16 bytes, got {len(s.trace_id)}"
    if len(s.span_id) != SPAN_ID_BYTES:
        return f"span {s.name!r}: spanId must be 8 bytes, got {len(s.span_id)}"
    if s.parent_span_id and len(s.parent_span_id) != SPAN_ID_BYTES:
        return f"span {s.name!r}: parentSpanId must be empty or 8 bytes"
    for lk in s.links:
        if len(lk.trace_id) != TRACE_ID_BYTES or len(lk.span_id) != SPAN_ID_BYTES:
            return f"span {s.name!r}: a link's traceId/spanId has the wrong length"
    return ""


