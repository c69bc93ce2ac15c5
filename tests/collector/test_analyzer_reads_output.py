"""What the embedded receiver writes (rotated, zstd) is read by the analyzer's own reader."""

from __future__ import annotations

from pathlib import Path

import pytest
from collector_helpers import make_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from inferaudit_collector.service import Collector, CollectorConfig
from inferaudit_sdk import semconv


def test_analyzer_loads_every_span_the_receiver_acknowledged(tmp_path: Path) -> None:
    store_mod = pytest.importorskip("inferaudit_analyzer.store")
    out = tmp_path / "out"
    cfg = CollectorConfig(directory=out, http_port=0, grpc_port=0, compression="zstd",
                          max_file_bytes=50_000)
    sent = make_spans(1200, seed=4)
    with Collector(cfg) as col:
        http_exp = HttpExporter(endpoint=f"http://127.0.0.1:{col.http_port}/v1/traces")
        grpc_exp = GrpcExporter(endpoint=f"127.0.0.1:{col.grpc_port}", insecure=True)
        for i in range(0, 1200, 100):
            exp = http_exp if i % 200 else grpc_exp
            assert exp.export(sent[i : i + 100]) is SpanExportResult.SUCCESS
        grpc_exp.shutdown()
    names = [p.name for p in out.iterdir()]
    assert len(names) > 2 and all(n.endswith(".jsonl.zst") for n in names)
    with store_mod.load_store([out], cache=False) as store:
        # make_spans puts int64's minimum in every 97th span's output tokens (the collector
        # keeps the full range): the analyzer drops a negative count, naming it, and the span
        # stays
        assert store.spans == 1200
        assert len(store.errors) == len(range(0, 1200, 97))
        assert all(semconv.GEN_AI_USAGE_OUTPUT_TOKENS in e.message and "negative" in e.message
                   for e in store.errors)
        rows = store.con.execute(
            "SELECT span_id, trace_id, input_tokens, service_name, role FROM spans"
        ).fetchall()
    want = {f"{s.context.span_id:016x}": s for s in sent}
    assert len(rows) == 1200
    for span_id, trace_id, input_tokens, service, role in rows:
        s = want[span_id]
        assert trace_id == f"{s.context.trace_id:032x}"
        assert input_tokens == s.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS]
        assert service == "collector-test" and role == semconv.ROLE_REQUEST
