"""The Parquet cache is reused for unchanged files, rebuilt for changed ones; large files split."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from inferaudit_analyzer import store as store_mod
from inferaudit_analyzer.ingest import cache as cache_mod

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from synthetic_spans import write_traces


def _count(store, sql="SELECT count(*) FROM spans"):
    return store.con.execute(sql).fetchone()[0]


def _digest(store):
    return store.con.execute(
        "SELECT count(*), sum(duration_ns), sum(input_tokens), count(DISTINCT role), "
        "sum(batch_size) FROM spans").fetchone()


def test_second_load_reuses_cache_and_change_invalidates(tmp_path):
    paths = write_traces(tmp_path / "in", 3000, seed=7, spans_per_file=1200)
    with store_mod.load_store([tmp_path / "in"]) as first:
        assert first.stats["files_parsed"] == len(paths) and first.stats["files_cached"] == 0
        want = _digest(first)
        assert not any(i.cached for i in first.inputs)
    assert (tmp_path / "in" / cache_mod.CACHE_DIR_NAME).is_dir()
    with store_mod.load_store([tmp_path / "in"]) as second:
        assert second.stats["files_parsed"] == 0
        assert second.stats["files_cached"] == len(paths)
        assert all(i.cached for i in second.inputs)
        assert _digest(second) == want
        assert _count(second, "SELECT count(*) FROM inputs WHERE cached") == len(paths)
    # rotate in new content: only the changed file is parsed again
    extra = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "f" * 32, "spanId": "e" * 16, "name": "late", "kind": 1,
        "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]})
    with open(paths[-1], "a", encoding="utf-8") as f:
        f.write(extra + "\n")
    with store_mod.load_store([tmp_path / "in"]) as third:
        assert third.stats["files_parsed"] == 1
        assert third.stats["files_cached"] == len(paths) - 1
        assert _count(third) == want[0] + 1
    entries = list((tmp_path / "in" / cache_mod.CACHE_DIR_NAME).iterdir())
    assert len(entries) == len(paths)  # the stale entry of the changed file is gone


def test_cache_disabled_writes_nothing_beside_the_input(tmp_path):
    write_traces(tmp_path / "in", 500, seed=1)
    with store_mod.load_store([tmp_path / "in"], cache=False) as st:
        assert _count(st) >= 500
    assert not (tmp_path / "in" / cache_mod.CACHE_DIR_NAME).exists()


def test_read_only_input_dir_caches_in_user_cache_dir(tmp_path, monkeypatch):
    src = tmp_path / "shared"
    write_traces(src, 400, seed=2)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real = cache_mod._writable
    # we run as root, for whom chmod does not make a directory read-only; ask os.access's stand-in
    monkeypatch.setattr(cache_mod, "_writable", lambda d: d != str(src) and real(d))
    with store_mod.load_store([src]) as st:
        assert _count(st) >= 400
    assert not (src / cache_mod.CACHE_DIR_NAME).exists()
    assert any((tmp_path / "xdg" / "inferaudit").iterdir())
    with store_mod.load_store([src]) as st:
        assert st.stats["files_cached"] == 1


def test_split_file_reads_every_span_once_and_numbers_lines(tmp_path, monkeypatch):
    (path,) = write_traces(tmp_path / "in", 6000, seed=3, spans_per_file=10_000)
    lines = path.read_bytes().split(b"\n")
    lines.insert(7, b"{broken")
    path.write_bytes(b"\n".join(lines))
    with store_mod.load_store([path], cache=False) as whole:
        want = _digest(whole)
        assert [e.line for e in whole.errors] == [8]
    monkeypatch.setattr(store_mod, "SPLIT_BYTES", os.path.getsize(path) // 5)
    progress = []
    with store_mod.load_store([path], cache=False, workers=1, progress=progress.append) as parts:
        assert _digest(parts) == want
        assert [e.line for e in parts.errors] == [8]
    assert len(progress) >= 5
    assert progress[-1].bytes_done == progress[-1].bytes_total == os.path.getsize(path)
    assert progress[-1].files_done == 1


@pytest.mark.slow
def test_worker_pool_gives_the_same_tables(tmp_path, monkeypatch):
    write_traces(tmp_path / "in", 4000, seed=4, spans_per_file=1000)
    with store_mod.load_store([tmp_path / "in"], cache=False, workers=1) as one:
        want = _digest(one)
        want_links = _count(one, "SELECT count(*) FROM links")
    with store_mod.load_store([tmp_path / "in"], cache=False, workers=2) as two:
        assert two.stats["workers"] == 2
        assert _digest(two) == want
        assert _count(two, "SELECT count(*) FROM links") == want_links


@pytest.mark.parametrize("cache", [True, False])
def test_interrupted_parse_leaves_no_scratch_directory(tmp_path, monkeypatch, cache):
    """Ctrl-C mid-parse: neither the cache's scratch entries nor the no-cache temp dir stay."""
    write_traces(tmp_path / "in", 600, seed=3, spans_per_file=300)
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch_root))

    def interrupted(units, workers):
        yield from ()
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod, "_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store_mod.load_store([tmp_path / "in"], cache=cache)
    assert list(scratch_root.iterdir()) == []
    cache_dir = tmp_path / "in" / cache_mod.CACHE_DIR_NAME
    assert not cache_dir.exists() or list(cache_dir.iterdir()) == []
