"""The file sink writes exactly the OTLP/JSON lines the OpenTelemetry Collector file exporter does.

The reference is the OpenTelemetry SDK's own OTLP protobuf encoder: for the same spans our line
must equal ``MessageToDict(encode_spans(spans))`` with ids as hex, byte for byte.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict, Parse
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from inferaudit_sdk.sdk import otlp_json
from inferaudit_sdk.sdk.exporters import FileMetricExporter, FileSpanExporter, RotatingLineWriter

_FILE_RE = re.compile(r"^(traces|metrics)-\d{8}T\d{6}-(\d+)-(\d+)\.jsonl$")


def _hexify(d: dict) -> dict:
    """The reference dict with protobuf-JSON base64 ids rewritten as OTLP/JSON hex."""
    for rs in d.get("resourceSpans", ()):
        for ss in rs.get("scopeSpans", ()):
            for span in ss.get("spans", ()):
                otlp_json.b64_ids_to_hex(span)
                for link in span.get("links", ()):
                    otlp_json.b64_ids_to_hex(link)
    return d


def _unhexify(d: dict) -> dict:
    """Our hex ids back to base64, so protobuf's own JSON parser can check the whole line."""
    for rs in d.get("resourceSpans", ()):
        for ss in rs.get("scopeSpans", ()):
            for span in ss.get("spans", ()):
                for obj in (span, *span.get("links", ())):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in obj:
                            obj[key] = base64.b64encode(bytes.fromhex(obj[key])).decode()
    return d


def _rich_spans() -> list:
    """Spans exercising every field: kinds, all AnyValue types, events, links with attributes,
    remote parents, trace state, status, dropped counts, two resources, scopes with version,
    attributes and schema URLs."""
    mem = InMemorySpanExporter()
    limits = SpanLimits(max_span_attributes=12, max_events=2, max_links=2)
    tp_a = TracerProvider(
        resource=Resource({"service.name": "svc-a", "n": 3}, schema_url="https://res/a"),
        span_limits=limits,
        shutdown_on_exit=False,
    )
    tp_b = TracerProvider(resource=Resource({"service.name": "svc-b"}), shutdown_on_exit=False)
    for tp in (tp_a, tp_b):
        tp.add_span_processor(SimpleSpanProcessor(mem))
    scoped = tp_a.get_tracer("lib.a", "1.2.3", schema_url="https://scope/a", attributes={"k": 1})
    plain = tp_a.get_tracer("lib.b")
    remote = SpanContext(
        0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1"), ("x", "y")]),
    )
    attrs = {
        "s": "text é ✓", "empty": "", "b": True, "i": -(2**63), "big": 2**63 - 1, "f": 0.1,
        "whole": 2.0, "nan": float("nan"), "inf": float("inf"), "ints": [1, 2, 3],
        "strs": ("a", ""), "none_list": [],
    }
    with scoped.start_as_current_span("root", kind=SpanKind.SERVER, attributes=attrs) as root:
        root.set_attribute("over.limit", 1)  # dropped: counts in droppedAttributesCount
        root.add_event("first", {"x": 1.5, "flags": [True, False]})
        root.add_event("second")
        root.add_event("third")  # the first one is dropped
        links = [Link(remote), Link(remote, {"role": "member"}), Link(root.get_span_context())]
        # Two links fit: the SDK drops the oldest (first) one and counts it.
        with plain.start_as_current_span("batch", kind=SpanKind.CLIENT, links=links) as child:
            child.set_status(Status(StatusCode.ERROR, "boom"))
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    with scoped.start_as_current_span("remote-child", context=ctx, kind=SpanKind.CONSUMER) as s:
        s.set_status(Status(StatusCode.OK))
    for kind in (SpanKind.PRODUCER, SpanKind.INTERNAL):
        tp_b.get_tracer("other").start_span(f"k{kind.value}", kind=kind).end()
    spans = list(mem.get_finished_spans())
    assert {s.resource for s in spans} == {tp_a.resource, tp_b.resource}
    return spans


def test_encoding_is_byte_identical_to_the_sdk_otlp_encoder():
    spans = _rich_spans()
    ours = otlp_json.encode_spans_request(spans)
    reference = _hexify(MessageToDict(encode_spans(spans), use_integers_for_enums=True))
    assert ours == reference
    assert otlp_json.dumps_line(ours) == otlp_json.dumps_line(reference)


def test_otlp_json_details_follow_the_data_model():
    spans = _rich_spans()
    line = json.loads(otlp_json.dumps_line(otlp_json.encode_spans_request(spans)))
    by_name = {
        s["name"]: (s, ss, rs)
        for rs in line["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]
    }
    root, scope_spans, resource_spans = by_name["root"]
    assert re.fullmatch(r"[0-9a-f]{32}", root["traceId"])
    assert re.fullmatch(r"[0-9a-f]{16}", root["spanId"])
    assert "parentSpanId" not in root
    assert isinstance(root["startTimeUnixNano"], str) and int(root["startTimeUnixNano"]) > 0
    assert root["kind"] == 2
    attrs = {a["key"]: a["value"] for a in root["attributes"]}
    assert attrs["i"] == {"intValue": str(-(2**63))}
    assert attrs["nan"] == {"doubleValue": "NaN"} and attrs["inf"] == {"doubleValue": "Infinity"}
    assert attrs["ints"] == {"arrayValue": {"values": [{"intValue": str(i)} for i in (1, 2, 3)]}}
    assert root["droppedAttributesCount"] == 1 and root["droppedEventsCount"] == 1
    assert [e["name"] for e in root["events"]] == ["second", "third"]  # the SDK drops oldest
    assert resource_spans["schemaUrl"] == "https://res/a"
    assert scope_spans["scope"]["version"] == "1.2.3"
    assert scope_spans["schemaUrl"] == "https://scope/a"
    batch = by_name["batch"][0]
    assert batch["parentSpanId"] == root["spanId"]
    assert batch["status"] == {"message": "boom", "code": 2}
    assert batch["links"][0]["traceId"] == f"{0xABC:032x}"
    assert batch["links"][0]["attributes"] == [
        {"key": "role", "value": {"stringValue": "member"}}
    ]
    assert batch["droppedLinksCount"] == 1
    remote_child = by_name["remote-child"][0]
    assert remote_child["traceState"] == "vendor=v1,x=y"
    assert remote_child["flags"] == 0x300  # has-is-remote | is-remote


def test_every_line_parses_as_an_export_request(tmp_path: Path):
    exporter = FileSpanExporter(tmp_path)
    spans = _rich_spans()
    exporter.export(spans[:2])
    exporter.export(spans[2:])
    exporter.shutdown()
    [path] = exporter.writer.files
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    names = []
    for raw in lines[:-1]:
        msg = Parse(json.dumps(_unhexify(json.loads(raw))), ExportTraceServiceRequest())
        names += [s.name for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert sorted(names) == sorted(s.name for s in spans)


def test_file_names_and_rotation(tmp_path: Path):
    spans = _rich_spans()
    one_line = len(otlp_json.dumps_line(otlp_json.encode_spans_request(spans)))
    exporter = FileSpanExporter(tmp_path / "nested", max_bytes=int(one_line * 2.5))
    for _ in range(5):
        exporter.export(spans)
    exporter.shutdown()
    files = exporter.writer.files
    assert len(files) == 3  # 2 + 2 + 1 lines
    seqs = []
    for path in files:
        m = _FILE_RE.match(path.name)
        assert m, path.name
        assert m.group(1) == "traces" and int(m.group(2)) == os.getpid()
        seqs.append(int(m.group(3)))
        assert path.stat().st_size <= one_line * 2.5
        assert all(json.loads(x) for x in path.read_bytes().splitlines())
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert sorted(p.name for p in (tmp_path / "nested").iterdir()) == sorted(p.name for p in files)


def test_two_writers_in_one_second_never_share_a_file(tmp_path: Path):
    a = RotatingLineWriter(tmp_path, "traces", 1 << 20)
    b = RotatingLineWriter(tmp_path, "traces", 1 << 20)
    a.write_line(b'{"a":1}\n')
    b.write_line(b'{"b":1}\n')
    a.close()
    b.close()
    assert a.path != b.path
    assert a.path.read_bytes() == b'{"a":1}\n' and b.path.read_bytes() == b'{"b":1}\n'


def test_a_failed_write_leaves_only_whole_lines(tmp_path: Path, monkeypatch):
    writer = RotatingLineWriter(tmp_path, "traces", 1 << 20)
    writer.write_line(b'{"ok":1}\n')
    real_write = os.write

    def half_then_fail(fd, data):  # a disk filling up in the middle of a line
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(OSError):
        writer.write_line(b'{"lost":"' + b"x" * 100 + b'"}\n')
    monkeypatch.setattr(os, "write", real_write)
    writer.write_line(b'{"ok":2}\n')
    writer.close()
    assert writer.path.read_bytes() == b'{"ok":1}\n{"ok":2}\n'


def test_export_failure_is_reported_not_raised(tmp_path: Path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    exporter = FileSpanExporter(blocker / "sub")  # cannot create a directory under a file
    from opentelemetry.sdk.trace.export import SpanExportResult

    assert exporter.export(_rich_spans()) is SpanExportResult.FAILURE
    exporter.shutdown()


def test_a_sink_that_cannot_write_logs_one_line_then_one_when_it_recovers(tmp_path, caplog):
    # An unwritable directory (or a full disk) fails every batch: the server's log gets one
    # line saying so, not a stack trace per batch, and one line when writing works again.
    import logging

    from opentelemetry.sdk.trace.export import SpanExportResult

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    exporter = FileSpanExporter(blocker / "sub")
    with caplog.at_level(logging.DEBUG, logger="inferaudit_sdk"):
        for _ in range(5):
            assert exporter.export(_rich_spans()) is SpanExportResult.FAILURE
        failing = [r for r in caplog.records if r.name == "inferaudit_sdk"]
        assert len(failing) == 1 and failing[0].exc_info is None
        assert "cannot write spans" in failing[0].getMessage()
        assert str(blocker / "sub") in failing[0].getMessage()
        assert "Traceback" not in caplog.text
        caplog.clear()
        blocker.unlink()  # the operator fixes it
        assert exporter.export(_rich_spans()) is SpanExportResult.SUCCESS
        assert exporter.export(_rich_spans()) is SpanExportResult.SUCCESS
        (again,) = [r for r in caplog.records if r.name == "inferaudit_sdk"]
        assert "again" in again.getMessage() and "5 exports" in again.getMessage()
    exporter.shutdown()


def test_metrics_lines_match_the_sdk_encoder(tmp_path: Path):
    reader = InMemoryMetricReader()
    mp = MeterProvider(
        metric_readers=[reader], resource=Resource({"service.name": "m"}),
        shutdown_on_exit=False,
    )
    meter = mp.get_meter("inferaudit_sdk", "0.1")
    meter.create_counter("c", unit="{span}").add(5, {"inferaudit.exporter": "file"})
    meter.create_histogram("h", unit="s").record(0.25)
    meter.create_up_down_counter("g").add(-2)
    data = reader.get_metrics_data()
    exporter = FileMetricExporter(tmp_path)
    exporter.export(data)
    exporter.force_flush()
    [path] = exporter.writer.files
    assert _FILE_RE.match(path.name).group(1) == "metrics"
    [line] = path.read_bytes().splitlines()
    expected = MessageToDict(encode_metrics(data), use_integers_for_enums=True)
    assert json.loads(line) == json.loads(json.dumps(expected))
    msg = Parse(line, ExportMetricsServiceRequest())
    names = {m.name for rm in msg.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert names == {"c", "h", "g"}
    counter = next(
        m for rm in msg.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        if m.name == "c"
    )
    assert counter.sum.data_points[0].as_int == 5
    assert counter.sum.aggregation_temporality == 2  # cumulative: the last line holds totals
    exporter.shutdown()
    mp.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_fork_while_a_write_holds_the_lock_leaves_the_child_a_writer_of_its_own(tmp_path):
    # The parent's export thread mid-write at the fork: the child inherited the lock held, and
    # its first write (or its exit's close) waited forever; its spans were lost.
    import time

    w = RotatingLineWriter(tmp_path, "traces", 1 << 20)
    w.write_line(b'{"parent": 1}\n')
    with w._lock:  # as the export thread holds it during a write
        pid = os.fork()
        if pid == 0:  # the child: write, close, report by exit status
            try:
                w.write_line(b'{"child": 1}\n')
                w.close()
                os._exit(0)
            finally:
                os._exit(3)
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the child hung on the writer's lock")
    assert os.waitstatus_to_exitcode(status) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and any(f"-{pid}-" in f for f in files)  # the child's own file
    child = next(p for p in tmp_path.iterdir() if f"-{pid}-" in p.name)
    assert child.read_bytes() == b'{"child": 1}\n'
    w.close()
