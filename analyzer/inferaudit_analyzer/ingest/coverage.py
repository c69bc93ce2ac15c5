"""How much of the traffic the store saw, and what the input lacks for a full audit.

``coverage`` sets the spans read against what the SDK says it exported and dropped (its
``inferaudit.sdk.spans.exported`` / ``dropped`` counters, read back from ``metric_points``), so
a report can say "these findings rest on 93% of the spans". ``coverage_gaps`` lists, per
instrumentation source, which inputs an analysis needs are missing (device time, batch spans,
fingerprints, ...), in words a reader can act on.
"""

from __future__ import annotations

from typing import Any

from inferaudit_sdk import semconv as sc


def counter_totals(con: Any, name: str) -> dict[str, float]:
    """Total of a counter per exporter (``inferaudit.exporter`` attribute; "" when absent):
    last value of each cumulative series, sum of delta points."""
    rows = con.execute(
        f"""
        WITH pts AS (
            SELECT resource_id, attributes, start_ns, temporality, time_ns, value,
                   coalesce(json_extract_string(attributes, '$."{sc.SDK_EXPORTER}"'), '') AS exp
            FROM metric_points WHERE name = ?
        ), series AS (
            SELECT exp, CASE WHEN any_value(temporality) = 1 THEN sum(value)
                        ELSE arg_max(value, time_ns) END AS v
            FROM pts GROUP BY exp, resource_id, attributes, start_ns
        )
        SELECT exp, sum(v) FROM series GROUP BY exp
        """,
        [name],
    ).fetchall()
    return {str(exp): float(v or 0.0) for exp, v in rows}


def busiest_exporter(exported_by: dict[str, float], dropped_by: dict[str, float]) -> str | None:
    """The exporter that saw the most spans: each exporter sees every span, so its exported +
    dropped total is the spans produced, where a sum over exporters would count them twice."""
    return max(sorted(set(exported_by) | set(dropped_by)),
               key=lambda e: exported_by.get(e, 0.0) + dropped_by.get(e, 0.0), default=None)


def coverage(con: Any) -> dict[str, Any]:
    """Spans read vs. spans the SDK reported, ingest errors, and the resulting ratio.

    Each exporter of the SDK sees every span, so the spans produced are the largest
    exported + dropped total of any one exporter (summing over exporters would count every
    span once per exporter). Returns a dict: ``spans_read``, ``spans_exported_reported`` /
    ``spans_dropped_reported`` (of that exporter; None when the input has no SDK counters),
    ``dropped_by_exporter``, ``ingest_errors``, ``files``, ``sampling_ratio`` (None: head
    sampling is not recorded on spans), and ``coverage_ratio`` (0-1: spans read over spans
    produced, where the counters say how many were produced).
    """
    spans_read = int(con.execute("SELECT count(*) FROM spans").fetchone()[0])
    errors = int(con.execute("SELECT count(*) FROM ingest_errors").fetchone()[0])
    files = int(con.execute("SELECT count(*) FROM inputs").fetchone()[0])
    exported_by = counter_totals(con, sc.METRIC_SDK_SPANS_EXPORTED)
    dropped_by = counter_totals(con, sc.METRIC_SDK_SPANS_DROPPED)
    exported = dropped = None
    ratio = None
    top = busiest_exporter(exported_by, dropped_by)
    if top is not None:
        exported, dropped = exported_by.get(top, 0.0), dropped_by.get(top, 0.0)
        produced = max(float(spans_read), exported + dropped)
        ratio = 1.0 if produced == 0 else spans_read / produced
    return {
        "spans_read": spans_read,
        "spans_exported_reported": None if exported is None else int(exported),
        "spans_dropped_reported": None if dropped is None else int(dropped),
        "dropped_by_exporter": {k: int(v) for k, v in sorted(dropped_by.items()) if k},
        "ingest_errors": errors,
        "files": files,
        "sampling_ratio": None,
        "coverage_ratio": ratio,
    }


_GAP_SQL = """
SELECT coalesce(source, 'unknown') AS source,
       count(*) AS spans,
       count(*) FILTER (role = 'request') AS requests,
       count(*) FILTER (role = 'batch') AS batches,
       count(*) FILTER (role = 'batch' AND device_time_ns IS NOT NULL) AS batch_dev,
       count(*) FILTER (role = 'batch' AND cpu_time_ns IS NOT NULL) AS batch_cpu,
       count(*) FILTER (role = 'request' AND device_time_ns IS NOT NULL) AS req_dev,
       count(*) FILTER (role = 'request' AND prompt_fp IS NOT NULL) AS req_fp,
       count(*) FILTER (role = 'request' AND ttft_ns IS NOT NULL) AS req_ttft,
       count(*) FILTER (role = 'request' AND (input_tokens IS NOT NULL
                                           OR output_tokens IS NOT NULL)) AS req_tokens,
       count(*) FILTER (role = 'request' AND queue_ns IS NOT NULL) AS req_queue,
       count(*) FILTER (role = 'batch' AND (h2d_bytes IS NOT NULL
                                         OR d2h_bytes IS NOT NULL)) AS batch_copy,
       count(*) FILTER (role = 'batch' AND gpu_util IS NOT NULL) AS batch_gpu,
       count(*) FILTER (profile_path IS NOT NULL) AS profiled,
       count(*) FILTER (role = 'batch' AND device_type IN ('cuda', 'rocm')) AS gpu_batches
FROM spans GROUP BY 1 ORDER BY 2 DESC
"""


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole else "0%"


def coverage_gaps(con: Any) -> list[str]:
    """What the input lacks for a full audit, one sentence each (empty: nothing missing)."""
    gaps: list[str] = []
    groups = con.execute(_GAP_SQL).fetchall()
    cols = [d[0] for d in con.description]
    many = len(groups) > 1
    for values in groups:
        g = dict(zip(cols, values, strict=True))
        who = f"[{g['source']}] " if many else ""
        if g["source"] == "unknown" and g["requests"] == 0 and g["batches"] == 0:
            continue  # plain spans (HTTP handlers, ...) are context, not audit subjects
        req, bat = g["requests"], g["batches"]
        if req == 0:
            gaps.append(f"{who}no request spans: per-request latency and cost are unavailable")
        if bat == 0:
            gaps.append(f"{who}no batch spans (inferaudit.span.role=batch): batching "
                        "efficiency and token-weighted device cost cannot be measured")
        elif g["batch_dev"] < bat:
            if g["batch_dev"] == 0 and g["batch_cpu"] == 0:
                gaps.append(f"{who}no device time on batch spans: cost falls back to wall time")
            else:
                gaps.append(f"{who}device time missing on "
                            f"{_pct(bat - g['batch_dev'], bat)} of batch spans")
        if bat == 0 and req and g["req_dev"] == 0:
            gaps.append(f"{who}no device time at all: idle-device and hardware-layer "
                        "findings are unavailable")
        if req and g["req_fp"] == 0:
            gaps.append(f"{who}no prompt fingerprints: cacheable-prompt analysis unavailable")
        if req and g["req_tokens"] < req:
            gaps.append(f"{who}token counts missing on {_pct(req - g['req_tokens'], req)} "
                        "of requests")
        if req and g["req_ttft"] == 0:
            gaps.append(f"{who}no time-to-first-token on requests")
        if req and g["req_queue"] == 0:
            gaps.append(f"{who}no queue time on requests: queueing cannot be separated "
                        "from model time")
        if bat and g["batch_copy"] == 0:
            gaps.append(f"{who}no host<->device copy attributes on batch spans")
        if g["gpu_batches"] and g["batch_gpu"] == 0:
            gaps.append(f"{who}no GPU counters on batch spans (NVML sampler off?)")
        if (req or bat) and g["profiled"] == 0:
            gaps.append(f"{who}no kernel profiles (inferaudit.profile.trace_path): hot-kernel "
                        "and launch-overhead analysis unavailable")
    if not groups:
        gaps.append("no spans at all")
    n_price = con.execute(
        "SELECT count(*) FILTER (price_usd_per_hour IS NOT NULL), count(*) FROM resources"
    ).fetchone()
    if n_price[1] and n_price[0] == 0:
        gaps.append("no price on any resource (inferaudit.price.usd_per_hour): costs use the "
                    "ROI model's instance price table")
    cov = coverage(con)
    if cov["spans_exported_reported"] is None and cov["spans_dropped_reported"] is None:
        gaps.append("no SDK span counters (inferaudit.sdk.spans.*): dropped spans unknown")
    elif cov["spans_dropped_reported"]:
        gaps.append(f"the SDK reported {cov['spans_dropped_reported']} dropped spans")
    if cov["ingest_errors"]:
        n_files = con.execute("SELECT count(DISTINCT file) FROM ingest_errors").fetchone()[0]
        gaps.append(f"{cov['ingest_errors']} ingest errors in {n_files} file(s): see "
                    "ingest_errors")
    return gaps
