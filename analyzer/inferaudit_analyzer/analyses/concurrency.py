"""Concurrency: how many requests are in flight, and what the device does meanwhile.

One event sweep in SQL (+1/-1 at each request's arrival/end and each batch's start/end, running
sums, segment lengths to the next event) yields the time-weighted mean and max concurrency, the
time with more than one request in flight, and the time requests were in flight while no model call
ran anywhere. A second sweep, one per physical device (``views.device_key_sql``: its ``hw.id``
where the span names it, else the resource and the device id within it), follows each device's
own requests (those whose batches ran on it): while it runs a model call, how many are in flight
(concurrency while busy), and how long they are in flight while it runs none (idle while
waiting). Both are a device's, so replicas each serving one request at a time do not add up to
"requests overlap", and a replica idle while its own requests wait is idle though another is
busy. Where no model call links to any request, no device is known to serve anyone, and the
first sweep's fleet-wide figures stand in. The idle and batching analyses read these results.

Both sweeps lay request times next to device times. Where model calls are recorded by another
resource (host) than the requests they serve, the two clocks may disagree: a model call then lies
outside the request it serves, and a device that ran 90 % of the time reads as idle while requests
wait. Each such resource pair's clock offset is bounded from the calls against their requests (a
call runs within its request); where the median call needs an offset above
``thresholds.CLOCK_SKEW_MAX_SHARE`` of the median request, idle-while-waiting and
concurrency-while-busy are not measurable, and are None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.analyses._common import ratio, rounded
from inferaudit_analyzer.findings import Finding
from inferaudit_analyzer.views import CPU_DEVICE_ID, device_key_sql

SWEEP_SQL = """
WITH ev AS (
    SELECT arrival_ns AS t, 1 AS dr, 0 AS db FROM requests
     WHERE arrival_ns IS NOT NULL AND end_ns IS NOT NULL
    UNION ALL
    SELECT end_ns, -1, 0 FROM requests WHERE arrival_ns IS NOT NULL AND end_ns IS NOT NULL
    UNION ALL
    SELECT start_ns, 0, 1 FROM batches WHERE start_ns IS NOT NULL AND end_ns IS NOT NULL
    UNION ALL
    SELECT end_ns, 0, -1 FROM batches WHERE start_ns IS NOT NULL AND end_ns IS NOT NULL
),
agg AS (SELECT t, SUM(dr) AS dr, SUM(db) AS db FROM ev GROUP BY t),
run AS (
    SELECT t,
           SUM(dr) OVER (ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS r,
           SUM(db) OVER (ORDER BY t ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS b,
           LEAD(t) OVER (ORDER BY t) - t AS len
    FROM agg
)
SELECT
    COALESCE(SUM(CASE WHEN r > 0 THEN len ELSE 0 END), 0) AS inflight_ns,
    COALESCE(SUM(CASE WHEN r > 0 AND b = 0 THEN len ELSE 0 END), 0) AS idle_waiting_ns,
    COALESCE(SUM(r * len), 0) AS request_ns,
    COALESCE(MAX(r), 0) AS max_concurrency,
    COALESCE(SUM(CASE WHEN r > 1 THEN len ELSE 0 END), 0) AS multi_ns,
    COALESCE(SUM(CASE WHEN b > 0 THEN len ELSE 0 END), 0) AS busy_any_ns,
    COALESCE(SUM(CASE WHEN b > 0 THEN r * len ELSE 0 END), 0) AS request_ns_while_busy
FROM run WHERE len IS NOT NULL
"""

# Per device: its batches, and the requests that rode them (through ``batch_members``: a request
# whose calls ran on several devices, tensor-parallel ranks or prefill and decode apart, is in
# flight on each). Only devices that served some request are swept: a device whose calls link to
# no request would count as busy with nobody waiting. Sums over devices: device-busy time,
# request-time on a busy device, time some of its requests were in flight, and of that the time
# it ran no call; ``devices``: how many were swept.
DEVICE_SWEEP_SQL = f"""
WITH dev AS (
    -- a process's CPU calls are not a device beside its accelerator (as in utilisation): on
    -- its GPU, a request waiting through one is waiting with that GPU idle
    SELECT * FROM batches b
    WHERE b.device_id <> '{CPU_DEVICE_ID}' OR NOT EXISTS (
        SELECT 1 FROM batches g
        WHERE g.resource_id IS NOT DISTINCT FROM b.resource_id
          AND g.device_id <> '{CPU_DEVICE_ID}')
),
rq AS (
    SELECT DISTINCT {device_key_sql("b.resource_id", "b.device_id", "b.hw_id")} AS k,
           q.trace_id, q.span_id, q.arrival_ns, q.end_ns
    FROM batch_members m
    JOIN dev b ON b.trace_id = m.batch_trace_id AND b.span_id = m.batch_span_id
    JOIN requests q ON q.trace_id = m.req_trace_id AND q.span_id = m.req_span_id
    WHERE q.arrival_ns IS NOT NULL AND q.end_ns IS NOT NULL
),
bk AS (
    SELECT {device_key_sql("resource_id")} AS k, start_ns, end_ns FROM dev
    WHERE start_ns IS NOT NULL AND end_ns IS NOT NULL
),
ev AS (
    SELECT k, arrival_ns AS t, 1 AS dr, 0 AS db FROM rq
    UNION ALL
    SELECT k, end_ns, -1, 0 FROM rq
    UNION ALL
    SELECT k, start_ns, 0, 1 FROM bk WHERE k IN (SELECT k FROM rq)
    UNION ALL
    SELECT k, end_ns, 0, -1 FROM bk WHERE k IN (SELECT k FROM rq)
),
agg AS (SELECT k, t, SUM(dr) AS dr, SUM(db) AS db FROM ev GROUP BY k, t),
run AS (
    SELECT k,
           SUM(dr) OVER (PARTITION BY k ORDER BY t
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS r,
           SUM(db) OVER (PARTITION BY k ORDER BY t
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS b,
           LEAD(t) OVER (PARTITION BY k ORDER BY t) - t AS len
    FROM agg
)
SELECT
    COALESCE(SUM(CASE WHEN b > 0 THEN len ELSE 0 END), 0) AS device_busy_ns,
    COALESCE(SUM(CASE WHEN b > 0 THEN r * len ELSE 0 END), 0) AS device_request_ns_while_busy,
    COUNT(DISTINCT k) AS devices,
    COALESCE(SUM(CASE WHEN r > 0 THEN len ELSE 0 END), 0) AS device_inflight_ns,
    COALESCE(SUM(CASE WHEN r > 0 AND b = 0 THEN len ELSE 0 END), 0) AS device_idle_waiting_ns
FROM run
"""

# Each model call against each request it serves (``batch_members``: the one membership rule)
# where the two come from different resources. A call runs within its request span, so the call
# clock's offset from the request clock lies in [call end - request end, call start - request
# start].
CLOCK_PAIRS_SQL = """
WITH pairs AS (
    SELECT b.resource_id AS batch_resource_id, r.resource_id AS request_resource_id,
           b.end_ns - r.end_ns AS lo, b.start_ns - r.start_ns AS hi, r.duration_ns AS req_ns
    FROM batch_members m
    JOIN batches b ON b.trace_id = m.batch_trace_id AND b.span_id = m.batch_span_id
    JOIN request_spans r ON r.trace_id = m.req_trace_id AND r.span_id = m.req_span_id
    WHERE b.resource_id <> r.resource_id
)
SELECT batch_resource_id, request_resource_id, COUNT(*) AS n,
       quantile_disc(lo, 0.5) AS lo_p50, quantile_disc(hi, 0.5) AS hi_p50,
       quantile_disc(req_ns, 0.5) AS req_p50
FROM pairs
GROUP BY batch_resource_id, request_resource_id
ORDER BY batch_resource_id, request_resource_id
"""


@dataclass(frozen=True)
class ClockSkew:
    """The clock of the resource recording model calls against that of their requests.

    ``offset_ns`` is a lower bound on how far the call clock runs ahead (> 0) or behind (< 0):
    the median call ends that much after its request ends (starts that much before it starts).
    """

    batch_resource_id: int
    request_resource_id: int
    pairs: int
    offset_ns: int
    request_p50_ns: int

    @property
    def significant(self) -> bool:
        return (self.pairs >= th.CLOCK_SKEW_MIN_PAIRS
                and abs(self.offset_ns) > th.CLOCK_SKEW_MAX_SHARE * self.request_p50_ns)


def clock_skews(con: Any) -> tuple[ClockSkew, ...]:
    """The resource pairs whose clocks disagree enough to misplace calls against requests."""
    out = []
    for b_res, r_res, n, lo, hi, req in con.execute(CLOCK_PAIRS_SQL).fetchall():
        offset = lo if lo > 0 else hi if hi < 0 else 0
        skew = ClockSkew(int(b_res), int(r_res), int(n), int(offset), int(req or 0))
        if skew.significant:
            out.append(skew)
    return tuple(out)


@dataclass(frozen=True)
class Concurrency:
    """Sweep results; all durations ns over the observed window.

    ``mean`` is time-weighted over the whole window (Little's law: total request-time / window);
    ``mean_inflight`` over the time at least one request was in flight; ``mean_while_busy`` per
    device, over the time it ran a model call, counting the requests served by that device
    (``device_busy_ns`` and ``device_request_ns_while_busy`` are summed over the
    ``swept_devices`` that served some request). The idle-while-waiting share likewise: the
    time each device's requests were in flight while it ran no call, over the time they were in
    flight (``device_idle_waiting_ns`` / ``device_inflight_ns``, summed over devices). Where no
    model call links to a request (no device is known to serve any), both are the fleet's:
    requests in flight anywhere while any call runs (``request_ns_while_busy`` /
    ``busy_any_ns``), and while none runs anywhere (``idle_waiting_ns`` / ``inflight_ns``).
    Both are None where ``clock_skews`` says the request and device clocks disagree.
    """

    window_ns: int
    inflight_ns: int
    idle_waiting_ns: int
    request_ns: int
    max_concurrency: int
    multi_ns: int
    has_batches: bool
    device_busy_ns: int
    device_request_ns_while_busy: int
    clock_skews: tuple[ClockSkew, ...]
    swept_devices: int = 0
    busy_any_ns: int = 0
    request_ns_while_busy: int = 0
    device_inflight_ns: int = 0
    device_idle_waiting_ns: int = 0

    @property
    def clock_skewed(self) -> bool:
        return bool(self.clock_skews)

    @property
    def mean(self) -> float | None:
        return ratio(self.request_ns, self.window_ns)

    @property
    def mean_inflight(self) -> float | None:
        return ratio(self.request_ns, self.inflight_ns)

    @property
    def mean_while_busy(self) -> float | None:
        if self.clock_skewed:
            return None
        if not self.swept_devices:  # no call links to a request: the fleet-wide sweep
            return ratio(self.request_ns_while_busy, self.busy_any_ns)
        return ratio(self.device_request_ns_while_busy, self.device_busy_ns)

    @property
    def idle_waiting_basis(self) -> tuple[int, int]:
        """(idle ns, in-flight ns) the idle-while-waiting share divides: per device, summed
        over the swept devices; the fleet's where no call links to a request."""
        if not self.swept_devices:
            return self.idle_waiting_ns, self.inflight_ns
        return self.device_idle_waiting_ns, self.device_inflight_ns

    @property
    def idle_while_waiting_ratio(self) -> float | None:
        """Share of the time a device's requests are in flight while it runs no model call;
        None without batch spans, or where clocks disagree."""
        if not self.has_batches or self.clock_skewed:
            return None
        return ratio(*self.idle_waiting_basis)

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": rounded(self.mean, 4),
            "mean_while_inflight": rounded(self.mean_inflight, 4),
            "mean_while_device_busy": rounded(self.mean_while_busy, 4),
            "max": self.max_concurrency,
            "multi_inflight_ratio": rounded(ratio(self.multi_ns, self.inflight_ns), 4),
        }


def analyze_concurrency(con: Any, window_ns: int) -> Concurrency:
    row = con.execute(SWEEP_SQL).fetchone()
    dev = con.execute(DEVICE_SWEEP_SQL).fetchone()
    n_batches = con.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    return Concurrency(
        window_ns=int(window_ns),
        inflight_ns=int(row[0]),
        idle_waiting_ns=int(row[1]),
        request_ns=int(row[2]),
        max_concurrency=int(row[3]),
        multi_ns=int(row[4]),
        has_batches=n_batches > 0,
        device_busy_ns=int(dev[0]),
        device_request_ns_while_busy=int(dev[1]),
        clock_skews=clock_skews(con),
        swept_devices=int(dev[2] or 0),
        busy_any_ns=int(row[5]),
        request_ns_while_busy=int(row[6]),
        device_inflight_ns=int(dev[3] or 0),
        device_idle_waiting_ns=int(dev[4] or 0),
    )


def clock_skew_findings(conc: Concurrency) -> list[Finding]:
    """Say where request and device clocks disagree: idle-while-waiting and concurrency while
    busy were then not measured, and a reader should know why they are missing."""
    if not conc.clock_skews:
        return []
    worst = max(conc.clock_skews, key=lambda s: abs(s.offset_ns) / max(s.request_p50_ns, 1))
    return [Finding(
        id="clock_skew",
        title="Request and model-call clocks disagree across hosts; idle time and concurrency "
              "while busy were not measured",
        severity="medium",
        layer="coverage",
        evidence={
            "resource_pairs": [
                {"batch_resource_id": s.batch_resource_id,
                 "request_resource_id": s.request_resource_id, "calls": s.pairs,
                 "offset_ms_at_least": round(s.offset_ns / 1e6, 3),
                 "request_p50_ms": round(s.request_p50_ns / 1e6, 3)}
                for s in conc.clock_skews],
            "worst_offset_ms_at_least": round(worst.offset_ns / 1e6, 3),
            "threshold_share_of_request": th.CLOCK_SKEW_MAX_SHARE,
        },
        detail=("Model calls recorded on one host lie outside the requests they serve, recorded "
                "on another, by more than a tenth of a median request: one of the two clocks is "
                "off (a positive offset: the call host's clock runs ahead). Laid side by side, "
                "the two would make a busy device look idle, so idle-while-waiting and the "
                "concurrency while the device is busy are left out, and the findings built on "
                "them cannot fire. Sync both hosts (chrony/NTP) and trace again."),
    )]
