"""Incremental Kineto reader: codecs, chunk boundaries, clear errors on bad files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import zstandard

from inferaudit_analyzer.kineto import KinetoTraceError, analyze_kineto, read_events
from inferaudit_analyzer.kineto import load as load_mod
from inferaudit_analyzer.kineto.events import us_to_ns
from inferaudit_analyzer.kineto.load import TraceStream, read_all


def _doc(n: int = 50) -> dict:
    events = [
        {
            "ph": "X",
            "cat": "kernel",
            "name": f"k{i}",
            "pid": 0,
            "tid": 7,
            "ts": 1000.5 + 10 * i,
            "dur": 2.25,
            "args": {"stream": 7, "device": 0, "correlation": i},
        }
        for i in range(n)
    ]
    # Metadata both before and after traceEvents, as Kineto writes it.
    return {"schemaVersion": 1, "traceEvents": events, "deviceProperties": [{"id": 0}]}


def test_plain_gzip_and_zstd_read_the_same(tmp_path: Path) -> None:
    raw = json.dumps(_doc(), indent=1).encode()
    plain = tmp_path / "a.json"
    plain.write_bytes(raw)
    gz = tmp_path / "a.json.gz"
    gz.write_bytes(gzip.compress(raw))
    zst = tmp_path / "a.json.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(raw))
    results = [read_all(p) for p in (plain, gz, zst)]
    for meta, events in results:
        assert meta == {"schemaVersion": 1, "deviceProperties": [{"id": 0}]}
        assert events == _doc()["traceEvents"]


def test_tiny_chunks_split_values_anywhere(tmp_path: Path, monkeypatch) -> None:
    # 7-byte reads cut numbers, strings and objects at every possible place.
    monkeypatch.setattr(load_mod, "_CHUNK_BYTES", 7)
    doc = _doc(20)
    p = tmp_path / "t.json"
    p.write_text(json.dumps(doc))
    meta, events = read_all(p)
    assert events == doc["traceEvents"]
    assert meta["schemaVersion"] == 1


def test_truncated_gzip_names_file_and_position(tmp_path: Path) -> None:
    data = gzip.compress(json.dumps(_doc(2000)).encode())
    p = tmp_path / "cut.json.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(KinetoTraceError) as exc:
        read_events(p)
    msg = str(exc.value)
    assert str(p) in msg
    assert "truncated or corrupt" in msg
    assert exc.value.path == str(p) and exc.value.position is not None
    assert f"at character {exc.value.position}:" in msg


def test_truncated_plain_json_names_character(tmp_path: Path) -> None:
    text = json.dumps(_doc(10))
    p = tmp_path / "cut.json"
    p.write_text(text[:300])
    with pytest.raises(KinetoTraceError, match=r"cut\.json: .*character \d+"):
        read_events(p)


def test_corrupt_json_reports_offset(tmp_path: Path) -> None:
    text = '{"traceEvents": [{"ph": "X"}, {"ph": }]}'
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(KinetoTraceError) as exc:
        read_events(p)
    assert f"at character {text.index(': }') + 2}:" in str(exc.value)  # the stray '}'


@pytest.mark.parametrize(
    ("text", "what"),
    [("[1, 2]", "top level is not a JSON object"), ('{"a": 1}', "no 'traceEvents'")],
)
def test_not_a_kineto_trace(tmp_path: Path, text: str, what: str) -> None:
    p = tmp_path / "x.json"
    p.write_text(text)
    with pytest.raises(KinetoTraceError, match=what):
        read_events(p)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KinetoTraceError, match="cannot open"):
        read_events(tmp_path / "nope.json")


def test_bad_file_does_not_lose_the_good_one(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_doc(5)))
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(gzip.compress(json.dumps(_doc(500)).encode())[:200])
    report = analyze_kineto([good, bad])
    assert len(report.files) == 1 and report.files[0].gpu_ops == 5
    assert len(report.errors) == 1 and report.errors[0].path == str(bad)
    assert str(bad) in str(report.errors[0])
    assert any(f.id == "kineto_trace_unreadable" for f in report.findings)
    with pytest.raises(KinetoTraceError):
        analyze_kineto([good, bad], strict=True)


def test_directory_input_reads_each_trace(tmp_path: Path) -> None:
    for i in range(2):
        (tmp_path / f"p{i}.json").write_text(json.dumps(_doc(3)))
    (tmp_path / "notes.txt").write_text("not a trace")
    report = analyze_kineto(tmp_path)
    assert [Path(f.source).name for f in report.files] == ["p0.json", "p1.json"]
    assert report.aggregate is not None and report.aggregate.gpu_ops == 6


def test_us_to_ns_keeps_epoch_precision() -> None:
    assert us_to_ns(1682725898082228) == 1682725898082228000  # int us: exact
    assert us_to_ns(4458676983543.183) == 4458676983543183  # float us with ns decimals
    assert us_to_ns(41.407) == 41407
    with pytest.raises(ValueError):
        us_to_ns(float("nan"))


def test_stream_yields_lazily(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    p.write_text(json.dumps(_doc(3)))
    stream = TraceStream(p)
    it = stream.events()
    first = next(it)
    assert first["name"] == "k0"
    assert "deviceProperties" not in stream.metadata  # written after the events
    list(it)
    assert "deviceProperties" in stream.metadata


def test_resolve_profile_path_is_relative_to_the_span_file(tmp_path: Path) -> None:
    from inferaudit_analyzer.kineto import resolve_profile_path

    span_file = tmp_path / "traces-20260101T000000-1-0.jsonl"
    assert resolve_profile_path(span_file, "profiles/a.json.gz") == tmp_path / "profiles/a.json.gz"
    assert resolve_profile_path(span_file, "/abs/b.json") == Path("/abs/b.json")
