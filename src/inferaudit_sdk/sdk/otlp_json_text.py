"""The file sink's span encoder: one OTLP/JSON line written straight as text.

``otlp_json.dumps_line(otlp_json.encode_spans_request(spans))`` builds a dict per span, per
attribute and per value, then ``json.dumps`` walks them all again: ~100 µs a batch span (14
attributes) on a small host, on the export thread, which holds the GIL the application's
threads need. This module writes the same bytes directly: escaped attribute keys and short
string values come from a bounded cache (they repeat on every span), numbers are formatted in
place, and only the rare shapes (arrays, maps, bytes) go through the dict encoder. On the
SDK's own span mix (request and batch spans) that is about half the CPU: 52 vs 111 µs a span
on the 2-core development host (bench/file_sink_encoding.py, side by side).

The dict encoder stays the reference: its output is checked field for field against the
OpenTelemetry SDK's own OTLP encoder (tests/sdk/test_file_sink.py), and this one is checked
byte for byte against it (tests/sdk/test_file_sink_text.py). A batch this encoder does not
handle exactly (a lone surrogate in a string, which the reference escapes to ASCII) goes
through the reference instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from inferaudit_sdk.sdk import otlp_json

_CACHE_MAX = 4096  # distinct escaped strings kept (keys, names, short values)
_CACHE_VALUE_MAX_LEN = 64  # longer strings are escaped every time, not cached
_escaped: dict[str, str] = {}
_key_prefixes: dict[str, str] = {}  # key -> '{"key":"k","value":'
_string_kvs: dict[tuple[str, str], str] = {}  # (key, short value) -> the whole KeyValue
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_float_repr = float.__repr__
_isfinite = math.isfinite
_INT64_MIN = otlp_json._INT64_MIN
_INT64_MAX = otlp_json._INT64_MAX


def _esc(s: str) -> str:
    """``s`` as a JSON string literal, cached when short (and exactly a str: the caches are keyed
    by value, and ``1 == True``)."""
    if type(s) is not str:
        return _dumps(s)  # what the reference writes for it (a str subclass, a number)
    out = _escaped.get(s)
    if out is None:
        out = _dumps(s)
        if len(s) <= _CACHE_VALUE_MAX_LEN:
            _remember(_escaped, s, out)
    return out


def _remember(cache: dict[Any, str], key: Any, text: str) -> str:
    if len(cache) >= _CACHE_MAX:  # one-off values (ids) filled it: start over
        cache.clear()
    cache[key] = text
    return text


def _prefix_text(key: Any) -> str:
    """A ``KeyValue`` up to its value (no ``key`` for an empty one, as the reference)."""
    return '{"key":' + _dumps(key) + ',"value":' if key else '{"value":'


def _key_prefix(key: str) -> str:
    prefix = _key_prefixes.get(key)
    if prefix is None:
        prefix = _remember(_key_prefixes, key, _prefix_text(key))
    return prefix


def _value(value: Any) -> str | None:
    """One ``AnyValue`` as JSON text; None where the reference leaves the attribute out."""
    if isinstance(value, bool):
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if isinstance(value, str):
        return '{"stringValue":' + _esc(value) + "}"
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            return None
        return '{"intValue":"' + str(value) + '"}'
    if isinstance(value, float):
        d = otlp_json._double(value)
        return '{"doubleValue":' + (_float_repr(d) if isinstance(d, float) else _esc(d)) + "}"
    if value is None:
        return "{}"
    try:  # bytes, arrays, maps: rare on spans, through the reference encoder
        return _dumps(otlp_json.encode_value(value))
    except (ValueError, TypeError, RecursionError):
        return None


def _attributes(attributes: Mapping[str, Any] | None) -> str:
    """``,"attributes":[...]`` (with its leading comma), or "" when none can be encoded."""
    if not attributes:
        return ""
    kvs = []
    for key, value in attributes.items():
        if type(key) is not str:  # never from the SDK (it drops such keys); not cached
            v = _value(value)
            if v is not None:
                kvs.append(_prefix_text(key) + v + "}")
            continue
        t = type(value)  # exact types first: what nearly every attribute is
        if t is int and _INT64_MIN <= value <= _INT64_MAX:
            kvs.append(_key_prefix(key) + '{"intValue":"' + int.__repr__(value) + '"}}')
        elif t is float and _isfinite(value):
            kvs.append(_key_prefix(key) + '{"doubleValue":' + _float_repr(value) + "}}")
        elif t is str and len(value) <= _CACHE_VALUE_MAX_LEN:
            kv = _string_kvs.get((key, value))
            if kv is None:
                kv = _remember(_string_kvs, (key, value),
                               _key_prefix(key) + '{"stringValue":' + _dumps(value) + "}}")
            kvs.append(kv)
        else:
            v = _value(value)
            if v is not None:
                kvs.append(_key_prefix(key) + v + "}")
    return ',"attributes":[' + ",".join(kvs) + "]" if kvs else ""


def _plain(owner: Any) -> Mapping[str, Any] | None:
    """``owner``'s attributes as the plain dict the SDK keeps inside ``BoundedAttributes``,
    where it is one (an ended span's, an event's, a link's). The public read-only view costs a
    Python-level call per key, as much as the rest of the encoding together. A lean span's
    (``_lean_span``) is a plain dict already. Falls back to the public attribute on any other
    shape."""
    held = getattr(owner, "_attributes", None)
    if type(held) is dict:
        return held
    inner = getattr(held, "_dict", None)
    return inner if isinstance(inner, dict) else owner.attributes


def _flags(context: Any) -> str:
    return str(otlp_json._flags(context))


def _event(event: Any) -> str:
    parts = []
    if event.timestamp:
        parts.append('"timeUnixNano":"' + str(event.timestamp) + '"')
    if event.name:
        parts.append('"name":' + _esc(event.name))
    text = ",".join(parts) + _attributes(_plain(event))
    if event.dropped_attributes:
        text += ',"droppedAttributesCount":' + str(event.dropped_attributes)
    return "{" + text.lstrip(",") + "}"


def _link(link: Any) -> str:
    ctx = link.context
    text = f'{{"traceId":"{ctx.trace_id:032x}","spanId":"{ctx.span_id:016x}"'
    text += _attributes(_plain(link))
    if link.dropped_attributes:
        text += ',"droppedAttributesCount":' + str(link.dropped_attributes)
    return text + ',"flags":' + _flags(ctx) + "}"


def _span(span: ReadableSpan) -> str:
    """One span, keys in the reference's order (proto field numbers)."""
    ctx = span.get_span_context()
    parts = [f'{{"traceId":"{ctx.trace_id:032x}","spanId":"{ctx.span_id:016x}"']
    trace_state = ctx.trace_state
    if trace_state:
        parts.append(',"traceState":' + _esc(",".join(f"{k}={v}" for k, v in trace_state.items())))
    parent = span.parent
    if parent is not None:
        parts.append(f',"parentSpanId":"{parent.span_id:016x}"')
    if span.name:
        parts.append(',"name":' + _esc(span.name))
    parts.append(',"kind":' + str(otlp_json._KIND[span.kind]))
    if span.start_time:
        parts.append(',"startTimeUnixNano":"' + str(span.start_time) + '"')
    if span.end_time:
        parts.append(',"endTimeUnixNano":"' + str(span.end_time) + '"')
    parts.append(_attributes(_plain(span)))
    if span.dropped_attributes:
        parts.append(',"droppedAttributesCount":' + str(span.dropped_attributes))
    if span.events:
        parts.append(',"events":[' + ",".join(_event(e) for e in span.events) + "]")
    if span.dropped_events:
        parts.append(',"droppedEventsCount":' + str(span.dropped_events))
    if span.links:
        parts.append(',"links":[' + ",".join(_link(link) for link in span.links) + "]")
    if span.dropped_links:
        parts.append(',"droppedLinksCount":' + str(span.dropped_links))
    status = span.status
    if status is not None:
        s = []
        if status.description:
            s.append('"message":' + _esc(status.description))
        if status.status_code.value:
            s.append('"code":' + str(status.status_code.value))
        parts.append(',"status":{' + ",".join(s) + "}")
    parts.append(',"flags":' + _flags(parent) + "}")
    return "".join(parts)


def _resource(resource: Resource | None) -> str:
    return "{" + _attributes(None if resource is None else resource.attributes).lstrip(",") + "}"


def _scope(scope: InstrumentationScope | None) -> str:
    if scope is None:
        return "{}"
    parts = []
    if scope.name:
        parts.append('"name":' + _esc(scope.name))
    if scope.version:
        parts.append('"version":' + _esc(scope.version))
    text = ",".join(parts) + _attributes(scope.attributes)
    return "{" + text.lstrip(",") + "}"


def encode_spans_line(spans: Sequence[ReadableSpan]) -> bytes:
    """One ``ExportTraceServiceRequest`` JSON line, newline-terminated: the same bytes as
    ``otlp_json.dumps_line(otlp_json.encode_spans_request(spans))``."""
    grouped = otlp_json.group_spans(spans, _span)
    resource_spans = []
    for resource, scopes in grouped.items():
        scope_spans = []
        for scope, encoded in scopes.items():
            ss = '{"scope":' + _scope(scope) + ',"spans":[' + ",".join(encoded) + "]"
            if scope is not None and scope.schema_url:
                ss += ',"schemaUrl":' + _esc(scope.schema_url)
            scope_spans.append(ss + "}")
        rs = '{"resource":' + _resource(resource) + ',"scopeSpans":[' + ",".join(scope_spans) + "]"
        if resource.schema_url:
            rs += ',"schemaUrl":' + _esc(resource.schema_url)
        resource_spans.append(rs + "}")
    text = '{"resourceSpans":[' + ",".join(resource_spans) + "]}\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the reference escapes the line to ASCII
        return otlp_json.dumps_line(otlp_json.encode_spans_request(spans))
