"""Bad or unusual input found by a review of the real CLI: each used to lose far more than
itself (the whole run, a whole file) or to count a span twice; each now loses only itself and
says so, naming the file."""

from __future__ import annotations

import json
import os

import pytest
from _ingest_fixtures import json_span as _span

from inferaudit_analyzer.analyze import analyze
from inferaudit_analyzer.store import load_store
from inferaudit_sdk import semconv as sc


def _line(*spans) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}).encode()


def _counter(name: str, value: object) -> bytes:
    return json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
        "name": name, "sum": {"aggregationTemporality": 2, "isMonotonic": True, "dataPoints": [
            {"asDouble": value, "timeUnixNano": "5", "startTimeUnixNano": "1"}]}}]}]}]}).encode()


def _load(paths):
    with load_store(paths, cache=False, require_spans=False) as store:
        names = [r[0] for r in store.con.execute("SELECT name FROM spans ORDER BY name").fetchall()]
        errs = store.con.execute("SELECT file, line, message FROM ingest_errors").fetchall()
        points = store.con.execute("SELECT count(*) FROM metric_points").fetchone()[0]
    return names, errs, points


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_counter_point_is_an_error_not_a_crash(tmp_path, value):
    # valid OTLP JSON; the span-count coverage took int() of the total and the run died
    p = tmp_path / "t.jsonl"
    p.write_bytes(_line(_span(0)) + b"\n" + _counter(sc.METRIC_SDK_SPANS_DROPPED, value)
                  + b"\n" + _counter(sc.METRIC_SDK_SPANS_EXPORTED, 1.0) + b"\n")
    names, errs, points = _load([p])
    assert names == ["s0"] and points == 1
    assert [(line, "not a finite number" in m) for _, line, m in errs] == [(2, True)]
    report = analyze([p])
    assert report["input"]["spans"] == 1


@pytest.mark.parametrize("first", [{"resourceLogs": []}, {"resourceProfiles": []}])
def test_a_json_file_that_starts_with_logs_is_read_for_its_spans(tmp_path, first):
    # one Collector file exporter shared by signals writes them all into one .json file
    p = tmp_path / "otel.json"
    p.write_bytes(json.dumps(first).encode() + b"\n" + _line(_span(0), _span(1)) + b"\n")
    report = analyze([p])
    assert report["input"]["spans"] == 2 and report["input"]["skipped"] == []


def test_a_dangling_link_is_one_files_error(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(_line(_span(0)) + b"\n")
    os.symlink(tmp_path / "gone" / "x.jsonl", tmp_path / "b.jsonl")
    report = analyze([tmp_path])
    assert report["input"]["spans"] == 1
    (err,) = report["input"]["errors"]
    assert err["file"] == str(tmp_path / "b.jsonl") and "cannot open" in err["message"]


@pytest.mark.parametrize("fast", ["1", "0"], ids=["fast-path-on", "fast-path-off"])
def test_ids_are_case_insensitive_and_a_malformed_one_is_named(tmp_path, monkeypatch, fast):
    monkeypatch.setenv("INFERAUDIT_FAST_JSON", fast)
    lower = _span(0, parentSpanId="00000000000000aa",
                  links=[{"traceId": "0000000000000000000000000000abcd",
                          "spanId": "00000000000000ab"}])
    upper = {**lower, "traceId": lower["traceId"].upper(), "spanId": lower["spanId"].upper(),
             "parentSpanId": "00000000000000AA",
             "links": [{"traceId": "0000000000000000000000000000ABCD",
                        "spanId": "00000000000000AB"}]}
    (tmp_path / "a.jsonl").write_bytes(_line(lower) + b"\n")
    (tmp_path / "b.jsonl").write_bytes(_line(upper, _span(1, spanId="abc")) + b"\n")
    with load_store([tmp_path], cache=False) as store:
        rows = store.con.execute(
            "SELECT trace_id, span_id, parent_span_id FROM spans").fetchall()
        links = store.con.execute("SELECT DISTINCT linked_trace_id, linked_span_id FROM links"
                                  ).fetchall()
        errs = [m for (m,) in store.con.execute("SELECT message FROM ingest_errors").fetchall()]
    assert rows == [(lower["traceId"], lower["spanId"], "00000000000000aa")]  # one span
    assert links == [("0000000000000000000000000000abcd", "00000000000000ab")]
    assert len(errs) == 1 and "spanId 'abc' is neither 16 hex digits" in errs[0]


def test_a_pretty_printed_otlp_document_is_read_as_one_request(tmp_path):
    # json.dumps(indent=2), the shape of the OTLP spec's example files: split into lines it
    # gave one "invalid JSON" error per line and a coverage of 0 %
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [_span(0), _span(1)]}]}]}
    (tmp_path / "example.json").write_text(json.dumps(doc, indent=2))
    bad = json.dumps(doc, indent=2).replace('"name": "s1"', '"name": "s1",,')
    (tmp_path / "broken.json").write_text(bad)
    report = analyze([tmp_path])
    assert report["input"]["spans"] == 2
    (err,) = report["input"]["errors"]
    assert err["file"].endswith("broken.json") and "invalid JSON" in err["message"]


@pytest.mark.parametrize("fast", ["1", "0"], ids=["fast-path-on", "fast-path-off"])
@pytest.mark.parametrize(("key", "value"), [
    (sc.GEN_AI_USAGE_OUTPUT_TOKENS, {"intValue": "-1000000000"}),  # read as -1e9 tokens/s
    (sc.REQUEST_QUEUE_TIME_NS, {"intValue": "-5"}),  # a negative queue p50
    (sc.BATCH_SIZE, {"intValue": "-3"}),
    (sc.VLLM_LATENCY_TIME_IN_QUEUE, {"doubleValue": -0.5}),  # seconds, from vLLM
])  # fmt: skip
def test_a_negative_count_or_duration_is_dropped_with_an_error(tmp_path, monkeypatch, fast,
                                                                key, value):
    monkeypatch.setenv("INFERAUDIT_FAST_JSON", fast)
    attrs = [*_span(0)["attributes"], {"key": key, "value": value},
             {"key": sc.GEN_AI_USAGE_INPUT_TOKENS, "value": {"intValue": "7"}}]
    p = tmp_path / "t.jsonl"
    p.write_bytes(_line(_span(0, attributes=attrs), _span(1)) + b"\n")
    with load_store([p], cache=False) as store:
        row = store.con.execute(
            "SELECT output_tokens, queue_ns, batch_size, input_tokens FROM spans WHERE name = 's0'"
        ).fetchone()
        errs = [m for (m,) in store.con.execute("SELECT message FROM ingest_errors").fetchall()]
    assert row == (None, None, None, 7)  # that value alone is gone; the span is kept
    assert len(errs) == 1 and key in errs[0] and "negative" in errs[0]


def test_a_cache_part_cut_short_is_parsed_again_not_a_failure_on_every_run(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_bytes(_line(_span(0), _span(1)) + b"\n")
    with load_store([p]) as store:  # fills the cache beside the file
        assert store.spans == 2
    parts = list((tmp_path / ".inferaudit-cache").rglob("spans-*.parquet"))
    assert parts
    data = parts[0].read_bytes()
    parts[0].write_bytes(data[: len(data) // 2])  # a full disk, an interrupted copy
    with load_store([p]) as store:
        assert store.spans == 2 and store.stats["files_parsed"] == 1
    with load_store([p]) as store:  # the entry was replaced: cached again
        assert store.spans == 2 and store.stats["files_parsed"] == 0
