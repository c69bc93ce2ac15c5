"""How much of the traffic the store saw, and what the input lacks for a full audit.

``coverage`` sets the spans read against what the SDK says it exported and dropped (its
``inferaudit.sdk.spans.exported`` / ``dropped`` counters, read back from ``metric_points``), so
a report can say "these findings rest on 93% of the spans". ``coverage_gaps`` lists, per
instrumentation source, which inputs an analysis needs are missing (device time, batch spans,
fingerprints, ...), in words a reader can act on.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import duckdb

from inferaudit_analyzer.engines.base import engine_name
from inferaudit_analyzer.schema import WINDOWED_SPANS_TABLE
from inferaudit_sdk import semconv as sc

# Longest a span waits between its end and its export (the batch processor's 5 s schedule delay,
# with room for a slow export): spans ending this long before a counter point may still be
# counted after it.
EXPORT_LAG_NS = 30 * 10**9

# Per input file, what the ingest could not read (store.py fills it; DuckDB store only):
# lines lost whole (invalid JSON, not an export request, too long, a torn compressed stream)
# and spans rejected one by one inside readable lines, beside the lines read.
LINE_COUNTS_TABLE = "ingest_line_counts"
LINE_COUNTS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("file", "VARCHAR"), ("lines", "BIGINT"), ("lines_lost", "BIGINT"),
    ("spans_lost", "BIGINT"))


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


@dataclass(frozen=True)
class ExportCheck:
    """Spans read against what one exporter of the SDK says it handed on, over the same time.

    ``exported`` / ``dropped``: the exporter's counter increase between the two counter points
    that bracket the spans read; ``spans_read``: spans of the processes those counters came
    from that ended in that interval (widened by ``EXPORT_LAG_NS``, so the comparison errs
    towards seeing everything).
    """

    exporter: str
    exported: int
    dropped: int
    spans_read: int

    @property
    def missing_ratio(self) -> float:
        """Share of the exported spans absent from the input (0-1; 0 when more were read)."""
        return max(0.0, 1.0 - self.spans_read / self.exported) if self.exported else 0.0

    @property
    def seen_ratio(self) -> float:
        """Spans read over spans produced (exported + dropped), 0-1."""
        produced = self.exported + self.dropped
        return 1.0 if produced == 0 else min(self.spans_read, self.exported) / produced


Series = tuple[int | None, list[tuple[int, float]]]  # (start_ns, cumulative (time_ns, value))


def _series(con: Any, name: str) -> dict[tuple[str, Any], list[Series]]:
    """Cumulative (time_ns, value) points of each series of counter ``name`` with the series'
    start, grouped by (exporter, resource_id); delta points are summed into a running total."""
    rows = con.execute(
        f"""
        SELECT coalesce(json_extract_string(attributes, '$."{sc.SDK_EXPORTER}"'), '') AS exp,
               resource_id, attributes, start_ns, temporality, time_ns, value
        FROM metric_points WHERE name = ? AND time_ns IS NOT NULL AND value IS NOT NULL
        """, [name]).fetchall()
    points: dict[tuple[Any, ...], dict[int, float]] = defaultdict(dict)
    delta: dict[tuple[Any, ...], bool] = {}
    for exp, rid, attrs, start, temporality, t, v in rows:
        key = (str(exp), rid, attrs, start)
        points[key][int(t)] = float(v)  # a point read twice (copied files) counts once
        delta[key] = temporality == 1
    out: dict[tuple[str, Any], list[Series]] = defaultdict(list)
    for key, by_time in points.items():
        series = sorted(by_time.items())
        if delta[key]:
            total = 0.0
            series = [(t, total := total + v) for t, v in series]
        out[(key[0], key[1])].append((None if key[3] is None else int(key[3]), series))
    return out


def _bracket(counter: Series, first_ns: int, last_ns: int, partial: bool
             ) -> tuple[float, int | None, int] | None:
    """(counter increase, lower bound, upper bound) of one cumulative series around spans
    starting at ``first_ns`` and ending by ``last_ns``: the bounds are the counter points
    taken (None: from the process start), or None when no interval can be compared.

    Start: zero at the process start where the input holds it (no window, and neither a
    counter point nor the series' start before the first span); else (a window, rotated files
    left out, a table whose old rows expired) the first point an export lag after the first
    span, since what was exported before the input began is unknown. End: the first point
    an export lag after the last span (a whole input; else its last point) or, for a window,
    the last point before the last span.
    """
    start_ns, series = counter
    began_before = start_ns is not None and start_ns <= first_ns - EXPORT_LAG_NS
    if not partial and not began_before and not any(t <= first_ns for t, _ in series):
        lo: int | None = None
        base = 0.0
    else:
        later = [p for p in series if p[0] >= first_ns + EXPORT_LAG_NS]
        if not later:
            return None
        lo, base = later[0]
    if partial:
        inside = [p for p in series if p[0] <= last_ns]
        top = inside[-1] if inside else None
    else:
        after = [p for p in series if p[0] >= last_ns + EXPORT_LAG_NS]
        top = after[0] if after else series[-1]
    if top is None or (lo is not None and top[0] <= lo):
        return None
    return max(0.0, top[1] - base), lo, top[0]


def _partial_input(con: Any) -> bool:
    """Whether the spans are a time window of what was exported (``--since`` / ``--until``)."""
    if engine_name(con) != "duckdb":
        return bool(getattr(con, "windowed", False))  # a ClickHouse connection knows
    return bool(con.execute("SELECT COUNT(*) FROM information_schema.tables WHERE "
                            f"table_name = '{WINDOWED_SPANS_TABLE}'").fetchone()[0])


def _spans_between(con: Any, rid: Any, lo: int | None, hi: int, count: str) -> int:
    where = [f"end_ns <= {int(hi)}"]
    if lo is not None:
        where.append(f"end_ns > {int(lo) - EXPORT_LAG_NS}")
    if rid is not None:
        where.append(f"resource_id = {int(rid)}")
    return int(con.execute(f"SELECT {count} FROM spans WHERE {' AND '.join(where)}"
                           ).fetchone()[0] or 0)


def compare_exports(con: Any) -> ExportCheck | None:
    """Spans read against the SDK's exported counter over the same interval, or None where
    the input has no such counter (or no interval to compare).

    Counters are matched to spans by resource (a process); a process with counters and no
    span read counts against the whole input's time range, so a missing traces file shows.
    Of several exporters (each sees every span) the one whose count is closest to the spans
    read is taken: its output is most likely what was read.
    """
    exported = _series(con, sc.METRIC_SDK_SPANS_EXPORTED)
    if not exported:
        return None
    dropped = _series(con, sc.METRIC_SDK_SPANS_DROPPED)
    # the DuckDB store already dropped copies
    count = "COUNT(*)" if engine_name(con) == "duckdb" else "COUNT(DISTINCT span_id)"
    windows = {rid: (int(n), lo, hi) for rid, n, lo, hi in con.execute(
        f"SELECT resource_id, {count}, MIN(start_ns), MAX(end_ns) FROM spans "
        "GROUP BY resource_id").fetchall() if lo is not None}
    if not windows:
        return None
    everything = (sum(w[0] for w in windows.values()), min(w[1] for w in windows.values()),
                  max(w[2] for w in windows.values()))
    if not {rid for _, rid in exported} & set(windows):
        # counters under another resource than the spans (a differently built metrics
        # resource): compare all of them with all spans
        exported = _merged(exported)
        dropped = _merged(dropped)
        windows = {None: everything}
    partial = _partial_input(con)
    checks: list[ExportCheck] = []
    for exp in sorted({e for e, _ in exported}):
        n_exp = n_drop = n_read = 0.0
        for (e, rid), series_list in exported.items():
            if e != exp:
                continue
            n, first, last = windows.get(rid, everything)
            read = 0
            for counter in series_list:
                got = _bracket(counter, first, last, partial)
                if got is None:
                    continue
                n_exp += got[0]
                if rid not in windows:
                    continue  # a process with counters and no span read: all of it missing
                if got[1] is None and got[2] >= last:
                    read += n
                else:
                    read += _spans_between(con, rid, got[1], got[2], count)
            n_read += min(read, windows[rid][0]) if rid in windows else 0  # restarts overlap
            for counter in dropped.get((exp, rid), ()):
                got = _bracket(counter, first, last, partial)
                n_drop += got[0] if got is not None else 0.0
        if n_exp > 0:
            checks.append(ExportCheck(exp, int(n_exp), int(n_drop), int(n_read)))
    if not checks:
        return None
    return min(checks, key=lambda c: (abs(c.exported - c.spans_read), c.exporter))


def _merged(by: dict[tuple[str, Any], list[Any]]) -> dict[tuple[str, Any], list[Any]]:
    out: dict[tuple[str, Any], list[Any]] = defaultdict(list)
    for (exp, _), series in by.items():
        out[(exp, None)].extend(series)
    return out


def unreadable_spans(con: Any) -> float | None:
    """Spans the unreadable parts of the input most likely held: each line lost whole weighs
    the mean spans per readable line of its file (of all files, where none of it was
    readable), plus the spans rejected one by one. None where the store kept no line counts
    (a fixture, a database)."""
    if engine_name(con) != "duckdb":
        return None
    try:
        rows = con.execute(
            f"SELECT c.file, c.lines, c.lines_lost, c.spans_lost, coalesce(i.spans, 0) "
            f"FROM {LINE_COUNTS_TABLE} c LEFT JOIN inputs i ON i.file = c.file").fetchall()
    except duckdb.Error:  # no such table (a fixture or a foreign store): unknown
        return None
    read_lines = sum(max(0, int(n) - int(lost)) for _, n, lost, _, _ in rows)
    overall = sum(int(sp) for *_, sp in rows) / read_lines if read_lines else 1.0
    total = 0.0
    for _, n, lost, spans_lost, spans in rows:
        readable = int(n) - int(lost)
        density = int(spans) / readable if readable > 0 else overall
        total += int(lost) * density + int(spans_lost)
    return total


def coverage(con: Any, *, compare: bool = True) -> dict[str, Any]:
    """Spans read vs. spans the SDK reported, ingest errors, and the resulting ratio.

    Each exporter of the SDK sees every span, so the spans produced are the largest
    exported + dropped total of any one exporter (summing over exporters would count every
    span once per exporter). Returns a dict: ``spans_read``, ``spans_exported_reported`` /
    ``spans_dropped_reported`` (of that exporter; None when the input has no SDK counters),
    ``dropped_by_exporter``, ``ingest_errors``, ``files``, ``sampling_ratio`` (None: head
    sampling is not recorded on spans), ``coverage_ratio`` (0-1: spans read over spans
    produced, where the counters say how many were produced: over the interval the spans read
    span, :func:`compare_exports`, where it can be told) and ``export_check`` (that
    comparison: ``exporter``, ``exported``, ``dropped``, ``spans_read``; None without one).
    ``compare=False`` skips that comparison (a query per counter series) for callers that
    need only the totals.
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
    check = compare_exports(con) if compare else None
    if check is not None:
        ratio = check.seen_ratio
    return {
        "spans_read": spans_read,
        "spans_exported_reported": None if exported is None else int(exported),
        "spans_dropped_reported": None if dropped is None else int(dropped),
        "dropped_by_exporter": {k: int(v) for k, v in sorted(dropped_by.items()) if k},
        "ingest_errors": errors,
        "files": files,
        "sampling_ratio": None,
        "coverage_ratio": ratio,
        "export_check": None if check is None else asdict(check),
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
    cov = coverage(con, compare=False)
    if cov["spans_exported_reported"] is None and cov["spans_dropped_reported"] is None:
        gaps.append("no SDK span counters (inferaudit.sdk.spans.*): dropped spans unknown")
    elif cov["spans_dropped_reported"]:
        gaps.append(f"the SDK reported {cov['spans_dropped_reported']} dropped spans")
    if cov["ingest_errors"]:
        n_files = con.execute("SELECT count(DISTINCT file) FROM ingest_errors").fetchone()[0]
        gaps.append(f"{cov['ingest_errors']} ingest errors in {n_files} file(s): see "
                    "ingest_errors")
    return gaps
