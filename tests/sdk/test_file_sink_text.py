"""The file sink's text encoder writes the same bytes as the dict encoder it replaces.

The dict encoder (``otlp_json``) is checked against the OpenTelemetry SDK's own OTLP encoder in
test_file_sink.py; here the text encoder is held to it byte for byte, on SDK spans and on
hand-built spans carrying every value shape the reference handles (and drops).
"""

from __future__ import annotations

import enum
import random

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from test_file_sink import _rich_spans

from inferaudit_sdk.sdk import otlp_json, otlp_json_text
from inferaudit_sdk.sdk.exporters import FileSpanExporter


def _reference(spans) -> bytes:
    return otlp_json.dumps_line(otlp_json.encode_spans_request(spans))


class _Color(enum.IntEnum):
    RED = 1


class _Name(str):
    pass


class _Ratio(float):
    pass


ODD_VALUES = {
    "s": "text é ✓ \"quoted\" \\ back \n newline \t tab \x01 ctl \u2028 sep",
    "empty": "", "long": "x" * 500, "b": True, "f_false": False,
    "i_min": -(2**63), "i_max": 2**63 - 1, "too_big": 2**63, "too_small": -(2**63) - 1,
    "zero": 0, "f": 0.1, "whole": 2.0, "neg_zero": -0.0, "tiny": 5e-324, "huge": 1e308,
    "exp": 1e16, "nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"),
    "bytes": b"\x00\xffbin", "ints": [1, 2, 3], "mixed": (1, "a", 2.5, True, None),
    "nested": [[1, [2]], {"k": "v"}], "empty_list": [], "empty_map": {}, "map": {"a": 1, "": 2},
    "none": None, "enum": _Color.RED, "str_sub": _Name("named"), "float_sub": _Ratio(0.25),
    "object": object(), "": "empty key", "bad_in_list": [1, object()],
    "unicode_key_é": "v",
}


def _span(i: int, resource: Resource, scope: InstrumentationScope | None, **kw) -> ReadableSpan:
    ctx = SpanContext(0x1000 + i, 0x2000 + i, is_remote=False, trace_flags=TraceFlags(1),
                      trace_state=kw.pop("trace_state", TraceState()))
    return ReadableSpan(name=kw.pop("name", f"span {i}"), context=ctx,
                        parent=kw.pop("parent", None), resource=resource,
                        attributes=kw.pop("attributes", {}), events=kw.pop("events", ()),
                        links=kw.pop("links", ()), kind=kw.pop("kind", SpanKind.INTERNAL),
                        instrumentation_scope=scope, status=kw.pop("status", Status()),
                        start_time=kw.pop("start_time", 1_700_000_000_000_000_000 + i),
                        end_time=kw.pop("end_time", 1_700_000_000_000_500_000 + i))


def _hand_built() -> list[ReadableSpan]:
    res_a = Resource({"service.name": "a", "n": 3}, schema_url="https://res/a")
    res_a_again = Resource({"service.name": "a", "n": 3}, schema_url="https://res/a")
    res_b = Resource({})
    scope = InstrumentationScope("lib", "1.0", "https://scope", {"k": 1})
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    return [
        _span(1, res_a, scope, attributes=dict(ODD_VALUES), kind=SpanKind.SERVER,
              trace_state=TraceState([("vendor", "v1"), ("x", "y")]),
              status=Status(StatusCode.ERROR, "boom \"x\"")),
        _span(2, res_a_again, scope, parent=remote, name="",
              events=(Event("e", {"x": 1.5, "flags": [True, False]}, timestamp=5),
                      Event("", {}, timestamp=0), Event("only-name", None, timestamp=7)),
              links=(Link(remote), Link(remote, {"role": "member", "n": 2})),
              status=Status(StatusCode.OK)),
        _span(3, res_b, None, start_time=0, end_time=0, kind=SpanKind.CONSUMER,
              attributes={"only": object()}),
        _span(4, res_b, InstrumentationScope(""), attributes={"k": "v"}),
        _span(5, res_a, scope, kind=SpanKind.PRODUCER, attributes={"s": "é"}),
    ]


def test_sdk_spans_encode_to_the_reference_bytes() -> None:
    spans = _rich_spans()
    assert otlp_json_text.encode_spans_line(spans) == _reference(spans)


def test_every_value_shape_encodes_to_the_reference_bytes() -> None:
    spans = _hand_built()
    assert otlp_json_text.encode_spans_line(spans) == _reference(spans)
    for span in spans:  # one span a line, too
        assert otlp_json_text.encode_spans_line([span]) == _reference([span])


def test_equal_resources_in_distinct_objects_share_one_group() -> None:
    spans = _hand_built()[:2]
    assert spans[0].resource is not spans[1].resource
    line = otlp_json_text.encode_spans_line(spans)
    assert line.count(b'"resource"') == 1 and line == _reference(spans)


def test_a_lone_surrogate_takes_the_reference_path() -> None:
    res = Resource({"service.name": "a"})
    spans = [_span(1, res, None, attributes={"s": "bad \ud800 half", "t": "é"})]
    line = otlp_json_text.encode_spans_line(spans)
    assert line == _reference(spans) and b"\\ud800" in line and b"\\u00e9" in line


def test_caches_overflow_and_still_encode_exactly() -> None:
    res = Resource({"service.name": "a"})
    rng = random.Random(3)
    spans = [_span(i, res, None, attributes={
        f"k{rng.randrange(6000)}": f"v{rng.randrange(10**6)}", "role": "batch",
        "n": rng.randrange(-10**12, 10**12), "f": rng.random()}) for i in range(9000)]
    for start in range(0, len(spans), 512):
        chunk = spans[start:start + 512]
        assert otlp_json_text.encode_spans_line(chunk) == _reference(chunk)
    assert len(otlp_json_text._escaped) <= otlp_json_text._CACHE_MAX
    assert len(otlp_json_text._string_kvs) <= otlp_json_text._CACHE_MAX


@pytest.mark.parametrize("seed", range(5))
def test_random_spans_encode_to_the_reference_bytes(seed: int) -> None:
    rng = random.Random(seed)
    keys = list(ODD_VALUES)
    resources = [Resource({"service.name": f"s{k}"}) for k in range(3)]
    scopes = [None, InstrumentationScope("a"), InstrumentationScope("b", "2", "u")]
    spans = []
    for i in range(200):
        attrs = {k: ODD_VALUES[k] for k in rng.sample(keys, rng.randrange(0, 12))}
        spans.append(_span(i, rng.choice(resources), rng.choice(scopes), attributes=attrs,
                           kind=rng.choice(list(SpanKind))))
    assert otlp_json_text.encode_spans_line(spans) == _reference(spans)


def test_the_file_sink_writes_the_text_encoders_line(tmp_path) -> None:
    spans = _rich_spans()
    exporter = FileSpanExporter(tmp_path)
    exporter.export(spans)
    exporter.shutdown()
    [path] = exporter.writer.files
    assert path.read_bytes() == _reference(spans)


def test_keys_and_names_that_are_not_plain_strings_are_not_cached_under_equal_values() -> None:
    # 1 == True: a value-keyed cache would write the first one's spelling for the second
    res = Resource({"service.name": "a"})
    spans = [_span(1, res, None, attributes={1: "x"}), _span(2, res, None, attributes={True: "x"}),
             _span(3, res, None, name=5), _span(4, res, None, name=_Name("sub"))]
    for span in spans:
        assert otlp_json_text.encode_spans_line([span]) == _reference([span])
