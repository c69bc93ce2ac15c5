"""Helpers shared by the collector tests: span factories and readers of the output files."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from inferaudit_sdk import semconv

RESOURCE = Resource.create({semconv.SERVICE_NAME: "collector-test", "host.name": "h1"})
SCOPE = InstrumentationScope(semconv.INSTRUMENTATION_NAME, "0.1.0")
# Awkward strings on purpose: non-ASCII, quotes, escapes, control characters, U+2028.
TRICKY = ["plain", "é中文🙂", 'quote " and \\ backslash', "tab\tnl\n\u2028\x01", ""]


def make_spans(n: int, *, seed: int = 7, start_index: int = 0) -> list[ReadableSpan]:
    """``n`` finished spans with unique ids and attributes of every type (deterministic)."""
    rng = random.Random(seed)
    out = []
    for j in range(n):
        i = start_index + j
        ctx = SpanContext(rng.getrandbits(128) | 1, rng.getrandbits(64) | 1, False,
                          TraceFlags(TraceFlags.SAMPLED))
        parent = SpanContext(ctx.trace_id, rng.getrandbits(64) | 1, False) if i % 3 else None
        attrs: dict[str, Any] = {
            semconv.SPAN_ROLE: semconv.ROLE_REQUEST,
            semconv.GEN_AI_USAGE_INPUT_TOKENS: i,
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: -(2**63) + i if i % 97 == 0 else 2**62 + i,
            "t.double": i / 7.0,
            "t.bool": bool(i % 2),
            "t.str": TRICKY[i % len(TRICKY)] + str(i),
            "t.strs": ("a", TRICKY[i % len(TRICKY)]) if i % 2 else (1, -2, i),
        }
        links = [Link(parent, {"l": i})] if parent is not None and i % 5 == 0 else []
        out.append(ReadableSpan(
            name=f"chat gpt2-tiny {i}",
            context=ctx,
            parent=parent,
            resource=RESOURCE,
            attributes=attrs,
            links=links,
            kind=SpanKind(i % 5),
            start_time=1_700_000_000_000_000_000 + i * 1000,
            end_time=1_700_000_000_000_000_000 + i * 1000 + 777,
            status=Status(StatusCode.ERROR, "boom") if i % 11 == 0 else Status(StatusCode.UNSET),
            instrumentation_scope=SCOPE,
        ))
    return out


def expected_attributes(span: ReadableSpan) -> list[dict[str, Any]]:
    """OTLP/JSON ``attributes`` of a span, computed from the SDK span itself (not our decoder)."""

    def val(v: Any) -> dict[str, Any]:
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}
        if isinstance(v, float):
            return {"doubleValue": v}
        if isinstance(v, str):
            return {"stringValue": v}
        return {"arrayValue": {"values": [val(x) for x in v]}}

    return [{"key": k, "value": val(v)} for k, v in (span.attributes or {}).items()]


def read_lines(directory: Path) -> list[dict[str, Any]]:
    """Every JSON line in every output file (.jsonl, .jsonl.gz, .jsonl.zst), sorted by name."""
    docs = []
    for path in sorted(directory.iterdir()):
        if path.name.endswith(".jsonl"):
            raw = path.read_bytes()
        elif path.name.endswith(".jsonl.gz"):
            raw = gzip.decompress(path.read_bytes())
        elif path.name.endswith(".jsonl.zst"):
            import zstandard

            raw = zstandard.ZstdDecompressor().stream_reader(path.read_bytes()).read()
        else:
            continue
        assert raw == b"" or raw.endswith(b"\n"), f"{path} does not end with a newline"
        docs += [json.loads(line) for line in raw.splitlines()]
    return docs


def disk_spans(directory: Path) -> Iterator[dict[str, Any]]:
    for doc in read_lines(directory):
        for rs in doc.get("resourceSpans", []):
            for ss in rs["scopeSpans"]:
                yield from ss["spans"]


