"""`inferaudit report` and `inferaudit calibrate` as a user runs them: files, flags, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _ingest_fixtures import make_spans, otlp_json, trace_request, write_jsonl

from inferaudit_analyzer.cli_report import calibrate_main, report_main
from inferaudit_sdk._cli import main as inferaudit_main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def traces(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "traces.jsonl", [otlp_json(trace_request(make_spans()))])


def test_report_writes_html_md_and_json(traces: Path, tmp_path: Path, capsys) -> None:
    html, md, js = tmp_path / "r.html", tmp_path / "r.md", tmp_path / "r.json"
    code = inferaudit_main(["report", str(traces), "--html", str(html), "--md", str(md),
                            "--json", str(js), "--bootstrap", "5", "--max-batch", "4",
                            "--slo-p95-ms", "250", "--price-per-hour", "2.5"])
    assert code == 0, capsys.readouterr().err
    rep = json.loads(js.read_text())
    assert isinstance(rep["roadmap"], list)
    params = rep["roi"]["params"]
    assert params["max_batch"] == 4 and params["slo_p95_ms"] == 250
    assert params["price_per_hour"] == 2.5 and rep["roi"]["price"]["usd_per_replica_hour"] == 2.5
    assert html.read_text().startswith("<!DOCTYPE html>")
    assert "# InferAudit report" in md.read_text()


@pytest.mark.parametrize("argv, needle", [
    (["--html", "x.html", "--cache-hit-share", "1.5"], "between 0 and 1"),
    (["--html", "x.html", "--max-batch", "0"], "must be >= 1"),
    (["--html", "x.html", "--policy", "magic"], "invalid choice"),
    ([], "at least one of --html"),
])
def test_bad_flags_exit_2_with_the_reason(traces: Path, capsys, argv, needle) -> None:
    assert report_main([str(traces), *argv]) == 2
    assert needle in capsys.readouterr().err


def test_missing_input_and_bad_calibration_exit_2(traces: Path, tmp_path: Path, capsys) -> None:
    assert report_main([str(tmp_path / "nothing-here"), "--json", str(tmp_path / "o.json")]) == 2
    assert "unusable input" in capsys.readouterr().err
    bad = tmp_path / "cal.json"
    bad.write_text('{"points": [{"batch": 1}]}')
    assert report_main([str(traces), "--json", str(tmp_path / "o.json"), "--calibration",
                        str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "lacks" in err


def test_calibrate_sweeps_a_model_and_the_report_uses_it(traces: Path, tmp_path: Path,
                                                         capsys, monkeypatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    monkeypatch.chdir(ROOT)  # the default factory is the example's, importable from the root
    cal = tmp_path / "cal.json"
    code = calibrate_main(["--batches", "1,2", "--in-tokens", "4", "--out-tokens", "2,4",
                           "--repeats", "1", "--out", str(cal), "--quiet"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(cal.read_text())
    assert doc["schema"] == "inferaudit.calibration/1"
    assert {(p["batch"], p["out_tokens"]) for p in doc["points"]} == {(1, 2), (1, 4), (2, 2),
                                                                       (2, 4)}
    assert all(p["duration_ns"] > 0 for p in doc["points"])
    js = tmp_path / "r.json"
    assert report_main([str(traces), "--json", str(js), "--calibration", str(cal),
                        "--bootstrap", "0"]) == 0
    fit = json.loads(js.read_text())["roi"]["fit"]
    assert fit["source"] == "calibration+spans"
    assert fit["batch_sizes_seen"] == [1, 2]


def test_calibrate_names_a_bad_factory(tmp_path: Path, capsys) -> None:
    assert calibrate_main(["--model", "no_such_module_xyz:make", "--out",
                           str(tmp_path / "c.json")]) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err
    assert calibrate_main(["--model", "json", "--out", str(tmp_path / "c.json")]) == 2
    assert "module:factory" in capsys.readouterr().err


def test_calibrate_draws_batches_from_the_traces_lengths(traces: Path, tmp_path: Path,
                                                         capsys, monkeypatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    monkeypatch.chdir(ROOT)
    from inferaudit_analyzer.cli_report import request_lengths

    lengths = set(request_lengths([str(traces)]))
    cal = tmp_path / "cal.json"
    code = calibrate_main(["--batches", "1,2", "--lengths-from", str(traces), "--per-size", "1",
                           "--idle-pause-ms", "1", "--reference", "--repeats", "1",
                           "--out", str(cal), "--quiet"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(cal.read_text())
    assert doc["grid"].startswith("workload mix") and doc["reference"]
    assert doc["idle_pause_ms"] == 1
    assert sorted(p["batch"] for p in doc["points"]) == [1, 2]
    assert all(tuple(r) in lengths for p in doc["points"] for r in p["rows"])
    assert all(p["idle_duration_ns"] > 0 for p in doc["points"])


def test_calibrate_lengths_from_traces_without_usage_exits_2(tmp_path: Path, capsys) -> None:
    empty = write_jsonl(tmp_path / "t.jsonl", [otlp_json(trace_request([]))])
    assert calibrate_main(["--lengths-from", str(empty), "--out", str(tmp_path / "c.json")]) == 2
    assert "--lengths-from" in capsys.readouterr().err


def test_report_no_cache_reads_the_input_once_and_writes_no_cache(traces: Path, tmp_path: Path,
                                                                   capsys) -> None:
    js = tmp_path / "r.json"
    assert report_main([str(traces), "--no-cache", "--json", str(js), "--bootstrap", "0"]) == 0
    assert not (traces.parent / ".inferaudit-cache").exists()
    assert isinstance(json.loads(js.read_text())["roadmap"], list)
