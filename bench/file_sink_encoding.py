"""The file sink's span encoding: the text encoder against the dict encoder, side by side.

    .venv/bin/python bench/file_sink_encoding.py [--rounds 15] [--spans 512]

Both encode the same export batch (``--spans`` spans: request spans with the attributes an
``@audited`` span carries, and batch spans with an instrumented model call's, linked to their
requests), in alternating rounds; reported: the median per span of each over the rounds, the
median of per-round ratios, and whether the bytes are equal. This is the CPU the export thread
holds the GIL for, per span, while the application's threads wait for it.
"""

from __future__ import annotations

import argparse
import statistics
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link

from inferaudit_sdk import semconv
from inferaudit_sdk.sdk import otlp_json, otlp_json_text


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list = []

    def export(self, spans) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def make_spans(n: int) -> list:
    keep = _Keep()
    tp = TracerProvider(resource=Resource({"service.name": "bench", "host.name": "h1",
                                           "process.pid": 1234, "telemetry.sdk.name": "x"}))
    tp.add_span_processor(SimpleSpanProcessor(keep))
    tracer = tp.get_tracer("inferaudit_sdk", "0.1.0")
    for i in range(n // 2):
        with tracer.start_as_current_span("chat gpt2-tiny", attributes={
            semconv.SPAN_ROLE: semconv.ROLE_REQUEST,
            semconv.SCHEMA_VERSION_ATTR: semconv.SCHEMA_VERSION,
            semconv.GEN_AI_OPERATION_NAME: "chat", semconv.GEN_AI_REQUEST_MODEL: "gpt2-tiny",
            "gen_ai.provider.name": "inferaudit.example", "gen_ai.request.max_tokens": 64,
            "gen_ai.request.stream": False, "gen_ai.usage.input_tokens": 40 + i % 50,
            "gen_ai.usage.output_tokens": 10 + i % 30, "gen_ai.response.model": "gpt2-tiny",
            "gen_ai.response.finish_reasons": ("length",),
            "inferaudit.prompt.fingerprint": f"{i * 2654435761 % 2**64:016x}",
            "inferaudit.prompt.simhash": f"{i * 40503 % 2**64:016x}",
            "inferaudit.prompt.fingerprint_basis": "token_ids",
            "inferaudit.prompt.fingerprint_key_id": "k1",
            "inferaudit.request.queue_time_ns": 1_000_000 + i * 37,
        }) as req:
            pass
        span = tracer.start_span("batch gpt2-tiny", links=[Link(req.get_span_context())],
                                 attributes={
            semconv.SPAN_ROLE: semconv.ROLE_BATCH,
            semconv.SCHEMA_VERSION_ATTR: semconv.SCHEMA_VERSION,
            semconv.BATCH_OPERATION: "text_completion",
            semconv.BATCH_MODEL: "gpt2-tiny", semconv.BATCH_SIZE: 1})
        span.set_attributes({
            semconv.DEVICE_TYPE: "cpu", semconv.DEVICE_CPU_THREADS: 2, semconv.DEVICE_CALLS: 1,
            semconv.BATCH_PADDED_TOKENS: 32, semconv.BATCH_INPUT_TOKENS: 32,
            semconv.BATCH_PADDING_RATIO: 0.0, semconv.DEVICE_TIME_NS: 3_726_096 + i,
            semconv.DEVICE_CPU_TIME_NS: 7_750_953 + i, semconv.DEVICE_WALL_TIME_NS: 3_726_096})
        span.end()
    return keep.spans


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--spans", type=int, default=512, help="spans per export batch")
    args = ap.parse_args(argv)
    spans = make_spans(args.spans)
    n = len(spans)

    def reference() -> bytes:
        return otlp_json.dumps_line(otlp_json.encode_spans_request(spans))

    def text() -> bytes:
        return otlp_json_text.encode_spans_line(spans)

    equal = reference() == text()
    per_span = {"dict": [], "text": []}
    ratios = []
    for r in range(args.rounds):
        order = (("dict", reference), ("text", text)) if r % 2 == 0 else (("text", text),
                                                                          ("dict", reference))
        got = {}
        for name, fn in order:
            t0 = time.thread_time_ns()
            fn()
            got[name] = (time.thread_time_ns() - t0) / n
            per_span[name].append(got[name])
        ratios.append(got["dict"] / got["text"])
    d, t = statistics.median(per_span["dict"]), statistics.median(per_span["text"])
    print(f"{n} spans a batch, {args.rounds} rounds, thread CPU per span: dict encoder "
          f"{d / 1e3:.1f} µs, text encoder {t / 1e3:.1f} µs; median round ratio "
          f"{statistics.median(ratios):.2f}x; bytes equal: {equal}")
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
