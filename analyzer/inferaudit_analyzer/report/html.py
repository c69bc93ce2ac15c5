"""The self-contained HTML audit report: one file, inline CSS and SVG, no script, no network.

Sections: executive summary, baseline (overall, per model, per route), bottleneck verdict,
ranked roadmap (with risk reasons, assumptions and intervals), the ROI model's fit, findings
with their evidence, plots, inputs.
Every string from the input is escaped.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from inferaudit_analyzer.report import _fmt as f
from inferaudit_analyzer.report.plots import all_plots

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}.scroll{overflow-x:auto}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.sev-high{color:#b00020;font-weight:bold}.sev-medium{color:#b36b00}
.sev-low{color:#555}.plots{display:flex;flex-wrap:wrap;gap:1em}.plot{border:1px solid #eee}
.note{color:#555;font-size:.9em}.warn{color:#8a4b00;font-weight:600}
code{background:#f6f6f6;padding:0 .2em}
details{margin:.3em 0}summary{cursor:pointer}
"""


def _table(header: tuple[str, ...] | list[str], rows: list[tuple[str, ...]]) -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    # wide tables (the roadmap) scroll inside their own box instead of overflowing the page
    return (f"<div class=\"scroll\"><table><thead><tr>{h}</tr></thead><tbody>{body}</tbody>"
            "</table></div>")


def _kv(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>"
                               for k, v in rows) + "</table>"


def _findings(report: dict[str, Any]) -> str:
    out = []
    for fd in report.get("findings") or []:
        sev = escape(str(fd.get("severity")))
        ev = json.dumps(fd.get("evidence") or {}, indent=1, default=str)
        scope = fd.get("scope") or {}
        out.append(
            f"<details><summary><span class='sev-{sev}'>[{sev}]</span> "
            f"<code>{escape(fd.get('id', ''))}</code> ({escape(str(fd.get('layer')))}) "
            f"{escape(fd.get('title', ''))}{' ' + escape(str(scope)) if scope else ''}"
            f"</summary><p>{escape(fd.get('detail') or '')}</p><pre>{escape(ev)}</pre></details>")
    return "".join(out) or "<p>No finding fired.</p>"


def _roadmap(report: dict[str, Any]) -> str:
    road = report.get("roadmap") or []
    roi = report.get("roi") or {}
    if not road:
        return f"<p>{escape(roi.get('error') or 'No intervention has evidence in this input.')}</p>"
    warn = "".join(f"<p class='warn'>{escape(w)}</p>" for w in f.roi_warnings(report))
    parts = [warn, _table(f.ROADMAP_HEADER, f.roadmap_rows(report)),
             f"<p class='note'>Rank rule: {escape(roi.get('rank_rule', ''))}. Bill = window hours "
             "x replicas x $/replica-hour / requests; it only falls when fewer replicas carry the "
             "load within the SLO (saving kind <b>bill</b>); otherwise freed device time is "
             f"<b>capacity</b>. {escape(f.INTERVALS_NOTE)}.</p>"]
    for r in road:
        risks = "".join(f"<li>{escape(x)}</li>" for x in r["risk"]["reasons"])
        assumptions = "".join(f"<li>{escape(x)}</li>" for x in r.get("assumptions") or [])
        params = escape(json.dumps(r.get("params"), default=str))
        parts.append(
            f"<details><summary>#{r['rank']} <code>{escape(r['intervention'])}</code> "
            f"{escape(r.get('title', ''))}</summary><p>Parameters: <code>{params}</code></p>"
            f"<p>Risk {f.risk(r)}:</p><ul>{risks}</ul>"
            f"<p>Assumptions:</p><ul>{assumptions}</ul></details>")
    swap = roi.get("avoided_model_swap") or {}
    if swap:
        parts.append(f"<p>{escape(f.swap_line(swap))}</p>")
    not_proposed = f.not_proposed_line(roi)
    if not_proposed:
        parts.append(f"<p class='note'>{escape(not_proposed)}</p>")
    return "".join(parts)


def _fit(report: dict[str, Any]) -> str:
    roi = report.get("roi") or {}
    fit = roi.get("fit") or {}
    if not fit:
        return "<p>No fit.</p>"
    base = roi.get("baseline") or {}
    rows = [("source", str(fit.get("source"))), ("formula", str(fit.get("formula"))),
            ("coefficients (ns)", json.dumps(fit.get("coefficients_ns"))),
            ("points", f.num(fit.get("n_points"))),
            ("batch sizes seen", str(fit.get("batch_sizes_seen"))),
            ("R2", f.num(fit.get("r2"))), ("MAPE", f.pct(fit.get("mape_ratio"))),
            ("anchor scale", f.num(fit.get("anchor_scale"))),
            ("MAPE on the measured calls", f.pct(fit.get("span_mape_ratio"))),
            ("replayed baseline p95", f.ms(((base.get("replayed") or {}).get("latency_ms")
                                              or {}).get("p95"))),
            ("measured baseline p95", f.ms(base.get("measured_p95_ms"))),
            ("replay p95 error", f.pct(base.get("replay_p95_error_ratio"))),
            ("SLO p95", f"{f.ms((roi.get('slo') or {}).get('p95_ms'))} "
                        f"({(roi.get('slo') or {}).get('source')})")]
    assumptions = "".join(f"<li>{escape(a)}</li>" for a in fit.get("assumptions") or [])
    return _kv(rows) + (f"<ul>{assumptions}</ul>" if assumptions else "")


def _validation(report: dict[str, Any]) -> str:
    v = report.get("validation")
    if not v:
        return ""
    rows = [(r["metric"], f.check_value(r, "baseline_measured"), f.check_value(r, "projected"),
             f.check_value(r, "measured"),
             "n/a" if r.get("diff_ratio") is None else f"{r['diff_ratio']:+.1%}",
             f.check_verdict(r)) for r in v.get("rows") or []]
    return (f"<h2 id='validation'>Projection check: "
            f"{escape(str(v.get('title') or v.get('intervention')))} "
            f"(<code>{escape(str(v.get('intervention')))}</code>) "
            "applied for real</h2>"
            f"<p>Parameters <code>{escape(json.dumps(v.get('params'), default=str))}</code>; "
            f"target: measured within {f.pct(v.get('target_diff_ratio'))} of projected.</p>"
            + _table(("metric", "baseline (measured)", "projected", "measured after", "diff",
                      "within target"), rows))


def _workload(report: dict[str, Any]) -> str:
    rows = f.workload_rows(report)
    return f"<h2 id='workload'>Workload replayed</h2>{_kv(rows)}" if rows else ""


def _baseline(report: dict[str, Any]) -> str:
    """The overall baseline, then one table per model and per route."""
    parts = [_kv(f.baseline_rows(report))]
    for title, header, rows, notes in f.scope_sections(report):
        parts.append(f"<h3>{escape(title)}</h3>")
        if header is not None:
            parts.append(_table(header, rows))
        parts += [f"<p class='note'>{escape(n)}</p>" for n in notes]
    return "".join(parts)


def render_html(report: dict[str, Any], from_json: bool = False) -> str:
    """The whole report as one HTML string; ``from_json``: a saved report re-rendered (the
    hint for a missing price says to analyse the traces again)."""
    plots = all_plots(report)
    bn = report.get("bottleneck") or {}
    decided = f.decided_rows(bn)
    summary = "".join(f"<li>{escape(s)}</li>" for s in f.executive_summary(report))
    inp = report.get("input") or {}
    errs = inp.get("errors") or []
    err_html = "".join(f"<li>{escape(str(e.get('file')))} {escape(str(e.get('position')))}: "
                       f"{escape(str(e.get('message')))}</li>" for e in errs[:50])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>InferAudit report</title><style>{CSS}</style></head>
<body>
<h1>InferAudit: where the cost and latency of this inference come from</h1>
<p class="note">Generated {escape(str(report.get('generated_at')))}; schema
{escape(str(report.get('schema')))}; {escape(f.price_line(report, from_json))}.</p>
<h2 id="summary">Executive summary</h2><ul>{summary}</ul>
{_workload(report)}
<h2 id="baseline">Baseline (measured)</h2>{_baseline(report)}
<h2 id="bottleneck">Bottleneck verdict</h2>
<p><b>{escape(str(bn.get('layer')))}</b> layer, case <code>{escape(str(bn.get('case')))}</code>,
confidence {escape(f.num(bn.get('confidence'), 2))}. {escape(str(bn.get('detail') or ''))}</p>
{_table(('signal', 'value vs threshold'), decided) if decided else ''}
<h2 id="roadmap">Ranked roadmap</h2>{_roadmap(report)}
{_validation(report)}
<h2 id="plots">Plots</h2><div class="plots">{''.join(plots.values())}</div>
<h2 id="roi-model">ROI model: fitted service curve</h2>{_fit(report)}
<h2 id="findings">Findings with evidence</h2>{_findings(report)}
<h2 id="input">Input</h2>
<p>{escape(f.num(inp.get('spans')))} spans, {escape(f.num(inp.get('requests')))} requests,
{escape(f.num(inp.get('batches')))} model calls; {escape(f.num(inp.get('errors_total')))}
unreadable parts.</p>{'<ul>' + err_html + '</ul>' if err_html else ''}
</body></html>
"""
