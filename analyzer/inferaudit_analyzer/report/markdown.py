"""The Markdown audit report: the same sections as the HTML one, plots as inline SVG data URIs
(viewers that block data URIs still show every number in the tables)."""

from __future__ import annotations

import base64
from typing import Any

from inferaudit_analyzer.report import _fmt as f
from inferaudit_analyzer.report.plots import all_plots


def _cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...] | list[str], rows: list[tuple[str, ...]]) -> list[str]:
    out = ["| " + " | ".join(_cell(h) for h in header) + " |",
           "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# InferAudit report", "",
             f"Generated {report.get('generated_at')}; schema `{report.get('schema')}`; "
             f"{f.price_line(report)}.", "",
             "## Executive summary", ""]
    lines += [f"- {s}" for s in f.executive_summary(report)]
    workload = f.workload_rows(report)
    if workload:
        lines += ["", "## Workload replayed", ""]
        lines += _table(("what", "value"), workload)
    lines += ["", "## Baseline (measured)", ""]
    lines += _table(("metric", "value"), f.baseline_rows(report))
    for title, header, rows, notes in f.scope_sections(report):
        lines += ["", f"### {title}", ""]
        if header is not None:
            lines += _table(header, rows)
            lines += [""] if notes else []
        lines += [f"_{n}_" if header is not None else n for n in notes]
    bn = report.get("bottleneck") or {}
    lines += ["", "## Bottleneck verdict", "",
              f"**{bn.get('layer')}** layer, case `{bn.get('case')}`, confidence "
              f"{f.num(bn.get('confidence'), 2)}. {bn.get('detail') or ''}", ""]
    decided = f.decided_rows(bn)
    if decided:
        lines += _table(("signal", "value vs threshold"), decided)
    lines += ["", "## Ranked roadmap", ""]
    road = report.get("roadmap") or []
    roi = report.get("roi") or {}
    if road:
        lines += [f"> **Caution:** {w}" for w in f.roi_warnings(report)]
        lines += _table(f.ROADMAP_HEADER, f.roadmap_rows(report))
        lines += ["", f"Rank rule: {roi.get('rank_rule', '')}.", ""]
        for r in road:
            lines += [f"### #{r['rank']} `{r['intervention']}`: {r.get('title')}", "",
                      f"Parameters: `{r.get('params')}`", "", f"Risk {f.risk(r)}:"]
            lines += [f"- {x}" for x in r["risk"]["reasons"]]
            lines += ["", "Assumptions:"] + [f"- {a}" for a in r.get("assumptions") or []] + [""]
        swap = roi.get("avoided_model_swap") or {}
        if swap:
            lines += [f.swap_line(swap), ""]
        not_proposed = f.not_proposed_line(roi)
        if not_proposed:
            lines += [not_proposed + ".", ""]
    else:
        lines += [roi.get("error") or "No intervention has evidence in this input.", ""]
    v = report.get("validation")
    if v:
        lines += [f"## Projection check: {v.get('title') or v.get('intervention')} "
                  f"(`{v.get('intervention')}`) applied for real", "",
                  f"Parameters `{v.get('params')}`; target: measured within "
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
                  f"Source `{fit.get('source')}`; {fit.get('formula')}; coefficients "
                  f"`{fit.get('coefficients_ns')}`; R2 {f.num(fit.get('r2'))}, MAPE "
                  f"{f.pct(fit.get('mape_ratio'))}; batch sizes seen "
                  f"{fit.get('batch_sizes_seen')}.", ""]
        lines += [f"- {a}" for a in fit.get("assumptions") or []]
        base = roi.get("baseline") or {}
        slo = roi.get("slo") or {}
        lines += ["", f"Replay check: today's serving replayed gives p95 "
                  f"{f.ms((base.get('replayed') or {}).get('latency_ms', {}).get('p95'))} against "
                  f"{f.ms(base.get('measured_p95_ms'))} measured "
                  f"({f.pct(base.get('replay_p95_error_ratio'))} off); SLO p95 "
                  f"{f.ms(slo.get('p95_ms'))} ({slo.get('source')})."]
        lines.append("")
    lines += ["## Plots", ""]
    for name, svg in all_plots(report).items():
        b64 = base64.b64encode(svg.encode("utf-8")).decode("ascii")
        lines += [f"![{name}](data:image/svg+xml;base64,{b64})", ""]
    lines += ["## Findings with evidence", ""]
    for fd in report.get("findings") or []:
        ev = ", ".join(f"{k}={v}" for k, v in (fd.get("evidence") or {}).items())
        lines += [f"- **[{fd.get('severity')}] `{fd.get('id')}`** ({fd.get('layer')}) "
                  f"{fd.get('title')}. {fd.get('detail') or ''} Evidence: {ev}"]
    if not report.get("findings"):
        lines.append("No finding fired.")
    inp = report.get("input") or {}
    lines += ["", "## Input", "",
              f"{f.num(inp.get('spans'))} spans, {f.num(inp.get('requests'))} requests, "
              f"{f.num(inp.get('batches'))} model calls; {f.num(inp.get('errors_total'))} "
              "unreadable parts.", ""]
    return "\n".join(lines)
