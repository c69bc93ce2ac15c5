"""What a new user meets first: a mistyped path, a report without a price, the success line,
the help text and ``--version``, each saying what happened in words."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from _ingest_fixtures import make_spans, otlp_json, trace_request, write_jsonl
from rich.console import Console

from inferaudit_analyzer.cli_report import build_report_parser, report_main
from inferaudit_analyzer.ingest.files import InputNotFound, discover
from inferaudit_analyzer.report._fmt import price_line, usd
from inferaudit_analyzer.store import UnusableInput, load_store
from inferaudit_analyzer.summary_terminal import render
from inferaudit_sdk import semconv as sc
from inferaudit_sdk._cli import main as inferaudit_main


def _kineto(path: Path) -> Path:
    """The smallest PyTorch-profiler trace: one kernel, no paid device anywhere."""
    path.write_text(json.dumps({"traceEvents": [
        {"ph": "X", "cat": "kernel", "name": "k", "ts": 1, "dur": 5, "pid": 0, "tid": 7}]}))
    return path


def _unpriced_traces(path: Path) -> Path:
    """SDK spans whose resource names only the service: no price, no GPU model, no host."""
    req = otlp_json(trace_request(make_spans()))
    for rs in req["resourceSpans"]:
        rs["resource"]["attributes"] = [a for a in rs["resource"]["attributes"]
                                        if a["key"] == sc.SERVICE_NAME]
    return write_jsonl(path, [req])


# -- a path that is not there ------------------------------------------------------------------

def test_a_path_that_does_not_exist_says_so(tmp_path):
    missing = tmp_path / "nope" / "xyz"
    with pytest.raises(UnusableInput) as ei:
        load_store([missing], cache=False)
    assert str(ei.value).startswith(f"{missing}: does not exist")
    assert "no trace files" not in str(ei.value)


@pytest.mark.parametrize(("make", "reason"), [
    (lambda d: d / "absent.jsonl", "does not exist"),
    (lambda d: d / "*.nomatch", "no file matches this pattern"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no trace files in this directory"),
])
def test_why_a_path_gave_no_input(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(InputNotFound) as ei:
        discover([path])
    assert ei.value.path == str(path)
    assert ei.value.reason.startswith(reason)


def test_the_analyze_command_says_the_path_does_not_exist(tmp_path, capsys):
    # needs analyze.split_inputs to pass InputNotFound's reason on (see the report to the lead)
    missing = tmp_path / "nope" / "xyz"
    assert inferaudit_main(["analyze", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: does not exist" in err


# -- no price --------------------------------------------------------------------------------

def test_a_kernel_trace_report_says_there_is_no_price_in_words(tmp_path, capsys):
    md = tmp_path / "k.md"
    assert report_main([str(_kineto(tmp_path / "t.json")), "--md", str(md)]) == 0
    text = md.read_text()
    assert "n/a/h" not in text
    assert "no price (no paid device found)" in text
    assert "--price-per-hour" in text


def test_the_terminal_summary_says_there_is_no_price_in_words(tmp_path):
    from inferaudit_analyzer.analyze import analyze

    rep = analyze([str(_unpriced_traces(tmp_path / "t.jsonl"))])
    assert rep["price"]["usd_per_hour"] is None
    out = io.StringIO()
    render(rep, Console(file=out, width=200))
    text = out.getvalue()
    assert "n/a/h" not in text and "—/h" not in text
    assert "no price (none for 1 of 1 paid resource(s))" in text
    assert price_line(rep) in text


def test_a_price_still_reads_as_before():
    rep = {"price": {"usd_per_hour": 2.5, "source": "--price-per-hour", "resources": []}}
    assert price_line(rep) == f"price {usd(2.5)}/h from --price-per-hour"


# -- the report's success line and help ------------------------------------------------------

def test_report_names_the_files_it_wrote(tmp_path, capsys):
    traces = write_jsonl(tmp_path / "t.jsonl", [otlp_json(trace_request(make_spans()))])
    md, js = tmp_path / "r.md", tmp_path / "r.json"
    assert report_main([str(traces), "--md", str(md), "--json", str(js),
                        "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"inferaudit report: wrote {md}, {js}"]
    assert md.exists() and js.exists()


def test_report_help_says_kineto_traces_are_read(capsys):
    with pytest.raises(SystemExit):
        build_report_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Kineto" in text and "protobuf" in text


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_flag_prints_the_package_version(flag, capsys):
    # the installed distribution's version (pyproject), which the SDK's constant must match
    import importlib.metadata

    assert inferaudit_main([flag]) == 0
    assert capsys.readouterr().out.strip() == (
        f"inferaudit {importlib.metadata.version('inferaudit')}")


def test_usage_lists_the_version_flag(capsys):
    assert inferaudit_main(["--help"]) == 0
    assert "--version" in capsys.readouterr().out
