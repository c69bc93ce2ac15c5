"""OTLP written by the official encoders reads back into the canonical tables, in every encoding."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _ingest_fixtures import (
    make_metrics,
    make_spans,
    otlp_json,
    protobuf_json,
    trace_request,
    write_jsonl,
    write_proto,
)

from inferaudit_analyzer.ingest.foreign import PRIMARY
from inferaudit_analyzer.store import coverage, coverage_gaps, load_store
from inferaudit_sdk import semconv as sc


@pytest.fixture(scope="module")
def sdk_spans():
    return make_spans()


def _rows(con, sql, params=()):
    cur = con.execute(sql, list(params))
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _write(kind: str, d: Path, spans) -> Path:
    req = trace_request(spans)
    if kind == "jsonl":
        return write_jsonl(d / "traces.jsonl", [otlp_json(req)])
    if kind == "protobuf_json":
        return write_jsonl(d / "traces.jsonl", [protobuf_json(req)])
    if kind == "gz":
        return write_jsonl(d / "traces.jsonl.gz", [otlp_json(req)], gz=True)
    if kind == "zst":
        return write_jsonl(d / "traces.jsonl.zst", [otlp_json(req)], zst=True)
    if kind == "proto":
        return write_proto(d / "traces.pb", [req])
    if kind == "proto_zstd_frames":
        return write_proto(d / "traces.bin", [req], zstd_frames=True)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["jsonl", "protobuf_json", "gz", "zst", "proto",
                                  "proto_zstd_frames"])
def test_every_encoding_reads_the_same_spans(tmp_path, sdk_spans, kind):
    path = _write(kind, tmp_path, sdk_spans)
    with load_store([path], cache=False) as store:
        got = _rows(store.con, "SELECT * FROM spans ORDER BY span_id")
        assert store.errors == []
    want = {format(s.context.span_id, "016x"): s for s in sdk_spans}
    assert {r["span_id"] for r in got} == set(want)
    for r in got:
        s = want[r["span_id"]]
        assert r["trace_id"] == format(s.context.trace_id, "032x")
        assert r["start_ns"] == s.start_time and r["end_ns"] == s.end_time
        assert r["duration_ns"] == s.end_time - s.start_time
        assert r["kind"] == s.kind.value + 1  # the SDK enum is 0-based, OTLP's 1-based
        assert r["name"] == s.name
        assert r["scope_name"] == s.instrumentation_scope.name
        assert r["service_name"] == "chat-api"
        want_parent = format(s.parent.span_id, "016x") if s.parent else None
        assert r["parent_span_id"] == want_parent
        attrs = json.loads(r["attributes"])
        assert set(attrs) == set(s.attributes) - set(PRIMARY)  # promoted ones have columns
        for k, v in attrs.items():
            assert v == (list(s.attributes[k]) if isinstance(s.attributes[k], tuple)
                         else s.attributes[k])


def test_request_batch_and_links(tmp_path, sdk_spans):
    path = _write("jsonl", tmp_path, sdk_spans)
    with load_store([path], cache=False) as store:
        con = store.con
        reqs = _rows(con, "SELECT * FROM spans WHERE role = 'request' AND source = 'inferaudit' "
                          "ORDER BY input_tokens")
        assert [r["input_tokens"] for r in reqs] == [12, 13]
        assert all(r["ttft_ns"] == 4_000 and r["queue_ns"] == 1_000 for r in reqs)
        assert all(r["cache_hit"] is False and r["route"] == "/v1/chat" for r in reqs)
        assert reqs[0]["prompt_fp"] == f"{0:032x}"
        assert reqs[0]["profile_path"] == os.path.join(str(tmp_path), "profiles", "p1.json.gz")
        servers = {r["span_id"] for r in _rows(con, "SELECT span_id FROM spans WHERE kind = 2 "
                                                    "AND name = 'POST /v1/chat'")}
        assert {r["parent_span_id"] for r in reqs} == servers
        (batch,) = _rows(con, "SELECT * FROM spans WHERE role = 'batch'")
        assert batch["batch_size"] == 2 and batch["padded_tokens"] == 26
        assert batch["device_time_ns"] == 3_000_000 and batch["copy_time_ns"] == 1_000
        assert batch["gpu_util"] == 0.5 and batch["gpu_energy_j"] == 1.25
        links = _rows(con, "SELECT * FROM links")
        assert {ln["span_id"] for ln in links} == {batch["span_id"]}
        assert {(ln["linked_trace_id"], ln["linked_span_id"]) for ln in links} == {
            (r["trace_id"], r["span_id"]) for r in reqs}
        (res,) = _rows(con, "SELECT * FROM resources")
        assert res["service_name"] == "chat-api" and res["gpu_count"] == 1
        assert res["price_usd_per_hour"] == pytest.approx(1.006)
        assert {r["resource_id"] for r in _rows(con, "SELECT resource_id FROM spans")} == {
            res["resource_id"]}


def test_foreign_instrumentations_map_onto_canonical_columns(tmp_path, sdk_spans):
    path = _write("proto", tmp_path, sdk_spans)
    with load_store([path], cache=False) as store:
        rows = {r["source"]: r for r in _rows(
            store.con, "SELECT * FROM spans WHERE source IN ('vllm', 'openllmetry', 'openlit')")}
    vllm = rows["vllm"]
    assert vllm["role"] == sc.ROLE_REQUEST
    assert vllm["request_model"] == "meta-llama/Llama-3-8B"
    assert (vllm["input_tokens"], vllm["output_tokens"]) == (100, 11)
    assert vllm["ttft_ns"] == 250_000_000 and vllm["queue_ns"] == 15_000_000
    assert vllm["prefill_ns"] == 200_000_000 and vllm["decode_ns"] == 1_000_000_000
    assert vllm["tpot_ns"] == 100_000_000  # decode / (11 - 1)
    oll = rows["openllmetry"]
    assert (oll["provider"], oll["operation"], oll["stream"]) == ("openai", "chat", True)
    assert (oll["input_tokens"], oll["output_tokens"]) == (30, 7)
    olit = rows["openlit"]
    assert olit["ttft_ns"] == 125_000_000 and olit["tpot_ns"] == 20_000_000
    assert olit["stream"] is True and olit["role"] == sc.ROLE_REQUEST


def test_primary_names_win_over_fallbacks(tmp_path):
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "x", "kind": 1,
            "startTimeUnixNano": "10", "endTimeUnixNano": 25, "attributes": [
                {"key": sc.LEGACY_USAGE_PROMPT_TOKENS, "value": {"intValue": "999"}},
                {"key": sc.GEN_AI_USAGE_INPUT_TOKENS, "value": {"intValue": "7"}},
                {"key": sc.SPAN_ROLE, "value": {"stringValue": "request"}}]}
    p = write_jsonl(tmp_path / "t.jsonl", [{"resourceSpans": [{"scopeSpans": [
        {"spans": [span]}]}]}])
    with load_store([p], cache=False) as store:
        (row,) = _rows(store.con, "SELECT input_tokens, duration_ns, source FROM spans")
    assert row == {"input_tokens": 7, "duration_ns": 15, "source": "inferaudit"}


@pytest.mark.parametrize("encoding", ["jsonl", "proto"])
def test_metrics_fill_metric_points_and_coverage(tmp_path, sdk_spans, encoding):
    mreq = make_metrics(exported=len(sdk_spans) + 5, dropped=3)
    treq = trace_request(sdk_spans)
    if encoding == "jsonl":  # one Collector file exporter shared by both pipelines
        paths = [write_jsonl(tmp_path / "mixed.jsonl", [otlp_json(treq), otlp_json(mreq)])]
    else:
        paths = [write_proto(tmp_path / "traces.pb", [treq]),
                 write_proto(tmp_path / "metrics.pb", [mreq])]
    with load_store(paths, cache=False) as store:
        con = store.con
        pts = {r["name"]: r for r in _rows(con, "SELECT * FROM metric_points")}
        cov = coverage(con)
        gaps = coverage_gaps(con)
    assert pts[sc.METRIC_HW_GPU_UTILIZATION]["value"] == 0.75
    assert pts[sc.METRIC_SDK_SPANS_DROPPED]["value"] == 3
    assert pts[sc.METRIC_SDK_SPANS_DROPPED]["temporality"] == 2
    assert pts[sc.METRIC_SERVER_REQUEST_DURATION + ".count"]["value"] == 3
    assert pts[sc.METRIC_SERVER_REQUEST_DURATION + ".sum"]["value"] == pytest.approx(0.6)
    assert json.loads(pts[sc.METRIC_SDK_SPANS_DROPPED]["attributes"]) == {sc.SDK_EXPORTER: "file"}
    assert cov["spans_read"] == len(sdk_spans)
    assert cov["spans_dropped_reported"] == 3
    assert cov["coverage_ratio"] == pytest.approx(len(sdk_spans) / (len(sdk_spans) + 8))
    assert any("3 dropped spans" in g for g in gaps)


def test_coverage_gaps_name_what_is_missing(tmp_path):
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "llm_request", "kind": 2,
            "startTimeUnixNano": "10", "endTimeUnixNano": "20", "attributes": [
                {"key": sc.GEN_AI_RESPONSE_MODEL, "value": {"stringValue": "m"}},
                {"key": sc.LEGACY_USAGE_PROMPT_TOKENS, "value": {"intValue": "5"}},
                {"key": sc.VLLM_LATENCY_E2E, "value": {"doubleValue": 0.5}}]}
    p = write_jsonl(tmp_path / "v.jsonl", [{"resourceSpans": [{"scopeSpans": [
        {"spans": [span]}]}]}])
    with load_store([p], cache=False) as store:
        gaps = coverage_gaps(store.con)
    text = " | ".join(gaps)
    assert "no batch spans" in text
    assert "no prompt fingerprints" in text
    assert "no SDK span counters" in text
    assert "no time-to-first-token" in text


def test_the_sdk_file_sink_output_reads_back(tmp_path, sdk_spans):
    exporters = pytest.importorskip("inferaudit_sdk.sdk.exporters",
                                    reason="the SDK file sink is not there yet")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    sink = exporters.FileSpanExporter(tmp_path)
    sink.export(sdk_spans[:4])
    sink.export(sdk_spans[4:])
    sink.shutdown()
    reader = PeriodicExportingMetricReader(exporters.FileMetricExporter(tmp_path),
                                           export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("t").create_counter(sc.METRIC_SDK_SPANS_DROPPED).add(4)
    provider.shutdown()  # the final collection writes the metrics line
    with load_store([tmp_path], cache=False) as store:
        assert store.errors == []
        got = {r["span_id"]: r for r in _rows(store.con, "SELECT * FROM spans")}
        cov = coverage(store.con)
    assert set(got) == {format(s.context.span_id, "016x") for s in sdk_spans}
    for s in sdk_spans:
        r = got[format(s.context.span_id, "016x")]
        assert (r["start_ns"], r["end_ns"], r["name"]) == (s.start_time, s.end_time, s.name)
    assert cov["spans_dropped_reported"] == 4


def test_the_standard_time_to_first_chunk_fills_ttft_where_ours_is_absent(tmp_path):
    def span(span_id, attrs):
        return {"traceId": "ab" * 16, "spanId": span_id * 8, "name": "chat m", "kind": 2,
                "startTimeUnixNano": "10", "endTimeUnixNano": "900000010",
                "attributes": [{"key": sc.SPAN_ROLE, "value": {"stringValue": "request"}},
                               *attrs]}

    standard = {"key": sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, "value": {"doubleValue": 0.25}}
    ours = {"key": sc.REQUEST_TIME_TO_FIRST_TOKEN_NS, "value": {"intValue": "123"}}
    p = write_jsonl(tmp_path / "t.jsonl", [{"resourceSpans": [{"scopeSpans": [
        {"spans": [span("c1", [standard]), span("c2", [standard, ours])]}]}]}])
    with load_store([p], cache=False) as store:
        rows = _rows(store.con, "SELECT ttft_ns FROM spans ORDER BY span_id")
    assert [r["ttft_ns"] for r in rows] == [250_000_000, 123]


def test_batch_spans_of_either_schema_name_their_model(tmp_path):
    # schema "1" wrote a batch's model as gen_ai.request.model, "2" as inferaudit.batch.model
    def batch(span_id, key):
        return {"traceId": "ab" * 16, "spanId": span_id * 8, "name": "batch m", "kind": 1,
                "startTimeUnixNano": "10", "endTimeUnixNano": "20", "attributes": [
                    {"key": sc.SPAN_ROLE, "value": {"stringValue": sc.ROLE_BATCH}},
                    {"key": key, "value": {"stringValue": "tiny-" + span_id}}]}

    p = write_jsonl(tmp_path / "t.jsonl", [{"resourceSpans": [{"scopeSpans": [{"spans": [
        batch("a1", sc.GEN_AI_REQUEST_MODEL), batch("b2", sc.BATCH_MODEL)]}]}]}])
    with load_store([p], cache=False) as store:
        rows = _rows(store.con, "SELECT request_model FROM spans ORDER BY span_id")
    assert [r["request_model"] for r in rows] == ["tiny-a1", "tiny-b2"]
