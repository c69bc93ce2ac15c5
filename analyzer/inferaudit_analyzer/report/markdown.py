"""The Markdown audit report: the same sections as the HTML one, plots as inline SVG data URIs
(viewers that block data URIs still show every number in the tables).

Every string from the input (model and route names, kernel names, file paths, finding texts)
goes through :func:`_text` or :func:`_code`: most Markdown previews pass raw HTML through, and
a ``*`` or ``_`` in a kernel name would otherwise turn into emphasis.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from inferaudit_analyzer.report import _fmt as f
from inferaudit_analyzer.report.plots import all_plots

# Backslash-escaped: the characters that start emphasis, code, links, strikethrough or a table
# cell, and the backslash itself. "_" only where it can start or end emphasis, i.e. not between
# two letters or digits (CommonMark: intraword "_" is literal), so snake_case stays readable.
_MD_SPECIAL = re.compile(r"[\\`*\[\]~|]|(?<![^\W_])_|_(?![^\W_])")
_HTML = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_NEWLINES = re.compile(r"[\r\n]+")


def _text(s: Any) -> str:
    """``s`` as literal Markdown text on one line: no raw HTML, no emphasis, links or code."""
    one_line = _NEWLINES.sub(" ", str(s))
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), one_line).translate(_HTML)


def _code(s: Any) -> str:
    """``s`` as an inline code span: its fence is longer than any run of backticks inside (raw
    HTML is not read inside a code span, and escapes are not either, so none are added)."""
    body = _NEWLINES.sub(" ", str(s))
    runs = re.findall(r"`+", body)
    fence = "`" * (max((len(r) for r in runs), default=0) + 1)
    if body.startswith("`") or body.endswith("`"):
        body = f" {body} "
    return f"{fence}{body}{fence}"


def _table(header: tuple[str, ...] | list[str], rows: list[tuple[str, ...]]) -> list[str]:
    out = ["| " + " | ".join(_text(h) for h in header) + " |",
           "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_text(c) for c in r) + " |" for r in rows]
    return out


def _items(xs: Any) -> list[str]:
    return [f"- {_text(x)}" for x in xs or []]


def render_markdown(report: dict[str, Any], from_json: bool = False) -> str:
    """The whole report as Markdown; ``from_json``: a saved report re-rendered (the hint for a
    missing price says to analyse the traces again)."""
    lines = ["# InferAudit report", "",
             f"Generated {_text(report.get('generated_at'))}; schema "
             f"{_code(report.get('schema'))}; {_text(f.price_line(report, from_json))}.", "",
             "## Executive summary", ""]
    lines += _items(f.executive_summary(report))
    workload = f.workload_rows(report)
    if workload:
        lines += ["", "## Workload replayed", ""]
        lines += _table(("what", "value"), workload)
    lines += ["", "## Baseline (measured)", ""]
    lines += _table(("metric", "value"), f.baseline_rows(report))
    for title, header, rows, notes in f.scope_sections(report):
        lines += ["", f"### {_text(title)}", ""]
        if header is not None:
            lines += _table(header, rows)
            lines += [""] if notes else []
        lines += [f"_{_text(n)}_" if header is not None else _text(n) for n in notes]
    bn = report.get("bottleneck") or {}
    lines += ["", "## Bottleneck verdict", "",
              f"**{_text(bn.get('layer'))}** layer, case {_code(bn.get('case'))}, confidence "
              f"{f.num(bn.get('confidence'), 2)}. {_text(bn.get('detail') or '')}", ""]
    decided = f.decided_rows(bn)
    if decided:
        lines += _table(("signal", "value vs threshold"), decided)
    lines += ["", "## Ranked roadmap", ""]
    road = report.get("roadmap") or []
    roi = report.get("roi") or {}
    if road:
        for w in f.roi_warnings(report):  # a blockquote each, closed by a blank line: a line
            lines += [f"> **Caution:** {_text(w)}", ""]  # after one would continue it lazily
        lines += _table(f.ROADMAP_HEADER, f.roadmap_rows(report))
        lines += ["", f"Rank rule: {_text(roi.get('rank_rule', ''))}.", "",
                  f"{_text(f.INTERVALS_NOTE)}.", ""]
        for r in road:
            lines += [f"### #{_text(r['rank'])} {_code(r['intervention'])}: "
                      f"{_text(r.get('title'))}", "",
                      f"Parameters: {_code(r.get('params'))}", "", f"Risk {_text(f.risk(r))}:"]
            lines += _items(r["risk"]["reasons"])
            lines += ["", "Assumptions:", *_items(r.get("assumptions")), ""]
        swap = roi.get("avoided_model_swap") or {}
        if swap:
            lines += [_text(f.swap_line(swap)), ""]
        not_proposed = f.not_proposed_line(roi)
        if not_proposed:
            lines += [_text(not_proposed) + ".", ""]
    else:
        lines += [_text(roi.get("error") or "No intervention has evidence in this input."), ""]
    v = report.get("validation")
    if v:
        lines += [f"## Projection check: {_text(v.get('title') or v.get('intervention'))} "
                  f"({_code(v.get('intervention'))}) applied for real", "",
                  f"Parameters {_code(v.get('params'))}; target: measured within "
                  f"{f.pct(v.get('target_diff_ratio'))} of projected.", ""]
        lines += _table(("metric", "baseline (measured)", "projected", "measured after", "diff",
                         "within target"),
                        [(r["metric"], f.check_value(r, "baseline_measured"),
                          f.check_value(r, "projected"), f.check_value(r, "measured"),
                          "n/a" if r.get("diff_ratio") is None else f"{r['diff_ratio']:+.1%}",
                          f.check_verdict(r)) for r in v.get("rows") or []])
        lines.append("")
    fit = roi.get("fit") or {}
    if fit:
        lines += ["## ROI model: fitted service curve", "",
                  f"Source {_code(fit.get('source'))}; {_text(fit.get('formula'))}; coefficients "
                  f"{_code(fit.get('coefficients_ns'))}; R2 {f.num(fit.get('r2'))}, MAPE "
                  f"{f.pct(fit.get('mape_ratio'))}; batch sizes seen "
                  f"{_text(fit.get('batch_sizes_seen'))}.", ""]
        lines += _items(fit.get("assumptions"))
        base = roi.get("baseline") or {}
        slo = roi.get("slo") or {}
        lines += ["", f"Replay check: today's serving replayed gives p95 "
                  f"{f.ms((base.get('replayed') or {}).get('latency_ms', {}).get('p95'))} against "
                  f"{f.ms(base.get('measured_p95_ms'))} measured "
                  f"({f.pct(base.get('replay_p95_error_ratio'))} off); SLO p95 "
                  f"{f.ms(slo.get('p95_ms'))} ({_text(slo.get('source'))})."]
        lines.append("")
    lines += ["## Plots", ""]
    for name, svg in all_plots(report).items():
        b64 = base64.b64encode(svg.encode("utf-8")).decode("ascii")
        lines += [f"![{name}](data:image/svg+xml;base64,{b64})", ""]
    lines += ["## Findings with evidence", ""]
    for fd in report.get("findings") or []:
        ev = ", ".join(f"{k}={v}" for k, v in (fd.get("evidence") or {}).items())
        lines += [f"- **\\[{_text(fd.get('severity'))}\\] {_code(fd.get('id'))}** "
                  f"({_text(fd.get('layer'))}) {_text(fd.get('title'))}. "
                  f"{_text(fd.get('detail') or '')} Evidence: {_text(ev)}"]
    if not report.get("findings"):
        lines.append("No finding fired.")
    inp = report.get("input") or {}
    lines += ["", "## Input", "",
              f"{f.num(inp.get('spans'))} spans, {f.num(inp.get('requests'))} requests, "
              f"{f.num(inp.get('batches'))} model calls; {f.num(inp.get('errors_total'))} "
              "unreadable parts.", ""]
    return "\n".join(lines)
