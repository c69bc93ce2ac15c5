"""Concurrency: how many requests are in flight, and what the device does meanwhile.

One event sweep in SQL (+1/-1 at each request's arrival/end and each batch's start/end, running
sums, segment lengths to the next event) yields the time-weighted mean and max concurrency, the
time with more than one request in flight, and the time requests were in flight while no model call
ran. The idle and batching analyses read this one result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferaudit_analyzer.analyses._common import ratio, rounded

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
    COALESCE(SUM(CASE WHEN b > 0 THEN len ELSE 0 END), 0) AS busy_any_ns,
    COALESCE(SUM(r * len), 0) AS request_ns,
    COALESCE(MAX(r), 0) AS max_concurrency,
    COALESCE(SUM(CASE WHEN r > 1 THEN len ELSE 0 END), 0) AS multi_ns,
    COALESCE(SUM(CASE WHEN b > 0 THEN r * len ELSE 0 END), 0) AS request_ns_while_busy
FROM run WHERE len IS NOT NULL
"""


@dataclass(frozen=True)
class Concurrency:
    """Sweep results; all durations ns over the observed window.

    ``mean`` is time-weighted over the whole window (Little's law: total request-time / window);
    ``mean_inflight`` over the time at least one request was in flight; ``mean_while_busy`` over
    the time at least one model call ran.
    """

    window_ns: int
    inflight_ns: int
    idle_waiting_ns: int
    busy_any_ns: int
    request_ns: int
    max_concurrency: int
    multi_ns: int
    request_ns_while_busy: int
    has_batches: bool

    @property
    def mean(self) -> float | None:
        return ratio(self.request_ns, self.window_ns)

    @property
    def mean_inflight(self) -> float | None:
        return ratio(self.request_ns, self.inflight_ns)

    @property
    def mean_while_busy(self) -> float | None:
        return ratio(self.request_ns_while_busy, self.busy_any_ns)

    @property
    def idle_while_waiting_ratio(self) -> float | None:
        """Share of in-flight time with no model call running; None without batch spans."""
        if not self.has_batches:
            return None
        return ratio(self.idle_waiting_ns, self.inflight_ns)

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
    n_batches = con.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    return Concurrency(
        window_ns=int(window_ns),
        inflight_ns=int(row[0]),
        idle_waiting_ns=int(row[1]),
        busy_any_ns=int(row[2]),
        request_ns=int(row[3]),
        max_concurrency=int(row[4]),
        multi_ns=int(row[5]),
        request_ns_while_busy=int(row[6]),
        has_batches=n_batches > 0,
    )
