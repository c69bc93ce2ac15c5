"""The upstream Collector's batch size against what a batch of our spans weighs on the wire.

A gRPC server refuses a message above its receive limit (4 MiB by default: grpc-go, the OTLP
receiver, Tempo, Jaeger) *after* decompression, with RESOURCE_EXHAUSTED, which OTLP exporters
treat as permanent: the whole batch is dropped. The file exporter writes one batch as one line,
and a line longer than ``rotation.max_megabytes`` cannot be written at all. So the largest batch
the YAML lets through is held to the size of real spans: a request span and its model call's
batch span, as the SDK emits them, encoded the way the Collector sends them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
torch = pytest.importorskip("torch")

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

import inferaudit_sdk as ia  # noqa: E402
from inferaudit_sdk import _settings, _tracing, semconv  # noqa: E402
from inferaudit_sdk.instrumentation import uninstrument_model  # noqa: E402
from inferaudit_sdk.sdk import otlp_json  # noqa: E402

COLLECTOR = Path(__file__).resolve().parents[2] / "collector"
CONFIGS = ("otelcol-config.yaml", "otelcol-config-fileonly.yaml")
GRPC_DEFAULT_LIMIT = 4 * 1024 * 1024
# Other instrumentations' spans (HTTP server spans, exception events) can weigh more than ours.
HEADROOM = 2


@pytest.fixture(scope="module")
def span_sizes() -> Iterator[tuple[float, float]]:
    """(protobuf bytes, OTLP JSON bytes) per span of an instrumented request with one call."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _settings.reset_for_tests()
    _tracing.use_tracer_provider(provider)
    model = ia.instrument_model(torch.nn.Sequential(torch.nn.Embedding(100, 16),
                                                    torch.nn.Linear(16, 100)), model="m")

    @ia.audited(model="m", operation=semconv.OPERATION_TEXT_COMPLETION, provider="p")
    def serve(ids: list[int]) -> None:
        ia.record(prompt_token_ids=ids, max_tokens=8)
        with ia.batch([ia.current_request()], model="m",
                      operation=semconv.OPERATION_TEXT_COMPLETION, batch_size=1) as b:
            model(torch.tensor([ids]))
            b.record(input_tokens=len(ids), padded_tokens=len(ids), output_tokens=8)
        ia.record(output_token_ids=list(range(8)), queue_time_s=0.002,
                  finish_reasons=["length"], response_model="m")

    try:
        for i in range(20):
            serve([i % 97 + 1] * 32)
        spans: list[Any] = list(exporter.get_finished_spans())
    finally:
        uninstrument_model(model)  # and the process-wide Tensor copy patches with it
        _tracing.use_tracer_provider(None)
        provider.shutdown()
        _settings.reset_for_tests()
    assert {s.attributes.get(semconv.SPAN_ROLE) for s in spans} >= {
        semconv.ROLE_REQUEST, semconv.ROLE_BATCH}
    proto = encode_spans(spans).ByteSize() / len(spans)
    line = json.dumps({"resourceSpans": [{
        "resource": otlp_json.encode_resource(spans[0].resource),
        "scopeSpans": [{"spans": [otlp_json.encode_span(s) for s in spans]}]}]})
    yield proto, len(line) / len(spans)


@pytest.mark.parametrize("name", CONFIGS)
def test_largest_batch_fits_a_default_grpc_limit_and_a_file_line(name: str,
                                                                 span_sizes) -> None:
    cfg = yaml.safe_load((COLLECTOR / name).read_text())
    batch = cfg["processors"]["batch"]
    largest = batch["send_batch_max_size"]
    assert 0 < batch["send_batch_size"] <= largest
    proto, json_bytes = span_sizes
    if any(k.split("/")[0] == "otlp" for k in cfg["exporters"]):  # a gRPC backend
        assert largest * proto * HEADROOM <= GRPC_DEFAULT_LIMIT, (
            f"{name}: {largest} spans x {proto:.0f} B = {largest * proto / 2**20:.1f} MiB")
    for exporter in (e for k, e in cfg["exporters"].items() if k.startswith("file/")):
        line_limit = exporter["rotation"]["max_megabytes"] * 1024 * 1024
        assert largest * json_bytes * HEADROOM <= line_limit, name
