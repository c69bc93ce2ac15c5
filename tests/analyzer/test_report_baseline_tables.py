"""The Baseline section's per-model and per-route tables (Markdown, HTML, terminal), its TTFT /
time-per-output-token / error figures, the honest per-token cost label, and
``inferaudit report --from-json``.

Built two ways: a report dict written by hand (keys missing or null, as an older or newer
analyzer may write them; names from user spans holding markup) and an analysis of a fixture
database with two models, two routes, failed and streamed requests.
"""

from __future__ import annotations

import json
import re

import pytest
from _analysis_fixtures import MS, T0, FixtureDb
from rich.console import Console

from inferaudit_analyzer.analyze import analyze_connection
from inferaudit_analyzer.cli_report import report_main
from inferaudit_analyzer.report import _fmt
from inferaudit_analyzer.report.html import render_html
from inferaudit_analyzer.report.markdown import render_markdown
from inferaudit_analyzer.summary_terminal import render as render_terminal

EVIL = "<script>alert(1)</script>"
EVIL_MD = "&lt;script&gt;alert(1)&lt;/script&gt;"  # as Markdown writes it: text, not HTML


def _section(md: str, title: str) -> str:
    """The Markdown between ``title``'s heading and the next heading of any level."""
    return re.split(r"\n#{2,3} ", md.split(f"\n{title}\n", 1)[1], maxsplit=1)[0]


def _md_rows(table: str) -> dict[str, dict[str, str]]:
    """A Markdown table as {first cell: {header: cell}}."""
    lines = [ln for ln in table.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    out = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        out[cells[0]] = dict(zip(header, cells, strict=True))
    return out


def _scope(requests: int, errors: int, p50: float, p95: float, p99: float, cost: float,
           **extra) -> dict:
    return {"requests": requests, "errors": errors, "error_ratio": errors / requests,
            "throughput_rps": requests / 10, "latency_ms": {"n": requests, "p50": p50,
                                                            "p95": p95, "p99": p99},
            "ttft_ms": {"n": 0, "p50": None, "p95": None}, "cost_per_request_usd": cost,
            **extra}


def _hand_report() -> dict:
    overall = _scope(120, 3, 40.0, 90.0, 130.0, 2e-6, window_s=10.0,
                     ttft_ms={"n": 20, "p50": 12.0, "p95": 31.5, "p99": 44.0},
                     tpot_ms={"n": 0, "p50": None, "p95": None, "p99": None},
                     error_latency_ms={"n": 3, "p50": 5.0, "p95": 7.5, "p99": 8.0},
                     cost_usd=2.4e-4, input_tokens=3000, output_tokens=1000,
                     cost_per_1k_input_tokens_usd=6e-5, cost_per_1k_output_tokens_usd=6e-5,
                     device_utilization=0.42, batch_size={"mean": 2.5})
    return {"baseline": {
        "overall": overall,
        "by_model": {
            EVIL: _scope(100, 3, 41.0, 95.0, 140.0, 2.2e-6, device_utilization=0.4,
                         batch_size={"mean": 3.0},
                         ttft_ms={"n": 20, "p50": 12.0, "p95": 31.5},
                         error_latency_ms={"n": 3, "p50": 5.0, "p95": 7.5}),
            "small": _scope(20, 0, 20.0, 30.0, 33.0, 1e-6, device_utilization=None,
                            batch_size={"mean": None}),
            "partial": {"requests": 0},  # keys missing: n/a, never a crash
        },
        # routes: no device utilisation or batch size (one call serves several routes)
        "by_route": {"/v1/chat": _scope(70, 1, 45.0, 99.0, 150.0, 2.5e-6),
                     "/v1/[/x]": _scope(50, 2, 35.0, 80.0, 100.0, 1.5e-6)}}}


def test_markdown_baseline_shows_per_model_and_per_route_tables() -> None:
    md = render_markdown(_hand_report())
    models = _md_rows(_section(md, "### By model"))
    assert list(models) == [EVIL_MD, "small", "partial"]  # busiest first
    assert EVIL not in md
    row = models[EVIL_MD]
    assert row["requests"] == "100" and row["errors"] == "3 (3.0%)"
    assert row["throughput"] == "10 req/s"
    assert (row["latency p50"], row["latency p95"], row["latency p99"]) == (
        "41.0 ms", "95.0 ms", "140.0 ms")
    assert (row["TTFT p50"], row["TTFT p95"]) == ("12.0 ms", "31.5 ms")
    assert row["failed latency p95"] == "7.5 ms" and models["small"]["failed latency p95"] == "n/a"
    assert row["cost/req (bill)"] == "$0.00000220"
    assert row["device utilisation"] == "40.0%" and row["batch size mean"] == "3"
    assert "time/output token p50" not in row  # no scope has one: no column of n/a
    assert models["small"]["TTFT p95"] == "n/a" and models["small"]["device utilisation"] == "n/a"
    assert set(models["partial"].values()) == {"partial", "0", "n/a"}
    routes_md = _section(md, "### By route")
    routes = _md_rows(routes_md)
    assert list(routes) == ["/v1/chat", "/v1/\\[/x\\]"]
    assert routes["/v1/\\[/x\\]"]["errors"] == "2 (4.0%)"
    assert routes["/v1/chat"]["latency p99"] == "150.0 ms"
    assert "device utilisation" not in routes["/v1/chat"]
    assert "not broken down by route" in routes_md


def test_overall_rows_show_errors_ttft_tpot_and_an_honest_token_cost() -> None:
    rows = dict(_fmt.baseline_rows(_hand_report()))
    assert rows["errors"] == "3 (2.5%)"
    assert rows["TTFT (time to first token)"] == (
        "p50 12.0 ms, p95 31.5 ms, p99 44.0 ms (20 requests)")
    assert rows["time per output token"] == (
        "not measured (no request carries a first-token time)")
    assert rows["latency of failed requests"] == (
        "p50 5.0 ms, p95 7.5 ms, p99 8.0 ms (3 requests, not in the latency percentiles above)")
    # one price per token: cost over all 4,000 tokens, not "per output token"
    assert rows["cost per 1k tokens (input + output)"] == _fmt.usd(2.4e-4 / 4)
    assert "cost per 1k output tokens" not in rows and "cost per 1k input tokens" not in rows
    assert rows["tokens input / output"] == "3,000 / 1,000 (75.0% input)"
    # a report that prices the two sides apart gets both rows as well
    rep = _hand_report()
    rep["baseline"]["overall"].update(cost_per_1k_input_tokens_usd=3e-5,
                                      cost_per_1k_output_tokens_usd=1.5e-4,
                                      cost_per_1k_tokens_usd=6e-5)
    rows = dict(_fmt.baseline_rows(rep))
    assert rows["cost per 1k input tokens"] == "$0.0000300"
    assert rows["cost per 1k output tokens"] == "$0.000150"
    assert rows["cost per 1k tokens (input + output)"] == "$0.0000600"
    # a report without the TTFT block at all (older analyzer): n/a, not "not measured"; no
    # failed request (or no such block): no failed-latency row
    del rep["baseline"]["overall"]["ttft_ms"]
    rep["baseline"]["overall"]["error_latency_ms"] = {"n": 0, "p50": None}
    rows = dict(_fmt.baseline_rows(rep))
    assert rows["TTFT (time to first token)"] == "n/a"
    assert "latency of failed requests" not in rows
    del rep["baseline"]["overall"]["error_latency_ms"]
    assert "latency of failed requests" not in dict(_fmt.baseline_rows(rep))


def test_html_tables_escape_names_from_user_spans() -> None:
    html = render_html(_hand_report())
    assert EVIL not in html and "<script" not in html
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in html
    baseline = html.split('id="baseline"')[1].split('id="bottleneck"')[0]
    assert "<h3>By model</h3>" in baseline and "<h3>By route</h3>" in baseline
    assert "<th>TTFT p95</th>" in baseline and "<td>31.5 ms</td>" in baseline
    assert "<td>/v1/[/x]</td>" in baseline and "<td>2 (4.0%)</td>" in baseline


def test_one_named_model_keeps_its_row_and_unnamed_scopes_say_why_not() -> None:
    rep = _hand_report()
    rep["baseline"]["by_model"] = {"gpt2": rep["baseline"]["by_model"]["small"]}
    rep["baseline"]["by_route"] = {"(none)": rep["baseline"]["by_route"]["/v1/chat"]}
    md = render_markdown(rep)
    assert list(_md_rows(_section(md, "### By model"))) == ["gpt2"]
    assert "No request carries a route name (inferaudit.route)" in _section(md, "### By route")
    rep["baseline"]["by_model"] = {"(unknown)": {"requests": 120}}
    rep["baseline"]["by_route"] = {}
    md = render_markdown(rep)
    assert "| model |" not in md and "| route |" not in md
    assert "No request carries a model name (gen_ai.request.model)" in md
    # a kernel trace alone has no request: no breakdown and no excuse for one
    assert "### By" not in render_markdown({"baseline": {"overall": {"requests": 0}}})
    assert "### By" not in render_markdown({})


def test_many_scopes_are_capped_and_the_rest_counted() -> None:
    rep = _hand_report()
    n = _fmt.MAX_SCOPE_ROWS + 3
    rep["baseline"]["by_route"] = {f"/r{i}": _scope(i + 1, 0, 1.0, 2.0, 3.0, 1e-6)
                                   for i in range(n)}
    section = _section(render_markdown(rep), "### By route")
    assert len(_md_rows(section)) == _fmt.MAX_SCOPE_ROWS
    assert "/r0" not in _md_rows(section) and f"/r{n - 1}" in _md_rows(section)
    assert "3 more routes (6 requests) are in the JSON report, baseline.by_route." in section


# --- from an analysis -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def analysed() -> dict:
    """Two models on two routes; "big" streams (TTFT, TPOT) and fails 2 of its 12 requests."""
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA A10G", gpu_count=1, service_name="svc")
    for i in range(12):
        t = T0 + i * 100 * MS
        r = db.request(t, t + (40 + i) * MS, request_model="big", route="/v1/chat",
                       input_tokens=100, output_tokens=20, ttft_ns=(10 + i) * MS,
                       tpot_ns=2 * MS, status_code=2 if i < 2 else 0)
        db.batch(t, t + 30 * MS, [r], request_model="big", device_time_ns=30 * MS)
    for i in range(8):
        t = T0 + i * 100 * MS + 50 * MS
        r = db.request(t, t + 10 * MS, request_model="small", route="/v1/embed",
                       input_tokens=10, output_tokens=1)
        db.batch(t, t + 5 * MS, [r], request_model="small", device_time_ns=5 * MS)
    rep = analyze_connection(db.con)
    return json.loads(json.dumps(rep, default=str))


def test_analysed_report_tables_carry_the_json_figures(analysed) -> None:
    b = analysed["baseline"]
    assert set(b["by_model"]) == {"big", "small"} and set(b["by_route"]) == {"/v1/chat",
                                                                           "/v1/embed"}
    md = render_markdown(analysed)
    models = _md_rows(_section(md, "### By model"))
    routes = _md_rows(_section(md, "### By route"))
    for rows, scopes in ((models, b["by_model"]), (routes, b["by_route"])):
        for name, s in scopes.items():
            assert rows[name]["requests"] == _fmt.num(s["requests"])
            assert rows[name]["errors"] == _fmt.errors_text(s)
            assert rows[name]["latency p95"] == _fmt.ms(s["latency_ms"]["p95"])
            assert rows[name]["TTFT p95"] == _fmt.ms(s["ttft_ms"]["p95"])
            assert rows[name]["time/output token p50"] == _fmt.ms(s["tpot_ms"]["p50"])
            assert rows[name]["cost/req (bill)"] == _fmt.usd(s["cost_per_request_usd"])
    assert models["big"]["errors"] == "2 (16.7%)" and models["small"]["errors"] == "0 (0.0%)"
    assert models["big"]["TTFT p95"] != "n/a" and models["small"]["TTFT p95"] == "n/a"
    assert models["big"]["device utilisation"] == _fmt.pct(b["by_model"]["big"]
                                                           ["device_utilization"])
    rows = dict(_fmt.baseline_rows(analysed))
    o = b["overall"]
    assert o["ttft_ms"]["n"] > 0
    assert rows["TTFT (time to first token)"] == (
        f"p50 {_fmt.ms(o['ttft_ms']['p50'])}, p95 {_fmt.ms(o['ttft_ms']['p95'])}, p99 "
        f"{_fmt.ms(o['ttft_ms']['p99'])} ({o['ttft_ms']['n']} requests)")
    assert rows["errors"] == "2 (10.0%)"
    if "error_latency_ms" in o:  # the analyzer keeps the failed requests' latency apart
        assert rows["latency of failed requests"] == _fmt.failed_latency_text(
            o["error_latency_ms"])
        assert models["big"]["failed latency p95"] == _fmt.ms(
            b["by_model"]["big"]["error_latency_ms"]["p95"])
    assert rows["cost per 1k tokens (input + output)"] == _fmt.usd(
        o["cost_usd"] / ((o["input_tokens"] + o["output_tokens"]) / 1000))
    html = render_html(analysed)
    assert "<td>/v1/embed</td>" in html and "<h3>By route</h3>" in html


def _terminal(report: dict) -> str:
    console = Console(record=True, width=160, color_system=None)
    render_terminal(report, console)
    return console.export_text()


def test_terminal_summary_has_per_route_and_an_honest_token_cost(analysed) -> None:
    out = _terminal(analysed)
    assert "per route" in out and "per model" in out
    route_line = next(ln for ln in out.splitlines() if "/v1/embed" in ln)
    assert "0 (0.0%)" in route_line and " 8 " in route_line
    assert "per 1k tokens (input + output)" in out and " out $" not in out
    assert "errors 2 (10.0%)" in out
    # a route name holding rich markup is printed as it is, not parsed (or raised on)
    rep = json.loads(json.dumps(analysed))
    rep["baseline"]["by_route"]["/v1/[/x]"] = rep["baseline"]["by_route"].pop("/v1/embed")
    assert "/v1/[/x]" in _terminal(rep)


def test_terminal_names_the_one_model_and_says_ttft_was_not_measured(analysed) -> None:
    rep = json.loads(json.dumps(analysed))
    b = rep["baseline"]
    b["by_model"] = {"big": b["by_model"]["big"]}
    b["by_route"] = {"/v1/chat": b["by_route"]["/v1/chat"]}
    for k in ("ttft_ms", "tpot_ms"):
        b["overall"][k] = {"n": 0, "p50": None, "p95": None, "p99": None}
    streamed = b["overall"]["streamed_requests"] = 4  # streamed, with no first token recorded
    out = _terminal(rep)
    assert "baseline (overall: model big)" in out
    assert "per route" not in out and "per model" not in out  # one scope: the overall table
    assert (f"TTFT and time per output token: not measured ({streamed} streamed requests, none "
            "with a first-token time") in out


def test_why_ttft_is_missing_is_said_as_precisely_as_the_report_allows() -> None:
    assert _fmt.not_measured_text(None) == "not measured (no request carries a first-token time)"
    assert _fmt.not_measured_text(0) == "not measured (no streamed requests)"
    assert _fmt.not_measured_text(3).startswith(
        "not measured (3 streamed requests, none with a first-token time")
    rows = dict(_fmt.baseline_rows({"baseline": {"overall": {
        "requests": 5, "ttft_ms": {"n": 0}, "tpot_ms": {"n": 0}, "streamed_requests": 0}}}))
    assert rows["TTFT (time to first token)"] == "not measured (no streamed requests)"


def test_report_cli_rerenders_a_saved_report_json(analysed, tmp_path, capsys) -> None:
    src = tmp_path / "report.json"
    src.write_text(json.dumps(analysed), encoding="utf-8")
    md, html = tmp_path / "out.md", tmp_path / "out.html"
    assert report_main(["--from-json", str(src), "--md", str(md), "--html", str(html)]) == 0
    assert md.read_text(encoding="utf-8") == render_markdown(analysed)
    assert "<h3>By model</h3>" in html.read_text(encoding="utf-8")
    assert report_main(["--from-json", str(src), str(src), "--md", str(md)]) == 2
    assert report_main(["--md", str(md)]) == 2
    (tmp_path / "plan.json").write_text("[1, 2]", encoding="utf-8")
    assert report_main(["--from-json", str(tmp_path / "plan.json"), "--md", str(md)]) == 2
    (tmp_path / "torn.json").write_text('{"baseline": {', encoding="utf-8")
    assert report_main(["--from-json", str(tmp_path / "torn.json"), "--md", str(md)]) == 2
    err = capsys.readouterr().err
    assert "one of the two" in err and "not a report JSON" in err
    # edited by hand (or another version's): a named error, not an internal one
    edited = json.loads(json.dumps(analysed))
    edited["roadmap"] = [{"title": "x"}]
    (tmp_path / "edited.json").write_text(json.dumps(edited), encoding="utf-8")
    assert report_main(["--from-json", str(tmp_path / "edited.json"), "--md", str(md)]) == 2
    err = capsys.readouterr().err
    assert "edited.json: not a report this version can render (KeyError" in err


def test_the_latency_plot_covers_the_successful_requests_as_the_percentiles_do() -> None:
    from inferaudit_analyzer.report.data import plot_data
    from inferaudit_analyzer.views import create_views

    db = FixtureDb()
    db.resource(1)
    for i in range(4):
        db.request(T0 + i * 1000 * MS, T0 + i * 1000 * MS + 100 * MS)
    db.request(T0, T0 + 1 * MS, error_type="Timeout", status_code=2)  # a fast failure
    create_views(db.con)
    plot = plot_data(db.con)
    assert plot["requests"] == 4
    assert min(ms for _, ms in plot["latency_ms_quantiles"]) == pytest.approx(100.0)
