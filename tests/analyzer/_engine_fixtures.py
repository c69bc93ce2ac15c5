"""One workload, two engines: real SDK spans as OTLP/JSON for DuckDB, the same rows in chDB.

``workload_requests`` builds a seeded serving trace with the real OpenTelemetry SDK (SERVER
handlers around request spans, batch spans linking 1-4 members on two hosts, two models, routes,
repeated and near-repeated prompts, errors, cache hits) and encodes it with the official OTLP
encoder. ``chdb_with`` loads the same requests into an ``otel_traces`` table created from the
exporter's DDL, as the Collector's ClickHouse exporter would have written them.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

from _ingest_fixtures import otlp_json, write_jsonl
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferaudit_analyzer.engines.clickhouse_engine import ChdbBackend
from inferaudit_analyzer.engines.clickhouse_source import OTEL_TRACES_DDL
from inferaudit_analyzer.engines.otel_rows import insert_rows, otel_rows
from inferaudit_sdk import semconv as sc

MS = 1_000_000
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

HOSTS = (
    {sc.SERVICE_NAME: "chat-api", sc.HOST_NAME: "gpu-a", sc.HOST_TYPE: "g5.xlarge",
     sc.RES_GPU_MODEL: "NVIDIA A10G", sc.RES_GPU_COUNT: 1, sc.RES_PRICE_USD_PER_HOUR: 1.006},
    {sc.SERVICE_NAME: "chat-api", sc.HOST_NAME: "gpu-b", sc.HOST_TYPE: "g5.xlarge",
     sc.RES_GPU_MODEL: "NVIDIA A10G", sc.RES_GPU_COUNT: 1, sc.RES_PRICE_USD_PER_HOUR: 1.006},
)


def _host_spans(host: dict[str, Any], rng: random.Random, n_batches: int,
                start_ns: int) -> list[Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(host))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(sc.INSTRUMENTATION_NAME, "0.1.0")
    t = start_ns
    for b in range(n_batches):
        model = "llama-8b" if b % 3 else "llama-70b"
        members = []
        for _ in range(rng.choice((1, 1, 2, 3, 4))):
            arrive = t + rng.randint(0, 20) * MS
            queue = rng.randint(1, 30) * MS
            tin, tout = rng.randint(20, 900), rng.randint(5, 300)
            fp = rng.choice(("a", "b", "c")) if rng.random() < 0.3 else f"u{rng.random()}"
            server = tracer.start_span("POST /v1/chat", kind=trace.SpanKind.SERVER,
                                       start_time=arrive)
            ctx = trace.set_span_in_context(server)
            req = tracer.start_span(f"chat {model}", context=ctx, start_time=arrive + MS)
            attrs: dict[str, Any] = {
                sc.SPAN_ROLE: sc.ROLE_REQUEST, sc.GEN_AI_OPERATION_NAME: "chat",
                sc.GEN_AI_REQUEST_MODEL: model, sc.GEN_AI_USAGE_INPUT_TOKENS: tin,
                sc.GEN_AI_USAGE_OUTPUT_TOKENS: tout, sc.REQUEST_QUEUE_TIME_NS: queue,
                sc.REQUEST_TIME_TO_FIRST_TOKEN_NS: queue + rng.randint(5, 80) * MS,
                sc.REQUEST_TIME_PER_OUTPUT_TOKEN_NS: rng.randint(8, 40) * MS // 10,
                sc.PROMPT_FINGERPRINT: fp, sc.PROMPT_FINGERPRINT_KEY_ID: "k1",
                sc.PROMPT_SIMHASH: hashlib.blake2b(fp.encode(), digest_size=8).hexdigest(),
                sc.CACHE_HIT: rng.random() < 0.1,
                sc.ROUTE: rng.choice(("/v1/chat", "/v1/complete")),
            }
            if rng.random() < 0.05:
                attrs[sc.ERROR_TYPE] = "timeout"
            req.set_attributes(attrs)
            members.append((req, server, arrive, queue, tin, tout))
        bstart = t + 25 * MS
        device_ns = rng.randint(20, 400) * MS
        batch = tracer.start_span(f"batch {members[0][0].name.split()[-1]}",
                                  links=[trace.Link(m[0].get_span_context()) for m in members],
                                  start_time=bstart)
        batch.set_attributes({
            sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: model,
            sc.BATCH_SIZE: len(members), sc.BATCH_INPUT_TOKENS: sum(m[4] for m in members),
            sc.BATCH_PADDED_TOKENS: max(m[4] for m in members) * len(members),
            sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: device_ns,
            sc.COPY_H2D_BYTES: rng.randint(1, 64) << 20,
            sc.COPY_H2D_TIME_NS: rng.randint(1, 9) * MS,
            sc.COPY_D2H_TIME_NS: rng.randint(1, 3) * MS, sc.GPU_UTILIZATION_RATIO: rng.random(),
        })
        bend = bstart + device_ns + rng.randint(1, 10) * MS
        batch.end(end_time=bend)
        for req, server, _arrive, _q, _tin, _tout in members:
            req.end(end_time=bend + MS)
            server.end(end_time=bend + 2 * MS + rng.randint(0, 5) * MS)
        t = bend + rng.choice((0, 0, 5, 50)) * MS
    provider.shutdown()
    return list(exporter.get_finished_spans())


def workload_requests(n_batches: int = 60, seed: int = 7) -> list[dict[str, Any]]:
    """OTLP/JSON ExportTraceServiceRequests (one per host) of a seeded serving workload."""
    rng = random.Random(seed)
    return [otlp_json(encode_spans(_host_spans(h, rng, n_batches, T0 + i * 3 * MS)))
            for i, h in enumerate(HOSTS)]


def write_workload(tmp: Path, requests: list[dict[str, Any]]) -> Path:
    return write_jsonl(tmp / "traces.jsonl", requests)


def chdb_with(requests: list[dict[str, Any]], scratch: Path,
              table: str = "otel_traces") -> ChdbBackend:
    """A chDB session holding ``requests`` in an exporter-DDL ``otel_traces``.

    chDB is one engine per process: sessions share tables, so the table is made afresh.
    """
    be = ChdbBackend()
    be.command(f"DROP TABLE IF EXISTS {table}")
    be.command(OTEL_TRACES_DDL.format(table=table))
    insert_rows(be, table, otel_rows(requests), str(scratch))
    return be
