"""Seeded generator of realistic InferAudit spans, written as the SDK's file sink writes them.

Request spans (some under an HTTP SERVER span) and batch spans linking their member requests,
several models / routes / tiers, GPU and copy attributes, 512 spans per OTLP/JSON line, files
rotated every ``spans_per_file`` spans, and a metrics line per file with the SDK's
``inferaudit.sdk.spans.exported`` / ``dropped`` counters. Used by ``bench/analyzer_scale.py``
and usable from tests (small ``n``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

from inferaudit_sdk import semconv as sc

MODELS = (("llama-3-8b", "small", 2.0), ("llama-3-70b", "large", 9.0),
          ("mistral-7b", "small", 1.6), ("qwen2-72b", "large", 8.5))
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/summarize")
SPANS_PER_LINE = 512


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    if isinstance(value, (list, tuple)):
        return {"key": key, "value": {"arrayValue": {"values": [
            {"stringValue": str(v)} for v in value]}}}
    return {"key": key, "value": {"stringValue": str(value)}}


def _resource(host: int) -> dict[str, Any]:
    attrs = {
        sc.SERVICE_NAME: "chat-api", sc.HOST_NAME: f"gpu-node-{host}", sc.HOST_TYPE: "g5.2xlarge",
        sc.HOST_CPU_MODEL_NAME: "AMD EPYC 7R32", sc.RES_HOST_CPU_CORES: 8,
        sc.RES_GPU_MODEL: "NVIDIA A10G", sc.RES_GPU_COUNT: 1, sc.RES_PRICE_USD_PER_HOUR: 1.212,
        sc.RES_SCHEMA_VERSION: sc.SCHEMA_VERSION, "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry", "telemetry.sdk.version": "1.45.0",
    }
    return {"attributes": [_kv(k, v) for k, v in attrs.items()]}


class Generator:
    """Yields spans (OTLP/JSON dicts) in arrival order from one seeded random stream."""

    def __init__(self, seed: int, start_ns: int = 1_767_225_600_000_000_000) -> None:
        self.rng = random.Random(seed)
        self.t_ns = start_ns
        self.fp_pool = [f"{self.rng.getrandbits(128):032x}" for _ in range(5000)]

    def _id(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def batch(self) -> list[dict[str, Any]]:
        """One model call and its member requests (1 to 16 of them)."""
        rng = self.rng
        model, tier, ms_per_k = MODELS[rng.randrange(len(MODELS))]
        size = min(16, max(1, int(rng.expovariate(1 / 5))))
        self.t_ns += int(rng.expovariate(1 / 40e6))
        b_start = self.t_ns
        members, spans = [], []
        in_total = out_total = max_in = 0
        for _ in range(size):
            n_in = max(8, int(rng.lognormvariate(6.0, 1.0)))
            n_out = max(1, int(rng.lognormvariate(4.5, 0.8)))
            in_total += n_in
            out_total += n_out
            max_in = max(max_in, n_in)
            members.append((n_in, n_out))
        dev_ns = int((in_total + out_total * 8) * ms_per_k * 1e3)
        b_end = b_start + int(dev_ns * rng.uniform(1.05, 1.4))
        links = []
        route = ROUTES[rng.randrange(len(ROUTES))]
        for n_in, n_out in members:
            trace, span = self._id(128), self._id(64)
            queue = int(rng.expovariate(1 / 5e6))
            r_start = b_start - queue
            r_end = b_end + int(rng.uniform(0.2e6, 2e6))
            ttft = queue + int((b_end - b_start) * n_in / max(1, in_total + out_total))
            parent = ""
            if rng.random() < 0.5:  # half the requests sit under an HTTP SERVER span
                parent = self._id(64)
                spans.append({
                    "traceId": trace, "spanId": parent, "parentSpanId": "",
                    "name": f"POST {route}", "kind": 2,
                    "startTimeUnixNano": str(r_start - 300_000),
                    "endTimeUnixNano": str(r_end + 200_000),
                    "attributes": [_kv("http.request.method", "POST"), _kv("url.path", route),
                                   _kv("http.response.status_code", 200)],
                    "status": {}})
            err = rng.random() < 0.01
            attrs = [
                _kv(sc.SPAN_ROLE, sc.ROLE_REQUEST), _kv(sc.GEN_AI_OPERATION_NAME, "chat"),
                _kv(sc.GEN_AI_PROVIDER_NAME, "vllm"), _kv(sc.GEN_AI_REQUEST_MODEL, model),
                _kv(sc.GEN_AI_RESPONSE_MODEL, model), _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, n_in),
                _kv(sc.GEN_AI_USAGE_OUTPUT_TOKENS, n_out),
                _kv(sc.GEN_AI_REQUEST_MAX_TOKENS, 1024), _kv(sc.GEN_AI_REQUEST_STREAM, True),
                _kv(sc.REQUEST_TIME_TO_FIRST_TOKEN_NS, ttft),
                _kv(sc.REQUEST_TIME_PER_OUTPUT_TOKEN_NS, (r_end - r_start - ttft) // n_out),
                _kv(sc.REQUEST_QUEUE_TIME_NS, queue),
                _kv(sc.PROMPT_FINGERPRINT, self.fp_pool[rng.randrange(len(self.fp_pool))]),
                _kv(sc.PROMPT_SIMHASH, self._id(64)), _kv(sc.PROMPT_FINGERPRINT_KEY_ID, "k1"),
                _kv(sc.PROMPT_FINGERPRINT_BASIS, "token_ids"),
                _kv(sc.CACHE_HIT, rng.random() < 0.05), _kv(sc.ROUTE, route),
                _kv(sc.MODEL_TIER, tier), _kv(sc.GEN_AI_RESPONSE_ID, self._id(64)),
                _kv(sc.GEN_AI_RESPONSE_FINISH_REASONS, ["stop"]),
            ]
            if err:
                attrs.append(_kv(sc.ERROR_TYPE, "TimeoutError"))
            spans.append({
                "traceId": trace, "spanId": span, "parentSpanId": parent,
                "name": f"chat {model}", "kind": 1, "startTimeUnixNano": str(r_start),
                "endTimeUnixNano": str(r_end), "attributes": attrs,
                "status": {"code": 2} if err else {}})
            links.append({"traceId": trace, "spanId": span})
        padded = max_in * size
        h2d = in_total * 8
        spans.append({
            "traceId": links[0]["traceId"], "spanId": self._id(64), "parentSpanId": "",
            "name": f"batch {model}", "kind": 1, "startTimeUnixNano": str(b_start),
            "endTimeUnixNano": str(b_end),
            "attributes": [
                _kv(sc.SPAN_ROLE, sc.ROLE_BATCH), _kv(sc.BATCH_MODEL, model),
                _kv(sc.BATCH_OPERATION, "chat"), _kv(sc.BATCH_SIZE, size),
                _kv(sc.BATCH_INPUT_TOKENS, in_total), _kv(sc.BATCH_PADDED_TOKENS, padded),
                _kv(sc.BATCH_PADDING_RATIO, round(1 - in_total / padded, 4)),
                _kv(sc.BATCH_OUTPUT_TOKENS, out_total), _kv(sc.DEVICE_TYPE, "cuda"),
                _kv(sc.DEVICE_ID, 0), _kv(sc.DEVICE_TIME_NS, dev_ns),
                _kv(sc.DEVICE_WALL_TIME_NS, b_end - b_start),
                _kv(sc.DEVICE_CPU_TIME_NS, int(dev_ns * 0.1)), _kv(sc.COPY_H2D_BYTES, h2d),
                _kv(sc.COPY_D2H_BYTES, out_total * 8), _kv(sc.COPY_H2D_TIME_NS, h2d // 10),
                _kv(sc.COPY_D2H_TIME_NS, out_total), _kv(sc.COPY_PAGEABLE_BYTES, 0),
                _kv(sc.COPY_COUNT, 2 + out_total),
                _kv(sc.GPU_UTILIZATION_RATIO, round(rng.uniform(0.2, 0.95), 3)),
                _kv(sc.GPU_MEMORY_UTILIZATION_RATIO, round(rng.uniform(0.1, 0.6), 3)),
                _kv(sc.GPU_ENERGY_J, round(dev_ns * 1.5e-7, 3)),
                _kv(sc.GPU_POWER_W, round(rng.uniform(80, 150), 1)), _kv(sc.GPU_SAMPLES, 3),
            ],
            "links": links, "status": {}})
        return spans


def _metrics_line(resource: dict[str, Any], t_ns: int, exported: int, dropped: int) -> bytes:
    def counter(name: str, value: int) -> dict[str, Any]:
        return {"name": name, "unit": "{span}", "sum": {
            "aggregationTemporality": 2, "isMonotonic": True,
            "dataPoints": [{"startTimeUnixNano": "1767225600000000000",
                            "timeUnixNano": str(t_ns), "asInt": str(value),
                            "attributes": [_kv(sc.SDK_EXPORTER, "file")]}]}}

    return orjson.dumps({"resourceMetrics": [{"resource": resource, "scopeMetrics": [{
        "scope": {"name": sc.INSTRUMENTATION_NAME},
        "metrics": [counter(sc.METRIC_SDK_SPANS_EXPORTED, exported),
                    counter(sc.METRIC_SDK_SPANS_DROPPED, dropped)]}]}]})


def write_traces(out_dir: Path, n_spans: int, seed: int, spans_per_file: int = 250_000,
                 hosts: int = 2) -> list[Path]:
    """Write at least ``n_spans`` spans (whole batches) into rotated JSON-lines files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = Generator(seed)
    resources = [_resource(h) for h in range(hosts)]
    scope = {"name": sc.INSTRUMENTATION_NAME, "version": "0.1.0"}
    paths: list[Path] = []
    written = 0
    while written < n_spans:
        path = out_dir / f"traces-20260101T000000-{len(paths):04d}.jsonl"
        paths.append(path)
        in_file = 0
        exported = [0] * hosts
        with open(path, "wb") as f:
            while in_file < spans_per_file and written < n_spans:
                pending: list[dict[str, Any]] = []
                while len(pending) < SPANS_PER_LINE and written + len(pending) < n_spans:
                    pending.extend(gen.batch())
                host = gen.rng.randrange(hosts)
                exported[host] += len(pending)
                f.write(orjson.dumps({"resourceSpans": [{
                    "resource": resources[host],
                    "scopeSpans": [{"scope": scope, "spans": pending}]}]}))
                f.write(b"\n")
                in_file += len(pending)
                written += len(pending)
            for h in range(hosts):
                f.write(_metrics_line(resources[h], gen.t_ns, exported[h], exported[h] // 1000))
                f.write(b"\n")
    return paths
