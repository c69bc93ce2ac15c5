"""Strings from the traces stay text in every output, and the report says only what its JSON
supports.

Markdown: model, route and kernel names, finding texts and ids are rendered through a real
CommonMark + tables parser (markdown-it, which rich already depends on), so "no raw HTML, no
stray emphasis or link" is checked on what a Markdown preview shows, not on the source text.
Terminal: the same strings must not be read as rich markup. Wording: TTFT "not measured" names
what is missing, units never follow "n/a", the utilisation ceiling reaches the per-model table,
a re-rendered report says how to get a price, and the latency plot says which requests it is of.
"""

from __future__ import annotations

import json
import re
from html import escape

import pytest
from _analysis_fixtures import MS, T0, FixtureDb
from markdown_it import MarkdownIt
from rich.console import Console

from inferaudit_analyzer.analyze import analyze_connection
from inferaudit_analyzer.cli_report import report_main
from inferaudit_analyzer.report import _fmt
from inferaudit_analyzer.report.markdown import render_markdown
from inferaudit_analyzer.report.plots import cost_waterfall, latency_cdf
from inferaudit_analyzer.summary_terminal import render as render_terminal

IMG = "<img src=x onerror=alert(1)>"
LINK = "[home](javascript:alert(1))"
PIPE = "team|model"
KERNEL = "void __fused_*mul*_add_<4>(float*) ~~x~~ C:\\tmp\\*"


def _scope(requests: int, **extra) -> dict:
    return {"requests": requests, "errors": 0, "error_ratio": 0.0, "throughput_rps": 1.0,
            "latency_ms": {"n": requests, "p50": 1.0, "p95": 2.0, "p99": 3.0},
            "cost_per_request_usd": 1e-6, **extra}


def _report() -> dict:
    return {
        "schema": "inferaudit.report/1",
        "baseline": {
            "overall": _scope(30, window_s=10.0, device_utilization=0.315,
                              device_utilization_ceiling=0.5),
            "by_model": {IMG: _scope(20, device_utilization=0.315, batch_size={"mean": 1.0}),
                         PIPE: _scope(10, device_utilization=0.0, batch_size={"mean": 1.0})},
            "by_route": {LINK: _scope(30)}},
        "bottleneck": {"layer": "device", "case": "kernel_hotspot", "confidence": 0.7,
                       "detail": f"one kernel, {KERNEL}, takes most of the time"},
        "findings": [{"id": "kernel_hotspot", "severity": "high", "layer": "device",
                      "title": f"One kernel ({KERNEL}) takes 80% of kernel time",
                      "detail": f"Profile <b>{KERNEL}</b>.",
                      "evidence": {"kernel": KERNEL, "share_ratio": 0.8}},
                     {"id": "odd`id", "severity": "info", "layer": "model", "title": "t",
                      "detail": "", "evidence": {}}],
    }


def _preview(md: str) -> str:
    """What a Markdown preview shows: CommonMark with GFM tables and strikethrough, raw HTML on
    (the default, and what most previews do)."""
    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(md)


def test_markdown_names_from_traces_render_as_text_not_html_or_markup() -> None:
    md = render_markdown(_report())
    assert "&lt;img" in md and "<img" not in md
    shown = _preview(md)
    # the only images are the inline plots; the model name is a table cell of text
    assert all(m.startswith('<img src="data:image/svg+xml') for m in re.findall(r"<img[^>]*",
                                                                               shown))
    assert f"<td>{escape(IMG, quote=False)}</td>" in shown
    assert f"<td>{PIPE}</td>" in shown  # a "|" in a name keeps the row's cells in place
    assert f"<td>{escape(LINK)}</td>" in shown and "javascript:" not in shown.replace(
        f"<td>{escape(LINK)}</td>", "")
    assert "<a " not in shown and "<b>" not in shown and "<s>" not in shown
    findings = shown.split("<h2>Findings with evidence</h2>")[1].split("<h2>Input</h2>")[0]
    # the kernel name reads as written: no emphasis from its "*" / "_", no strikethrough
    assert findings.count(escape(KERNEL, quote=False)) == 3  # title, detail, evidence
    assert "&lt;b&gt;" in findings
    assert "<em>" not in findings and findings.count("<strong>") == 2  # the two severities
    assert "<code>odd`id</code>" in findings
    verdict = shown.split("<h2>Bottleneck verdict</h2>")[1].split("<h2>")[0]
    assert escape(KERNEL, quote=False) in verdict and "<em>" not in verdict


def _analysed() -> dict:
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA A10G", gpu_count=1, service_name="svc")
    for i in range(6):
        t = T0 + i * 100 * MS
        r = db.request(t, t + 40 * MS, request_model="m", input_tokens=10, output_tokens=5)
        db.batch(t, t + 30 * MS, [r], request_model="m", device_time_ns=30 * MS)
    return json.loads(json.dumps(analyze_connection(db.con), default=str))


def test_terminal_prints_trace_strings_as_they_are_not_as_rich_markup() -> None:
    rep = _analysed()
    rep["findings"].append({"id": "kernel_hotspot", "severity": "high", "layer": "device",
                            "title": "kernel [bold]k[/bold] is hot", "detail": "",
                            "evidence": {"kernel": "void k<[/x]>(float*)"}})
    rep["input"]["errors"] = [{"file": "[/f].json", "position": 3, "message": "bad [red]"}]
    console = Console(record=True, width=240, color_system=None)
    render_terminal(rep, console)  # "[/x]" raised MarkupError: no open tag to close
    out = console.export_text()
    for text in ("kernel [bold]k[/bold] is hot", "kernel=void k<[/x]>(float*)",
                 "[/f].json:3: bad [red]"):
        assert text in out


def test_no_figure_reads_n_a_with_a_unit() -> None:
    rep = _report()
    rep["baseline"]["overall"].update(window_s=None, throughput_rps=None)
    rep["baseline"]["by_model"][IMG]["throughput_rps"] = None
    rep["workload"] = {"source": "x", "n_requests": 30, "time_scale": 0.2, "trace_rps": None,
                       "offered_rps": 5.0}
    rows = dict(_fmt.baseline_rows(rep))
    assert rows["window"] == "n/a" and rows["throughput"] == "n/a"
    assert "30 requests over n/a: p50" in _fmt.executive_summary(rep)[0]
    assert dict(_fmt.workload_rows(rep))["time scale"] == "x0.2 (trace n/a -> offered 5 req/s)"
    md = render_markdown(rep)
    assert re.search(r"n/a (s|req/s)\b", md) is None


def test_per_model_utilisation_carries_the_overall_ceiling() -> None:
    rep = _report()
    header, rows, _ = _fmt.scope_table(rep, "model")
    col = header.index("device utilisation")
    assert {r[0]: r[col] for r in rows} == {IMG: "31.5% (max 50.0%)", PIPE: "0.0% (max 50.0%)"}
    for ceiling in (1.0, None):  # no ceiling below the whole device: the share alone
        rep["baseline"]["overall"]["device_utilization_ceiling"] = ceiling
        header, rows, _ = _fmt.scope_table(rep, "model")
        assert rows[0][col] == "31.5%"


def test_a_rerendered_report_without_a_price_says_to_analyse_the_traces_again(
        tmp_path, capsys) -> None:
    rep = _report()
    rep["price"] = {"usd_per_hour": None, "source": "no paid device found", "resources": []}
    assert "give --price-per-hour or --price-file" in render_markdown(rep)
    src, md, html = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.html"
    src.write_text(json.dumps(rep), encoding="utf-8")
    assert report_main(["--from-json", str(src), "--md", str(md), "--html", str(html)]) == 0
    capsys.readouterr()
    for out in (md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")):
        assert "re-run inferaudit report PATH --price-per-hour USD" in out
        assert "give --price-per-hour" not in out
    # the empty cost plot points at the price line instead of at a flag
    assert "--price-per-hour" not in cost_waterfall(rep)


def _cdf_title(report: dict) -> str:
    return re.search(r"<title>([^<]*)</title>", latency_cdf(report)).group(1)


@pytest.mark.parametrize(("errors", "plotted", "title"), [
    (0, 30, "Request latency CDF (measured)"),
    (3, 27, "Request latency CDF (successful requests; 3 failed left out)"),
    # saved before the plot left failures out: every request was plotted
    (3, 30, "Request latency CDF (all requests, failed ones included)"),
])
def test_the_latency_plot_says_which_requests_it_is_of(errors, plotted, title) -> None:
    rep = _report()
    rep["baseline"]["overall"]["errors"] = errors
    rep["plots"] = {"latency_ms_quantiles": [[0.5, 1.0], [1.0, 3.0]], "requests": plotted}
    assert _cdf_title(rep) == title


def test_the_cost_waterfall_shows_no_step_below_its_labels_precision() -> None:
    rep = {"roi": {"baseline": {"replayed": {"cost_per_request_usd": 8.740672960e-07}}},
           "roadmap": [{"intervention": "continuous_batching", "cumulative": {"projected": {
               "cost_per_request_usd": 8.740672960e-07 + 5.85e-13}}},
                       {"intervention": "model_routing", "cumulative": {"projected": {
                           "cost_per_request_usd": 6.1e-07}}}]}
    tips = re.findall(r"<rect class=\"mark\"[^>]*fill=\"([^\"]+)\"><title>([^<]*)</title>",
                      cost_waterfall(rep))
    assert [t for _, t in tips] == ["baseline: $0.000000874",
                                    "+continuous_batching: $0.000000874 (unchanged)",
                                    "+model_routing: $0.000000610 (-$0.000000264)"]
    assert tips[1][0] not in (tips[0][0], tips[2][0])  # neither "bill" blue nor "saving" green


@pytest.mark.parametrize(("cost", "said"), [
    (9.31e-7, ", $0.931 per 1M requests"),
    (0.004, ", $4,000 per 1M requests"),
    (0.02, None),  # cents per request: read as they are
    (None, None),
])  # fmt: skip
def test_the_summary_prices_a_million_requests_where_one_costs_under_a_cent(cost, said) -> None:
    rep = {"baseline": {"overall": {"requests": 30, "cost_per_request_usd": cost}}}
    first = _fmt.executive_summary(rep)[0]
    if said is None:
        assert "per 1M requests" not in first
    else:
        assert f"on the bill{said} (busy-only floor" in first
