"""The baseline: what the service does today, overall, per model, per route and per time bucket.

Requests, throughput (req/s, tokens/s), latency / TTFT / TPOT / queue percentiles (exact and
sketch), batch-size distribution, concurrency, device utilisation and cost. Latency is what the
client waits (the enclosing SERVER span where there is one; see the ``requests`` view). The
percentiles are over successful requests, as serving benchmarks and the GenAI TTFT/TPOT metrics
state them: a fast timeout would otherwise pull p50 down and read as a faster service. Errored
requests' latency is its own block (``error_latency_ms``), beside their count.

Scopes are what the client asked for: ``by_model`` keys the requested model (``(unknown)``
without one), ``by_route`` the route (``(none)`` without one; a route or model spelled like the
placeholder joins that scope), so each adds up to ``overall``. A model's batches and utilisation
are those of the model calls that served its requests. A call no request links to is attributed
by one rule, which cost reads too (analyses/utilization.py, BATCH_SHARES_SQL): to the models its
name's linked calls served, else to the requested model of its name, else, on a host without any
link information, to that host's requests (all requests, where nothing in the input is linked).
A call none of that applies to (an embedding model the server calls internally, an offline batch
job, a model whose requests are not instrumented) runs a workload of its own: its model gets a row
of its own, marked ``requests_observed: false``: no requests (counts 0, ratios and percentiles
null), its calls' batches, utilisation and cost. So the rows' utilisations and costs add up to the
overall ones.
"""

from __future__ import annotations

import math
from typing import Any

from inferaudit_analyzer.analyses import percentiles as pct
from inferaudit_analyzer.analyses._common import (
    NO_MODEL,
    NO_ROUTE,
    NS_PER_MS,
    NS_PER_S,
    AnalysisParams,
    Window,
    ratio,
    rounded,
)
from inferaudit_analyzer.analyses.batching import BatchStats, batch_stats
from inferaudit_analyzer.analyses.concurrency import Concurrency
from inferaudit_analyzer.analyses.utilization import (
    BASIS_OWN,
    Utilization,
    busy_by_bucket,
    busy_by_model,
    shares_table,
)
from inferaudit_analyzer.cost import CostModel, PhaseTime, Scope
from inferaudit_analyzer.views import ERRORED_SQL, LATENCY_SAMPLE_SQL

# Requests whose time splits into the prompt's phase and the output's: a first-token time inside
# the request, and decode steps after it. The prompt's phase is the time to first token less a
# queue wait inside it (vLLM's time in queue, a batcher's wait); the output's, the rest.
PHASED_SQL = (f"ttft_ns IS NOT NULL AND output_tokens > 1 AND input_tokens > 0 "
              f"AND model_ns > ttft_ns AND NOT {ERRORED_SQL}")
PREFILL_NS_SQL = ("GREATEST(ttft_ns - CASE WHEN queue_ns IS NOT NULL AND queue_ns <= ttft_ns "
                  "THEN queue_ns ELSE 0 END, 0)")

SCOPE_SQL = f"""
SELECT COUNT(*) AS n,
       COUNT(*) FILTER (WHERE {ERRORED_SQL}) AS errors,
       COUNT(*) FILTER (WHERE cache_hit) AS cache_hits,
       COUNT(*) FILTER (WHERE stream) AS streamed,
       COUNT(*) FILTER (WHERE stream IS NULL) AS stream_unknown,
       COUNT(*) FILTER (WHERE profiled_apart AND NOT {ERRORED_SQL}) AS profiled,
       COUNT(*) FILTER (WHERE profiled AND NOT profiled_apart AND NOT {ERRORED_SQL})
           AS profiled_kept,
       COALESCE(SUM(input_tokens), 0) AS input_tokens,
       COALESCE(SUM(output_tokens), 0) AS output_tokens,
       COALESCE(SUM(device_ns), 0) AS device_ns,
       COALESCE(SUM(latency_ns), 0) AS latency_ns,
       COUNT(*) FILTER (WHERE {PHASED_SQL}) AS phased,
       COALESCE(SUM(CASE WHEN {PHASED_SQL} THEN {PREFILL_NS_SQL} END), 0) AS prefill_ns,
       COALESCE(SUM(CASE WHEN {PHASED_SQL} THEN model_ns - ttft_ns END), 0) AS decode_ns
FROM requests {{where}}
"""

METRICS: tuple[tuple[str, str], ...] = (
    ("latency_ms", "latency_ns"),
    ("ttft_ms", "ttft_ns"),
    ("tpot_ms", "tpot_ns"),
    ("queue_ms", "queue_ns"),
    ("model_ms", "model_ns"),
)


def _percentiles(con: Any, src: str, col: str, params: tuple[Any, ...],
                 alpha: float) -> dict[str, Any]:
    s = pct.summarize(con, src, col, params, scale=NS_PER_MS, alpha=alpha)
    out = {k: (rounded(v, 4) if isinstance(v, float) else v) for k, v in s.items()
           if k != "sketch"}
    out["sketch"] = {k: rounded(v, 4) for k, v in s["sketch"].items()}
    return out


def _and(where: str, cond: str) -> str:
    return f"{where} AND {cond}" if where else f"WHERE {cond}"


def _scope(con: Any, where: str, params: tuple[Any, ...], window: Window, cost: CostModel,
           alpha: float, scope: Scope | None = None) -> dict[str, Any]:
    """One scope's figures; ``scope`` names its rows of the cost usage (None: everything)."""
    row = con.execute(SCOPE_SQL.format(where=where), list(params)).fetchone()
    (n, errors, hits, streamed, unknown, profiled, profiled_kept, tin, tout, device_ns,
     latency_ns, phased, prefill_ns, decode_ns) = (int(v or 0) for v in row)
    win_s = window.duration_s
    out: dict[str, Any] = {
        "requests": n,
        "errors": errors,
        "error_ratio": rounded(ratio(errors, n), 4),
        "cache_hit_ratio": rounded(ratio(hits, n), 4),
        # None, not 0, where none is marked streamed but some carry no stream flag at all
        # (foreign spans often do not): "no streamed requests" would then be a guess.
        "streamed_requests": streamed if streamed or not unknown else None,
        # successful requests a profiled model call served: out of the latency percentiles
        "profiled_requests": profiled,
        # the same, kept in them: every model call of the input ran under the profiler
        # (views.PROFILED_APART_SQL), so its latencies include the profiler's cost
        "profiled_in_percentiles": profiled_kept,
        "input_tokens": tin,
        "output_tokens": tout,
        "throughput_rps": rounded(ratio(n, win_s), 4),
        "tokens_per_s": {
            "input": rounded(ratio(tin, win_s), 3),
            "output": rounded(ratio(tout, win_s), 3),
            "total": rounded(ratio(tin + tout, win_s), 3),
        },
        "device_s": device_ns / NS_PER_S,
        "concurrency_mean": rounded(ratio(latency_ns, window.duration_ns), 4),
    }
    ok = f"SELECT * FROM requests {_and(where, LATENCY_SAMPLE_SQL)}"
    for key, col in METRICS:
        out[key] = _percentiles(con, ok, col, params, alpha)
    out["error_latency_ms"] = _percentiles(
        con, f"SELECT * FROM requests {_and(where, ERRORED_SQL)}", "latency_ns", params, alpha)
    out.update(cost.scope_cost(n, device_ns, tin, tout, scope,
                               PhaseTime(phased, prefill_ns, decode_ns)))
    return out




def _keyed(values: list[Any], placeholder: str) -> dict[str, tuple[Any, ...]]:
    """Report key -> the column values it holds: NULL goes under ``placeholder``, together with
    a value spelled like it (a route literally named "(none)"), so no scope overwrites another."""
    out: dict[str, tuple[Any, ...]] = {}
    for v in values:
        key = placeholder if v is None else str(v)
        out[key] = (*out.get(key, ()), v)
    return out


def _where(col: str, values: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """A condition selecting ``col`` in ``values`` (None: NULL), and its parameters."""
    conds = [f"{col} IS NULL" if v is None else f"{col} = ?" for v in values]
    return "(" + " OR ".join(conds) + ")", tuple(v for v in values if v is not None)

# The model calls that served a model's requests (a call serving two models counts for each), and
# those no request links to under their own model name: the batches of by_model[<model>].
MODEL_BATCHES_WHERE = """
WHERE trace_id || ':' || span_id IN (
    SELECT batch_trace_id || ':' || batch_span_id FROM {shares} sh WHERE {model})
"""

# The models the scopes are keyed by: those requests asked for, then the own names of model calls
# no request links to that run a workload of their own (the shares table's basis ``own``: a model
# only such calls carry, its row has no requests).
REQUEST_MODELS_SQL = "SELECT DISTINCT request_model FROM requests ORDER BY request_model NULLS LAST"
UNLINKED_MODELS_SQL = f"""
SELECT DISTINCT request_model FROM {{shares}} sh WHERE basis = '{BASIS_OWN}'
ORDER BY request_model NULLS LAST
"""


def _model_keys(con: Any, shares: str) -> tuple[dict[str, tuple[Any, ...]], set[str]]:
    """Report key -> the model names it holds (as :func:`_keyed`), and the keys no request
    asked for: models that only calls no request links to carry."""
    requested = [r[0] for r in con.execute(REQUEST_MODELS_SQL).fetchall()]
    unlinked = [r[0] for r in con.execute(UNLINKED_MODELS_SQL.format(shares=shares)).fetchall()]
    asked = set(_keyed(requested, NO_MODEL))
    keys = _keyed([*requested, *(m for m in unlinked if m not in requested)], NO_MODEL)
    return keys, set(keys) - asked


MAX_BUCKETS = 10_000


def _auto_bucket_s(window: Window) -> float:
    """About 20 buckets, rounded to 1-2-5 steps, at least 1 s."""
    raw = max(window.duration_s / 20.0, 1.0)
    exp = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if raw <= step * exp:
            return float(step * exp)
    return float(10 * exp)


# A request falls in the bucket of its arrival; one arriving at the very end of the window (a
# zero-length bucket of its own) in the last bucket.
BUCKET_EXPR = "LEAST(CAST(FLOOR((arrival_ns - {t0}) / {w}) AS BIGINT), {last})"

# Percentiles over the successful requests no profiled call slowed, as in the scopes; counts and
# concurrency over all.
_OK_LATENCY = f"CASE WHEN {LATENCY_SAMPLE_SQL} THEN latency_ns END"
BUCKET_SQL = f"""
SELECT {{bucket}} AS bucket,
       COUNT(*) AS n,
       COALESCE(SUM(input_tokens), 0) + COALESCE(SUM(output_tokens), 0) AS tokens,
       quantile_disc({_OK_LATENCY}, 0.5) AS p50,
       quantile_disc({_OK_LATENCY}, 0.95) AS p95,
       quantile_disc({_OK_LATENCY}, 0.99) AS p99,
       quantile_disc(CASE WHEN {LATENCY_SAMPLE_SQL} THEN ttft_ns END, 0.5) AS ttft_p50,
       SUM(latency_ns) AS latency_ns
FROM requests WHERE arrival_ns IS NOT NULL
GROUP BY bucket ORDER BY bucket
"""

BUCKET_BATCHES_SQL = """
SELECT LEAST(CAST(FLOOR((start_ns - {t0}) / {w}) AS BIGINT), {last}) AS bucket, COUNT(*)
FROM batches WHERE start_ns IS NOT NULL GROUP BY bucket
"""


def time_buckets(con: Any, window: Window, util: Utilization, bucket_s: float | None,
                 alpha: float) -> dict[str, Any]:
    """Per-bucket requests, throughput, latency percentiles and device busy share.

    A row per bucket in which a request arrived or a model call ran. Requests count in the
    bucket of their arrival, batches (``batches``) in that of their start; rates divide by the
    bucket's overlap with the window (the last bucket is usually partial). ``device_busy_ratio``
    is on the overall utilisation's basis (analyses/utilization.py): the bucket's share of the
    busy time, each call spread over its wall interval, over the paid devices x the overlap; so
    the overlap-weighted mean of the rows is the overall figure. The latency sketch of each
    bucket is computed too and merged; the merged sketch equals the whole-window one (the
    mergeability the sketch exists for), reported as a self-check.
    """
    if window.start_ns is None or window.duration_ns == 0:
        return {"bucket_s": bucket_s, "rows": []}
    width_s = float(bucket_s) if bucket_s else _auto_bucket_s(window)
    widened = window.duration_s / width_s > MAX_BUCKETS
    if widened:  # a 1 ms bucket over a day would be a report of millions of rows
        width_s = window.duration_s / MAX_BUCKETS
    width_ns = width_s * NS_PER_S
    last = max(math.ceil(window.duration_ns / width_ns) - 1, 0)
    if last and window.duration_ns - last * width_ns < width_ns * 1e-6:
        last -= 1  # a float sliver past the last whole bucket (widened widths): fold it back
    fmt = {"t0": int(window.start_ns), "w": f"CAST({width_ns!r} AS DOUBLE)", "last": last}
    bucket_expr = BUCKET_EXPR.format(**fmt)
    devices = max(util.devices, 1)
    batches = {int(b): int(c) for b, c in
               con.execute(BUCKET_BATCHES_SQL.format(**fmt)).fetchall()}
    busy = busy_by_bucket(con, util, window.start_ns, width_ns)
    reqs = {int(r[0]): r[1:] for r in
            con.execute(BUCKET_SQL.format(bucket=bucket_expr)).fetchall()}
    keys = set(reqs) | set(batches) | {b for b, v in (busy or {}).items() if v > 0}
    rows = []
    for b in sorted(k for k in keys if 0 <= k <= last):
        n, tokens, p50, p95, p99, ttft50, lat_ns = reqs.get(b, (0, 0, None, None, None, None,
                                                              0))
        # overlap with the window; the last bucket runs to the window's end
        span_ns = width_ns if b < last else window.duration_ns - b * width_ns
        span_s = span_ns / NS_PER_S
        rows.append({
            "bucket": b,
            "start_s": b * width_s,
            "span_s": rounded(span_s, 6),  # its overlap with the window (the last is partial)
            "requests": int(n),
            "throughput_rps": rounded(int(n) / span_s, 4),
            "tokens_per_s": rounded(int(tokens or 0) / span_s, 3),
            "latency_ms": {"p50": rounded(_ms(p50), 4), "p95": rounded(_ms(p95), 4),
                           "p99": rounded(_ms(p99), 4)},
            "ttft_ms_p50": rounded(_ms(ttft50), 4),
            "concurrency_mean": rounded(int(lat_ns or 0) / span_ns, 4),
            "batches": batches.get(b, 0),
            "device_busy_ratio": None if busy is None else rounded(
                min(1.0, busy.get(b, 0.0) / (span_ns * devices)), 4),
        })
    per_bucket = pct.sketch_from_sql(
        con, f"SELECT {bucket_expr} AS bucket, latency_ns FROM requests"
             f" WHERE arrival_ns IS NOT NULL AND {LATENCY_SAMPLE_SQL}",
        "latency_ns", alpha=alpha, group_cols=("bucket",))
    merged = pct.merge_all(per_bucket.values(), alpha)
    whole = pct.sketch_from_sql(con, f"SELECT latency_ns FROM requests WHERE {LATENCY_SAMPLE_SQL}",
                                "latency_ns", alpha=alpha).get((), pct.LogHistogram(alpha))
    return {
        "bucket_s": width_s,
        "bucket_s_requested": bucket_s,
        "widened_to_max_buckets": widened,
        "rows": rows,
        "sketch_merge_check": {"merged_equals_whole": merged.counts == whole.counts,
                               "buckets": len(per_bucket)},
    }


def _ms(v: Any) -> float | None:
    return None if v is None else float(v) / NS_PER_MS


def baseline(con: Any, window: Window, util: Utilization, conc: Concurrency, cost: CostModel,
             params: AnalysisParams, stats: BatchStats) -> dict[str, Any]:
    """Overall and per-model/route baselines; ``stats`` are the batch statistics over all
    batches, computed once by the caller (the findings use them too)."""
    with shares_table(con) as shares:
        return _baseline(con, window, util, conc, cost.with_usage(con, shares), params, stats,
                         shares)


def _baseline(con: Any, window: Window, util: Utilization, conc: Concurrency, cost: CostModel,
              params: AnalysisParams, stats: BatchStats, shares: str) -> dict[str, Any]:
    alpha = params.sketch_alpha
    overall = _scope(con, "", (), window, cost, alpha)
    overall["window_s"] = window.duration_s
    overall["batch_size"] = stats.to_json()
    overall["concurrency"] = conc.to_json()
    overall["concurrency_mean"] = rounded(conc.mean, 4)
    overall["device_utilization"] = rounded(util.ratio, 4)
    overall["device_utilization_source"] = util.source
    # what the devices could reach as the model ran them (CPU: threads / cores), or None
    overall["device_utilization_ceiling"] = rounded(util.ceiling_ratio, 4)
    overall["device_utilization_detail"] = util.to_json()
    model_keys, request_less = _model_keys(con, shares)
    by_model: dict[str, Any] = {}
    # A model's share of the overall busy time over the same paid capacity: the models of one
    # device add up to the overall utilisation (analyses/utilization.py).
    capacity = window.duration_ns * max(util.devices, 1)
    model_busy = busy_by_model(con, util, shares)
    for key, values in model_keys.items():
        cond, p = _where("request_model", values)
        # a request-less model: no request matches, so its request figures are the empty ones
        # (0 requests, null ratios and percentiles, null cost per request); its cost is its
        # calls' share of their hosts (cost.py: usage of calls no request links to)
        scope = _scope(con, f"WHERE {cond}", p, window, cost, alpha, ("request_model", values))
        scope["requests_observed"] = key not in request_less
        served = MODEL_BATCHES_WHERE.format(shares=shares, model=cond)
        scope["batch_size"] = batch_stats(con, served, p).to_json()
        busy = None if model_busy is None else sum(model_busy.get(m, 0.0) for m in values)
        ran = scope["batch_size"]["batches"] or not util.busy_from_batches
        scope["device_utilization"] = rounded(min(1.0, busy / capacity), 4) if (
            busy is not None and capacity and ran) else None
        by_model[key] = scope
    routes = [r[0] for r in con.execute(
        "SELECT DISTINCT route FROM requests ORDER BY route NULLS LAST").fetchall()]
    by_route: dict[str, Any] = {}
    for key, values in _keyed(routes, NO_ROUTE).items():
        cond, p = _where("route", values)
        by_route[key] = _scope(con, f"WHERE {cond}", p, window, cost, alpha, ("route", values))
    return {
        "overall": overall,
        "by_model": by_model,
        "by_route": by_route,
        "time_buckets": time_buckets(con, window, util, params.bucket_s, alpha),
    }
