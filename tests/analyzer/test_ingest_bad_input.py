"""Bad input becomes ingest_errors rows with file and position; everything else stays readable."""

from __future__ import annotations

import gzip
import json
import struct

import pytest
from _ingest_fixtures import json_span as _span
from _ingest_fixtures import write_jsonl

from inferaudit_analyzer.store import UnusableInput, load_store


def _line(*spans) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}).encode()


def _errors(store):
    return store.con.execute(
        "SELECT file, line, byte_offset, message FROM ingest_errors ORDER BY line").fetchall()


def test_each_kind_of_damage_is_recorded_and_the_rest_read(tmp_path):
    bad_time = _span(3, startTimeUnixNano={"value": 5})
    no_id = _span(4)
    del no_id["spanId"]
    lines = [
        _line(_span(0), _span(1)),  # line 1: fine
        b"this is not json",  # line 2
        _line(_span(2), bad_time, no_id),  # line 3: one good span, two bad
        b'{"unexpected": 1}',  # line 4
        b"",  # line 5: blank, ignored
        b"[1, 2]",  # line 6
        _line(_span(5))[:-7],  # line 7: truncated, no newline
    ]
    p = tmp_path / "traces.jsonl"
    p.write_bytes(b"\n".join(lines))
    with load_store([p], cache=False) as store:
        ids = [r[0] for r in store.con.execute("SELECT name FROM spans ORDER BY name").fetchall()]
        errs = _errors(store)
        assert store.inputs[0].errors == len(errs)
    assert ids == ["s0", "s1", "s2"]
    by_line = {}
    for f, line, _off, msg in errs:
        assert f == str(p.resolve())
        by_line.setdefault(line, []).append(msg)
    assert set(by_line) == {2, 3, 4, 6, 7}
    assert "invalid JSON" in by_line[2][0]
    assert any("startTimeUnixNano must be an integer" in m and "dict" in m for m in by_line[3])
    assert any("missing spanId" in m for m in by_line[3])
    assert "not an OTLP export request" in by_line[4][0]
    assert "truncated" in by_line[7][0]
    offsets = {line: off for _, line, off, _ in errs}
    assert offsets[2] == len(lines[0]) + 1


def test_wrong_attribute_type_loses_only_that_value(tmp_path):
    s = _span(0, attributes=[
        {"key": "gen_ai.usage.input_tokens", "value": {"stringValue": "many"}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "4"}}])
    p = write_jsonl(tmp_path / "t.jsonl", [json.loads(_line(s))])
    with load_store([p], cache=False) as store:
        row = store.con.execute("SELECT input_tokens, output_tokens FROM spans").fetchone()
        errs = _errors(store)
        (attrs,) = store.con.execute("SELECT attributes FROM spans").fetchone()
    assert row == (None, 4)
    assert len(errs) == 1 and "gen_ai.usage.input_tokens" in errs[0][3]
    assert json.loads(attrs) == {"gen_ai.usage.input_tokens": "many"}  # kept, not lost


def test_truncated_gzip_keeps_the_lines_before_the_tear(tmp_path):
    body = b"".join(_line(_span(i)) + b"\n" for i in range(200))
    data = gzip.compress(body)
    p = tmp_path / "traces.jsonl.gz"
    p.write_bytes(data[: len(data) * 2 // 3])
    with load_store([p], cache=False) as store:
        n = store.con.execute("SELECT count(*) FROM spans").fetchone()[0]
        errs = _errors(store)
    assert 0 < n < 200
    assert len(errs) == 1 and "gzip stream broken" in errs[0][3]
    assert errs[0][1] == n + 1  # the line after the last one read
    # where the tear is: after the last whole line (it said the start of that line)
    read = len(b"".join(_line(_span(i)) + b"\n" for i in range(n)))
    assert f"(byte {read} of the decompressed data)" in errs[0][3]


def test_empty_file_beside_a_good_one(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    write_jsonl(tmp_path / "good.jsonl", [json.loads(_line(_span(0)))])
    with load_store([tmp_path], cache=False) as store:
        assert store.spans == 1
        assert [e.message for e in store.errors] == ["empty file"]
        assert {i.file.rsplit("/", 1)[1]: i.spans for i in store.inputs} == {
            "empty.jsonl": 0, "good.jsonl": 1}


def test_truncated_proto_frame(tmp_path):
    from _ingest_fixtures import make_spans, trace_request

    payload = trace_request(make_spans()).SerializeToString()
    good = struct.pack(">I", len(payload)) + payload
    p = tmp_path / "t.pb"
    p.write_bytes(good + struct.pack(">I", len(payload)) + payload[:10])
    with load_store([p], cache=False) as store:
        assert store.spans == len(make_spans())
        (err,) = store.errors
    assert err.byte_offset == len(good) and err.line is None
    assert "truncated frame" in err.message and err.position == f"byte {len(good)}"


def test_nothing_readable_raises_unusable_input_naming_file_and_position(tmp_path):
    p = tmp_path / "junk.jsonl"
    p.write_bytes(b"garbage\n")
    with pytest.raises(UnusableInput) as ei:
        load_store([p], cache=False)
    assert ei.value.file == str(p.resolve()) and ei.value.position == "line 1"
    assert "invalid JSON" in ei.value.message


def test_missing_path_raises_unusable_input(tmp_path):
    with pytest.raises(UnusableInput) as ei:
        load_store([tmp_path / "nope" / "*.jsonl"], cache=False)
    assert "nope" in ei.value.file


def _read(tmp_path, lines: list[bytes]):
    p = tmp_path / "traces.jsonl"
    p.write_bytes(b"\n".join(lines) + b"\n")
    with load_store([p], cache=False, require_spans=False) as store:
        names = [r[0] for r in store.con.execute(
            "SELECT name FROM spans ORDER BY name").fetchall()]
        scopes = [r[0] for r in store.con.execute(
            "SELECT DISTINCT scope_name FROM spans").fetchall()]
        points = store.con.execute("SELECT count(*) FROM metric_points").fetchone()[0]
        return names, scopes, points, [m for *_, m in _errors(store)]


def test_out_of_range_kind_status_and_a_non_string_name_lose_only_their_span(tmp_path):
    # each once ended the whole work unit: TINYINT columns and a VARCHAR name refused them
    names, _, _, errs = _read(tmp_path, [_line(
        _span(0), _span(1, kind=300), _span(2, kind=2**70), _span(3, status={"code": 300}),
        _span(4, name=5), _span(5, name=["x"]))])
    assert names == ["s0"]
    assert sum("not an OTLP span kind" in m for m in errs) == 2
    assert sum("not an OTLP status code" in m for m in errs) == 1
    assert sum("name must be a string" in m for m in errs) == 2


def test_a_non_string_scope_name_is_an_error_and_its_spans_are_kept(tmp_path):
    line = json.dumps({"resourceSpans": [{"scopeSpans": [
        {"scope": {"name": 5}, "spans": [_span(0)]}]}]}).encode()
    names, scopes, _, errs = _read(tmp_path, [line])
    assert names == ["s0"] and scopes == [None]
    assert any("scope name must be a string" in m for m in errs)


def test_deep_nesting_is_a_line_error_not_a_lost_unit(tmp_path):
    deep = json.dumps(_span(1, x="HOLE")).replace('"HOLE"', "[" * 2000 + "]" * 2000)
    line = b'{"resourceSpans": [{"scopeSpans": [{"spans": [' + deep.encode() + b"]}]}]}"
    names, _, _, errs = _read(tmp_path, [_line(_span(0)), line])
    assert names == ["s0"] and len(errs) == 1 and "invalid JSON" in errs[0]


def test_an_empty_scope_spans_beside_the_old_name_reads_the_old_name_on_every_path(tmp_path):
    # a bad value sends the line to the general path, which must read what the typed path reads
    good = {"resourceSpans": [{"scopeSpans": [], "instrumentationLibrarySpans": [
        {"spans": [_span(0), _span(1)]}]}]}
    bad = json.loads(json.dumps(good))
    bad["resourceSpans"][0]["instrumentationLibrarySpans"][0]["spans"][1]["attributes"] = [
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "+5"}}]
    names, _, _, _ = _read(tmp_path, [json.dumps(good).encode()])
    assert names == ["s0", "s1"]
    names, _, _, errs = _read(tmp_path, [json.dumps(bad).encode()])
    assert names == ["s0", "s1"] and len(errs) == 1  # the bad attribute goes, not its span
    assert "attribute gen_ai.usage.input_tokens" in str(errs[0]) and "'+5'" in str(errs[0])


def test_one_request_carrying_spans_and_metrics_keeps_both(tmp_path):
    from _ingest_fixtures import make_metrics, otlp_json

    both = otlp_json(make_metrics())
    both["resourceSpans"] = [{"scopeSpans": [{"spans": [_span(0)]}]}]
    names, _, points, errs = _read(tmp_path, [json.dumps(both).encode()])
    assert names == ["s0"] and points > 0 and errs == []


@pytest.mark.parametrize("fast", ["1", "0"], ids=["fast-path-on", "fast-path-off"])
def test_a_malformed_attribute_is_dropped_and_its_span_kept(tmp_path, monkeypatch, fast):
    monkeypatch.setenv("INFERAUDIT_FAST_JSON", fast)
    attrs = [
        {"key": "inferaudit.span.role", "value": {"stringValue": "batch"}},
        {"key": "inferaudit.batch.size", "value": {"intValue": "many"}},
        {"key": "inferaudit.batch.input_tokens", "value": {"intValue": "7"}},
        {"key": "x", "value": {"arrayValue": {"values": [{"intValue": 5.5}]}}},
        {"value": {"intValue": "3"}},  # no key
        {"key": "kept", "value": {"stringValue": "yes"}},
    ]
    p = tmp_path / "traces.jsonl"
    p.write_bytes(_line(_span(0), _span(1, attributes=attrs)) + b"\n")
    with load_store([p], cache=False) as store:
        rows = store.con.execute(
            "SELECT name, role, batch_size, batch_input_tokens, attributes FROM spans "
            "ORDER BY name").fetchall()
        errs = [m for *_, m in _errors(store)]
    assert [r[:4] for r in rows] == [("s0", "request", None, None), ("s1", "batch", None, 7)]
    assert json.loads(rows[1][4]) == {"kept": "yes"}
    assert len(errs) == 3, errs
    assert all(m.startswith("span 0000000000000002 ('s1'): attribute ") and
               m.endswith("the attribute is dropped, the span kept") for m in errs)
    assert "inferaudit.batch.size: value.intValue 'many'" in errs[0]
    assert "x: value.arrayValue.values[0].intValue 5.5" in errs[1]
    assert "#4: " in errs[2] and "key" in errs[2]  # its place in the span's list


def test_a_span_rejected_for_its_times_does_not_also_report_a_dropped_attribute(tmp_path):
    bad_attr = [{"key": "inferaudit.batch.size", "value": {"intValue": "many"}}]
    rejected = _span(1, attributes=bad_attr, startTimeUnixNano="3000", endTimeUnixNano="2000")
    names, _, _, errs = _read(tmp_path, [_line(_span(0), rejected)])
    assert names == ["s0"]
    assert len(errs) == 1 and "endTimeUnixNano before startTimeUnixNano" in errs[0], errs
    assert "the span kept" not in errs[0]


@pytest.mark.parametrize("fast", ["1", "0"], ids=["fast-path-on", "fast-path-off"])
def test_a_bad_value_inside_a_kvlist_drops_that_attribute_only(tmp_path, monkeypatch, fast):
    monkeypatch.setenv("INFERAUDIT_FAST_JSON", fast)
    nested = {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": "q"}}]}}
    attrs = [{"key": "inferaudit.span.role", "value": {"stringValue": "request"}},
             {"key": "nested", "value": nested},
             {"key": "kept", "value": {"intValue": "4"}}]
    p = tmp_path / "traces.jsonl"
    p.write_bytes(_line(_span(0), _span(1, attributes=attrs)) + b"\n")
    with load_store([p], cache=False) as store:
        rows = store.con.execute("SELECT name, attributes FROM spans ORDER BY name").fetchall()
        errs = [m for *_, m in _errors(store)]
    assert [r[0] for r in rows] == ["s0", "s1"]
    assert json.loads(rows[1][1]) == {"kept": 4}
    assert len(errs) == 1 and "attribute nested" in errs[0] and "span kept" in errs[0], errs


def test_a_bad_resource_attribute_keeps_the_resources_spans(tmp_path):
    res = {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}},
                          {"key": "bad", "value": {"kvlistValue": {"values": [
                              {"key": "a", "value": {"intValue": "q"}}]}}},
                          {"value": {"stringValue": "no key"}}]}
    line = json.dumps({"resourceSpans": [{"resource": res, "scopeSpans": [
        {"spans": [_span(0), _span(1)]}]}]}).encode()
    p = tmp_path / "traces.jsonl"
    p.write_bytes(line + b"\n")
    with load_store([p], cache=False) as store:
        rows = store.con.execute(
            "SELECT name, service_name FROM spans ORDER BY name").fetchall()
        errs = [m for *_, m in _errors(store)]
    assert rows == [("s0", "svc"), ("s1", "svc")]
    assert len(errs) == 2, errs
    assert "resource attribute bad" in errs[0] and "resource attribute #2" in errs[1]
