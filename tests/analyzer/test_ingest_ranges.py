"""Out-of-range numbers are per-span / per-value ingest errors, never a wrecked or crashed run.

A span whose times are unset (0), reversed or beyond int64 would stretch the window to 1970 or
give negative latency: it is rejected and named. An integer attribute beyond int64 would end
the run in Arrow: it becomes an attribute error and stays in ``attributes``.
"""

from __future__ import annotations

import json

import pytest
from _ingest_fixtures import make_metrics, make_spans, trace_request, write_jsonl, write_proto

from inferaudit_analyzer.cli import analyze_main
from inferaudit_analyzer.store import load_store
from inferaudit_sdk import semconv as sc

T = 1_700_000_000_000_000_000
I64_MAX = 2**63 - 1
ROLE = {"key": sc.SPAN_ROLE, "value": {"stringValue": sc.ROLE_REQUEST}}


def _span(i: int, start=T, end=T + 1_000_000, attrs=()):
    return {"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": f"s{i}", "kind": 1,
            "startTimeUnixNano": str(start) if isinstance(start, int) else start,
            "endTimeUnixNano": str(end) if isinstance(end, int) else end,
            "attributes": [ROLE, *attrs]}


def _req(*spans, res=()):
    return {"resourceSpans": [{"resource": {"attributes": list(res)},
                               "scopeSpans": [{"spans": list(spans)}]}]}


# A span whose intValue is not an integer fails the typed decoder for its whole line, so the
# line goes through the general (dict) path: both paths must apply the same checks. (The bad
# attribute itself is dropped there, with its own error; the span s99 is kept.)
_FORCE_GENERAL = _span(99, attrs=[{"key": sc.BATCH_SIZE, "value": {"intValue": "many"}}])


def _read(path):
    with load_store([path], cache=False) as store:
        spans = store.con.execute(
            "SELECT name, start_ns, end_ns, duration_ns FROM spans ORDER BY name").fetchall()
        errs = store.con.execute("SELECT line, message FROM ingest_errors").fetchall()
    return spans, errs


BAD_TIMES = [
    pytest.param("0", T, "startTimeUnixNano is 0", id="unset-start"),
    pytest.param(T, "0", "endTimeUnixNano before startTimeUnixNano", id="unset-end"),
    pytest.param(T + 5, T, "endTimeUnixNano before startTimeUnixNano", id="reversed"),
    pytest.param("-5", T, "startTimeUnixNano is -5", id="negative"),
    pytest.param(T, "99999999999999999999", "outside the signed 64-bit range", id="end>int64"),
    pytest.param(T, 99999999999999999999, "outside the signed 64-bit range", id="end>u64-number"),
    pytest.param(2**63, 2**63, "startTimeUnixNano 9223372036854775808 is outside", id="start>i64"),
]


@pytest.mark.parametrize("general", [False, True], ids=["typed", "general"])
@pytest.mark.parametrize(("start", "end", "why"), BAD_TIMES)
def test_bad_span_times_reject_only_that_span(tmp_path, start, end, why, general):
    spans = [_span(0), _span(1, start, end)] + ([_FORCE_GENERAL] if general else [])
    p = write_jsonl(tmp_path / "t.jsonl", [_req(_span(5)), _req(*spans)])
    rows, errs = _read(p)
    assert [r[0] for r in rows] == ["s0", "s5"] + (["s99"] if general else [])
    assert all(r[1] > 0 and r[3] >= 0 for r in rows)
    if general:
        assert [m for _, m in errs if "s99" in m and "attribute inferaudit.batch.size" in m
                and "'many'" in m], errs
    time_errs = [(line, m) for line, m in errs if "s1" in m]
    assert len(time_errs) == 1, errs
    line, msg = time_errs[0]
    assert line == 2 and "span 's1'" in msg and why in msg


def test_boundary_times_are_kept(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", [_req(_span(0, 1, 1), _span(1, T, I64_MAX))])
    rows, errs = _read(p)
    assert errs == []
    assert rows == [("s0", 1, 1, 0), ("s1", T, I64_MAX, I64_MAX - T)]


def test_unset_start_no_longer_stretches_the_window(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", [_req(_span(0), _span(1, "0", T + 10))])
    out = tmp_path / "r.json"
    assert analyze_main([str(p), "--no-cache", "--format", "json", "--out", str(out)]) == 0
    window = json.loads(out.read_text())["window"]
    assert window["start_ns"] == T and window["duration_s"] < 1.0


def _proto_spans():
    req = trace_request(make_spans())
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return req, spans


def test_protobuf_spans_get_the_same_time_checks(tmp_path):
    req, spans = _proto_spans()
    n = len(spans)
    spans[0].start_time_unix_nano = 0
    spans[1].end_time_unix_nano = spans[1].start_time_unix_nano - 1
    spans[2].end_time_unix_nano = 2**64 - 1  # fixed64 on the wire: beyond int64
    bad = {spans[0].name, spans[1].name, spans[2].name}
    rows, errs = _read(write_proto(tmp_path / "traces.pb", [req]))
    assert len(rows) == n - 3
    assert all(r[1] > 0 and r[3] >= 0 for r in rows)
    msgs = " | ".join(m for _, m in errs)
    assert len(errs) == 3, msgs
    assert "startTimeUnixNano is 0" in msgs
    assert "endTimeUnixNano before startTimeUnixNano" in msgs
    assert "endTimeUnixNano 18446744073709551615 is outside the signed 64-bit range" in msgs
    assert all(any(repr(name) in m for _, m in errs) for name in bad)


def _attr_row(tmp_path, attrs, general=False):
    spans = [_span(0, attrs=attrs)] + ([_FORCE_GENERAL] if general else [])
    p = write_jsonl(tmp_path / "t.jsonl", [_req(*spans)])
    with load_store([p], cache=False) as store:
        row = store.con.execute(
            "SELECT input_tokens, output_tokens, batch_size, ttft_ns, attributes FROM spans "
            "WHERE name = 's0'").fetchone()
        errs = [m for (m,) in store.con.execute("SELECT message FROM ingest_errors").fetchall()
                if "many" not in m and "s99" not in m]
    return row, errs


@pytest.mark.parametrize("general", [False, True], ids=["typed", "general"])
def test_integer_attributes_beyond_int64_are_attribute_errors(tmp_path, general):
    # beyond u64 as a bare JSON number only on the typed path: the general path's JSON parser
    # (orjson) reads such a number as a float, and that span is rejected whole
    huge = "99999999999999999999" if general else 99999999999999999999
    row, errs = _attr_row(tmp_path, [
        {"key": sc.GEN_AI_USAGE_OUTPUT_TOKENS, "value": {"intValue": "18446744073709551615"}},
        {"key": sc.BATCH_SIZE, "value": {"intValue": huge}},
        {"key": sc.GEN_AI_USAGE_INPUT_TOKENS, "value": {"stringValue": str(-(2**63) - 1)}},
        {"key": sc.REQUEST_TIME_TO_FIRST_TOKEN_NS, "value": {"intValue": str(I64_MAX)}},
    ], general)
    assert row[:4] == (None, None, None, I64_MAX)  # the in-range one is kept
    kept = json.loads(row[4])
    assert kept[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 18446744073709551615
    assert kept[sc.BATCH_SIZE] == 99999999999999999999
    assert kept[sc.GEN_AI_USAGE_INPUT_TOKENS] == str(-(2**63) - 1)
    assert len(errs) == 3, errs
    for key in (sc.GEN_AI_USAGE_OUTPUT_TOKENS, sc.BATCH_SIZE, sc.GEN_AI_USAGE_INPUT_TOKENS):
        assert any(key in m and "outside the signed 64-bit range" in m for m in errs), errs


def test_fallback_spellings_are_range_checked_too(tmp_path):
    row, errs = _attr_row(tmp_path, [
        {"key": sc.LEGACY_USAGE_PROMPT_TOKENS, "value": {"intValue": str(2**63)}},
        {"key": sc.VLLM_LATENCY_TIME_TO_FIRST_TOKEN, "value": {"doubleValue": 1e300}},
    ])
    assert row[0] is None and row[3] is None
    assert len(errs) == 2 and all("outside the signed 64-bit range" in m for m in errs), errs


def test_oversized_cli_run_exits_cleanly(tmp_path):
    big = [{"key": sc.GEN_AI_USAGE_OUTPUT_TOKENS, "value": {"intValue": "18446744073709551615"}},
           {"key": sc.BATCH_SIZE, "value": {"intValue": 99999999999999999999}}]
    p = write_jsonl(tmp_path / "t.jsonl", [
        _req(_span(0, attrs=big), _span(1, T, 99999999999999999999)),
        _req(_span(2, attrs=big), _span(3, T, 99999999999999999999), _FORCE_GENERAL)])
    out = tmp_path / "r.json"
    assert analyze_main([str(p), "--no-cache", "--format", "json", "--out", str(out)]) == 0
    with load_store([p], cache=False) as store:
        names = [n for (n,) in store.con.execute("SELECT name FROM spans").fetchall()]
    assert "s0" in names and "s1" not in names and "s3" not in names


def test_oversized_resource_attribute_keeps_the_resource(tmp_path):
    res = [{"key": sc.SERVICE_NAME, "value": {"stringValue": "svc"}},
           {"key": sc.RES_HOST_CPU_CORES, "value": {"intValue": 99999999999999999999}}]
    p = write_jsonl(tmp_path / "t.jsonl", [_req(_span(0), res=res)])
    with load_store([p], cache=False) as store:
        spans = store.con.execute("SELECT service_name FROM spans").fetchall()
        cores = store.con.execute("SELECT cpu_cores FROM resources").fetchall()
    assert spans == [("svc",)] and cores == [(None,)]


def test_metric_point_beyond_int64_loses_only_itself(tmp_path):
    req = make_metrics()
    gauges = [m for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              if m.WhichOneof("data") == "gauge"]
    gauges[0].gauge.data_points[0].time_unix_nano = 2**64 - 1
    name = gauges[0].name
    p = write_proto(tmp_path / "metrics.pb", [req])
    with load_store([p], cache=False, require_spans=False) as store:
        names = {n for (n,) in store.con.execute("SELECT name FROM metric_points").fetchall()}
        errs = [m for (m,) in store.con.execute("SELECT message FROM ingest_errors").fetchall()]
    assert name not in names and sc.METRIC_SDK_SPANS_EXPORTED in names
    assert len(errs) == 1 and name in errs[0] and "outside the signed 64-bit range" in errs[0]
