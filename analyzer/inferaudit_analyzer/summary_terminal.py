"""A readable terminal summary of the report dict (rich); renders only, computes nothing."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from inferaudit_analyzer.report._fmt import num, price_line, usd, utilisation

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
        f"[bold]InferAudit[/bold]  schema {report['schema']}\n"
        f"{len(inp['files'])} file(s), {inp['spans']:,} spans, {inp['requests']:,} requests, "
        f"{inp['batches']:,} model calls, coverage {_pct(cov['ratio'])}, "
        f"window {_fmt(report['window']['duration_s'], ' s')}",
        title="input"))
    for sk in inp.get("skipped") or []:
        console.print(f"[dim]not read[/dim] {sk.get('file')}: {sk.get('reason')}")
    for err in inp["errors"][:10]:
        pos = f":{err['position']}" if err.get("position") not in (None, "") else ""
        console.print(f"[yellow]skipped[/yellow] {err.get('file')}{pos}: {err.get('message')}")
    total = inp.get("errors_total", len(inp["errors"]))
    if total > 10:
        console.print(f"[yellow]… and {total - 10} more unreadable parts[/yellow]")

    o = report["baseline"]["overall"]
    t = Table(title="baseline (overall)", show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("p50", justify="right")
    t.add_column("p95", justify="right")
    t.add_column("p99", justify="right")
    for key, label in (("latency_ms", "latency ms"), ("ttft_ms", "TTFT ms"),
                       ("tpot_ms", "time/output token ms"), ("queue_ms", "queue ms")):
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
        f"cost/request {_fmt(o['cost_per_request_usd'], '$')} (busy-only floor "
        f"{_fmt(o['busy_cost_per_request_usd'], '$')}); per 1k tokens "
        f"in {_fmt(o['cost_per_1k_input_tokens_usd'], '$')} / out "
        f"{_fmt(o['cost_per_1k_output_tokens_usd'], '$')}\n"
        f"[dim]{price_line(report)}[/dim]")
    if len(report["baseline"]["by_model"]) > 1:
        mt = Table(title="per model", header_style="bold")
        for col in ("model", "requests", "p95 ms", "cost/request"):
            mt.add_column(col, justify="right" if col != "model" else "left")
        for name, m in report["baseline"]["by_model"].items():
            mt.add_row(name, str(m["requests"]), _fmt(m["latency_ms"].get("p95")),
                       _fmt(m["cost_per_request_usd"], "$"))
        console.print(mt)


def _print_verdict(console: Console, report: dict[str, Any]) -> None:
    b = report["bottleneck"]
    fps = ", ".join(f"{d['fingerprint']}={num(d['value'])}" for d in b["decided_by"])
    console.print(Panel.fit(
        f"[bold]{b['layer']}[/bold] (confidence {b['confidence']:.2f}, case {b['case']})\n"
        f"{b['detail']}\n[dim]decided by: {fps or '—'}[/dim]", title="bottleneck"))
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
        ft.add_row(f"[{_SEV_STYLE.get(f['severity'], '')}]{f['severity']}[/]", f["layer"],
                   f"{f['title']} [dim]({f['id']})[/dim]", ev)
    if report["findings"]:
        console.print(ft)
    else:
        console.print("no findings")
