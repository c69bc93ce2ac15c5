"""The five report plots, each from the report dict: latency CDF, device utilisation over time,
batch-size histogram, cost waterfall across the roadmap, fitted service-time curve."""

from __future__ import annotations

from typing import Any

import numpy as np

from inferaudit_analyzer.report._fmt import fixed_sig, usd
from inferaudit_analyzer.report.svg import PALETTE, Chart, empty
from inferaudit_analyzer.roi.fit import curve_from_json

PLOT_NAMES = ("latency_cdf", "utilization_over_time", "batch_size_histogram", "cost_waterfall",
              "service_curve")


def latency_cdf_title(overall: dict[str, Any], plotted: Any) -> str:
    """Which requests the CDF is over: the successful ones (report/data.py), as the latency
    percentiles; where some failed, the title says so. A report saved before the plot left
    failures out plotted every request: its count equals all requests', and the title says
    that instead."""
    errors, requests = overall.get("errors"), overall.get("requests")
    if not isinstance(errors, int) or errors <= 0:
        return "Request latency CDF (measured)"
    if plotted is not None and plotted == requests:
        return "Request latency CDF (all requests, failed ones included)"
    return f"Request latency CDF (successful requests; {errors:,} failed left out)"


def latency_cdf(report: dict[str, Any]) -> str:
    plots = report.get("plots") or {}
    q = plots.get("latency_ms_quantiles") or []
    title = latency_cdf_title(((report.get("baseline") or {}).get("overall") or {}),
                              plots.get("requests"))
    if not q:
        return empty("latency_cdf", title, "no request latencies")
    ys = [p[0] for p in q]
    xs = [p[1] for p in q]
    road = report.get("roadmap") or []
    marks = [v for v in [xs[-1]] + [((r.get("projected") or {}).get("latency_ms") or {})
                                     .get("p95") for r in road[:1]] if v]
    c = Chart("latency_cdf", title, "latency (ms)", "share of requests",
              (0.0, max(marks) * 1.05), (0.0, 1.0))
    c.line([0.0, *xs], [0.0, *ys], PALETTE[0], "measured")
    p95 = ((report.get("baseline") or {}).get("overall") or {}).get("latency_ms", {}).get("p95")
    if p95:
        c.vline(float(p95), PALETTE[1], f"measured p95 {p95:.0f} ms")
    if road:
        pp = ((road[0].get("projected") or {}).get("latency_ms") or {}).get("p95")
        if pp:
            c.vline(float(pp), PALETTE[2], f"projected p95 #1 {pp:.0f} ms")
    return c.svg()


def utilization_over_time(report: dict[str, Any]) -> str:
    tb = ((report.get("baseline") or {}).get("time_buckets") or {})
    rows = [r for r in tb.get("rows") or [] if r.get("start_s") is not None]
    title = "Device utilisation over time"
    if not rows:
        return empty("utilization_over_time", title, "no time buckets")
    width = float(tb.get("bucket_s") or 1.0)

    def span(r: dict[str, Any]) -> float:  # the last bucket covers only the window's tail
        return float(r.get("span_s") or width)

    end = max(float(r["start_s"]) + span(r) for r in rows)
    c = Chart("utilization_over_time", title, "time from window start (s)",
              "device busy share", (0.0, end), (0.0, 1.0))
    for r in rows:
        v = r.get("device_busy_ratio")
        if v is None:
            continue
        s = float(r["start_s"])
        c.bar(s, s + span(r) * 0.95, 0.0, float(v), PALETTE[0], f"{s:.0f}s: {v:.2f}")
    ov = (report.get("baseline") or {}).get("overall") or {}
    overall = ov.get("device_utilization")
    if overall is not None:
        c.line([0.0, end], [overall, overall], PALETTE[1], f"mean {overall:.2f}", 1.5, "4 3")
    # The most the model calls could use (one thread on a two-core host: 0.5): a bucket at 0.48
    # is a saturated thread, not a half-idle device.
    ceiling = ov.get("device_utilization_ceiling")
    if isinstance(ceiling, (int, float)) and 0 < ceiling < 1:
        c.line([0.0, end], [ceiling, ceiling], PALETTE[3],
               f"ceiling {ceiling:.2f}: the most its model calls could use", 1.5, "2 2")
    return c.svg()


def batch_size_histogram(report: dict[str, Any]) -> str:
    bsz = (((report.get("baseline") or {}).get("overall") or {}).get("batch_size") or {})
    hist = {int(k): int(v) for k, v in (bsz.get("histogram") or {}).items()}
    title = "Batch size per model call (measured)"
    if not hist:
        return empty("batch_size_histogram", title, "no model calls")
    top = max(max(hist), 1)
    c = Chart("batch_size_histogram", title, "batch size", "model calls",
              (0.5, top + 0.5), (0.0, max(hist.values()) * 1.1),
              x_ticks=list(range(1, top + 1)) if top <= 16 else None)
    for k, v in sorted(hist.items()):
        c.bar(k - 0.4, k + 0.4, 0.0, v, PALETTE[0], f"size {k}: {v} calls")
        c.text(k, v, str(v))
    return c.svg()


def cost_waterfall(report: dict[str, Any]) -> str:
    road = report.get("roadmap") or []
    roi = report.get("roi") or {}
    base = ((roi.get("baseline") or {}).get("replayed") or {})
    title = "Cost per request across the roadmap (cumulative, rank order)"
    key = "cost_per_request_usd"
    if base.get(key) is None:
        return empty("cost_waterfall", title, "no price per device-hour (see the price line)")
    steps = [("baseline", base[key], base.get("busy_cost_per_request_usd"))]
    for r in road:
        cum = (r.get("cumulative") or {}).get("projected") or {}
        steps.append((f"+{r['intervention']}", cum.get(key), cum.get("busy_cost_per_request_usd")))
    vals = [s[1] for s in steps if s[1] is not None] + [s[2] for s in steps if s[2] is not None]
    # a few millionths of a dollar per request reads as dollars per million requests
    scale, unit = (1e6, "USD per 1M requests") if vals and max(vals) < 0.01 else (
        1.0, "USD per request")
    steps = [(label, None if b is None else b * scale, None if f is None else f * scale)
             for label, b, f in steps]
    top = max(vals) * scale * 1.15 if vals else 1.0
    n = len(steps)
    c = Chart("cost_waterfall", title, "", unit, (0.0, float(n)), (0.0, top),
              x_ticks=[i + 0.5 for i in range(n)], x_tick_labels=[s[0][:26] for s in steps])
    prev = None
    for i, (label, bill, _busy) in enumerate(steps):
        if bill is None:
            continue
        if prev is None:
            c.bar(i + 0.15, i + 0.85, 0.0, bill, PALETTE[0], f"{label}: {usd(bill / scale)}")
        elif usd(bill / scale) == usd(prev / scale):
            # a change below the figures' 3 significant digits (a replay's window a few
            # microseconds longer) is no step: not a red "+$0.000000000000585"
            c.bar(i + 0.15, i + 0.85, bill, bill * 1.002, PALETTE[6],
                  f"{label}: {usd(bill / scale)} (unchanged)")
        else:
            color = PALETTE[2] if bill < prev else PALETTE[1]
            delta = usd(abs(bill - prev) / scale)
            c.bar(i + 0.15, i + 0.85, min(prev, bill), max(prev, bill), color,
                  f"{label}: {usd(bill / scale)} ({'-' if bill < prev else '+'}{delta})")
        c.text(i + 0.5, bill, "$" + fixed_sig(bill))
        prev = bill
    busy = [(i + 0.5, s[2]) for i, s in enumerate(steps) if s[2] is not None]
    if busy:
        c.line([b[0] for b in busy], [b[1] for b in busy], PALETTE[3], "busy-only floor", 2, "5 3")
    c.legend.insert(0, ("bill (window x replicas)", PALETTE[0]))
    return c.svg()


def service_curve(report: dict[str, Any]) -> str:
    roi = report.get("roi") or {}
    pts = roi.get("fit_points") or []
    fit = roi.get("fit") or {}
    title = "Service time per model call: fitted curve over measured points"
    if not pts or not fit.get("coefficients_ns"):
        return empty("service_curve", title, "no model calls to fit")
    outs = [p["out_tokens"] for p in pts]
    ins = [p["in_tokens"] for p in pts]
    ys = [p["measured_ns"] / 1e6 for p in pts]
    x1 = max(outs) * 1.05
    c = Chart("service_curve", title, "longest output in the call (tokens)",
              "call time (ms)", (0.0, x1), (0.0, max(ys) * 1.1))
    batches = sorted({int(p["batch"]) for p in pts})
    med_in = float(np.median(ins))
    curve = curve_from_json(fit)
    for i, b in enumerate(batches[:6]):
        sel = [j for j, p in enumerate(pts) if int(p["batch"]) == b]
        color = PALETTE[i % len(PALETTE)]
        c.points([outs[j] for j in sel], [ys[j] for j in sel], color, f"measured b={b}")
        xs = np.linspace(0.0, x1, 30)
        fy = [curve.call_ns(b, med_in, x, ragged=b > 1) / 1e6 for x in xs]
        c.line(list(xs), fy, color, None, 1.5)
    c.text(0.0, max(ys) * 1.05, f"lines: fit at median input {med_in:.0f} tokens (b>1: padded); "
           f"R2 {fit.get('r2') if fit.get('r2') is None else round(fit['r2'], 3)}", "start")
    return c.svg()


def all_plots(report: dict[str, Any]) -> dict[str, str]:
    return {"latency_cdf": latency_cdf(report),
            "utilization_over_time": utilization_over_time(report),
            "batch_size_histogram": batch_size_histogram(report),
            "cost_waterfall": cost_waterfall(report),
            "service_curve": service_curve(report)}
