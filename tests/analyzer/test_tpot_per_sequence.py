"""A TPOT derived from vLLM's decode time is per sequence, also for requests with n > 1.

vLLM's V0 engine reports the output tokens of all ``n`` sequences of a request summed and the
decode time of the group, which ran in parallel. Every case below decodes each sequence at
100 ms a token; the derived TPOT must say 100 ms whatever ``n`` is, on the Python path, the
compiled fast path and the ClickHouse path alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _ingest_fixtures import otlp_json, trace_request
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferaudit_analyzer.ingest import fastjson
from inferaudit_analyzer.store import load_store
from inferaudit_sdk import semconv as sc

MS = 1_000_000
T0 = 1_767_225_600_000_000_000
DECODE_S = 2.0  # 21 tokens a sequence: the first from prefill, then 20 decode steps of 100 ms
# spelled out: semconv.py does not define these two (the ingest reads them by these names)
NUM_SEQUENCES = "gen_ai.usage.num_sequences"
CHOICE_COUNT = "gen_ai.request.choice.count"

# span name -> (extra attributes, output tokens, TPOT the analyzer must derive in ns)
CASES: dict[str, tuple[dict[str, Any], int, int | None]] = {
    "n1": ({sc.VLLM_REQUEST_N: 1}, 21, 100 * MS),
    "no-count": ({}, 21, 100 * MS),
    "n4": ({sc.VLLM_REQUEST_N: 4}, 4 * 21, 100 * MS),
    # best_of 4, n 2: vLLM V0 sums the tokens of all 4 sequences it ran
    "best-of": ({sc.VLLM_REQUEST_N: 2, NUM_SEQUENCES: 4}, 4 * 21, 100 * MS),
    "choice-count": ({CHOICE_COUNT: 3}, 3 * 21, 100 * MS),
    "choice-count-over-n": ({CHOICE_COUNT: 3, sc.VLLM_REQUEST_N: 9},
                            3 * 21, 100 * MS),
    "n0-is-one": ({sc.VLLM_REQUEST_N: 0}, 21, 100 * MS),
    "bad-count-is-one": ({sc.VLLM_REQUEST_N: "many"}, 21, 100 * MS),
    # under two tokens a sequence on average: no TPOT to state
    "n4-one-token-each": ({sc.VLLM_REQUEST_N: 4}, 7, None),
    # a TPOT given on the span is per sequence already and is kept as it is
    "given": ({sc.VLLM_REQUEST_N: 4, sc.REQUEST_TIME_PER_OUTPUT_TOKEN_NS: 7 * MS}, 4 * 21,
              7 * MS),
}


def _vllm_spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({sc.SERVICE_NAME: "vllm"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("vllm.llm_engine")
    for i, (name, (extra, out, _)) in enumerate(CASES.items()):
        st = T0 + i * 10_000 * MS
        span = tracer.start_span(name, kind=trace.SpanKind.SERVER, start_time=st)
        span.set_attributes({
            sc.GEN_AI_RESPONSE_MODEL: "llama", sc.LEGACY_USAGE_PROMPT_TOKENS: 100,
            sc.LEGACY_USAGE_COMPLETION_TOKENS: out, sc.VLLM_LATENCY_TIME_TO_FIRST_TOKEN: 0.3,
            sc.VLLM_LATENCY_TIME_IN_MODEL_DECODE: DECODE_S, sc.VLLM_LATENCY_E2E: 2.3,
            sc.VLLM_REQUEST_ID: f"r{i}", **extra})
        span.end(end_time=st + 2300 * MS)
    provider.shutdown()
    return list(exporter.get_finished_spans())


@pytest.fixture(scope="module")
def export() -> dict[str, Any]:
    return otlp_json(trace_request(_vllm_spans()))


def _file_tpot(export: dict[str, Any], tmp: Path) -> dict[str, int | None]:
    path = tmp / "traces.jsonl"
    path.write_text(json.dumps(export) + "\n")
    store = load_store([path], cache=False)
    try:
        return dict(store.con.execute("SELECT name, tpot_ns FROM spans").fetchall())
    finally:
        store.close()


WANT = {name: tpot for name, (_, _, tpot) in CASES.items()}


@pytest.mark.parametrize("fast", ["0", "1"])
def test_file_ingest_derives_tpot_per_sequence(export: dict[str, Any], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               fast: str) -> None:
    if fast == "1" and not fastjson.available():
        pytest.skip("the compiled fast path is not built here")
    monkeypatch.setenv(fastjson.ENV_SWITCH, fast)
    before = fastjson.stats()["lines_fast"]
    assert _file_tpot(export, tmp_path) == WANT
    # the switch really chose the path (a file this small is read in this process)
    assert (fastjson.stats()["lines_fast"] > before) == (fast == "1")


def test_the_sequence_counts_stay_in_the_attributes(export: dict[str, Any],
                                                    tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(export) + "\n")
    store = load_store([path], cache=False)
    try:
        attrs = store.con.execute("SELECT attributes FROM spans WHERE name = 'best-of'"
                                  ).fetchone()[0]
    finally:
        store.close()
    got = json.loads(attrs)
    assert got[sc.VLLM_REQUEST_N] == 2 and got[NUM_SEQUENCES] == 4


def test_clickhouse_path_derives_the_same_tpot(export: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("chdb")
    from _engine_fixtures import chdb_with

    from inferaudit_analyzer.engines.clickhouse_analyze import connect

    con = connect("chdb://?table=otel_traces", backend=chdb_with([export], tmp_path))
    try:
        got = dict(con.execute("SELECT name, tpot_ns FROM spans").fetchall())
    finally:
        con.close()
    assert got == WANT
