"""A torn ``.zst`` is reported as a torn ``.gz`` is: the lines before the tear kept, one error.

zstandard's stream reader ends quietly where a file is cut inside a frame, so the file used to
read as empty (``spans 0, errors 0``) beside good files, with coverage 100 %.
"""

from __future__ import annotations

import io
import json

import pytest
import zstandard

from inferaudit_analyzer.ingest import fastjson, files
from inferaudit_analyzer.store import UnusableInput, load_store


def _line(i: int) -> bytes:
    span = {"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": f"s{i}", "kind": 1,
            "startTimeUnixNano": str(1000 + i), "endTimeUnixNano": str(2000 + i),
            "attributes": [{"key": "inferaudit.span.role", "value": {"stringValue": "request"}}]}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode() + b"\n"


def _body(n: int) -> bytes:
    return b"".join(_line(i) for i in range(n))


def _streamed(body: bytes, block_every: int) -> bytes:
    """One frame written as a streaming writer writes it: a block flushed every few lines."""
    out = io.BytesIO()
    w = zstandard.ZstdCompressor().stream_writer(out, closefd=False)
    lines = body.splitlines(keepends=True)
    for i, ln in enumerate(lines, 1):
        w.write(ln)
        if i % block_every == 0:
            w.flush(zstandard.FLUSH_BLOCK)
    w.flush(zstandard.FLUSH_FRAME)
    return out.getvalue()


def _errors(store):
    return store.con.execute(
        "SELECT file, line, message FROM ingest_errors ORDER BY file, line").fetchall()


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_small_torn_zst_is_unusable_input_naming_the_tear(tmp_path, keep):
    data = zstandard.ZstdCompressor().compress(_body(40))  # one block: nothing decodes
    p = tmp_path / "t.jsonl.zst"
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(UnusableInput) as ei:
        load_store([p], cache=False)
    assert "zstd stream broken after line 0" in str(ei.value)
    assert "truncated" in str(ei.value)


def test_a_torn_zst_beside_good_files_is_an_error_not_an_empty_file(tmp_path):
    data = zstandard.ZstdCompressor().compress(_body(40))
    (tmp_path / "a.jsonl.zst").write_bytes(data[: len(data) // 2])
    (tmp_path / "b.jsonl").write_bytes(_body(10))
    with load_store([tmp_path], cache=False) as store:
        by_file = {i.file.rsplit("/", 1)[1]: (i.spans, i.errors) for i in store.inputs}
        errs = _errors(store)
    assert by_file == {"a.jsonl.zst": (0, 1), "b.jsonl": (10, 0)}
    assert len(errs) == 1 and "zstd stream broken" in errs[0][2]


@pytest.mark.parametrize("fast", ["1", "0"])
def test_a_torn_zst_keeps_every_whole_block_before_the_tear(tmp_path, monkeypatch, fast):
    if fast == "1" and not fastjson.available():
        pytest.skip("the compiled fast path is not built here")
    monkeypatch.setenv(fastjson.ENV_SWITCH, fast)
    body = _body(200)
    data = _streamed(body, block_every=10)
    p = tmp_path / "t.jsonl.zst"
    p.write_bytes(data[: len(data) // 2])
    with load_store([p], cache=False) as store:
        n = store.con.execute("SELECT count(*) FROM spans").fetchone()[0]
        errs = _errors(store)
    assert 0 < n < 200 and n % 10 == 0  # whole blocks of ten lines
    assert len(errs) == 1 and "zstd stream broken" in errs[0][2]
    assert errs[0][1] == n + 1  # the line after the last one read


def test_concatenated_frames_read_whole_and_without_error(tmp_path):
    a, b = _body(30), b"".join(_line(i) for i in range(30, 50))
    cctx = zstandard.ZstdCompressor()
    p = tmp_path / "t.jsonl.zst"
    p.write_bytes(cctx.compress(a) + cctx.compress(b))
    with files.open_stream(str(p), "zstd") as s:
        assert s.read() == a + b
    with load_store([p], cache=False) as store:
        assert store.spans == 50
        assert store.errors == []


def test_a_frame_cut_exactly_between_frames_is_whole(tmp_path):
    cctx = zstandard.ZstdCompressor()
    first = cctx.compress(_body(5))
    p = tmp_path / "t.jsonl.zst"
    p.write_bytes(first + cctx.compress(_body(7))[:9])
    with pytest.raises(zstandard.ZstdError), files.open_stream(str(p), "zstd") as s:
        s.read()
    p.write_bytes(first)
    with files.open_stream(str(p), "zstd") as s:
        assert s.read() == _body(5)
