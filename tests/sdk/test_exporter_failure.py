"""A dead collector: the app keeps serving, every lost span is counted, and the counts reach the
local file sink's metrics so an audit can state its coverage."""

from __future__ import annotations

import json
import socket
import statistics
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from inferaudit_sdk import semconv
from inferaudit_sdk.config import AuditConfig
from inferaudit_sdk.sdk import self_metrics
from inferaudit_sdk.sdk.provider import build

_OTEL_VARS = (
    "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_INSECURE", "OTEL_SDK_DISABLED",
    "INFERAUDIT_EXPORTERS",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _otlp_otlp_down(monkeypatch, protocol: str) -> None:
    port = _closed_port()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.3")  # seconds in this SDK


def _dropped(exporter: str) -> dict[str, int]:
    return {r: n for (e, r), n in self_metrics.dropped_counts().items() if e == exporter}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_dead_collector_drops_are_counted_and_written_to_the_file_metrics(
    tmp_path: Path, monkeypatch, protocol
):
    _otlp_otlp_down(monkeypatch, protocol)
    cfg = AuditConfig(
        trace_dir=str(tmp_path), nvml_enabled=False, exporters=("otlp", "file"),
        max_queue_size=256, max_export_batch_size=128, schedule_delay_ms=50,
        file_block_ms=2000,  # the local sink waits (boundedly); generous for a loaded machine
    )
    h = build(cfg, set_global=False)
    before = _dropped("otlp")
    file_before = self_metrics.exported_counts().get("file", 0)
    tracer = h.tracer_provider.get_tracer("app")
    n = 3000
    for i in range(n):
        tracer.start_span("req", attributes={"i": i}).end()  # must never raise
    h.shutdown(timeout_s=3)

    after = _dropped("otlp")
    lost = {r: after.get(r, 0) - before.get(r, 0) for r in after}
    assert sum(lost.values()) == n  # nothing reached the dead collector, all of it counted
    assert lost.get(semconv.DROP_REASON_EXPORT_FAILED, 0) > 0
    assert lost.get(semconv.DROP_REASON_QUEUE_FULL, 0) > 0  # the app was never made to wait
    assert self_metrics.exported_counts()["file"] - file_before == n  # the local copy is whole

    # The coverage counters are in the file sink's metrics even though OTLP is down.
    lines = [
        json.loads(x) for p in sorted(tmp_path.glob("metrics-*.jsonl"))
        for x in p.read_bytes().splitlines()
    ]
    assert lines, "no metrics line was written"
    points = [
        dp for rm in lines[-1]["resourceMetrics"] for sm in rm["scopeMetrics"]
        for m in sm["metrics"] if m["name"] == semconv.METRIC_SDK_SPANS_DROPPED
        for dp in m["sum"]["dataPoints"]
    ]
    on_disk = {}
    for dp in points:
        attrs = {a["key"]: a["value"]["stringValue"] for a in dp["attributes"]}
        if attrs[semconv.SDK_EXPORTER] == "otlp":
            on_disk[attrs[semconv.SDK_DROP_REASON]] = int(dp["asInt"])
    assert on_disk == after


def test_producing_spans_is_not_slowed_by_a_dead_collector(tmp_path: Path, monkeypatch):
    _otlp_otlp_down(monkeypatch, "http/protobuf")
    cfg = AuditConfig(
        trace_dir=str(tmp_path), nvml_enabled=False, exporters=("otlp",),
        max_queue_size=512, max_export_batch_size=256, schedule_delay_ms=20,
    )
    h = build(cfg, set_global=False)
    dead = h.tracer_provider.get_tracer("app")
    bare = TracerProvider(shutdown_on_exit=False).get_tracer("app")

    def produce(tracer, n=2000) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            tracer.start_span("req").end()
        return time.perf_counter() - t0

    produce(dead, 500)  # let the worker start failing first
    ratios = [produce(dead) / produce(bare) for _ in range(5)]
    h.shutdown(timeout_s=2)
    # Side by side: the dead exporter's retries happen on the worker; the producer pays only
    # the queue append (or a counted drop). Generous bound for a loaded CI machine.
    assert statistics.median(ratios) < 2.0, ratios


def test_exporter_that_raises_is_counted_not_propagated(tmp_path: Path):
    from opentelemetry.sdk.trace.export import SpanExporter

    from inferaudit_sdk.sdk.processors import CountingBatchSpanProcessor

    class Broken(SpanExporter):
        def export(self, spans):
            raise RuntimeError("exporter bug")

        def shutdown(self):
            raise RuntimeError("and at shutdown too")

    proc = CountingBatchSpanProcessor(Broken(), exporter_name="broken", schedule_delay_ms=10)
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(proc)
    before = _dropped("broken").get(semconv.DROP_REASON_EXPORT_FAILED, 0)
    for _ in range(10):
        tp.get_tracer("t").start_span("x").end()
    assert proc.force_flush(5000)
    proc.shutdown()
    proc.shutdown()  # idempotent
    tp.get_tracer("t").start_span("late").end()  # after shutdown: counted, not raised
    dropped = _dropped("broken")
    assert dropped[semconv.DROP_REASON_EXPORT_FAILED] - before == 10
    assert dropped[semconv.DROP_REASON_SHUTDOWN] >= 1


def test_default_otlp_retries_cannot_keep_the_coverage_counters_off_the_disk(
    tmp_path: Path, monkeypatch
):
    """With the OTLP exporter's default timeout (10 s, retrying), shutdown(timeout_s=3) must
    still leave time for the local sinks: every span in the trace file and the final
    coverage counters in the metrics file, and it returns about on time."""
    _otlp_otlp_down(monkeypatch, "http/protobuf")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TIMEOUT")
    cfg = AuditConfig(
        trace_dir=str(tmp_path), nvml_enabled=False, exporters=("otlp", "file"),
        schedule_delay_ms=50,
    )
    h = build(cfg, set_global=False)
    tracer = h.tracer_provider.get_tracer("app")
    n = 600
    for i in range(n):
        tracer.start_span("req", attributes={"i": i}).end()
    time.sleep(0.3)  # the OTLP worker is now inside its retry back-off
    t0 = time.monotonic()
    h.shutdown(timeout_s=3)
    assert time.monotonic() - t0 < 3 + 4  # not the exporter's 10 s of retries
    spans = [
        s for p in sorted(tmp_path.glob("traces-*.jsonl")) for x in p.read_bytes().splitlines()
        for rs in json.loads(x)["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]
    ]
    assert len(spans) == n
    lines = [
        json.loads(x) for p in sorted(tmp_path.glob("metrics-*.jsonl"))
        for x in p.read_bytes().splitlines()
    ]
    assert lines, "no metrics line was written"
    names = {m["name"] for rm in lines[-1]["resourceMetrics"] for sm in rm["scopeMetrics"]
             for m in sm["metrics"]}
    assert semconv.METRIC_SDK_SPANS_DROPPED in names
