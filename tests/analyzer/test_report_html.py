"""The HTML and Markdown reports: sections, plots, self-containment, and a real headless browser.

The report is built from a fixture database of an unbatched, queueing server (so the roadmap has
a batching item) through the same functions ``inferaudit report`` uses.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _analysis_fixtures import unbatched_db

from inferaudit_analyzer.analyze import analyze_connection
from inferaudit_analyzer.report.data import plot_data
from inferaudit_analyzer.report.html import render_html
from inferaudit_analyzer.report.markdown import render_markdown
from inferaudit_analyzer.report.plots import PLOT_NAMES
from inferaudit_analyzer.report_json import _clean
from inferaudit_analyzer.roi.interventions import Knobs
from inferaudit_analyzer.roi.model import roi_section

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report() -> dict:
    db = unbatched_db(n=80, gap_ms=30, service_ms=50, device_ms=45)
    con = db.con
    rep = analyze_connection(con)
    roi = roi_section(con, rep, Knobs(max_batch=8), bootstrap=20)
    rep["roadmap"] = roi.pop("roadmap", [])
    rep["roi"] = roi
    rep["plots"] = plot_data(con)
    return _clean(rep)


def test_json_gains_the_roadmap(report) -> None:
    assert report["roadmap"], report["roi"]
    for item in report["roadmap"]:
        for key in ("rank", "intervention", "risk", "interval", "assumptions", "evidence"):
            assert key in item
        assert item["projected"]["cost_per_request_usd"] is not None
        assert item["projected"]["latency_ms"]["p95"] > 0
        assert item["assumptions"]
    assert report["roadmap"][0]["intervention"] == "continuous_batching"
    fit = report["roi"]["fit"]
    assert fit["mape_ratio"] < 0.01  # the fixture's calls follow one exact line
    assert fit["source"] == "spans+roofline_prior"  # every call had one request


def test_html_is_self_contained_with_every_section_and_plot(report) -> None:
    html = render_html(report)
    for anchor in ("summary", "baseline", "bottleneck", "roadmap", "plots", "findings"):
        assert f'id="{anchor}"' in html
    for name in PLOT_NAMES:
        m = re.search(rf'<svg class="plot" data-plot="{name}".*?</svg>', html, re.S)
        assert m, f"plot {name} missing or empty"
        assert 'class="mark"' in m.group(0), f"plot {name} has no marks"
    assert "<script" not in html
    assert not re.search(r'(src|href)="https?:', html)
    assert "continuous_batching" in html


def test_untrusted_strings_are_escaped(report) -> None:
    evil = dict(report)
    evil["findings"] = [{"id": "x", "title": "<script>alert(1)</script>", "severity": "high",
                         "layer": "runtime", "evidence": {"k": "<b>"}, "detail": "", "scope": {}}]
    html = render_html(evil)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_markdown_has_tables_and_plots(report) -> None:
    md = render_markdown(report)
    assert "## Executive summary" in md and "## Ranked roadmap" in md
    assert "| rank | intervention |" in md
    for name in PLOT_NAMES:
        assert f"![{name}](data:image/svg+xml;base64," in md


def _chromium(path: Path, tmp: Path) -> tuple[str, str]:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr",
         "--v=0", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def _browser_problems(dom: str, stderr: str) -> list[str]:
    problems = [line for line in stderr.splitlines()
                if "CONSOLE" in line or "Uncaught" in line]
    for name in PLOT_NAMES:
        if f'data-plot="{name}"' not in dom:
            problems.append(f"plot {name} not in the rendered DOM")
    return problems


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package "
                                             "'chromium'); headless render check skipped")
def test_renders_in_headless_chromium_without_console_errors(report, tmp_path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    dom, err = _chromium(page, tmp_path)
    assert _browser_problems(dom, err) == []
    assert dom.count("<svg") >= len(PLOT_NAMES)
    # the same check catches a broken page: a script error and a missing plot
    bad = render_html(report).replace(
        "</body>", "<script>throw new Error('broken report')</script></body>")
    bad = re.sub(r'<svg class="plot" data-plot="cost_waterfall".*?</svg>', "", bad, flags=re.S)
    page.write_text(bad, encoding="utf-8")
    dom, err = _chromium(page, tmp_path)
    problems = _browser_problems(dom, err)
    assert any("Uncaught" in p for p in problems)
    assert any("cost_waterfall" in p for p in problems)


def test_projection_check_section_when_validated(report) -> None:
    rep = dict(report)
    rep["validation"] = {"intervention": "continuous_batching", "params": {"max_batch": 8},
                         "target_diff_ratio": 0.15,
                         "rows": [{"metric": "p95 latency (ms)", "unit": "ms",
                                   "baseline_measured": 900.0, "projected": 400.0,
                                   "measured": 430.0, "diff_ratio": 0.075,
                                   "within_target": True},
                                  {"metric": "cost per request (bill, USD)", "unit": "usd",
                                   "baseline_measured": 3.93e-06, "projected": 3.727e-06,
                                   "measured": 3.728e-06, "diff_ratio": 0.0003,
                                   "within_target": True}]}
    html, md = render_html(rep), render_markdown(rep)
    assert "id='validation'" in html and "+7.5%" in html
    assert "## Projection check: continuous_batching" in md and "+7.5%" in md
    for text in (html, md):  # money in fixed point, latency in ms, never 3.93e-06
        assert "$0.00000393" in text and "430.0 ms" in text and "e-06" not in text
    assert "id='validation'" not in render_html(report)


def test_roi_warnings_are_shown_beside_the_roadmap(report) -> None:
    # The fixture's replay reproduces its p95; its calls all have one length, so the only
    # warning is that the fit cannot split their time by tokens.
    assert [w for w in report["roi"]["warnings"] if "do not vary enough" not in w] == []
    rep = dict(report)
    rep["roi"] = {**report["roi"], "warnings": ["replay misses <today> by +140%"]}
    html, md = render_html(rep), render_markdown(rep)
    assert "class='warn'>replay misses &lt;today&gt; by +140%" in html
    assert "> **Caution:** replay misses &lt;today&gt; by +140%" in md
    # each caution a blockquote of its own, closed by a blank line: the next line (another
    # caution, the roadmap table's header) would otherwise continue its paragraph lazily
    two = dict(rep)
    two["roi"] = {**rep["roi"], "warnings": ["first", "second"]}
    lines = render_markdown(two).splitlines()
    at = lines.index("> **Caution:** first")
    assert lines[at + 1:at + 4] == ["", "> **Caution:** second", ""]
    assert lines[at + 4].startswith("| rank |")
    quiet = dict(report)
    quiet["roi"] = {**report["roi"], "warnings": []}
    assert "class='warn'" not in render_html(quiet)
    assert f"/{4}" in md and "/5" not in md.split("## Ranked roadmap")[1].split("##")[0]


def test_markdown_states_the_price_and_what_was_not_proposed(report) -> None:
    md = render_markdown(report)
    head = md.split("## Executive summary")[0]
    assert f"price {report['price']['source']}" not in head  # the sentence reads naturally
    assert "price " in head and str(report["price"]["source"]) in head
    if report["roi"].get("not_proposed"):
        assert "Not proposed: " in md
    assert "Replay check: today's serving replayed gives p95" in md


def test_money_is_never_in_scientific_notation() -> None:
    import re

    from inferaudit_analyzer.report import plots
    from inferaudit_analyzer.report._fmt import usd

    assert usd(6.379e-06) == "$0.00000638" and usd(0.0123) == "$0.012" and usd(1234.5) == "$1,234"
    tiny = {"roi": {"baseline": {"replayed": {"cost_per_request_usd": 6.4e-06,
                                              "busy_cost_per_request_usd": 2.3e-06}}},
            "roadmap": [{"intervention": "continuous_batching", "cumulative": {"projected": {
                "cost_per_request_usd": 4.7e-06, "busy_cost_per_request_usd": 1.3e-06}}}]}
    svg = plots.cost_waterfall(tiny)
    assert "USD per 1M requests" in svg and "$6.4" in svg and "$0.00000470" in svg
    assert not re.search(r"\de-0\d", svg)


def test_the_partial_last_bucket_is_drawn_at_its_own_width() -> None:
    import re

    from inferaudit_analyzer.report import plots

    rep = {"baseline": {"overall": {"device_utilization": 0.5}, "time_buckets": {
        "bucket_s": 10.0, "rows": [{"start_s": 0.0, "span_s": 10.0, "device_busy_ratio": 0.5},
                                   {"start_s": 10.0, "span_s": 2.0, "device_busy_ratio": 0.5}]}}}
    svg = plots.utilization_over_time(rep)
    widths = [float(w) for w in re.findall(r'<rect class="mark"[^>]* width="([0-9.]+)"', svg)]
    assert len(widths) == 2 and widths[1] == pytest.approx(widths[0] * 0.2, rel=0.02)


@pytest.mark.parametrize(("ceiling", "drawn"), [(0.5, True), (1.0, False), (None, False)])
def test_the_utilisation_chart_draws_the_ceiling_below_one(ceiling, drawn) -> None:
    # One thread on a two-core host: buckets at 0.48 are a saturated thread, which a 0-1 axis
    # with no mark at 0.5 showed as a half-idle device.
    from inferaudit_analyzer.report import plots

    rep = {"baseline": {"overall": {"device_utilization": 0.3,
                                    "device_utilization_ceiling": ceiling},
                        "time_buckets": {"bucket_s": 10.0, "rows": [
                            {"start_s": 0.0, "span_s": 10.0, "device_busy_ratio": 0.48}]}}}
    svg = plots.utilization_over_time(rep)
    assert ("ceiling 0.50: the most its model calls could use" in svg) is drawn
    assert svg.count("<polyline") == 1 + drawn
