"""OTLP/gRPC receiver: the official exporter end to end, invalid messages, auth, backpressure."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from collector_helpers import disk_spans, expected_attributes, make_spans
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

from inferaudit_collector.service import Collector, CollectorConfig

SPANS_END_TO_END = 100_000  # the count
BATCH = 512
_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _raw_call(port: int, body: bytes, metadata: tuple = ()) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(_METHOD, request_serializer=None,
                              response_deserializer=ExportTraceServiceResponse.FromString)
        return call(body, timeout=10, metadata=metadata)


@pytest.mark.slow
def test_official_grpc_exporter_100k_spans_byte_exact(collector: Collector) -> None:
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True,
                                timeout=30)
    sent = make_spans(SPANS_END_TO_END, seed=21)
    for i in range(0, len(sent), BATCH):
        assert exporter.export(sent[i : i + BATCH]) is SpanExportResult.SUCCESS
    exporter.shutdown()
    collector.stop()
    got = {s["spanId"]: s for s in disk_spans(collector.config.directory)}
    assert len(got) == SPANS_END_TO_END
    for span in sent:
        on_disk = got[f"{span.context.span_id:016x}"]
        assert on_disk["attributes"] == expected_attributes(span)
        assert on_disk["traceId"] == f"{span.context.trace_id:032x}"


def test_invalid_messages_get_invalid_argument_and_the_server_keeps_serving(
    collector: Collector,
) -> None:
    good = encode_spans(make_spans(4)).SerializeToString()
    for bad in (b"\xff\xff\xff\xff", good[: len(good) // 2]):
        with pytest.raises(grpc.RpcError) as err:
            _raw_call(collector.grpc_port, bad)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "invalid protobuf" in err.value.details()
    assert _raw_call(collector.grpc_port, good) == ExportTraceServiceResponse()
    req = encode_spans(make_spans(4))
    req.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x00"
    resp = _raw_call(collector.grpc_port, req.SerializeToString())
    assert resp.partial_success.rejected_spans == 1
    assert "traceId" in resp.partial_success.error_message
    collector.stop()
    assert sum(1 for _ in disk_spans(collector.config.directory)) == 7


def test_oversize_message_is_refused(tmp_path: Path) -> None:
    cfg = CollectorConfig(directory=tmp_path, http_port=None, grpc_port=0, max_body_bytes=2048)
    with Collector(cfg) as col:
        with pytest.raises(grpc.RpcError) as err:
            _raw_call(col.grpc_port, encode_spans(make_spans(100)).SerializeToString())
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _raw_call(col.grpc_port, encode_spans(make_spans(1)).SerializeToString()) == (
            ExportTraceServiceResponse()
        )


def test_token_is_required_over_grpc(tmp_path: Path) -> None:
    cfg = CollectorConfig(directory=tmp_path, http_port=None, grpc_port=0, token="tok")
    with Collector(cfg) as col:
        body = encode_spans(make_spans(2)).SerializeToString()
        with pytest.raises(grpc.RpcError) as err:
            _raw_call(col.grpc_port, body)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert _raw_call(col.grpc_port, body, (("authorization", "Bearer tok"),)) == (
            ExportTraceServiceResponse()
        )
        exp = OTLPSpanExporter(endpoint=f"127.0.0.1:{col.grpc_port}", insecure=True,
                               headers={"authorization": "Bearer tok"})
        assert exp.export(make_spans(3)) is SpanExportResult.SUCCESS
        exp.shutdown()


def test_full_buffer_is_unavailable_with_retry_info(tmp_path: Path) -> None:
    cfg = CollectorConfig(directory=tmp_path, http_port=None, grpc_port=0, buffer_bytes=1,
                          retry_after_s=2)
    col = Collector(cfg)
    gate = threading.Event()
    inner = col.sink

    class Gated:
        def write(self, signal: str, line: bytes) -> None:
            assert gate.wait(20)
            inner.write(signal, line)

        def flush(self, *, fsync: bool) -> None:
            inner.flush(fsync=fsync)

        def close(self) -> None:
            inner.close()

    col.sink = Gated()  # type: ignore[assignment]
    col.start()
    try:
        body = encode_spans(make_spans(2)).SerializeToString()
        assert _raw_call(col.grpc_port, body) == ExportTraceServiceResponse()
        with pytest.raises(grpc.RpcError) as err:
            _raw_call(col.grpc_port, body)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        info = dict(err.value.trailing_metadata())["google.rpc.retryinfo-bin"]
        delay = RetryInfo.FromString(info).retry_delay
        assert 2 <= delay.seconds + delay.nanos / 1e9 <= 4  # 2 s x a random factor in [1, 2]
    finally:
        gate.set()
        col.stop()
    assert sum(1 for _ in disk_spans(tmp_path)) == 2


def test_metrics_over_grpc_from_the_official_exporter(collector: Collector) -> None:
    from collector_helpers import read_lines
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True),
        export_interval_millis=60_000,
    )
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("m").create_histogram("latency", unit="s").record(0.5)
    provider.shutdown()
    collector.stop()
    docs = [d for d in read_lines(collector.config.directory) if "resourceMetrics" in d]
    (metric,) = [m for d in docs for rm in d["resourceMetrics"] for sm in rm["scopeMetrics"]
                 for m in sm["metrics"]]
    assert metric["name"] == "latency" and metric["histogram"]["dataPoints"][0]["count"] == "1"
    assert collector.stats.points_accepted == 1
