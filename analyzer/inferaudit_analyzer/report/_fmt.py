"""Number formatting and the report's derived summary lines, shared by HTML and Markdown."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any


def usd(v: Any) -> str:
    """Dollars without scientific notation: a cost per request is often a few millionths."""
    if v is None:
        return "n/a"
    v = float(v)
    if v == 0:
        return "$0"
    if abs(v) >= 100:
        return f"${v:,.0f}"
    if abs(v) >= 0.01:
        return f"${v:.3f}"
    return "$" + fixed_sig(v)


def fixed_sig(v: float, sig: int = 3) -> str:
    """``v`` in fixed-point notation with ``sig`` significant digits (0.00000638, not 6.38e-06)."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    decimals = max(0, sig - 1 - math.floor(math.log10(abs(v))))
    return f"{v:.{decimals}f}"


def ms(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):,.1f} ms"


def pct(v: Any) -> str:
    return "n/a" if v is None else f"{float(v) * 100:.1f}%"


def with_unit(v: Any, unit: str, digits: int = 3) -> str:
    """``num(v)`` and its unit ("21.2 s"); a missing figure is "n/a" alone, not "n/a s"."""
    return "n/a" if v is None else f"{num(v, digits)} {unit}"


def num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def check_value(row: dict[str, Any], key: str) -> str:
    """A projection-check row's number in its unit (``unit``: ``usd`` or ``ms``)."""
    v = row.get(key)
    unit = row.get("unit")
    if unit == "usd":
        return usd(v)
    if unit == "ms":
        return ms(v)
    return num(v)


def check_verdict(row: dict[str, Any]) -> str:
    """A projection-check row's "within target" cell: yes / no, or n/a with the row's ``note``
    (rows that cannot pass or fail: hindsight diagnostics, a bill fixed by the schedule)."""
    if row.get("within_target") is None:
        return f"n/a ({row['note']})" if row.get("note") else "n/a"
    return "yes" if row["within_target"] else "no"


def _ratio_text(v: Any) -> str:
    """0.0625 -> "1/16"; 0.3 -> "0.3"."""
    if v is None:
        return "n/a"
    frac = Fraction(float(v)).limit_denominator(64)
    return f"{frac.numerator}/{frac.denominator}" if abs(float(frac) - float(v)) < 1e-9 \
        and frac.denominator > 1 else num(float(v))


def _stat(v: Any, digits: int) -> str:
    return "n/a" if v is None else f"{float(v):,.{digits}f}"


def workload_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The replayed workload (``workload``, the example's main job only) as label/value rows."""
    w = report.get("workload") or {}
    if not w:
        return []
    rows = [("source", str(w.get("source"))), ("requests", num(w.get("n_requests")))]
    win = w.get("window")
    if win:
        rows.append(("trace window", f"rows {win['start']}..{win['start'] + win['size'] - 1} of "
                                     f"{num(win.get('trace_rows'))}: {win.get('chosen')}"))
        ws, ts = win.get("stats") or {}, win.get("trace_stats") or {}
        rows.append(("window vs whole trace", "; ".join(
            f"{label} {_stat(ws.get(k), digits)} vs {_stat(ts.get(k), digits)}"
            for label, k, digits in (("gap CV", "gap_cv", 2),
                                     ("prompt median", "prompt_median", 0),
                                     ("output median", "output_median", 0),
                                     ("10-s count var/mean", "count_dispersion", 2),
                                     ("rate req/s", "rate_rps", 2)))))
    else:
        rows.append(("trace window", "n/a (not a trace window)"))
    ln = w.get("lengths") or {}
    if ln:
        rows.append(("length scaling",
                     f"prompt x{_ratio_text(ln.get('prompt_scale'))} (min {ln.get('prompt_min')}, "
                     f"cap {ln.get('prompt_cap')}); output x{_ratio_text(ln.get('output_scale'))} "
                     f"(min {ln.get('output_min')}, cap {ln.get('output_cap')})"))
    tr = w.get("token_ratio") or {}
    if tr:
        rows.append(("prompt:output tokens", f"{num(tr.get('trace'), 2)}:1 in the trace window, "
                                             f"{num(tr.get('replayed'), 2)}:1 replayed"))
    rows.append(("time scale", f"x{num(w.get('time_scale'))} (trace "
                               f"{with_unit(w.get('trace_rps'), 'req/s')} -> offered "
                               f"{with_unit(w.get('offered_rps'), 'req/s')})"))
    fit = w.get("probe_fit") or {}
    plain = fit.get("probe_mean_s")
    rows.append(("probe service time", f"{ms((w.get('probe_service_s') or 0) * 1e3)} mean "
                                       f"sequential over the plan ({fit.get('method', 'n/a')}"
                                       + (f"; the probe requests' own mean {ms(plain * 1e3)}"
                                          if plain is not None else "") + ")"))
    au = w.get("achieved_utilisation") or {}
    # the replay's load setting, not the audit's device utilisation (busy time over the paid
    # devices, in the baseline below): two percentages side by side read as a contradiction
    rows.append(("offered load (replay setting)",
                 f"target {pct(w.get('target_utilisation'))}; achieved sequential "
                 f"{pct(au.get('sequential'))}, batched {pct(au.get('batched'))} (summed "
                 "model-call wall time / arrival span: how hard the replay drove one server; "
                 "not the device utilisation of the baseline, busy time over paid devices)"))
    return rows


RISK_SCALE_MAX = 4  # interventions score integration risk 1 (low) .. 4 (high)


def risk(item: dict[str, Any]) -> str:
    return f"{item['risk']['score']}/{RISK_SCALE_MAX}"


def price_line(report: dict[str, Any], from_json: bool = False) -> str:
    """Which price every dollar figure rests on, in words; without one, why and what to give
    (a kernel trace alone has no paid device: "price n/a/h from no paid device found" said
    neither). ``from_json``: the report is a saved one re-rendered, where the price flags are
    not read, so the way to a price is analysing the traces again."""
    price = report.get("price") or {}
    per_hour, source = price.get("usd_per_hour"), price.get("source")
    if per_hour is not None:
        return f"price {usd(per_hour)}/h from {source}"
    resources = price.get("resources") or []
    unpriced = sum(1 for r in resources if r.get("usd_per_hour") is None)
    why = (f"none for {unpriced} of {len(resources)} paid resource(s)" if resources
           else source or "none given")
    how = ("re-run inferaudit report PATH --price-per-hour USD (or --price-file FILE) on the "
           "traces: --from-json only re-renders the saved figures" if from_json
           else "give --price-per-hour or --price-file")
    return f"no price ({why}), so no dollar figures: {how}"


def swap_line(swap: dict[str, Any]) -> str:
    """The model-swap check in words; says why there is no avoided cost when there is none."""
    closed = pct(swap.get("gap_closed_ratio"))
    if swap.get("applies"):
        return (f"Model swap check: non-model interventions close {closed} of the gap a model "
                f"swap would close ({swap.get('model_swap_assumption', '')}); avoided cost "
                f"{usd(swap.get('avoided_cost_usd'))} ({swap.get('cost_rule', '')}).")
    return (f"Model swap check: non-model interventions close {closed} of the gap a model swap "
            f"would close ({swap.get('model_swap_assumption', '')}), short of the share that "
            "would make the swap avoidable, so no avoided cost is claimed.")


def not_proposed_line(roi: dict[str, Any]) -> str | None:
    items = roi.get("not_proposed") or []
    if not items:
        return None
    by_reason: dict[str, list[str]] = {}
    for x in items:
        by_reason.setdefault(str(x.get("reason")), []).append(str(x["intervention"]))
    return "Not proposed: " + "; ".join(f"{', '.join(ids)} ({why})"
                                        for why, ids in by_reason.items())


def roi_warnings(report: dict[str, Any]) -> list[str]:
    """What makes the report's projections less trustworthy than their intervals say."""
    return list((report.get("roi") or {}).get("warnings") or [])


def decided_rows(bottleneck: dict[str, Any]) -> list[tuple[str, str]]:
    """(fingerprint, "value op threshold") for each signal that decided the verdict."""
    rows = []
    for d in bottleneck.get("decided_by") or []:
        value, threshold = d.get("value"), d.get("threshold")
        value = num(value) if isinstance(value, (int, float)) else value
        threshold = num(threshold) if isinstance(threshold, (int, float)) else threshold
        if threshold is None:  # a signal reported as it is, not compared
            rows.append((str(d.get("fingerprint")), f"{value} ({d.get('op')})"))
        else:
            rows.append((str(d.get("fingerprint")), f"{value} {d.get('op')} {threshold}"))
    return rows


def interval(iv: dict[str, Any] | None, key: str, fmt=usd) -> str:
    d = (iv or {}).get(key) or {}
    if d.get("low") is None:
        return "n/a"
    return f"{fmt(d['low'])} - {fmt(d['high'])}"


def utilisation(overall: dict[str, Any]) -> str:
    """The utilisation, with the ceiling the model's threads allowed when it is below 100%."""
    u, ceiling = overall.get("device_utilization"), overall.get("device_utilization_ceiling")
    if u is None or ceiling is None or ceiling >= 1:
        return pct(u)
    resources = (overall.get("device_utilization_detail") or {}).get("by_resource") or []
    res = resources[0] if len(resources) == 1 else {}  # several hosts: the ceiling alone
    how = (f": {res['cpu_threads']} of {res['cpu_cores']} cores"
           if res.get("cpu_threads") and res.get("cpu_cores") else "")
    return f"{pct(u)} of at most {pct(ceiling)}{how}"


def _bill_text(projected: dict[str, Any]) -> str:
    """A projected bill for the summary. Only fewer replicas lower the bill (saving kind
    "bill"); otherwise a different projected number is the replay's window (a fixed schedule's
    baseline window also holds the sequential queue draining after the last arrival), not a
    saving, so the summary says the bill is unchanged instead of quoting it."""
    if projected.get("saving_kind") == "bill" or projected.get("cost_per_request_usd") is None:
        return f"{usd(projected.get('cost_per_request_usd'))} (bill)"
    return "unchanged on the bill (same replicas)"


def _per_million(ov: dict[str, Any]) -> str:
    """``", $0.93 per 1M requests"`` where a request costs under a cent: a buyer budgets in
    requests per month, not in millionths of a dollar."""
    v = ov.get("cost_per_request_usd")
    if not isinstance(v, (int, float)) or not 0 < v < 0.01:
        return ""
    return f", {usd(v * 1e6)} per 1M requests"


def executive_summary(report: dict[str, Any]) -> list[str]:
    """Three to six plain sentences a buyer reads first."""
    ov = (report.get("baseline") or {}).get("overall") or {}
    lines = []
    lat = ov.get("latency_ms") or {}
    lines.append(
        f"{num(ov.get('requests'))} requests over {with_unit(ov.get('window_s'), 's')}: p50 "
        f"{ms(lat.get('p50'))}, p95 {ms(lat.get('p95'))}; cost per request "
        f"{usd(ov.get('cost_per_request_usd'))} on the bill{_per_million(ov)} (busy-only "
        f"floor {usd(ov.get('busy_cost_per_request_usd'))}); device utilisation "
        f"{utilisation(ov)}.")
    bn = report.get("bottleneck") or {}
    if bn:
        lines.append(f"Bottleneck: {bn.get('layer')} layer ({bn.get('case')}, confidence "
                     f"{num(bn.get('confidence'), 2)}). {bn.get('detail') or ''}".strip())
    road = report.get("roadmap") or []
    if road:
        top = road[0]
        p = top.get("projected") or {}
        lines.append(
            f"Top intervention: {top.get('title')} (risk {risk(top)}): projected p95 "
            f"{ms((p.get('latency_ms') or {}).get('p95'))}, cost per request "
            f"{_bill_text(p)} / {usd(p.get('busy_cost_per_request_usd'))} (busy floor); "
            f"saving kind: {p.get('saving_kind')}.")
        last = (road[-1].get("cumulative") or {}).get("projected") or {}
        if len(road) > 1:
            lines.append(
                f"All {len(road)} interventions together: p95 "
                f"{ms((last.get('latency_ms') or {}).get('p95'))}, cost per request "
                f"{_bill_text(last)}, replicas {last.get('replicas')}.")
    else:
        roi = report.get("roi") or {}
        lines.append("No intervention is proposed: " + (
            roi.get("error") or "no finding supports one in this input."))
    swap = (report.get("roi") or {}).get("avoided_model_swap") or {}
    if swap.get("applies"):
        lines.append(
            f"A model swap looks unnecessary: the non-model interventions close "
            f"{pct(swap.get('gap_closed_ratio'))} of its gap, avoiding about "
            f"{usd(swap.get('avoided_cost_usd'))} of engineering ({swap.get('cost_rule')}).")
    return lines


def _at(d: Any, *path: str) -> Any:
    """``d[path[0]][path[1]]...``, or None where a level is missing or not a dict: the report
    dict is rendered as it is, whatever keys an older or newer analyzer wrote."""
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def errors_text(scope: dict[str, Any]) -> str:
    """Failed requests as a count and a share: "3 (2.5%)"."""
    n, share = scope.get("errors"), scope.get("error_ratio")
    if n is None:
        return "n/a"
    return num(n) if share is None else f"{num(n)} ({pct(share)})"


def cost_per_1k_tokens(scope: dict[str, Any]) -> Any:
    """The scope's cost over all its tokens, input and output together, per 1,000.

    The bill is device time, shared out by token count: one price per token, whichever side of
    the prompt it is on. ``cost_per_1k_output_tokens_usd`` holds that same number, so labelled
    "per output token" it overstated an output token's cost by the input tokens' share."""
    if "cost_per_1k_tokens_usd" in scope:
        return scope["cost_per_1k_tokens_usd"]
    cost, tin, tout = scope.get("cost_usd"), scope.get("input_tokens"), scope.get("output_tokens")
    if cost is None or tin is None or tout is None or tin + tout <= 0:
        return None
    return float(cost) / ((tin + tout) / 1000.0)


def token_cost_rows(scope: dict[str, Any]) -> list[tuple[str, str]]:
    """The per-token cost rows: one over all tokens; an input and an output row as well only
    where the report prices the two sides apart (their figures differ)."""
    rows = [("cost per 1k tokens (input + output)", usd(cost_per_1k_tokens(scope)))]
    cin = scope.get("cost_per_1k_input_tokens_usd")
    cout = scope.get("cost_per_1k_output_tokens_usd")
    if cin is not None and cout is not None and not math.isclose(cin, cout, rel_tol=1e-9):
        share, n = scope.get("input_phase_time_ratio"), scope.get("phase_time_requests")
        how = ("" if share is None or not n else
               f" (by phase time: the prompt's phase {pct(share)} of {num(n)} timed requests)")
        rows += [("cost per 1k input tokens", usd(cin) + how),
                 ("cost per 1k output tokens", usd(cout))]
    return rows


# Said when no request has a first-token time and the report does not count streamed requests
# (one written before ``streamed_requests``): a streamed request whose instrumentation records no
# first token would be missing too, so "no streamed requests" would be a guess.
NOT_STREAMED = "not measured (no request carries a first-token time)"


def not_measured_text(streamed: Any) -> str:
    """Why TTFT / time per output token are missing, as precisely as the report can say."""
    if not isinstance(streamed, int) or isinstance(streamed, bool):
        return NOT_STREAMED
    if streamed == 0:
        return "not measured (no streamed requests)"
    return (f"not measured ({num(streamed)} streamed requests, none with a first-token time: "
            "its instrumentation does not record one)")


def streamed_text(summary: Any, streamed: Any = None) -> str:
    """A TTFT / time-per-output-token summary: its percentiles, or why there are none (both
    need a request's first-token time; ``streamed``: the scope's ``streamed_requests``)."""
    if not isinstance(summary, dict):
        return "n/a"
    if not summary.get("n"):
        return not_measured_text(streamed)
    return _percentiles_text(summary)


def failed_latency_text(summary: Any) -> str:
    """The failed requests' latency (``error_latency_ms``), kept apart from the percentiles of
    the successful ones: a fast timeout would otherwise read as a faster service."""
    if not isinstance(summary, dict) or not summary.get("n"):
        return "n/a"
    return _percentiles_text(summary, ", not in the latency percentiles above")


def _percentiles_text(summary: dict[str, Any], note: str = "") -> str:
    return (f"p50 {ms(summary.get('p50'))}, p95 {ms(summary.get('p95'))}, p99 "
            f"{ms(summary.get('p99'))} ({num(summary.get('n'))} requests{note})")


def _tokens(scope: dict[str, Any]) -> str:
    tin, tout = scope.get("input_tokens"), scope.get("output_tokens")
    if tin is None and tout is None:
        return "n/a"
    text = f"{num(tin)} / {num(tout)}"
    if isinstance(tin, int) and isinstance(tout, int) and tin + tout > 0:
        text += f" ({pct(tin / (tin + tout))} input)"
    return text


BASELINE_ROWS = (
    ("requests", "requests", num), ("errors", (), errors_text),
    ("window", "window_s", lambda v: with_unit(v, "s")),
    ("throughput", "throughput_rps", lambda v: with_unit(v, "req/s")),
    ("latency p50", ("latency_ms", "p50"), ms), ("latency p95", ("latency_ms", "p95"), ms),
    ("latency p99", ("latency_ms", "p99"), ms),
    ("latency of failed requests", "error_latency_ms", failed_latency_text),
    ("requests a profiled call served (out of the latency percentiles)", "profiled_requests",
     num),
    ("requests a profiled call served (in the latency percentiles: every call was profiled, "
     "so they include the profiler's cost)", "profiled_in_percentiles", num),
    ("TTFT (time to first token)", (),
     lambda o: streamed_text(o.get("ttft_ms"), o.get("streamed_requests"))),
    ("time per output token", (),
     lambda o: streamed_text(o.get("tpot_ms"), o.get("streamed_requests"))),
    ("queue p95", ("queue_ms", "p95"), ms),
    ("batch size mean", ("batch_size", "mean"), num),
    ("device utilisation", (), utilisation),
    ("tokens input / output", (), _tokens),
    ("cost per request (bill)", "cost_per_request_usd", usd),
    ("cost per request (bill, with requests batches served but not in the input)",
     "cost_per_request_served_usd", usd),
    ("cost per request (busy-only floor)", "busy_cost_per_request_usd", usd),
)


# rows shown only where they differ from another (the corrected cost, when requests are missing)
SHOWN_WHEN_DIFFERENT = {"cost_per_request_served_usd": "cost_per_request_usd"}
# rows shown only where the figure was measured (no failed request: the errors row says so)
SHOWN_WHEN_MEASURED = frozenset({"error_latency_ms"})
# rows shown only where the count is not zero (no profile sampling: nothing to say)
SHOWN_WHEN_NONZERO = frozenset({"profiled_requests", "profiled_in_percentiles"})


def baseline_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    ov = _at(report, "baseline", "overall") or {}
    out = []
    for label, key, fmt in BASELINE_ROWS:
        other = SHOWN_WHEN_DIFFERENT.get(key) if isinstance(key, str) else None
        if other is not None and ov.get(key) == ov.get(other):
            continue
        if key in SHOWN_WHEN_MEASURED and not _at(ov, key, "n"):
            continue
        if key in SHOWN_WHEN_NONZERO and not ov.get(key):
            continue
        out.append((label, fmt(_at(ov, *(key if isinstance(key, tuple) else (key,))))))
    return out + token_cost_rows(ov)


# names the analyzer gives a scope of requests that carry no model / no route
UNNAMED_SCOPES = frozenset({"(unknown)", "(none)", ""})
MAX_SCOPE_ROWS = 25  # the busiest; the JSON report holds every scope


def scope_utilisation(scope: dict[str, Any], ceiling: Any) -> str:
    """A model's utilisation with the ceiling the overall row gives ("31.5% (max 50.0%)"): a
    model's share is of the same capacity, so the threads' ceiling bounds it as well."""
    u = scope.get("device_utilization")
    if u is None or not isinstance(ceiling, (int, float)) or ceiling >= 1:
        return pct(u)
    return f"{pct(u)} (max {pct(ceiling)})"


# A request figure of a scope without requests (by_model's ``requests_observed: false`` rows: a
# model only calls no request links to carry): not measurable, rather than "0" or "n/a".
NO_REQUESTS = "—"
REQUEST_LESS_NOTE = (
    "A model whose request figures read — has no requests in the input: only model calls no "
    "request links to ran it, and neither their model name nor their host ties them to the "
    "requests (a model the server calls internally, an offline batch job, or requests that were "
    "not traced). Its batches and device utilisation are measured, and its cost cell holds its "
    "calls' whole cost and share of the bill; the device utilisations and the costs of all "
    "models add up to the overall ones.")


def request_less(scope: dict[str, Any]) -> bool:
    """Whether ``scope`` is a model row without requests (``requests_observed`` false)."""
    return scope.get("requests_observed") is False


def _per_request(fmt: Any) -> Any:
    """``fmt`` for a request figure: the dash on a scope without requests."""
    return lambda s: NO_REQUESTS if request_less(s) else fmt(s)


def request_less_cost(scope: dict[str, Any], report: dict[str, Any]) -> str:
    """A request-less row's cost cell: no cost per request, so its calls' whole cost and share
    of the bill ("$0.12 in all (13.5% of the bill)"), which the per-model costs reconcile by."""
    cost = scope.get("cost_usd")
    if cost is None:
        return NO_REQUESTS
    bill = _at(report, "baseline", "overall", "cost_usd")
    share = cost / bill if isinstance(bill, (int, float)) and bill > 0 else None
    return f"{usd(cost)} in all" + ("" if share is None else f" ({pct(share)} of the bill)")


def _utilisation_of(scope: dict[str, Any]) -> float:
    u = scope.get("device_utilization")
    return float(u) if isinstance(u, (int, float)) else 0.0


def ordered_scopes(scopes: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]],
                                                    list[tuple[str, dict[str, Any]]]]:
    """(shown, rest) of ``baseline.by_<kind>``, busiest first: the scopes with requests by their
    count, at most MAX_SCOPE_ROWS of them; a request-less row (no count to sort by) is placed by
    its device utilisation among them (before the first shown row using less of the devices) and
    always shown: a model running 40 % of the GPU never hides behind the cut."""
    items = [(str(k), v if isinstance(v, dict) else {}) for k, v in scopes.items()]
    asked = sorted((kv for kv in items if not request_less(kv[1])),
                   key=lambda kv: (-(kv[1].get("requests") or 0), kv[0]))
    extra = sorted((kv for kv in items if request_less(kv[1])),
                   key=lambda kv: (-_utilisation_of(kv[1]), kv[0]))
    shown: list[tuple[str, dict[str, Any]]] = []
    for kv in asked[:MAX_SCOPE_ROWS]:
        while extra and _utilisation_of(extra[0][1]) > _utilisation_of(kv[1]):
            shown.append(extra.pop(0))
        shown.append(kv)
    return shown + extra, asked[MAX_SCOPE_ROWS:]


def request_less_route_note(report: dict[str, Any]) -> str | None:
    """For the per-route table where by_model has request-less rows: those calls have no route,
    so no route row; say where their cost went, so the two tables reconcile."""
    rows = [(str(k), v) for k, v in (_at(report, "baseline", "by_model") or {}).items()
            if isinstance(v, dict) and request_less(v)]
    if not rows:
        return None
    names = ", ".join(k for k, _ in rows)
    costs = [v.get("cost_usd") for _, v in rows]
    bill = _at(report, "baseline", "overall", "cost_usd")
    cost = ""
    if all(isinstance(c, (int, float)) for c in costs):
        total = sum(costs)
        share = total / bill if isinstance(bill, (int, float)) and bill > 0 else None
        cost = f" ({usd(total)}" + ("" if share is None else f", {pct(share)} of the bill") + ")"
    return (f"Model calls no request links to ran a workload of their own ({names}: per model, "
            f"a row without requests{cost}). They have no route, so no row here: the routes' "
            "costs include theirs, spread over the routes as the routes used the same hosts, and "
            "a route's cost per request reads higher than that of a model holding the same "
            "requests by that much.")


def _has(scopes: list[dict[str, Any]], metric: str) -> bool:
    return any((_at(s, metric, "n") or 0) > 0 for s in scopes)


def scope_table(report: dict[str, Any], kind: str) -> tuple[tuple[str, ...], list[tuple[str, ...]],
                                                            list[str]] | None:
    """``baseline.by_<kind>`` (kind ``model`` or ``route``) as (header, rows, notes), busiest
    first; None where there is nothing to break down: no scope, or a single unnamed one (its
    row would repeat the overall table). One named model still gets its row, so the report says
    which model the figures are for. A model without requests (``requests_observed`` false)
    shows :data:`NO_REQUESTS` for its request figures, its calls' whole cost and bill share in
    the cost column, its device figures, and a note why; the per-route table says where those
    calls' cost went (they have no route)."""
    scopes = _at(report, "baseline", f"by_{kind}")
    if not isinstance(scopes, dict) or not scopes or (
            len(scopes) == 1 and next(iter(scopes)) in UNNAMED_SCOPES):
        return None
    shown, rest = ordered_scopes(scopes)
    values = [v for _, v in shown + rest]
    cols: list[tuple[str, Any]] = [
        ("requests", lambda s: num(s.get("requests"))), ("errors", errors_text),
        ("throughput", lambda s: with_unit(s.get("throughput_rps"), "req/s")),
        ("latency p50", lambda s: ms(_at(s, "latency_ms", "p50"))),
        ("latency p95", lambda s: ms(_at(s, "latency_ms", "p95"))),
        ("latency p99", lambda s: ms(_at(s, "latency_ms", "p99")))]
    for metric, label in (("ttft_ms", "TTFT"), ("tpot_ms", "time/output token")):
        if _has(values, metric):
            cols += [(f"{label} p50", lambda s, m=metric: ms(_at(s, m, "p50"))),
                     (f"{label} p95", lambda s, m=metric: ms(_at(s, m, "p95")))]
    if _has(values, "error_latency_ms"):
        cols.append(("failed latency p95", lambda s: ms(_at(s, "error_latency_ms", "p95"))))
    cols = [(label, _per_request(fmt)) for label, fmt in cols]
    cols.append(("cost/req (bill)", lambda s: request_less_cost(s, report) if request_less(s)
                 else usd(s.get("cost_per_request_usd"))))
    notes = []
    device = any("device_utilization" in v or "batch_size" in v for v in values)
    if device:
        ceiling = _at(report, "baseline", "overall", "device_utilization_ceiling")
        cols += [("device utilisation", lambda s: scope_utilisation(s, ceiling)),
                 ("batch size mean", lambda s: num(_at(s, "batch_size", "mean")))]
    else:
        notes.append(f"Device utilisation and batch size are not broken down by {kind}: one "
                     f"model call can serve requests of several {kind}s.")
    if any(request_less(v) for v in values):
        notes.append(REQUEST_LESS_NOTE)
    route_note = request_less_route_note(report) if kind == "route" else None
    if route_note:
        notes.append(route_note)
    if rest:
        hidden = sum(v.get("requests") or 0 for _, v in rest)
        notes.append(f"{len(rest)} more {kind}s ({num(hidden)} requests) are in the JSON "
                     f"report, baseline.by_{kind}.")
    header = (kind, *(label for label, _ in cols))
    rows = [(name, *(fmt(s) for _, fmt in cols)) for name, s in shown]
    return header, rows, notes


SCOPE_KINDS = (("model", "By model", "gen_ai.request.model"),
               ("route", "By route", "inferaudit.route"))


def scope_sections(report: dict[str, Any]) -> list[tuple[str, tuple[str, ...] | None,
                                                         list[tuple[str, ...]], list[str]]]:
    """(title, header, rows, notes) of the per-model and per-route tables; where requests
    carry no model or route name, header None and a note saying which attribute was missing."""
    if not _at(report, "baseline", "overall", "requests"):
        return []  # a kernel trace alone: no request to break down
    out = []
    for kind, title, attribute in SCOPE_KINDS:
        table = scope_table(report, kind)
        if table is None:
            out.append((title, None, [], [f"No request carries a {kind} name ({attribute}), "
                                          f"so there is no per-{kind} breakdown."]))
        else:
            out.append((title, *table))
    return out


ROADMAP_HEADER = ("rank", "intervention", "evidence", "risk", "effort", "cost/req (bill)",
                  "90% interval", "busy floor/req", "p95", "p95 90% interval", "replicas",
                  "saving", "cumulative cost/req", "cumulative p95")


# What the intervals cover, said under the roadmap table: an interval that leaves out the
# assumption an item rests on (routing's speed-up, right-sizing's instance price) reads as more
# certain than the item is.
INTERVALS_NOTE = ("90% intervals: bootstrap over the measured model calls and traffic (the curve "
                  "refitted to each resample); the parameters an item assumes (speed-ups, "
                  "instance prices, hit rates; listed under each item) are held fixed, so an "
                  "item resting on an assumed parameter is as uncertain as that assumption")


def roadmap_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for r in report.get("roadmap") or []:
        p = r.get("projected") or {}
        cum = (r.get("cumulative") or {}).get("projected") or {}
        iv = r.get("interval")
        rows.append((
            str(r["rank"]), f"{r['intervention']}: {r.get('title')}",
            ", ".join(r.get("evidence") or []), risk(r),
            r["effort"]["class"], usd(p.get("cost_per_request_usd")),
            interval(iv, "cost_per_request_usd"), usd(p.get("busy_cost_per_request_usd")),
            ms((p.get("latency_ms") or {}).get("p95")), interval(iv, "latency_ms_p95", ms),
            f"{p.get('replicas')} (needed {p.get('replicas_needed')})",
            str(p.get("saving_kind")), usd(cum.get("cost_per_request_usd")),
            ms((cum.get("latency_ms") or {}).get("p95")),
        ))
    return rows
