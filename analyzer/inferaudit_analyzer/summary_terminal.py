"""A readable terminal summary of the report dict (rich); renders only, computes nothing.

Every string from the input (file names, parse errors, finding texts and evidence, kernel
names) is markup-escaped before rich reads it: a "[/x]" in a kernel name raised MarkupError
and a "[bold]" was swallowed.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from inferaudit_analyzer.report._fmt import (
    NO_REQUESTS,
    REQUEST_LESS_NOTE,
    UNNAMED_SCOPES,
    cost_per_1k_tokens,
    errors_text,
    not_measured_text,
    num,
    ordered_scopes,
    pct,
    price_line,
    request_less,
    request_less_cost,
    request_less_route_note,
    usd,
    utilisation,
)

_SEV_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim"}


def _fmt(x: Any, unit: str = "", digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        if unit == "$":
            return usd(x)
        return f"{x:,.{digits}f}{unit}"
    return f"{x}{unit}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def render(report: dict[str, Any], console: Console | None = None) -> None:
    """Print the summary: input, baseline, cost, bottleneck, findings, kernels."""
    console = console or Console()
    inp = report["input"]
    cov = inp["coverage"]
    console.print(Panel.fit(
        f"[bold]InferAudit[/bold]  schema {escape(str(report['schema']))}\n"
        f"{len(inp['files'])} file(s), {inp['spans']:,} spans, {inp['requests']:,} requests, "
        f"{inp['batches']:,} model calls, coverage {_pct(cov['ratio'])}, "
        f"window {_fmt(report['window']['duration_s'], ' s')}",
        title="input"))
    for sk in inp.get("skipped") or []:
        console.print(f"[dim]not read[/dim] {escape(str(sk.get('file')))}: "
                      f"{escape(str(sk.get('reason')))}")
    for err in inp["errors"][:10]:
        pos = f":{err['position']}" if err.get("position") not in (None, "") else ""
        console.print(f"[yellow]skipped[/yellow] {escape(str(err.get('file')) + pos)}: "
                      f"{escape(str(err.get('message')))}")
    total = inp.get("errors_total", len(inp["errors"]))
    if total > 10:
        console.print(f"[yellow]… and {total - 10} more unreadable parts[/yellow]")

    o = report["baseline"]["overall"]
    # the requested models: a request-less row (a workload of its own beside them) does not make
    # the requests' figures those of several models
    models = [k for k, v in (report["baseline"].get("by_model") or {}).items()
              if not request_less(v)]
    one = models[0] if len(models) == 1 and models[0] not in UNNAMED_SCOPES else None
    title = "baseline (overall)" if one is None else f"baseline (overall: model {escape(one)})"
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("p50", justify="right")
    t.add_column("p95", justify="right")
    t.add_column("p99", justify="right")
    for key, label in (("latency_ms", "latency ms"), ("ttft_ms", "TTFT ms"),
                       ("tpot_ms", "time/output token ms"), ("queue_ms", "queue ms"),
                       ("error_latency_ms", "failed requests ms")):
        m = o.get(key) or {}
        if m.get("n"):
            t.add_row(label, _fmt(m.get("p50")), _fmt(m.get("p95")), _fmt(m.get("p99")))
    if not o["requests"]:
        console.print("[dim]no request spans in the input: kernel-trace analysis only[/dim]")
    else:
        _print_baseline(console, report, t)
    _print_verdict(console, report)


def _print_baseline(console: Console, report: dict[str, Any], t: Table) -> None:
    o = report["baseline"]["overall"]
    console.print(t)
    bs = o["batch_size"]
    console.print(
        f"throughput {_fmt(o['throughput_rps'], ' req/s')}, "
        f"{_fmt(o['tokens_per_s']['total'], ' tok/s', 1)}; "
        f"concurrency {_fmt(o['concurrency_mean'])} (max {o['concurrency']['max']}); "
        f"batch size p50 {_fmt(bs['p50'])} (mean {_fmt(bs['mean'])}); "
        f"device utilisation {utilisation(o)}")
    console.print(
        f"cost/request {_fmt(o.get('cost_per_request_usd'), '$')} (busy-only floor "
        f"{_fmt(o.get('busy_cost_per_request_usd'), '$')}); per 1k tokens (input + output) "
        f"{usd(cost_per_1k_tokens(o))}; errors {errors_text(o)}\n"
        f"[dim]{escape(price_line(report))}[/dim]")
    if not any((o.get(k) or {}).get("n") for k in ("ttft_ms", "tpot_ms")):
        console.print("[dim]TTFT and time per output token: "
                      f"{not_measured_text(o.get('streamed_requests'))}[/dim]")
    for kind in ("model", "route"):
        scopes = report["baseline"].get(f"by_{kind}") or {}
        if len(scopes) > 1:  # one scope is the overall table again
            console.print(_scope_table(kind, scopes, report))


def _scope_table(kind: str, scopes: dict[str, Any], report: dict[str, Any]) -> Table:
    """Per model or per route, compactly: the busiest first, at most MAX_SCOPE_ROWS with
    requests (``ordered_scopes``: a request-less row is placed by its device utilisation and
    always shown). A model without requests (``requests_observed`` false) shows dashes for the
    request figures, its calls' whole cost and bill share in the cost column, and its device
    utilisation, which the per-model column carries for every model."""
    shown, rest = ordered_scopes(scopes)
    items = shown + rest
    ttft = any(((m.get("ttft_ms") or {}).get("n") or 0) > 0 for _, m in items)
    device = any("device_utilization" in m for _, m in items)
    t = Table(title=f"per {kind}", header_style="bold")
    cols = [kind, "requests", "errors", "p50 ms", "p95 ms"] + (["TTFT p95 ms"] if ttft else [])
    for col in [*cols, "cost/request", *(["device util"] if device else [])]:
        t.add_column(col, justify="left" if col == kind else "right")
    for name, m in shown:
        lat = m.get("latency_ms") or {}
        row = [num(m.get("requests")), errors_text(m), _fmt(lat.get("p50")),
               _fmt(lat.get("p95"))]
        if ttft:
            row.append(_fmt((m.get("ttft_ms") or {}).get("p95")))
        if request_less(m):
            row = [NO_REQUESTS] * len(row) + [request_less_cost(m, report)]
        else:
            row.append(_fmt(m.get("cost_per_request_usd"), "$"))
        if device:
            row.append(pct(m.get("device_utilization")))
        t.add_row(escape(str(name)), *row)
    captions = []
    if any(request_less(m) for _, m in items):
        captions.append(REQUEST_LESS_NOTE)
    route_note = request_less_route_note(report) if kind == "route" else None
    if route_note:
        captions.append(route_note)
    if rest:
        captions.append(f"{len(rest)} more in the JSON report (baseline.by_{kind})")
    if captions:
        t.caption = escape(" ".join(captions))
    return t


def _print_verdict(console: Console, report: dict[str, Any]) -> None:
    b = report["bottleneck"]
    fps = ", ".join(f"{d['fingerprint']}={num(d['value'])}" for d in b["decided_by"])
    console.print(Panel.fit(
        f"[bold]{escape(str(b['layer']))}[/bold] (confidence {b['confidence']:.2f}, case "
        f"{escape(str(b['case']))})\n{escape(str(b['detail']))}\n"
        f"[dim]decided by: {escape(fps) or '—'}[/dim]", title="bottleneck"))
    kernels = report.get("kernels") or {}
    tb = kernels.get("temporal_breakdown")
    if tb:
        console.print(f"kernels: idle {_fmt(tb.get('idle_pct'), '%', 1)}, compute "
                      f"{_fmt(tb.get('compute_pct'), '%', 1)}, non-compute "
                      f"{_fmt(tb.get('non_compute_pct'), '%', 1)}")
    ft = Table(title="findings", header_style="bold")
    ft.add_column("severity")
    ft.add_column("layer")
    ft.add_column("finding")
    ft.add_column("evidence")
    for f in report["findings"]:
        ev = ", ".join(f"{k}={v}" for k, v in list(f["evidence"].items())[:4])
        sev = escape(str(f["severity"]))
        style = _SEV_STYLE.get(f["severity"])
        ft.add_row(f"[{style}]{sev}[/]" if style else sev, escape(str(f["layer"])),
                   f"{escape(str(f['title']))} [dim]({escape(str(f['id']))})[/dim]", escape(ev))
    if report["findings"]:
        console.print(ft)
    else:
        console.print("no findings")
