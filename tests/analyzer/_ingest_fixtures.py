"""Real OpenTelemetry SDK spans and metrics, encoded by the official OTLP encoders, on disk.

Spans come from a real ``TracerProvider`` into an ``InMemorySpanExporter``; the official
``opentelemetry-exporter-otlp-proto-common`` encoders turn them into the protobuf
``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest``. From there we write what the
Collector's file exporter writes: length-prefixed protobuf (``format: proto``) and OTLP/JSON
lines (``format: json``). The JSON encoding follows the OTLP/JSON rules (hex ids, enums as
integers, 64-bit integers as strings) via protobuf's JSON printer plus the id fix-up the OTLP
spec requires; ``protobuf_json`` keeps the printer's raw output (base64 ids, enum names) that
some tools write instead.
"""

from __future__ import annotations

import base64
import gzip
import json
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferaudit_sdk import semconv as sc

RESOURCE = {sc.SERVICE_NAME: "chat-api", sc.HOST_NAME: "node-1", sc.HOST_TYPE: "g5.xlarge",
            sc.RES_GPU_MODEL: "NVIDIA A10G", sc.RES_GPU_COUNT: 1,
            sc.RES_PRICE_USD_PER_HOUR: 1.006}
_ID_FIELDS = {"traceId", "spanId", "parentSpanId"}


def json_span(i: int, **over: Any) -> dict[str, Any]:
    """Span ``i`` as OTLP/JSON: a request span with unique ids; ``over`` replaces fields."""
    s = {"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": f"s{i}", "kind": 1,
         "startTimeUnixNano": str(1000 + i), "endTimeUnixNano": str(2000 + i),
         "attributes": [{"key": sc.SPAN_ROLE, "value": {"stringValue": sc.ROLE_REQUEST}}]}
    s.update(over)
    return s


def make_spans() -> list[ReadableSpan]:
    """Every span shape: SERVER parent → request, a batch linking two requests, foreign ones."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(RESOURCE))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(sc.INSTRUMENTATION_NAME, "0.1.0")
    t = 1_767_225_600_000_000_000
    ctxs = []
    for i in range(2):
        # Every span ends at a fixed time: one ended on exit would end at the wall clock, and
        # the request's latency (its SERVER span's) would grow with the date the tests run.
        with tracer.start_as_current_span("POST /v1/chat", kind=trace.SpanKind.SERVER,
                                          start_time=t + i * 10, end_on_exit=False) as server, \
                tracer.start_as_current_span("chat tiny-gpt", start_time=t + i * 10 + 1,
                                             end_on_exit=False) as req:
            req.set_attributes({
                sc.SPAN_ROLE: sc.ROLE_REQUEST, sc.GEN_AI_OPERATION_NAME: "chat",
                sc.GEN_AI_REQUEST_MODEL: "tiny-gpt", sc.GEN_AI_USAGE_INPUT_TOKENS: 12 + i,
                sc.GEN_AI_USAGE_OUTPUT_TOKENS: 5, sc.REQUEST_TIME_TO_FIRST_TOKEN_NS: 4_000,
                sc.REQUEST_QUEUE_TIME_NS: 1_000, sc.PROMPT_FINGERPRINT: f"{i:032x}",
                sc.CACHE_HIT: False, sc.ROUTE: "/v1/chat", sc.PROFILE_TRACE_PATH:
                "profiles/p1.json.gz", sc.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
            })
            req.end(end_time=t + i * 10 + 9_000_000)
            server.end(end_time=t + i * 10 + 9_000_010)
            ctxs.append(req.get_span_context())
    links = [trace.Link(c) for c in ctxs]
    batch = tracer.start_span("batch tiny-gpt", links=links, start_time=t + 100)
    batch.set_attributes({
        sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: "tiny-gpt", sc.BATCH_SIZE: 2,
        sc.BATCH_INPUT_TOKENS: 25, sc.BATCH_PADDED_TOKENS: 26, sc.DEVICE_TYPE: "cuda",
        sc.DEVICE_TIME_NS: 3_000_000, sc.COPY_H2D_BYTES: 4096, sc.COPY_H2D_TIME_NS: 700,
        sc.COPY_D2H_TIME_NS: 300, sc.GPU_UTILIZATION_RATIO: 0.5, sc.GPU_ENERGY_J: 1.25,
    })
    batch.end(end_time=t + 5_000_100)
    vllm = provider.get_tracer("vllm.llm_engine")
    span = vllm.start_span("llm_request", kind=trace.SpanKind.SERVER, start_time=t)
    span.set_attributes({
        sc.GEN_AI_RESPONSE_MODEL: "meta-llama/Llama-3-8B", sc.VLLM_REQUEST_ID: "cmpl-1",
        sc.LEGACY_USAGE_PROMPT_TOKENS: 100, sc.LEGACY_USAGE_COMPLETION_TOKENS: 11,
        sc.VLLM_LATENCY_TIME_TO_FIRST_TOKEN: 0.25, sc.VLLM_LATENCY_TIME_IN_QUEUE: 0.015,
        sc.VLLM_LATENCY_E2E: 1.5, sc.VLLM_LATENCY_TIME_IN_MODEL_PREFILL: 0.2,
        sc.VLLM_LATENCY_TIME_IN_MODEL_DECODE: 1.0,
    })
    span.end(end_time=t + 1_500_000_000)
    oll = provider.get_tracer("opentelemetry.instrumentation.openai.v1")
    span = oll.start_span("openai.chat", kind=trace.SpanKind.CLIENT, start_time=t)
    span.set_attributes({
        sc.LEGACY_GEN_AI_SYSTEM: "openai", sc.LEGACY_LLM_REQUEST_TYPE: "chat",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o", sc.LEGACY_LLM_USAGE_PROMPT_TOKENS: 30,
        sc.LEGACY_LLM_USAGE_COMPLETION_TOKENS: 7, sc.LEGACY_LLM_IS_STREAMING: True,
    })
    span.end(end_time=t + 700_000_000)
    olit = provider.get_tracer("openlit.otel.tracing")
    span = olit.start_span("chat gpt-4o-mini", kind=trace.SpanKind.CLIENT, start_time=t)
    span.set_attributes({
        sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        sc.GEN_AI_USAGE_INPUT_TOKENS: 40, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 9,
        sc.OPENLIT_SERVER_TTFT: 0.125, sc.OPENLIT_SERVER_TBT: 0.02,
        sc.OPENLIT_REQUEST_IS_STREAM: True,
    })
    span.end(end_time=t + 400_000_000)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def make_metrics(exported: int = 10, dropped: int = 2) -> Any:
    """An ExportMetricsServiceRequest with the SDK counters, a GPU gauge and a histogram."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create(RESOURCE), metric_readers=[reader])
    meter = provider.get_meter(sc.INSTRUMENTATION_NAME)
    meter.create_counter(sc.METRIC_SDK_SPANS_EXPORTED).add(exported, {sc.SDK_EXPORTER: "file"})
    meter.create_counter(sc.METRIC_SDK_SPANS_DROPPED).add(dropped, {sc.SDK_EXPORTER: "file"})
    meter.create_gauge(sc.METRIC_HW_GPU_UTILIZATION).set(0.75, {sc.HW_ID: "gpu0"})
    hist = meter.create_histogram(sc.METRIC_SERVER_REQUEST_DURATION, unit="s")
    for v in (0.1, 0.2, 0.3):
        hist.record(v)
    data = reader.get_metrics_data()
    provider.shutdown()
    return encode_metrics(data)


def otlp_json(msg: Any) -> dict[str, Any]:
    """OTLP/JSON of a protobuf message: camelCase, enums as ints, ids as lowercase hex."""
    d = json_format.MessageToDict(msg, use_integers_for_enums=True)

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (base64.b64decode(v).hex() if k in _ID_FIELDS and isinstance(v, str)
                        else fix(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [fix(x) for x in node]
        return node

    return fix(d)


def protobuf_json(msg: Any) -> dict[str, Any]:
    """What a generic protobuf JSON printer writes: base64 ids, enum names."""
    return json_format.MessageToDict(msg)


def write_jsonl(path: Path, objs: Iterable[dict[str, Any]], gz: bool = False,
                zst: bool = False) -> Path:
    data = b"".join(json.dumps(o).encode() + b"\n" for o in objs)
    if gz:
        data = gzip.compress(data)
    elif zst:
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def write_proto(path: Path, msgs: Iterable[Any], zstd_frames: bool = False) -> Path:
    """The Collector file exporter's ``proto`` format: 4-byte big-endian length + message."""
    out = bytearray()
    for m in msgs:
        payload = m.SerializeToString()
        if zstd_frames:
            import zstandard

            payload = zstandard.ZstdCompressor().compress(payload)
        out += struct.pack(">I", len(payload)) + payload
    path.write_bytes(bytes(out))
    return path


def trace_request(spans: list[ReadableSpan]) -> Any:
    return encode_spans(spans)
