"""OTLP over HTTP and gRPC, each against a real receiver on loopback.

HTTP: a tiny ``http.server`` recording the protobuf bodies POSTed to /v1/traces and /v1/metrics.
gRPC: a minimal ``TraceService``/``MetricsService`` from ``opentelemetry.proto``'s generated stubs.
"""

from __future__ import annotations

import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from inferaudit_sdk import semconv
from inferaudit_sdk.config import AuditConfig
from inferaudit_sdk.sdk import self_metrics
from inferaudit_sdk.sdk.provider import build

_OTEL_VARS = (
    "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_INSECURE", "OTEL_SDK_DISABLED", "INFERAUDIT_EXPORTERS",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]]

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_receiver():
    received: list = []
    handler = type("Recorder", (_Recorder,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def _span_names(requests) -> list[str]:
    return [
        s.name for r in requests for rs in r.resource_spans for ss in rs.scope_spans
        for s in ss.spans
    ]


def _metric_names(requests) -> set[str]:
    return {
        m.name for r in requests for rm in r.resource_metrics for sm in rm.scope_metrics
        for m in sm.metrics
    }


def test_otlp_http_delivers_spans_and_metrics(tmp_path, monkeypatch, http_receiver):
    base, received = http_receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base)  # the exporter appends /v1/...
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-audit-key=s3cret,tenant=t1")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    h = build(AuditConfig(trace_dir=str(tmp_path), nvml_enabled=False), set_global=False)
    assert h.trace_exporters == ("otlp",) and h.metric_exporters == ("otlp",)
    assert h.trace_dir is None
    tracer = h.tracer_provider.get_tracer(semconv.INSTRUMENTATION_NAME)
    for name in ("alpha", "beta"):
        tracer.start_span(name, attributes={semconv.SPAN_ROLE: semconv.ROLE_REQUEST}).end()
    before = self_metrics.exported_counts().get("otlp", 0)
    assert h.force_flush(timeout_s=10)
    assert self_metrics.exported_counts()["otlp"] - before == 2
    h.shutdown(timeout_s=10)

    traces = [r for r in received if r[0] == "/v1/traces"]
    assert traces and all(r[1]["x-audit-key"] == "s3cret" for r in traces)
    assert all(r[1]["content-type"] == "application/x-protobuf" for r in traces)
    decoded = [trace_service_pb2.ExportTraceServiceRequest.FromString(r[2]) for r in traces]
    assert sorted(_span_names(decoded)) == ["alpha", "beta"]
    resource = {a.key for a in decoded[0].resource_spans[0].resource.attributes}
    assert {semconv.HOST_NAME, semconv.RES_SCHEMA_VERSION} <= resource
    metrics = [
        metrics_service_pb2.ExportMetricsServiceRequest.FromString(r[2])
        for r in received if r[0] == "/v1/metrics"
    ]
    assert semconv.METRIC_SDK_SPANS_EXPORTED in _metric_names(metrics)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list = []
        self.metadata: list[dict[str, str]] = []

    def Export(self, request, context):
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.requests: list = []

    def Export(self, request, context):
        self.requests.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
def grpc_receiver():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    traces, metrics = _TraceService(), _MetricsService()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(traces, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(metrics, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{port}", traces, metrics
    server.stop(grace=None)


def test_otlp_grpc_delivers_spans_and_metrics(tmp_path, monkeypatch, grpc_receiver):
    endpoint, traces, metrics = grpc_receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-audit-key=g")
    h = build(
        AuditConfig(trace_dir=str(tmp_path), nvml_enabled=False, exporters=("otlp", "file")),
        set_global=False,
    )
    assert h.trace_exporters == ("otlp", "file")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    assert isinstance(h.processors[0].exporter, OTLPSpanExporter)
    tracer = h.tracer_provider.get_tracer(semconv.INSTRUMENTATION_NAME)
    with tracer.start_as_current_span("parent"):
        tracer.start_span("child").end()
    assert h.force_flush(timeout_s=10)
    h.shutdown(timeout_s=10)
    assert sorted(_span_names(traces.requests)) == ["child", "parent"]
    assert traces.metadata[0]["x-audit-key"] == "g"
    assert semconv.METRIC_SDK_SPANS_EXPORTED in _metric_names(metrics.requests)


def test_per_signal_protocol_and_endpoint_win(tmp_path, monkeypatch, grpc_receiver,
                                               http_receiver):
    grpc_endpoint, traces, _ = grpc_receiver
    http_base, received = http_receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", grpc_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"{http_base}/v1/metrics")
    h = build(
        AuditConfig(trace_dir=str(tmp_path), nvml_enabled=False, exporters=("otlp",)),
        set_global=False,
    )
    h.tracer_provider.get_tracer("t").start_span("split").end()
    h.shutdown(timeout_s=10)
    assert _span_names(traces.requests) == ["split"]
    assert [r[0] for r in received] and {r[0] for r in received} == {"/v1/metrics"}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_otlp_timeout_is_read_in_milliseconds_as_the_spec_says(tmp_path, monkeypatch, protocol):
    # The installed exporters alone read these in seconds: 10000 would be ~2.8 h of retries.
    from inferaudit_sdk.sdk.exporters import make_metric_exporter, make_span_exporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "10000")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500")  # the per-signal one wins
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", raising=False)
    cfg = AuditConfig(trace_dir=str(tmp_path), nvml_enabled=False)
    spans, metrics = make_span_exporter("otlp", cfg), make_metric_exporter("otlp", cfg)

    def timeout_s(exporter):  # the gRPC exporter keeps it itself, the HTTP one in its client
        own = getattr(exporter, "_timeout", None)
        return own if own is not None else exporter._client._timeout

    try:
        assert timeout_s(spans) == pytest.approx(2.5)
        assert timeout_s(metrics) == pytest.approx(10.0)
    finally:
        spans.shutdown()
        metrics.shutdown()


def test_a_bad_otlp_timeout_warns_and_takes_the_default(monkeypatch, caplog):
    from inferaudit_sdk.sdk.exporters import resolve_timeout_s

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", raising=False)
    for raw in ("soon", "-5", "0", "inf"):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", raw)
        caplog.clear()
        assert resolve_timeout_s("traces") == 10.0
        assert repr(raw) in caplog.text


def test_a_metrics_endpoint_alone_sends_metrics_over_otlp(tmp_path, monkeypatch):
    from inferaudit_sdk.sdk.exporters import resolve_exporters

    cfg = AuditConfig(trace_dir=str(tmp_path), nvml_enabled=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://127.0.0.1:9/v1/metrics")
    assert resolve_exporters(cfg, "metrics") == (("otlp",), "endpoint")
    assert resolve_exporters(cfg, "traces") == (("file",), "default")
