"""decode: protobuf and OTLP/JSON bodies become the Collector file exporter's line format."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from collector_helpers import expected_attributes, make_spans
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics as sdk_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from inferaudit_collector.decode import (
    DecodeError,
    encode_metrics,
    encode_traces,
    parse_metrics,
    parse_traces,
)

_HEX_KEYS = {"traceId", "spanId", "parentSpanId"}


def _reference(msg: Any) -> Any:
    """protobuf's own JSON mapping, with ids turned from base64 into OTLP's hex."""

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: base64.b64decode(v).hex() if k in _HEX_KEYS else fix(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [fix(x) for x in node]
        return node

    return fix(json_format.MessageToDict(msg, use_integers_for_enums=True))


def _drop_empty_status(doc: dict[str, Any]) -> dict[str, Any]:
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                if s.get("status") == {}:
                    del s["status"]
    return doc


def _rich_request() -> ExportTraceServiceRequest:
    req = encode_spans(make_spans(60))
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.trace_state = "a=1,b=2"
    span.dropped_attributes_count = 3
    span.dropped_events_count = 1
    span.dropped_links_count = 2
    ev = span.events.add(time_unix_nano=5, name="ev é")
    ev.attributes.add(key="k", value=AnyValue(bytes_value=b"\x00\xff raw"))
    nested = AnyValue()
    nested.kvlist_value.values.add(key="inner", value=AnyValue(double_value=float("-inf")))
    nested.kvlist_value.values.add(key="arr", value=AnyValue()).value.array_value.SetInParent()
    span.attributes.append(KeyValue(key="nested", value=nested))
    span.attributes.append(KeyValue(key="nan", value=AnyValue(double_value=float("nan"))))
    req.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.26.0"
    req.resource_spans[0].scope_spans[0].schema_url = "https://x/s"
    return req


def test_proto_walk_matches_protobufs_own_json_mapping() -> None:
    req = _rich_request()
    enc = encode_traces(parse_traces(req.SerializeToString(), json_body=False))
    assert enc.accepted == 60 and enc.rejected == 0
    assert enc.line.endswith(b"\n") and enc.line.count(b"\n") == 1
    assert _drop_empty_status(json.loads(enc.line)) == _drop_empty_status(_reference(req))


def test_line_shape_follows_the_data_model() -> None:
    spans = make_spans(12)
    enc = encode_traces(encode_spans(spans))
    doc = json.loads(enc.line)
    got = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    for s, sdk in zip(got, spans, strict=True):
        assert s["traceId"] == f"{sdk.context.trace_id:032x}"
        assert s["spanId"] == f"{sdk.context.span_id:016x}"
        if sdk.parent is None:
            assert "parentSpanId" not in s
        else:
            assert s["parentSpanId"] == f"{sdk.parent.span_id:016x}"
        assert s["kind"] == sdk.kind.value + 1 and isinstance(s["kind"], int)
        assert s["startTimeUnixNano"] == str(sdk.start_time)
        assert s["endTimeUnixNano"] == str(sdk.end_time)
        assert s["attributes"] == expected_attributes(sdk)  # byte-exact values, in order
        assert s["status"].get("code", 0) == sdk.status.status_code.value
    assert json.loads(enc.line.decode("utf-8")) == doc  # valid UTF-8, not ASCII-escaped
    assert "é中文🙂".encode() in enc.line


def test_json_body_normalises_to_the_same_line() -> None:
    req = _rich_request()
    line = encode_traces(req).line
    # OTLP/JSON as another sender might write it: upper-case hex, enum names, numbers for int64.
    doc = json.loads(line)
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["traceId"] = span["traceId"].upper()
    span["kind"] = "SPAN_KIND_" + ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER",
                                   "CONSUMER"][span["kind"]]
    span["startTimeUnixNano"] = int(span["startTimeUnixNano"])
    span["unknownFutureField"] = {"x": 1}  # OTLP: receivers ignore unknown fields
    again = encode_traces(parse_traces(json.dumps(doc).encode(), json_body=True))
    assert again.line == line


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "top level is list"),
        (b'{"resourceSpans": {"a": 1}}', "resourceSpans"),
        (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}', "traceId"),
        (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name": 5}]}]}]}', "name"),
        (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano": "x"}]}]}]}',
         "startTimeUnixNano"),
        (b'{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":{"intValue":{}}}]}}]}',
         "intValue"),
        (b"\xff\xfe", "invalid JSON"),
    ],
)
def test_bad_json_bodies_name_what_is_wrong(body: bytes, needle: str) -> None:
    with pytest.raises(DecodeError) as err:
        parse_traces(body, json_body=True)
    assert needle in str(err.value)


def test_bad_protobuf_is_a_decode_error() -> None:
    good = encode_spans(make_spans(5)).SerializeToString()
    for bad in (b"\xff\xff\xff\xff", good[: len(good) // 2], b"\x0a\x05abc"):
        with pytest.raises(DecodeError, match="invalid protobuf"):
            parse_traces(bad, json_body=False)


def test_spans_with_malformed_ids_are_rejected_alone() -> None:
    req = encode_spans(make_spans(10))
    spans = req.resource_spans[0].scope_spans[0].spans
    spans[3].trace_id = b"\x01" * 15
    spans[7].span_id = b""
    enc = encode_traces(req)
    assert (enc.accepted, enc.rejected) == (8, 2)
    assert "traceId must be 16 bytes" in enc.error
    ids = [s["spanId"] for s in json.loads(enc.line)["resourceSpans"][0]["scopeSpans"][0]["spans"]]
    assert len(ids) == 8 and spans[3].span_id.hex() not in ids


def test_all_rejected_writes_nothing() -> None:
    req = encode_spans(make_spans(2))
    for s in req.resource_spans[0].scope_spans[0].spans:
        s.span_id = b"\x01\x02"
    enc = encode_traces(req)
    assert enc.line == b"" and enc.rejected == 2


def test_lone_surrogate_from_json_is_refused_with_the_field_named() -> None:
    body = (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"' + b"ab" * 16
            + b'","spanId":"' + b"cd" * 8 + b'","name":"x\\ud800y"}]}]}]}')
    with pytest.raises(DecodeError, match=r"spans\[0\]\.name"):
        parse_traces(body, json_body=True)


def test_metrics_walk_matches_protobufs_own_json_mapping() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("m")
    meter.create_counter("c").add(3, {"a": "b"})
    meter.create_histogram("h", unit="s").record(0.25, {"route": "/v1"})
    meter.create_up_down_counter("u").add(-2)
    meter.create_gauge("g").set(1.5)
    req = sdk_metrics(reader.get_metrics_data())
    body = req.SerializeToString()
    enc = encode_metrics(parse_metrics(body, json_body=False))
    assert enc.accepted == 4
    assert json.loads(enc.line) == _reference(req)
    # And the JSON encoding of the same request lands on the same line.
    again = encode_metrics(parse_metrics(enc.line, json_body=True))
    assert again.line == enc.line


def test_wire_walk_and_object_walk_agree_and_unknown_groups_fall_back() -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from inferaudit_collector import decode as dec

    req = _rich_request()
    text, *_ = dec._walk_objects(req)
    assert encode_traces(req).line == ('{"resourceSpans":[' + text + "]}\n").encode()
    # An unknown field of the (deprecated) group wire type: the wire walk hands over.
    odd = req.resource_spans[0].scope_spans[0].spans[1].SerializeToString()
    odd += bytes([(100 << 3 | 3) & 0x7F | 0x80, 100 >> 4, (100 << 3 | 4) & 0x7F | 0x80, 100 >> 4])
    spans = req.resource_spans[0].scope_spans[0].spans
    spans.add().MergeFrom(Span.FromString(odd))
    enc = encode_traces(parse_traces(req.SerializeToString(), json_body=False))
    assert enc.accepted == 61
    got = json.loads(enc.line)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert got[-1] == got[1]


def test_an_unspecified_span_kind_is_omitted_on_both_walks() -> None:
    # SPAN_KIND_UNSPECIFIED (0) is the proto3 default, which the Collector's JSON omits
    from inferaudit_collector import decode as dec

    req = _rich_request()
    req.resource_spans[0].scope_spans[0].spans[0].kind = 0
    text, *_ = dec._walk_objects(req)
    wire = encode_traces(parse_traces(req.SerializeToString(), json_body=False)).line
    for line in (wire, ('{"resourceSpans":[' + text + "]}\n").encode()):
        first = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        assert "kind" not in first
        assert _drop_empty_status(json.loads(line)) == _drop_empty_status(_reference(req))


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, by hand (to control the order on the wire)."""

    def varint(n: int) -> bytes:
        out = b""
        while n >= 0x80:
            out += bytes([n & 0x7F | 0x80])
            n >>= 7
        return out + bytes([n])

    return varint(field << 3 | 2) + varint(len(payload)) + payload


def test_interleaved_and_repeated_fields_on_the_wire_render_as_protobuf_merges_them() -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    span = encode_spans(make_spans(1)).resource_spans[0].scope_spans[0].spans[0]
    head = Span(trace_id=span.trace_id, span_id=span.span_id, name="n").SerializeToString()
    a1 = Span(attributes=list(span.attributes)[:2]).SerializeToString()
    mid = Span(kind=3, status=Status(message="m")).SerializeToString()
    a2 = Span(attributes=list(span.attributes)[2:]).SerializeToString()
    tail = Span(status=Status(code=2)).SerializeToString()  # a second status: merged
    long_value = Span(attributes=[KeyValue(key="big", value=AnyValue(string_value="x" * 300))])
    wire_span = head + a1 + mid + a2 + tail + long_value.SerializeToString()
    raw = _ld(1, _ld(2, _ld(2, wire_span)))
    req = parse_traces(raw, json_body=False)
    fast = encode_traces(req, raw)
    assert fast.line == encode_traces(req).line  # wire order vs upb's canonical order
    got = json.loads(fast.line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert got["status"] == {"message": "m", "code": 2} and got["kind"] == 3
    assert [a["key"] for a in got["attributes"]] == [kv.key for kv in span.attributes] + ["big"]
