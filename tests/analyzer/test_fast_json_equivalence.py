"""The compiled OTLP/JSON fast path writes exactly what the Python path writes, for every input.

Each case is a small file of OTLP/JSON lines, canonical or broken in one way (a fuzzer's view of
the shape: escapes, odd numbers, wrong types, unknown fields, damaged JSON). ``run_unit`` parses
it twice, with ``INFERAUDIT_FAST_JSON=0`` (Python only) and with the switch unset (the fast path
where the extension is built), and every Parquet row group, the errors and the counts must be
identical (where ``run_unit`` raises, which it should not, both runs must raise alike). Seeded
mutants of a canonical line add a fuzzer's share. Without the extension both runs are the
Python path, so the cases still check that it is deterministic.
"""

from __future__ import annotations

import copy
import gzip
import importlib
import importlib.util
import json
import math
import os
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _ingest_fixtures import make_metrics, make_spans, otlp_json, protobuf_json, trace_request
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferaudit_analyzer.ingest.worker import WorkUnit, run_unit
from inferaudit_sdk import semconv as sc
from inferaudit_sdk.sdk import otlp_json as sdk_json

FAST_ENV = "INFERAUDIT_FAST_JSON"
T0 = 1_767_225_600_000_000_000
I64_MAX = 2**63 - 1
RAW = "@@RAW@@"  # placeholder string replaced by raw bytes after JSON encoding
ROLE_KV = {"key": sc.SPAN_ROLE, "value": {"stringValue": sc.ROLE_REQUEST}}
SVC_RES = {"attributes": [{"key": sc.SERVICE_NAME, "value": {"stringValue": "svc"}}]}
SCOPE = {"name": sc.INSTRUMENTATION_NAME, "version": "0.1.0"}

try:
    fastjson: Any = importlib.import_module("inferaudit_analyzer.ingest.fastjson")
except ImportError:
    fastjson = None


def _fast_available() -> bool:
    return fastjson is not None and bool(fastjson.available())


# -- building lines --------------------------------------------------------------------------
def _kv(key: Any, value: Any) -> dict[str, Any]:
    return {"key": key, "value": value}


def _span(i: int = 0, attrs: Any = None, drop: tuple[str, ...] = (), **fields: Any
          ) -> dict[str, Any]:
    s = {"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": f"s{i}", "kind": 1,
         "startTimeUnixNano": str(T0 + i), "endTimeUnixNano": str(T0 + i + 1_000),
         "attributes": [ROLE_KV] if attrs is None else attrs}
    s.update(fields)
    for k in drop:
        s.pop(k, None)
    return s


def _rs(*spans: Any, resource: Any = SVC_RES, scope: Any = SCOPE) -> dict[str, Any]:
    return {"resource": resource, "scopeSpans": [{"scope": scope, "spans": list(spans)}]}


def _req(*spans: Any, **kw: Any) -> dict[str, Any]:
    return {"resourceSpans": [_rs(*spans, **kw)]}


def _enc(obj: Any, raw: bytes | None = None, ascii_only: bool = True) -> bytes:
    """One JSON line; every ``RAW`` string becomes ``raw``, verbatim (may be invalid JSON)."""
    data = json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8")
    if raw is not None:
        assert f'"{RAW}"'.encode() in data
        data = data.replace(f'"{RAW}"'.encode(), raw)
    return data + b"\n"


def _sdk_rich_line() -> bytes:
    """Real SDK spans with events, trace state, bytes, non-finite doubles, arrays, errors."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({sc.SERVICE_NAME: "r\u00e9sum\u00e9"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(sc.INSTRUMENTATION_NAME, "0.1.0")
    state = trace.TraceState([("vendor", "v1")])
    parent_ctx = trace.SpanContext(0xABC, 0xDEF, is_remote=True,
                                   trace_flags=trace.TraceFlags(1), trace_state=state)
    with tracer.start_as_current_span(
            "caf\u00e9 \U0001f600 \"q\" \\ \n", context=trace.set_span_in_context(
                trace.NonRecordingSpan(parent_ctx)), start_time=T0,
            links=[trace.Link(parent_ctx, {"why": "retry"})], end_on_exit=False) as span:
        span.set_attributes({
            sc.SPAN_ROLE: sc.ROLE_REQUEST, sc.GEN_AI_USAGE_INPUT_TOKENS: 7,
            sc.GPU_UTILIZATION_RATIO: float("nan"), "x.inf": float("-inf"), "x.bytes": b"\0\1",
            "x.ints": (1, -2, 3), "x.floats": (1.5, -0.0), "x.bools": (True, False),
            "x.strs": ("a", "\u00e9"), "x.empty": (), "cl\u00e9 \"k\"": "v\u00e9\t",
            sc.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",), sc.PROFILE_TRACE_PATH: "p/x.json",
        })
        span.add_event("ev", {"a": 1, "b": ("x",)}, timestamp=T0 + 5)
        span.set_status(trace.Status(trace.StatusCode.ERROR, "boom \u00e9"))
        span.end(end_time=T0 + 10)
    provider.shutdown()
    spans = exporter.get_finished_spans()
    return sdk_json.dumps_line(sdk_json.encode_spans_request(spans))


def _synthetic_lines(tmp: Path) -> bytes:
    spec = importlib.util.spec_from_file_location(
        "synthetic_spans", Path(__file__).resolve().parents[2] / "bench" / "synthetic_spans.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    paths = mod.write_traces(tmp, 700, seed=3, spans_per_file=10_000)
    return b"".join(p.read_bytes() for p in paths)


# -- the cases -------------------------------------------------------------------------------
# AnyValue JSON texts, each tried on a plain key, on promoted keys of every type, on fallback
# keys and inside a resource.
VALUES: list[tuple[str, bytes]] = [
    ("str", b'{"stringValue":"12"}'), ("str-abc", b'{"stringValue":"abc"}'),
    ("str-empty", b'{"stringValue":""}'), ("str-true", b'{"stringValue":"true"}'),
    ("str-float", b'{"stringValue":"0.5"}'), ("str-null", b'{"stringValue":null}'),
    ("str-num", b'{"stringValue":5}'),
    ("int-str", b'{"intValue":"5"}'), ("int-num", b'{"intValue":5}'),
    ("int-plus", b'{"intValue":"+5"}'), ("int-zero-pad", b'{"intValue":"05"}'),
    ("int-lead-space", b'{"intValue":" 5"}'), ("int-trail-space", b'{"intValue":"5 "}'),
    ("int-underscore", b'{"intValue":"1_000"}'), ("int-neg-str", b'{"intValue":"-5"}'),
    ("int-neg-num", b'{"intValue":-5}'), ("int-i64max", b'{"intValue":"9223372036854775807"}'),
    ("int-i64max+1", b'{"intValue":"9223372036854775808"}'),
    ("int-i64min", b'{"intValue":"-9223372036854775808"}'),
    ("int-i64min-1", b'{"intValue":"-9223372036854775809"}'),
    ("int-u64max", b'{"intValue":"18446744073709551615"}'),
    ("int-huge-str", b'{"intValue":"99999999999999999999"}'),
    ("int-huge-num", b'{"intValue":99999999999999999999}'),
    ("int-float-num", b'{"intValue":5.0}'), ("int-frac-num", b'{"intValue":5.5}'),
    ("int-exp-num", b'{"intValue":1e3}'), ("int-exp-str", b'{"intValue":"1e3"}'),
    ("int-empty-str", b'{"intValue":""}'), ("int-abc", b'{"intValue":"abc"}'),
    ("int-bool", b'{"intValue":true}'), ("int-null", b'{"intValue":null}'),
    ("int-list", b'{"intValue":[]}'), ("int-neg-zero", b'{"intValue":"-0"}'),
    ("dbl-1", b'{"doubleValue":1}'), ("dbl-1.5", b'{"doubleValue":1.5}'),
    ("dbl-1e300", b'{"doubleValue":1e300}'), ("dbl-neg-zero", b'{"doubleValue":-0.0}'),
    ("dbl-zero", b'{"doubleValue":0}'), ("dbl-NaN", b'{"doubleValue":"NaN"}'),
    ("dbl-inf", b'{"doubleValue":"Infinity"}'), ("dbl-neg-inf", b'{"doubleValue":"-Infinity"}'),
    ("dbl-str", b'{"doubleValue":"1.5"}'), ("dbl-abc", b'{"doubleValue":"abc"}'),
    ("dbl-bool", b'{"doubleValue":true}'), ("dbl-null", b'{"doubleValue":null}'),
    ("dbl-1e400", b'{"doubleValue":1e400}'), ("dbl-tiny", b'{"doubleValue":5e-324}'),
    ("dbl-bigint", b'{"doubleValue":123456789012345678901234567890}'),
    ("dbl-precise", b'{"doubleValue":0.1000000000000000055511151231257827}'),
    ("dbl-exp-caps", b'{"doubleValue":1E+2}'),
    ("bool-true", b'{"boolValue":true}'), ("bool-false", b'{"boolValue":false}'),
    ("bool-str", b'{"boolValue":"true"}'), ("bool-str-caps", b'{"boolValue":"FALSE"}'),
    ("bool-1", b'{"boolValue":1}'), ("bool-0", b'{"boolValue":0}'), ("bool-2", b'{"boolValue":2}'),
    ("bool-yes", b'{"boolValue":"yes"}'), ("bool-null", b'{"boolValue":null}'),
    ("arr-str", b'{"arrayValue":{"values":[{"stringValue":"a"},{"stringValue":"b"}]}}'),
    ("arr-int", b'{"arrayValue":{"values":[{"intValue":"1"},{"intValue":2}]}}'),
    ("arr-dbl", b'{"arrayValue":{"values":[{"doubleValue":1.5},{"doubleValue":"NaN"}]}}'),
    ("arr-bool", b'{"arrayValue":{"values":[{"boolValue":true},{"boolValue":"false"}]}}'),
    ("arr-mixed", b'{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":"1"},'
                  b'{"doubleValue":2.5},{"boolValue":false},{"bytesValue":"AA=="},{}]}}'),
    ("arr-nested", b'{"arrayValue":{"values":[{"arrayValue":{"values":[{"intValue":"1"}]}}]}}'),
    ("arr-kvlist", b'{"arrayValue":{"values":[{"kvlistValue":{"values":'
                   b'[{"key":"a","value":{"intValue":"1"}}]}}]}}'),
    ("arr-empty", b'{"arrayValue":{}}'), ("arr-values-null", b'{"arrayValue":{"values":null}}'),
    ("arr-values-empty", b'{"arrayValue":{"values":[]}}'), ("arr-null", b'{"arrayValue":null}'),
    ("arr-elem-null", b'{"arrayValue":{"values":[null]}}'),
    ("arr-values-num", b'{"arrayValue":{"values":5}}'), ("arr-num", b'{"arrayValue":5}'),
    ("arr-bad-int", b'{"arrayValue":{"values":[{"intValue":"x"}]}}'),
    ("kvl", b'{"kvlistValue":{"values":[{"key":"a","value":{"intValue":"1"}},'
            b'{"key":"b","value":{"stringValue":"x"}}]}}'),
    ("kvl-nested", b'{"kvlistValue":{"values":[{"key":"a","value":{"kvlistValue":{"values":'
                   b'[{"key":"b","value":{"arrayValue":{"values":[{"boolValue":true}]}}}]}}}]}}'),
    ("kvl-empty", b'{"kvlistValue":{}}'), ("kvl-values-null", b'{"kvlistValue":{"values":null}}'),
    ("kvl-no-value", b'{"kvlistValue":{"values":[{"key":"a"}]}}'),
    ("kvl-value-null", b'{"kvlistValue":{"values":[{"key":"a","value":null}]}}'),
    ("kvl-no-key", b'{"kvlistValue":{"values":[{"value":{"intValue":"1"}}]}}'),
    ("kvl-dup-key", b'{"kvlistValue":{"values":[{"key":"a","value":{"intValue":"1"}},'
                    b'{"key":"a","value":{"intValue":"2"}}]}}'),
    ("kvl-num", b'{"kvlistValue":5}'),
    ("bytes", b'{"bytesValue":"AAE="}'), ("bytes-empty", b'{"bytesValue":""}'),
    ("bytes-bad", b'{"bytesValue":"!!"}'), ("bytes-num", b'{"bytesValue":5}'),
    ("empty", b"{}"), ("null", b"null"), ("unknown-field", b'{"foo":1}'),
    ("unknown-plus-str", b'{"foo":{"bar":[1,2]},"stringValue":"x"}'),
    ("two-str-int", b'{"stringValue":"a","intValue":"5"}'),
    ("two-int-str", b'{"intValue":"5","stringValue":"a"}'),
    ("two-strnull-int", b'{"stringValue":null,"intValue":"5"}'),
    ("two-dbl-bool", b'{"doubleValue":1.5,"boolValue":true}'),
    ("two-int-dbl", b'{"intValue":"5","doubleValue":1.5}'),
    ("dup-str", b'{"stringValue":"a","stringValue":"b"}'),
    ("dup-int", b'{"intValue":"1","intValue":"2"}'),
    ("value-str", b'"x"'), ("value-num", b"5"), ("value-list", b"[]"),
    # strings Python's int()/float()/to_bool accept or refuse in ways a C parser may not copy
    ("str-int-space", b'{"stringValue":" 12 "}'), ("str-int-plus", b'{"stringValue":"+12"}'),
    ("str-int-underscore", b'{"stringValue":"1_2"}'),
    ("str-int-arabic", '{"stringValue":"\u0661\u0662"}'.encode()),
    ("str-int-fullwidth", '{"stringValue":"\uff11\uff12"}'.encode()),
    ("str-int-dot0", b'{"stringValue":"12.0"}'), ("str-int-neg", b'{"stringValue":"-12"}'),
    ("str-int-huge", b'{"stringValue":"99999999999999999999"}'),
    ("str-nan", b'{"stringValue":"nan"}'), ("str-inf", b'{"stringValue":"-Infinity"}'),
    ("str-float-space", rb'{"stringValue":" 0.5\t"}'), ("str-float-exp", b'{"stringValue":"5e-1"}'),
    ("str-bool-caps", b'{"stringValue":"TRUE"}'), ("str-bool-mixed", b'{"stringValue":"fAlSe"}'),
    ("str-escaped-digits", rb'{"stringValue":"\u0031\u0032"}'),
    ("str-int-arabic-escaped", rb'{"stringValue":"\u0661\u0662"}'),
    ("int-arabic", '{"intValue":"\u0661"}'.encode()), ("int-hex", b'{"intValue":"0x10"}'),
    ("int-minus", b'{"intValue":"-"}'), ("int-double-minus", b'{"intValue":"--5"}'),
    ("int-plus-zero", b'{"intValue":"+0"}'), ("int-zeros", b'{"intValue":"00"}'),
    ("int-escaped-digit", rb'{"intValue":"\u0035"}'), ("int-nul", rb'{"intValue":"5\u0000"}'),
    ("int-num-i64max", b'{"intValue":9223372036854775807}'),
    ("int-num-i64min", b'{"intValue":-9223372036854775808}'),
    ("int-num-u64max", b'{"intValue":18446744073709551615}'),
    ("int-num-neg-zero", b'{"intValue":-0}'), ("int-num-exp-neg", b'{"intValue":5e-1}'),
    ("dbl-str-space", b'{"doubleValue":" 1.5 "}'),
    ("dbl-str-underscore", b'{"doubleValue":"1_0.5"}'),
    ("dbl-str-inf-lower", b'{"doubleValue":"infinity"}'), ("dbl-str-inf", b'{"doubleValue":"inf"}'),
    ("dbl-str-nan-neg", b'{"doubleValue":"-nan"}'), ("dbl-str-1e400", b'{"doubleValue":"1e400"}'),
    ("dbl-str-hex", b'{"doubleValue":"0x1p3"}'), ("dbl-str-empty", b'{"doubleValue":""}'),
    ("dbl-1e-400", b'{"doubleValue":1e-400}'), ("dbl-neg-1e400", b'{"doubleValue":-1e400}'),
    ("dbl-i64max", b'{"doubleValue":9223372036854775807}'),
    ("dbl-2e63", b'{"doubleValue":9.223372036854775808e18}'),
    ("dbl-round-half", b'{"doubleValue":2.5}'), ("dbl-round-half-neg", b'{"doubleValue":-3.5}'),
    ("dbl-17-digits", b'{"doubleValue":0.30000000000000004}'),
    ("dbl-many-digits", b'{"doubleValue":3.141592653589793238462643383279502884197}'),
    ("dbl-exp-plus", b'{"doubleValue":1e+2}'), ("dbl-neg-exp", b'{"doubleValue":-1.5E-7}'),
    ("bool-str-title", b'{"boolValue":"True"}'), ("bool-str-space", b'{"boolValue":" true"}'),
    ("bool-float", b'{"boolValue":1.0}'), ("bool-list", b'{"boolValue":[]}'),
]

# keys each value is tried on: plain, promoted of each converter, fallbacks, GenAI non-promoted
VALUE_KEYS = ("x.custom", sc.GEN_AI_USAGE_INPUT_TOKENS, sc.GEN_AI_REQUEST_MODEL,
              sc.GPU_UTILIZATION_RATIO, sc.CACHE_HIT, sc.SPAN_ROLE, sc.PROFILE_TRACE_PATH,
              sc.LEGACY_USAGE_PROMPT_TOKENS, sc.VLLM_LATENCY_TIME_TO_FIRST_TOKEN,
              sc.LEGACY_LLM_IS_STREAMING, sc.GEN_AI_RESPONSE_FINISH_REASONS)


def _value_cases() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for vid, raw in VALUES:
        out[f"value:{vid}:plain"] = _enc(_req(_span(0, [ROLE_KV, _kv("x.custom", RAW), _kv(
            "x.arr", {"arrayValue": {"values": [{"stringValue": "a"}, RAW]}})])), raw)
        spans = [_span(i, [_kv(k, RAW)] + ([] if k == sc.SPAN_ROLE else [ROLE_KV]))
                 for i, k in enumerate(VALUE_KEYS)]
        spans.append(_span(99, [_kv(sc.GEN_AI_USAGE_OUTPUT_TOKENS, RAW),
                                _kv(sc.VLLM_LATENCY_TIME_IN_MODEL_DECODE, RAW)]))
        spans.append(_span(98, [ROLE_KV, _kv("x.kvl", {"kvlistValue": {"values": [
            {"key": "a", "value": RAW}]}})]))
        res = {"attributes": [_kv("r.x", RAW), _kv(sc.RES_GPU_COUNT, RAW),
                              _kv(sc.SERVICE_NAME, RAW), _kv(sc.RES_PRICE_USD_PER_HOUR, RAW)]}
        out[f"value:{vid}:keys"] = _enc({"resourceSpans": [
            _rs(*spans), _rs(_span(50), resource=res)]}, raw)
    return out


def _id_cases() -> dict[str, bytes]:
    b64_trace, b64_span = "AAAAAAAAAAAAAAAAAAAAAQ==", "AAAAAAAAAAI="
    ids: list[tuple[str, Any]] = [
        ("hex", None), ("upper", "ABCDEF0123456789"), ("base64", b64_span),
        ("base64-urlsafe", "-_-_-_-_-_8="), ("short", "abc"), ("long", "0" * 17),
        ("empty", ""), ("null", None), ("num", 5), ("bad-b64", "!!!!!!!!!!!!"),
        ("non-hex-16", "zzzzzzzzzzzzzzzz"), ("b64-no-pad", "AAAAAAAAAAI"),
    ]
    out: dict[str, bytes] = {}
    for iid, v in ids:
        for field in ("traceId", "spanId", "parentSpanId"):
            if iid == "hex":
                val: Any = "0123456789abcdef" * (2 if field == "traceId" else 1)
            elif iid == "upper" and field == "traceId":
                val = "ABCDEF0123456789" * 2
            elif iid == "base64" and field == "traceId":
                val = b64_trace
            else:
                val = v
            out[f"id:{field}:{iid}"] = _enc(_req(_span(0, **{field: val}), _span(1)))
            out[f"id:link-{field[:-2]}:{iid}"] = _enc(_req(_span(
                0, links=[{"traceId": val if field == "traceId" else "1" * 32,
                           "spanId": val if field != "traceId" else "2" * 16}]), _span(1)))
    for field in ("traceId", "spanId", "parentSpanId"):
        out[f"id:{field}:missing"] = _enc(_req(_span(0, drop=(field,)), _span(1)))
    out["id:link:missing-span"] = _enc(_req(_span(0, links=[{"traceId": "1" * 32}])))
    out["id:link:missing-both"] = _enc(_req(_span(0, links=[{}])))
    out["id:link:not-object"] = _enc(_req(_span(0, links=["x"])))
    out["id:links:null"] = _enc(_req(_span(0, links=None)))
    out["id:links:empty"] = _enc(_req(_span(0, links=[])))
    out["id:links:object"] = _enc(_req(_span(0, links={})))
    out["id:links:many"] = _enc(_req(_span(0, links=[
        {"traceId": f"{i:032x}", "spanId": f"{i:016x}", "attributes": [_kv("a", {})],
         "flags": 256, "traceState": "a=b"} for i in range(1, 6)])))
    return out


def _span_field_cases() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    fields: dict[str, list[tuple[str, Any]]] = {
        "kind": [("int", 2), ("name", "SPAN_KIND_SERVER"), ("short-name", "SERVER"),
                 ("int8-max", 127), ("int8-max+1", 128), ("int8-min-1", -129),
                 ("huge", 2**70), ("name-escaped", RAW),
                 ("null", None), ("out-of-range", 7), ("negative", -1), ("float", 2.0),
                 ("bool", True), ("str-int", "2")],
        "name": [("empty", ""), ("null", None), ("num", 5), ("list", []),
                 ("escapes", "a\nb\"c\\d\u00e9\U0001f600\t/\u0000\u001f\u2028")],
        "startTimeUnixNano": [("num", T0), ("zero", "0"), ("zero-num", 0), ("abc", "abc"),
                              ("after-end", str(T0 + 5000)), ("beyond-i64", "9223372036854775808"),
                              ("beyond-u64-num", 99999999999999999999), ("neg", "-5"),
                              ("float-num", 1.7e18), ("float-str", "1.7e18"), ("null", None),
                              ("bool", True), ("one", "1"), ("equal-end", str(T0 + 1_000)),
                              ("space", f" {T0}"), ("plus", f"+{T0}"),
                              ("underscore", f"{T0:_}"), ("arabic-digits", "\u0661" * 19),
                              ("hex", "0x10"), ("num-i64max", I64_MAX), ("zero-padded", f"0{T0}")],
        "endTimeUnixNano": [("num", T0 + 9), ("i64max", str(I64_MAX)), ("zero", "0"),
                            ("before-start", str(T0 - 1)), ("abc", "abc"), ("obj", {"v": 1})],
        "status": [("empty", {}), ("code-2", {"code": 2}),
                   ("code-name", {"code": "STATUS_CODE_ERROR"}),
                   ("code-ok-name", {"code": "STATUS_CODE_OK"}), ("code-bad-name", {"code": "BAD"}),
                   ("code-null", {"code": None}), ("null", None), ("message", {"message": "m\u00e9",
                                                                              "code": 1}),
                   ("str", "x"), ("list", []), ("code-float", {"code": 2.0}),
                   ("code-str-int", {"code": "2"}), ("code-7", {"code": 7}),
                   ("code-300", {"code": 300}), ("code-neg", {"code": -1}),
                   ("code-huge", {"code": 2**64}), ("extra", {"code": 1, "zz": [1]})],
        "attributes": [("null", None), ("empty", []), ("object", {}), ("str", "x"),
                       ("kv-not-object", ["x"]), ("kv-no-key", [{"value": {}}]),
                       ("kv-key-null", [{"key": None, "value": {}}]),
                       ("kv-key-num", [{"key": 5, "value": {}}]),
                       ("kv-no-value", [ROLE_KV, {"key": "a"}]),
                       ("kv-extra", [ROLE_KV, {"key": "a", "value": {"intValue": "1"}, "z": 1}])],
    }
    for field, variants in fields.items():
        for vid, v in variants:
            raw = rb'"SPAN\u005fKIND\u005fSERVER"' if v == RAW else None
            out[f"span:{field}:{vid}"] = _enc(_req(_span(0, **{field: v}), _span(1)), raw)
        out[f"span:{field}:missing"] = _enc(_req(_span(0, drop=(field,)), _span(1)))
    unknown = {"events": [{"name": "e", "attributes": [_kv("a", {"intValue": "x"})]}],
               "droppedAttributesCount": 3, "flags": 769, "traceState": "a=b",
               "droppedEventsCount": "x", "zzz": {"deep": [[[[{"a": None}]]]]}}
    out["span:unknown-fields"] = _enc(_req(_span(0, **unknown)))
    nest = b"[" * 200 + b"]" * 200
    out["span:deep-unknown-200"] = _enc(_req(_span(0, zzz=RAW)), nest)
    nest = b'{"a":' * 2000 + b"1" + b"}" * 2000
    out["span:deep-unknown-2000"] = _enc(_req(_span(0, zzz=RAW), _span(1)), nest)
    out["span:not-object"] = _enc(_req("x", 5, None, [], _span(1)))
    return out


def _attr_semantics_cases() -> dict[str, bytes]:
    def one(*attrs: Any, scope: Any = SCOPE, i: int = 0) -> bytes:
        return _enc(_req(_span(i, list(attrs)), scope=scope), ascii_only=False)

    def s(x: str) -> dict[str, Any]:
        return {"stringValue": x}

    def i(x: int) -> dict[str, Any]:
        return {"intValue": str(x)}

    def d(x: float) -> dict[str, Any]:
        return {"doubleValue": x}

    return {
        "attr:dup-plain": one(ROLE_KV, _kv("a", s("1")), _kv("a", i(2))),
        "attr:dup-promoted-valid": one(ROLE_KV, _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, i(1)),
                                       _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, i(2))),
        "attr:dup-promoted-valid-bad": one(ROLE_KV, _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, i(1)),
                                           _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, s("abc"))),
        "attr:dup-promoted-bad-valid": one(ROLE_KV, _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, s("abc")),
                                           _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, i(3))),
        "attr:dup-role": one(ROLE_KV, _kv(sc.SPAN_ROLE, s(sc.ROLE_BATCH))),
        "attr:dup-fallback": one(_kv(sc.LEGACY_USAGE_PROMPT_TOKENS, i(1)),
                                 _kv(sc.LEGACY_USAGE_PROMPT_TOKENS, i(2))),
        "attr:dup-fallback-bad-first": one(_kv(sc.LEGACY_USAGE_PROMPT_TOKENS, s("x")),
                                           _kv(sc.LEGACY_USAGE_PROMPT_TOKENS, i(2))),
        "attr:input-tokens-str": one(ROLE_KV, _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, s("12"))),
        "attr:input-tokens-abc": one(ROLE_KV, _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, s("abc"))),
        "attr:input-tokens-dbl": one(ROLE_KV, _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, d(12.5))),
        "attr:input-tokens-dbl-13.5": one(ROLE_KV, _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, d(13.5))),
        "attr:role-int": one(_kv(sc.SPAN_ROLE, i(3))),
        "attr:role-unknown": one(_kv(sc.SPAN_ROLE, s("weird"))),
        "attr:role-batch": one(_kv(sc.SPAN_ROLE, s(sc.ROLE_BATCH)), _kv(sc.BATCH_SIZE, i(4))),
        "attr:fallback-and-primary": one(_kv(sc.LEGACY_USAGE_PROMPT_TOKENS, i(1)),
                                         _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, i(2))),
        "attr:primary-and-fallback": one(_kv(sc.GEN_AI_USAGE_INPUT_TOKENS, i(2)),
                                         _kv(sc.LEGACY_USAGE_PROMPT_TOKENS, i(1))),
        "attr:fallback-no-source": one(_kv(sc.LEGACY_GEN_AI_SYSTEM, s("openai")),
                                       _kv(sc.LEGACY_USAGE_COMPLETION_TOKENS, i(5))),
        "attr:llm-prompt-tokens": one(_kv(sc.LEGACY_LLM_USAGE_PROMPT_TOKENS, i(30)),
                                      _kv(sc.LEGACY_LLM_USAGE_COMPLETION_TOKENS, i(7)),
                                      _kv(sc.LEGACY_LLM_REQUEST_TYPE, s("chat")),
                                      _kv(sc.LEGACY_LLM_IS_STREAMING, s("true"))),
        "attr:llm-request-type-other": one(_kv(sc.LEGACY_LLM_REQUEST_TYPE, s("rerank"))),
        "attr:llm-request-type-int": one(_kv(sc.LEGACY_LLM_REQUEST_TYPE, i(1))),
        "attr:vllm-like": one(
            _kv(sc.GEN_AI_RESPONSE_MODEL, s("meta-llama/Llama-3-8B")),
            _kv(sc.VLLM_REQUEST_ID, s("cmpl-1")), _kv(sc.LEGACY_USAGE_PROMPT_TOKENS, i(100)),
            _kv(sc.LEGACY_USAGE_COMPLETION_TOKENS, i(11)),
            _kv(sc.VLLM_LATENCY_TIME_TO_FIRST_TOKEN, d(0.25)),
            _kv(sc.VLLM_LATENCY_TIME_IN_QUEUE, d(0.015)), _kv(sc.VLLM_LATENCY_E2E, d(1.5)),
            _kv(sc.VLLM_LATENCY_TIME_IN_MODEL_PREFILL, d(0.2)),
            _kv(sc.VLLM_LATENCY_TIME_IN_MODEL_DECODE, d(1.0)),
            _kv(sc.VLLM_LATENCY_TIME_IN_MODEL_FORWARD, d(0.9)),
            scope={"name": "vllm.llm_engine"}),
        "attr:vllm-only-response-model": one(_kv(sc.GEN_AI_RESPONSE_MODEL, s("m")),
                                             scope={"name": "x"}),
        "attr:vllm-e2e-only": one(_kv(sc.VLLM_LATENCY_E2E, d(1.5)), scope=None),
        "attr:vllm-ttft-1e300": one(_kv(sc.VLLM_LATENCY_TIME_TO_FIRST_TOKEN, d(1e300))),
        "attr:vllm-ttft-neg": one(_kv(sc.VLLM_LATENCY_TIME_TO_FIRST_TOKEN, d(-0.5))),
        "attr:vllm-ttft-int": one(_kv(sc.VLLM_LATENCY_TIME_TO_FIRST_TOKEN, i(2))),
        "attr:vllm-ttft-half-ns": one(_kv(sc.VLLM_LATENCY_TIME_TO_FIRST_TOKEN, d(2.5e-9))),
        "attr:decode-tpot-out-3": one(_kv(sc.VLLM_LATENCY_TIME_IN_MODEL_DECODE, d(1.0)),
                                      _kv(sc.GEN_AI_USAGE_OUTPUT_TOKENS, i(3))),
        "attr:decode-tpot-out-1": one(_kv(sc.VLLM_LATENCY_TIME_IN_MODEL_DECODE, d(1.0)),
                                      _kv(sc.GEN_AI_USAGE_OUTPUT_TOKENS, i(1))),
        "attr:decode-tpot-out-neg": one(_kv(sc.VLLM_LATENCY_TIME_IN_MODEL_DECODE, d(1.0)),
                                        _kv(sc.GEN_AI_USAGE_OUTPUT_TOKENS, i(-3))),
        "attr:decode-tpot-given": one(_kv(sc.VLLM_LATENCY_TIME_IN_MODEL_DECODE, d(1.0)),
                                      _kv(sc.GEN_AI_USAGE_OUTPUT_TOKENS, i(3)),
                                      _kv(sc.REQUEST_TIME_PER_OUTPUT_TOKEN_NS, i(7))),
        "attr:openlit": one(_kv(sc.GEN_AI_OPERATION_NAME, s("chat")),
                            _kv(sc.GEN_AI_REQUEST_MODEL, s("gpt-4o-mini")),
                            _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, i(40)),
                            _kv(sc.OPENLIT_SERVER_TTFT, d(0.125)),
                            _kv(sc.OPENLIT_SERVER_TBT, d(0.02)),
                            _kv(sc.OPENLIT_SERVER_TIME_TO_FIRST_TOKEN, d(0.5)),
                            _kv(sc.OPENLIT_SERVER_TIME_PER_OUTPUT_TOKEN, d(0.01)),
                            _kv(sc.OPENLIT_REQUEST_IS_STREAM, {"boolValue": True}),
                            scope={"name": "openlit.otel.tracing"}),
        "attr:scope-traceloop": one(_kv(sc.GEN_AI_REQUEST_MODEL, s("m")),
                                    scope={"name": "traceloop.sdk"}),
        "attr:scope-openlit-no-genai": one(_kv("a", s("b")), scope={"name": "OpenLIT"}),
        "attr:scope-vllm-no-genai": one(_kv("a", s("b")), scope={"name": "vLLM.x"}),
        "attr:scope-ours-no-role": one(_kv("a", s("b"))),
        "attr:no-genai": one(_kv("http.route", s("/x")), scope={"name": "fastapi"}),
        "attr:genai-nonpromoted-only": one(_kv(sc.GEN_AI_RESPONSE_FINISH_REASONS, {
            "arrayValue": {"values": [s("stop")]}}), scope={"name": "other"}),
        "attr:llm-nonpromoted-only": one(_kv("llm.foo", s("x")), scope=None),
        "attr:input-tokens-no-role": one(_kv(sc.GEN_AI_USAGE_INPUT_TOKENS, i(4)),
                                         scope={"name": "other"}),
        "attr:genai-prefix-only": one(_kv("gen_ai.", s("x")), _kv("gen_ai", s("y")),
                                      scope={"name": "other"}),
        "attr:profile-relative": one(ROLE_KV, _kv(sc.PROFILE_TRACE_PATH, s("p/../q/x.json.gz"))),
        "attr:profile-absolute": one(ROLE_KV, _kv(sc.PROFILE_TRACE_PATH, s("/abs//p/./x.json"))),
        "attr:profile-empty": one(ROLE_KV, _kv(sc.PROFILE_TRACE_PATH, s(""))),
        "attr:profile-dotdot": one(ROLE_KV, _kv(sc.PROFILE_TRACE_PATH, s("../../../../x"))),
        "attr:profile-int": one(ROLE_KV, _kv(sc.PROFILE_TRACE_PATH, i(5))),
        "attr:profile-unicode": one(ROLE_KV, _kv(sc.PROFILE_TRACE_PATH, s("pr\u00e9/\U0001f600"))),
        "attr:copy-sum-overflow": one(ROLE_KV, _kv(sc.COPY_H2D_TIME_NS, i(2**62)),
                                      _kv(sc.COPY_D2H_TIME_NS, i(2**62))),
        "attr:copy-sum-max": one(ROLE_KV, _kv(sc.COPY_H2D_TIME_NS, i(2**62)),
                                 _kv(sc.COPY_D2H_TIME_NS, i(2**62 - 1))),
        "attr:copy-h2d-only": one(ROLE_KV, _kv(sc.COPY_H2D_TIME_NS, i(700))),
        "attr:copy-d2h-zero": one(ROLE_KV, _kv(sc.COPY_D2H_TIME_NS, i(0))),
        "attr:copy-negative": one(ROLE_KV, _kv(sc.COPY_H2D_TIME_NS, i(-5)),
                                  _kv(sc.COPY_D2H_TIME_NS, i(3))),
        "attr:copy-bad": one(ROLE_KV, _kv(sc.COPY_H2D_TIME_NS, s("x")),
                             _kv(sc.COPY_D2H_TIME_NS, i(3))),
        "attr:keys-escaped": _enc(_req(_span(0, [ROLE_KV, _kv("k\n\"\\\u00e9\U0001f600", s(
            "v\n\"\\\u00e9\U0001f600\u0000"))]))),
        "attr:keys-raw-utf8": one(ROLE_KV, _kv("cl\u00e9\U0001f600", s("v\u00e9\u4e2d"))),
        "attr:key-empty": one(ROLE_KV, _kv("", s("x"))),
        "attr:many": one(ROLE_KV, *[_kv(f"k{n}", i(n)) for n in range(300)]),
        "attr:promoted-all": _enc(_req(_span(0, [_kv(k, s("7")) for k in sorted(
            {sc.SPAN_ROLE, sc.GEN_AI_OPERATION_NAME, sc.GEN_AI_REQUEST_MODEL, sc.BATCH_SIZE,
             sc.GEN_AI_REQUEST_STREAM, sc.GPU_ENERGY_J, sc.CACHE_HIT, sc.DEVICE_TIME_NS,
             sc.PROMPT_FINGERPRINT, sc.ERROR_TYPE})]))),
    }


def _raw_cases() -> dict[str, bytes]:
    body = _enc(_req(_span(0))).rstrip(b"\n")
    out: dict[str, bytes] = {}
    for vid, text in [
        ("escapes", rb'"a\nb\"c\\d\u00e9\ud83d\ude00\/\b\f\r\t"'),
        ("raw-utf8", '"caf\u00e9 \u4e2d \U0001f600"'.encode()),
        ("nul-escape", rb'"a\u0000b"'), ("lone-high", rb'"a\ud800b"'),
        ("lone-low", rb'"a\udc00"'), ("reversed-pair", rb'"\ude00\ud83d"'),
        ("high-then-ascii", rb'"\ud83dx"'), ("bad-escape", rb'"a\xb"'),
        ("short-u-escape", rb'"\u12"'), ("u-escape-upper", rb'"\u00E9\u00c9"'),
        ("invalid-utf8-ff", b'"a\xffb"'), ("overlong", b'"\xc0\xaf"'),
        ("truncated-multibyte", b'"\xe2\x82"'), ("utf8-surrogate", b'"\xed\xa0\x80"'),
        ("beyond-unicode", b'"\xf4\x90\x80\x80"'), ("ctrl-01", b'"a\x01b"'),
        ("raw-tab", b'"a\tb"'), ("raw-newline", b'"a\nb"'), ("del-7f", b'"a\x7fb"'),
        ("raw-u2028", '"a\u2028b"'.encode()),
    ]:
        for where in ("name", "key", "value", "scope", "resource"):
            if where == "name":
                line = _enc(_req(_span(0, name=RAW), _span(1)), text)
            elif where == "key":
                line = _enc(_req(_span(0, [ROLE_KV, _kv(RAW, {"intValue": "1"})]), _span(1)), text)
            elif where == "value":
                line = _enc(_req(_span(0, [ROLE_KV, _kv("k", {"stringValue": RAW})])), text)
            elif where == "scope":
                line = _enc(_req(_span(0), scope={"name": RAW}), text)
            else:
                line = _enc(_req(_span(0), resource={"attributes": [
                    _kv(sc.SERVICE_NAME, {"stringValue": RAW})]}), text)
            out[f"str:{vid}:{where}"] = line
    dup_span = body.replace(b'"name": "s0"', b'"name": "a", "name": "b"')
    out.update({
        "json:dup-name": dup_span + b"\n",
        "json:dup-trace-id": body.replace(b'"traceId": "', b'"traceId": "x", "traceId": "') + b"\n",
        "json:dup-attributes": body.replace(
            b'"attributes": [', b'"attributes": [], "attributes": [') + b"\n",
        "json:dup-resource-spans-null-last": body[:-1] + b', "resourceSpans": null}\n',
        "json:dup-resource-spans-null-first": b'{"resourceSpans": null, ' + body[1:] + b"\n",
        "json:dup-spans": body.replace(b'"spans": [', b'"spans": [], "spans": [') + b"\n",
        "json:array": b"[1, 2]\n", "json:number": b"5\n", "json:string": b'"x"\n',
        "json:true": b"true\n", "json:null": b"null\n", "json:empty-object": b"{}\n",
        "json:truncated": body[:-7],
        "json:truncated-newline": body[:-7] + b"\n",
        "json:trailing-garbage": body + b" x\n",
        "json:two-objects": body + body + b"\n",
        "json:trailing-comma": body[:-1] + b",}\n",
        "json:leading-space": b"   " + body + b"\n",
        "json:trailing-space": body + b" \t \n",
        "json:crlf": body + b"\r\n" + body.replace(b"s0", b"s1") + b"\r\n",
        "json:empty-lines": b"\n\n" + body + b"\n\n   \n\r\n" + body + b"\n",
        "json:only-empty": b"\n\n",
        "json:cr-only": b"\r" + body + b"\r" + body + b"\n",
        "json:bom": b"\xef\xbb\xbf" + body + b"\n",
        "json:nul-byte": body + b"\x00\n",
        "json:pretty": json.dumps(_req(_span(0)), indent=2).encode() + b"\n",
        "json:compact": json.dumps(_req(_span(0)), separators=(",", ":")).encode() + b"\n",
        "json:spaced": json.dumps(_req(_span(0)), separators=(" , ", " : ")).encode() + b"\n",
        "json:no-final-newline": body,
        "json:nan-literal": _enc(_req(_span(0, [ROLE_KV, _kv("d", {"doubleValue": RAW})])),
                                 b"NaN"),
        "json:plus-number": _enc(_req(_span(0, [ROLE_KV, _kv("i", {"intValue": RAW})])), b"+5"),
        "json:leading-zero-number": _enc(_req(_span(0, [ROLE_KV, _kv("i", {"intValue": RAW})])),
                                         b"05"),
        "json:neg-zero-int": _enc(_req(_span(0, kind=RAW)), b"-0"),
        "json:big-exp-time": _enc(_req(_span(0, startTimeUnixNano=RAW)), b"1.767e18"),
    })
    return out


def _reversed_keys(x: Any) -> Any:
    """The same JSON value with every object's keys in reverse order (no writer promises order)."""
    if isinstance(x, dict):
        return {k: _reversed_keys(x[k]) for k in reversed(list(x))}
    if isinstance(x, list):
        return [_reversed_keys(v) for v in x]
    return x


def _escape_names(data: bytes, names: tuple[str, ...]) -> bytes:
    """Spell each quoted ``name`` with its first letter as a \\u escape: the same JSON string."""
    for n in names:
        data = data.replace(f'"{n}"'.encode(), f'"\\u{ord(n[0]):04x}{n[1:]}"'.encode())
    return data


def _fuzz_cases() -> dict[str, bytes]:
    """Same data, different JSON spelling: key order, escaped names, formats of shared parts."""
    rich = _req(_span(0, [ROLE_KV, _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, {"intValue": "12"}),
                          _kv(sc.GEN_AI_REQUEST_MODEL, {"stringValue": "m"}),
                          _kv(sc.GPU_UTILIZATION_RATIO, {"doubleValue": 0.5}),
                          _kv(sc.CACHE_HIT, {"boolValue": True}),
                          _kv("x.arr", {"arrayValue": {"values": [{"intValue": "1"}]}})],
                      parentSpanId="3" * 16, status={"code": 2, "message": "m"},
                      links=[{"traceId": "4" * 32, "spanId": "5" * 16}]), _span(1))
    base = _enc(rich)
    structural = ("resourceSpans", "resource", "scopeSpans", "scope", "spans", "traceId",
                  "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano",
                  "endTimeUnixNano", "attributes", "links", "status", "code")
    values = ("key", "value", "stringValue", "intValue", "doubleValue", "boolValue",
              "arrayValue", "values")
    promoted = (sc.SPAN_ROLE, sc.GEN_AI_USAGE_INPUT_TOKENS, sc.GEN_AI_REQUEST_MODEL,
                sc.GPU_UTILIZATION_RATIO, sc.CACHE_HIT, sc.ROLE_REQUEST, sc.SERVICE_NAME,
                sc.INSTRUMENTATION_NAME)
    res_a = {"attributes": [_kv(sc.SERVICE_NAME, {"stringValue": "caf\u00e9"}),
                            _kv(sc.RES_GPU_COUNT, {"intValue": "2"})]}
    res_b = {"attributes": [_kv(sc.SERVICE_NAME, {"stringValue": "b"})]}
    line_a, line_b = _enc(_req(_span(0), resource=res_a)), _enc(_req(_span(1), resource=res_b))
    bad = _enc(_req(_span(2, kind="X"), resource=res_b))  # declined by a strict fast path
    long_name = "n\u00e9\"\\" * 20_000
    return {
        "fuzz:base": base,
        "fuzz:reversed-keys": _enc(_reversed_keys(rich)),
        "fuzz:escaped-structural-names": _escape_names(base, structural),
        "fuzz:escaped-value-names": _escape_names(base, values),
        "fuzz:escaped-promoted-keys": _escape_names(base, promoted),
        "fuzz:whitespace-everywhere": json.dumps(rich, separators=(" \t, \r", " \r: \t"))
        .encode() + b"\n",
        "fuzz:formfeed-whitespace": json.dumps(rich, separators=(",\f", ":")).encode() + b"\n",
        "fuzz:raw-utf8-vs-escaped-resource": _enc(_req(_span(0), resource=res_a))
        + _enc(_req(_span(1), resource=res_a), ascii_only=False),
        "fuzz:same-resource-respaced": line_a + json.dumps(
            _req(_span(1), resource=res_a), separators=(", ", ": ")).encode() + b"\n",
        "fuzz:resources-across-fast-and-slow-lines": line_a + bad + line_b + line_a + bad,
        "fuzz:resource-dup-key-values": _enc(_req(_span(0), resource={"attributes": [
            _kv(sc.SERVICE_NAME, {"stringValue": "a"}), _kv(sc.SERVICE_NAME, {"intValue": "1"})]})),
        "fuzz:dup-attr-escaped-spelling": _enc(_req(_span(0, [
            ROLE_KV, _kv("a", {"intValue": "1"}), _kv(RAW, {"intValue": "2"})])), rb'"\u0061"'),
        "fuzz:duplicate-span-ids": _enc(_req(_span(0), _span(0), _span(0))),
        "fuzz:zero-ids": _enc(_req(_span(0, traceId="0" * 32, spanId="0" * 16,
                                         parentSpanId="0" * 16))),
        "fuzz:id-escaped-digits": _enc(_req(_span(0, spanId=RAW)), b'"\\u0030' + b"1" * 15 + b'"'),
        "fuzz:trace-id-16-chars": _enc(_req(_span(0, traceId="A" * 16))),
        "fuzz:span-id-32-chars": _enc(_req(_span(0, spanId="B" * 32))),
        "fuzz:id-non-ascii-16": _enc(_req(_span(0, spanId="\u00e9" * 16)), ascii_only=False),
        "fuzz:id-32-non-hex": _enc(_req(_span(0, traceId="g" * 32))),
        "fuzz:link-16-char-trace": _enc(_req(_span(0, links=[{"traceId": "C" * 16,
                                                              "spanId": "d" * 16}]))),
        "fuzz:long-escaped-name": _enc(_req(_span(0, name=long_name, attrs=[
            ROLE_KV, _kv(long_name[:50], {"stringValue": long_name})]))),
        "fuzz:many-spans": _enc(_req(*[_span(i, [ROLE_KV, _kv(
            sc.GEN_AI_USAGE_INPUT_TOKENS, {"intValue": str(i)}), _kv("k", {"intValue": i})])
            for i in range(3000)])),
        "fuzz:many-resources": _enc({"resourceSpans": [_rs(_span(i), resource={"attributes": [
            _kv(sc.SERVICE_NAME, {"stringValue": f"svc{i % 7}"})]}, scope={"name": f"s{i % 3}"})
            for i in range(200)]}),
        "fuzz:scope-name-escaped-ours": _enc(_req(_span(0, [_kv("a", {"stringValue": "b"})]),
                                                  scope={"name": RAW}), rb'"inferaudit\u005fsdk"'),
        "fuzz:role-value-escaped": _enc(_req(_span(0, [_kv(sc.SPAN_ROLE, {"stringValue": RAW}),
                                                       _kv(sc.BATCH_SIZE, {"intValue": "2"})])),
                                        rb'"b\u0061tch"'),
        "fuzz:errors-over-the-limit": b"".join(
            _enc(_req(_span(i, [ROLE_KV, _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, {"stringValue": "x"})])))
            if i % 2 else _enc(_req(_span(i, kind="X"), _span(i + 1))) for i in range(1300)),
        "fuzz:kv-value-before-key": _enc(_req(_span(0, [ROLE_KV, RAW])),
                                                    b'{"value":{"intValue":"7"},"key":"k"}'),
    }


def _structure_cases() -> dict[str, bytes]:
    s0, s1 = _span(0), _span(1)
    big_res = {"attributes": [_kv(sc.SERVICE_NAME, {"stringValue": "big"}),
                              _kv("big", {"intValue": "99999999999999999999"}),
                              _kv(sc.RES_GPU_COUNT, {"intValue": "99999999999999999999"}),
                              _kv(sc.RES_HOST_CPU_CORES, {"stringValue": "8"}),
                              _kv(sc.RES_PRICE_USD_PER_HOUR, {"stringValue": "1.5"})]}

    def ils(*spans: Any, lib: Any = SCOPE) -> dict[str, Any]:
        return {"resource": SVC_RES, "instrumentationLibrarySpans": [
            {"instrumentationLibrary": lib, "spans": list(spans)}]}

    return {k: _enc(v) for k, v in {
        "shape:two-resource-spans": {"resourceSpans": [_rs(s0), _rs(s1, resource=big_res)]},
        "shape:two-scope-spans": {"resourceSpans": [{"resource": SVC_RES, "scopeSpans": [
            {"scope": SCOPE, "spans": [s0]}, {"scope": {"name": "vllm"}, "spans": [s1]}]}]},
        "shape:ils": {"resourceSpans": [ils(s0, s1)]},
        "shape:ils-no-lib": {"resourceSpans": [ils(s0, lib=None)]},
        "shape:ils-and-scope-spans": {"resourceSpans": [{**ils(s0), "scopeSpans": [
            {"scope": SCOPE, "spans": [s1]}]}]},
        "shape:empty-scope-spans-and-ils": {"resourceSpans": [{**ils(s0), "scopeSpans": []}]},
        "shape:scope-and-lib": {"resourceSpans": [{"resource": SVC_RES, "scopeSpans": [
            {"scope": {}, "instrumentationLibrary": {"name": "lib"}, "spans": [s0]}]}]},
        "shape:scope-missing": {"resourceSpans": [{"resource": SVC_RES,
                                                   "scopeSpans": [{"spans": [s0]}]}]},
        "shape:scope-null": _req(s0, scope=None),
        "shape:scope-no-name": _req(s0, scope={"version": "1"}),
        "shape:scope-name-num": _req(s0, scope={"name": 5}),
        "shape:scope-name-null": _req(s0, scope={"name": None}),
        "shape:scope-str": _req(s0, scope="x"),
        "shape:scope-attrs": _req(s0, scope={"name": "n", "attributes": [_kv("a", {})]}),
        "shape:resource-missing": {"resourceSpans": [{"scopeSpans": [
            {"scope": SCOPE, "spans": [s0]}]}]},
        "shape:resource-null": _req(s0, resource=None),
        "shape:resource-empty": _req(s0, resource={}),
        "shape:resource-attrs-null": _req(s0, resource={"attributes": None}),
        "shape:resource-attrs-num": _req(s0, resource={"attributes": 5}),
        "shape:resource-kv-no-key": _req(s0, resource={"attributes": [{"value": {}}]}),
        "shape:resource-str": _req(s0, resource="x"),
        "shape:resource-big-ints": _req(s0, resource=big_res),
        "shape:resource-service-int": _req(s0, resource={"attributes": [
            _kv(sc.SERVICE_NAME, {"intValue": "5"})]}),
        "shape:resource-dropped": _req(s0, resource={**SVC_RES, "droppedAttributesCount": 2}),
        "shape:spans-empty": _req(),
        "shape:spans-null": {"resourceSpans": [{"resource": SVC_RES, "scopeSpans": [
            {"scope": SCOPE, "spans": None}]}]},
        "shape:spans-str": {"resourceSpans": [{"resource": SVC_RES, "scopeSpans": [
            {"scope": SCOPE, "spans": "xy"}]}]},
        "shape:spans-object": {"resourceSpans": [{"resource": SVC_RES, "scopeSpans": [
            {"scope": SCOPE, "spans": {"a": 1}}]}]},
        "shape:scope-spans-null": {"resourceSpans": [{"resource": SVC_RES, "scopeSpans": None}]},
        "shape:scope-spans-obj": {"resourceSpans": [{"resource": SVC_RES, "scopeSpans": {}}]},
        "shape:scope-spans-elem-null": {"resourceSpans": [{"resource": SVC_RES,
                                                           "scopeSpans": [None]}]},
        "shape:resource-spans-null": {"resourceSpans": None},
        "shape:resource-spans-obj": {"resourceSpans": {}},
        "shape:resource-spans-str": {"resourceSpans": "x"},
        "shape:resource-spans-empty": {"resourceSpans": []},
        "shape:resource-spans-elem-null": {"resourceSpans": [None, _rs(s0)]},
        "shape:resource-spans-elem-num": {"resourceSpans": [5, _rs(s0)]},
        "shape:resource-spans-good-then-bad": {"resourceSpans": [_rs(s0), None, _rs(s1),
                                                                 {"scopeSpans": 5}]},
        "shape:spans-and-metrics": {
            "resourceSpans": [_rs(s0)],
            "resourceMetrics": otlp_json(make_metrics())["resourceMetrics"]},
        "shape:unknown-everywhere": {
            "resourceSpans": [{**_rs({**s0, "zz": 1}), "schemaUrl": "u", "zz": [1]}],
            "zz": {"a": None}},
        "shape:resource-logs": {"resourceLogs": [{"scopeLogs": []}]},
        "shape:resource-profiles": {"resourceProfiles": []},
        "shape:resource-metrics-null": {"resourceMetrics": None},
        "shape:other-object": {"b": 1, "a": 2, "c": 3, "d": 4, "e": 5, "f": 6},
    }.items()}


# -- seeded mutants: a fuzzer's share, reproducible -----------------------------------------
N_MUTANT_FILES = 12
MUTANTS_PER_FILE = 25
_ODD_VALUES: tuple[Any, ...] = (
    None, "", 0, -1, 1, 2**63, -(2**63) - 1, 2**64, "abc", "0", "-0", "1e3", " 5", "+5", [], {},
    True, False, 1.5, -0.0, 1e300, "NaN", "\u00e9\U0001f600", "A" * 16, "a" * 32, "AAE=",
    "SPAN_KIND_SERVER", "STATUS_CODE_ERROR", {"stringValue": "x"}, {"intValue": "5"}, [None],
    {"doubleValue": "NaN"}, {"arrayValue": {}}, sc.ROLE_BATCH, "../p.json")
_ODD_BYTES = (b'"', b"\\", b"\\u00", b"\\ud83d", b",", b":", b"{", b"}", b"[", b"]", b"null",
              b"-", b"0", b"9", b"e5", b".", b" ", b"\t", b"\r", b"\x00", b"\x01", b"\xff",
              b"\xc3", b"\xe2\x82", b"true", b"1" * 25)


def _mutant_base() -> dict[str, Any]:
    req = _span(0, [ROLE_KV, _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, {"intValue": "12"}),
                    _kv(sc.GEN_AI_USAGE_OUTPUT_TOKENS, {"intValue": "5"}),
                    _kv(sc.GEN_AI_REQUEST_MODEL, {"stringValue": "m"}),
                    _kv(sc.GEN_AI_REQUEST_STREAM, {"boolValue": True}),
                    _kv(sc.PROFILE_TRACE_PATH, {"stringValue": "p/x.json"}),
                    _kv(sc.GEN_AI_RESPONSE_FINISH_REASONS, {"arrayValue": {"values": [
                        {"stringValue": "stop"}]}})],
                parentSpanId="3" * 16, status={"code": 2, "message": "m"})
    batch = _span(1, [_kv(sc.SPAN_ROLE, {"stringValue": sc.ROLE_BATCH}),
                      _kv(sc.BATCH_SIZE, {"intValue": "1"}),
                      _kv(sc.GPU_UTILIZATION_RATIO, {"doubleValue": 0.5}),
                      _kv(sc.COPY_H2D_TIME_NS, {"intValue": "700"}),
                      _kv(sc.COPY_D2H_TIME_NS, {"intValue": "300"})],
                  links=[{"traceId": req["traceId"], "spanId": req["spanId"]}], kind=1)
    vllm = _span(2, [_kv(sc.GEN_AI_RESPONSE_MODEL, {"stringValue": "v"}),
                     _kv(sc.LEGACY_USAGE_PROMPT_TOKENS, {"intValue": "100"}),
                     _kv(sc.LEGACY_USAGE_COMPLETION_TOKENS, {"intValue": 11}),
                     _kv(sc.VLLM_LATENCY_TIME_TO_FIRST_TOKEN, {"doubleValue": 0.25}),
                     _kv(sc.VLLM_LATENCY_TIME_IN_MODEL_DECODE, {"doubleValue": 1.0})], kind=2)
    res = {"attributes": [_kv(sc.SERVICE_NAME, {"stringValue": "svc"}),
                          _kv(sc.RES_GPU_COUNT, {"intValue": "1"})]}
    return {"resourceSpans": [{"resource": res, "scopeSpans": [
        {"scope": SCOPE, "spans": [req, batch]},
        {"scope": {"name": "vllm.llm_engine"}, "spans": [vllm]}]}]}


def _nodes(x: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every value inside ``x`` (dict keys and list indices), depth first."""
    out = [path]
    if isinstance(x, dict):
        for k, v in x.items():
            out.extend(_nodes(v, (*path, k)))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            out.extend(_nodes(v, (*path, i)))
    return out


def _tree_mutant(rng: random.Random) -> bytes:
    """The base line with one to three values replaced, dropped, renamed or duplicated."""
    obj = copy.deepcopy(_mutant_base())  # the base shares ROLE_KV, SCOPE...: never mutate those
    for _ in range(rng.randint(1, 3)):
        nodes = _nodes(obj)[1:]
        if not nodes:
            break
        path = rng.choice(nodes)
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        last = path[-1]
        op = rng.randrange(4)
        if op == 0:
            parent[last] = copy.deepcopy(rng.choice(_ODD_VALUES))
        elif op == 1:
            del parent[last]
        elif op == 2 and isinstance(parent, dict):  # a sibling's name: a field moved
            parent[rng.choice([*parent, "zz", "value"])] = parent.pop(last)
        else:
            if isinstance(parent, list):
                parent.insert(last, copy.deepcopy(parent[last]))
            else:
                parent[last] = [parent[last]]
    return _enc(obj, ascii_only=rng.random() < 0.5)


def _byte_mutant(rng: random.Random) -> bytes:
    """The base line's bytes with one to three odd tokens written, cut or repeated."""
    data = bytearray(_enc(_mutant_base()).rstrip(b"\n"))
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(data))
        j = min(len(data), i + rng.randint(1, 8))
        op = rng.randrange(4)
        if op == 0:
            data[i:j] = rng.choice(_ODD_BYTES)
        elif op == 1:
            data.insert(i, rng.choice(_ODD_BYTES)[0])
        elif op == 2:
            del data[i:j]
        else:
            data[i:i] = data[i:j]
    return bytes(data) + b"\n"


def _mutant_cases() -> dict[str, bytes]:
    out = {}
    for kind, make in (("tree", _tree_mutant), ("bytes", _byte_mutant)):
        for n in range(N_MUTANT_FILES):
            rng = random.Random(f"{kind}-{n}")
            out[f"mutant:{kind}:{n:02d}"] = b"".join(make(rng) for _ in range(MUTANTS_PER_FILE))
    return out


def _canonical_cases(tmp: Path) -> dict[str, bytes]:
    spans = make_spans()
    enc = sdk_json.encode_spans_request
    metrics = json.dumps(otlp_json(make_metrics())).encode() + b"\n"
    same_res = _enc(_req(_span(0))) + _enc(_req(_span(1))) + _enc(_req(_span(2)))
    return {
        "sdk:file-sink": sdk_json.dumps_line(enc(spans)),
        "sdk:file-sink-two-lines": sdk_json.dumps_line(enc(spans[:4]))
        + sdk_json.dumps_line(enc(spans[4:])),
        "sdk:rich": _sdk_rich_line(),
        "sdk:exporter-otlp-json": json.dumps(otlp_json(trace_request(spans))).encode() + b"\n",
        "sdk:protobuf-json": json.dumps(protobuf_json(trace_request(spans))).encode() + b"\n",
        "sdk:metrics": metrics,
        "sdk:protobuf-json-metrics": json.dumps(protobuf_json(make_metrics())).encode() + b"\n",
        "sdk:traces-and-metrics": sdk_json.dumps_line(enc(spans)) + metrics
        + sdk_json.dumps_line(enc(spans[::-1])),
        "sdk:resource-repeated": same_res,
        "sdk:synthetic": _synthetic_lines(tmp / "synthetic"),
        "sdk:many-bad-spans": _enc(_req(*[_span(i, drop=("spanId",)) for i in range(1100)],
                                        _span(2000))),
        "sdk:mixed-good-bad-lines": b"".join([
            sdk_json.dumps_line(enc(spans[:2])), b"not json\n", _enc(_req(_span(5, kind="X"))),
            b"[1]\n", sdk_json.dumps_line(enc(spans[2:])), b'{"resourceSpans": 5}\n']),
    }


CANONICAL = ["sdk:file-sink", "sdk:file-sink-two-lines", "sdk:rich", "sdk:exporter-otlp-json",
             "sdk:protobuf-json", "sdk:metrics", "sdk:protobuf-json-metrics",
             "sdk:traces-and-metrics", "sdk:resource-repeated", "sdk:synthetic",
             "sdk:many-bad-spans", "sdk:mixed-good-bad-lines"]
# deterministic builders, cheap enough to run at collection for the case names
_BUILDERS = (_value_cases, _id_cases, _span_field_cases, _attr_semantics_cases, _raw_cases,
             _fuzz_cases, _structure_cases, _mutant_cases)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = _canonical_cases(tmp_path_factory.mktemp("fastjson-cases"))
    assert list(out) == CANONICAL
    for build in _BUILDERS:
        part = build()
        assert not set(part) & set(out), set(part) & set(out)
        out.update(part)
    return out


def _case_ids() -> list[str]:
    """The case names (the SDK ones need a tracer provider, so they are listed by hand)."""
    return CANONICAL + [name for build in _BUILDERS for name in build()]


# -- running and comparing -------------------------------------------------------------------
def _norm(x: Any) -> Any:
    """Values with NaN and -0.0 made comparable (NaN != NaN; -0.0 == 0.0 would hide a sign)."""
    if isinstance(x, float) and (math.isnan(x) or (x == 0.0 and math.copysign(1.0, x) < 0)):
        return f"<float {x!r}>"
    if isinstance(x, dict):
        return {k: _norm(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_norm(v) for v in x]
    return x


def _outcome(path: Path, out_dir: Path, fast: bool, mp: pytest.MonkeyPatch, *,
             compression: str = "none", start: int = 0, end: int | None = None,
             chunk_spans: int = 65536) -> dict[str, Any]:
    """What ``run_unit`` left: its result fields and the bytes of every Parquet part."""
    if fast:
        mp.delenv(FAST_ENV, raising=False)
    else:
        mp.setenv(FAST_ENV, "0")
    out_dir.mkdir(parents=True)
    unit = WorkUnit(str(path), compression, "json", start, end, str(out_dir), 0, chunk_spans)
    try:
        res = run_unit(unit)
    except Exception as exc:  # the contract says never; if it does, both paths must agree
        return {"raised": f"{type(exc).__name__}: {exc}"}
    finally:
        mp.delenv(FAST_ENV, raising=False)
    parts = {table: [(os.path.basename(p), Path(p).read_bytes()) for p in paths]
             for table, paths in res.parts.items()}
    return {"errors": res.errors, "spans": res.spans, "links": res.links,
            "metric_points": res.metric_points, "lines": res.lines, "parts": parts}


def _decoded(parts: list[tuple[str, bytes]]) -> dict[str, Any]:
    """One table's parts as rows, row-group sizes and schema (only read when bytes differ)."""
    rows: list[Any] = []
    layout: list[Any] = []
    for name, data in parts:
        f = pq.ParquetFile(pa.BufferReader(data))
        rows.extend(_norm(f.read().to_pylist()))
        layout.append((name, str(f.schema_arrow),
                       [f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)]))
    return {"rows": rows, "layout": layout}


def _assert_same(slow: dict[str, Any], fast: dict[str, Any]) -> None:
    """Field by field, so a failure shows the first difference that matters, readably."""
    assert fast.get("raised") == slow.get("raised"), "run_unit raised differently"
    for key in ("errors", "spans", "links", "metric_points", "lines"):
        assert fast.get(key) == slow.get(key), f"{key} differ (left: fast, right: python)"
    fp, sp = fast.get("parts", {}), slow.get("parts", {})
    assert sorted(fp) == sorted(sp), "different tables written"
    for table in sp:
        if fp[table] == sp[table]:
            continue  # byte-identical parts: nothing to decode
        f, s = _decoded(fp[table]), _decoded(sp[table])
        assert len(f["rows"]) == len(s["rows"]), f"{table}: row count differs"
        for n, (a, b) in enumerate(zip(f["rows"], s["rows"], strict=True)):
            assert a == b, f"{table} row {n} differs (left: fast, right: python)"
        # the same rows in other bytes is fine (encoder choices); other row groups are not
        assert f["layout"] == s["layout"], f"{table}: same rows, different files/row groups"


def _run_both(tmp_path: Path, data: bytes, mp: pytest.MonkeyPatch, **kw: Any
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    src = tmp_path / "in" / "traces.jsonl"  # one input for both: profile paths resolve alike
    src.parent.mkdir(parents=True, exist_ok=True)
    if kw.get("compression") == "gzip":
        src.write_bytes(gzip.compress(data))
    elif kw.get("compression") == "zstd":
        import zstandard

        src.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        src.write_bytes(data)
    slow = _outcome(src, tmp_path / "python", False, mp, **kw)
    fast = _outcome(src, tmp_path / "fast", True, mp, **kw)
    return slow, fast


# -- tests -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", _case_ids())
def test_fast_path_writes_what_the_python_path_writes(case, cases, tmp_path, monkeypatch):
    slow, fast = _run_both(tmp_path, cases[case], monkeypatch)
    _assert_same(slow, fast)


@pytest.mark.parametrize("case", ["sdk:synthetic", "sdk:traces-and-metrics",
                                  "sdk:mixed-good-bad-lines", "attr:role-batch",
                                  "shape:two-resource-spans",
                                  "fuzz:resources-across-fast-and-slow-lines", "mutant:tree:00"])
@pytest.mark.parametrize("chunk_spans", [1, 3, 200])
def test_same_chunking_into_row_groups(case, chunk_spans, cases, tmp_path, monkeypatch):
    slow, fast = _run_both(tmp_path, cases[case], monkeypatch, chunk_spans=chunk_spans)
    _assert_same(slow, fast)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("case", ["sdk:traces-and-metrics", "sdk:mixed-good-bad-lines",
                                  "json:truncated", "json:crlf"])
def test_same_through_compressed_streams(case, compression, cases, tmp_path, monkeypatch):
    slow, fast = _run_both(tmp_path, cases[case], monkeypatch, compression=compression)
    _assert_same(slow, fast)


@pytest.mark.parametrize("case", ["sdk:traces-and-metrics", "sdk:mixed-good-bad-lines",
                                  "json:empty-lines", "json:crlf", "sdk:synthetic"])
def test_same_for_byte_ranges_of_a_file(case, cases, tmp_path, monkeypatch):
    data = cases[case]
    cuts = sorted({1, len(data) // 3, len(data) // 2, len(data) - 1})
    for n, cut in enumerate(cuts):
        for k, (start, end) in enumerate(((0, cut), (cut, None))):
            slow, fast = _run_both(tmp_path / f"{n}-{k}", data, monkeypatch, start=start, end=end)
            _assert_same(slow, fast)


def test_the_comparison_sees_a_difference(cases, tmp_path, monkeypatch):
    """Guard against a vacuous comparison: outputs that differ in one value must not pass."""
    a, _ = _run_both(tmp_path / "a", cases["sdk:file-sink"], monkeypatch)
    b, _ = _run_both(tmp_path / "b", cases["sdk:file-sink"].replace(b"tiny-gpt", b"tiny-gpu"),
                     monkeypatch)
    assert a["spans"] == b["spans"] > 0 and a["errors"] == b["errors"]
    with pytest.raises(AssertionError, match="spans row"):
        _assert_same(a, b)
    c = dict(a, errors=[(1, 0, "x")])
    with pytest.raises(AssertionError, match="errors differ"):
        _assert_same(a, c)


def _stats_delta(path: Path, out_dir: Path, mp: pytest.MonkeyPatch, fast: bool
                 ) -> dict[str, int]:
    before = dict(fastjson.stats())
    res = _outcome(path, out_dir, fast, mp)
    assert "raised" not in res and res["errors"] == []
    after = fastjson.stats()
    return {k: after[k] - before[k] for k in ("lines_fast", "lines_fallback")}


@pytest.mark.parametrize("case", ["sdk:file-sink", "sdk:synthetic"])
def test_fast_path_takes_canonical_sdk_lines(case, cases, tmp_path, monkeypatch):
    if not _fast_available():
        pytest.skip("inferaudit_analyzer.ingest._fastotlp is not built: nothing to check")
    src = tmp_path / "traces.jsonl"
    data = cases[case]
    if case == "sdk:synthetic":  # its metrics lines are not the traces fast path's business
        data = b"".join(ln for ln in data.splitlines(keepends=True) if b"resourceSpans" in ln)
    src.write_bytes(data)
    n_lines = data.count(b"\n")
    on = _stats_delta(src, tmp_path / "on", monkeypatch, fast=True)
    assert on == {"lines_fast": n_lines, "lines_fallback": 0}, (
        f"canonical SDK lines fell back to Python: {on}")
    off = _stats_delta(src, tmp_path / "off", monkeypatch, fast=False)
    assert off["lines_fast"] == 0, f"{FAST_ENV}=0 still took the fast path: {off}"


def test_a_wrong_fast_path_would_be_caught(cases, tmp_path, monkeypatch):
    """The fast run really uses the fast path's rows: one that converts a different line fails."""
    if not _fast_available():
        pytest.skip("inferaudit_analyzer.ingest._fastotlp is not built: nothing to check")
    real = fastjson.convert
    monkeypatch.setattr(fastjson, "convert",
                        lambda data: real(data.replace(b"tiny-gpt", b"tiny-gpu")))
    slow, fast = _run_both(tmp_path, cases["sdk:file-sink"], monkeypatch)
    with pytest.raises(AssertionError, match="spans row"):
        _assert_same(slow, fast)
