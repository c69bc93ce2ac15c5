"""Batch-size distribution, unbatched serving, and padding waste.

``unbatched_serving``: at least 90 % of model calls carry one request while, during a device's model
calls, on average 1.5 or more of the requests that device serves are in flight (so others wait
behind a size-1 call, or run beside it in size-1 calls of their own). Concurrency is counted per
device: replicas that each serve one request at a time are not unbatched serving, however many
requests the fleet has in flight. ``padding_waste``: the share of padded input tokens that are
padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.analyses._common import ratio, rounded
from inferaudit_analyzer.analyses.concurrency import Concurrency
from inferaudit_analyzer.findings import Finding

# Batch size of a model call: the attribute, else its number of member links, else 1.
BATCH_SIZE_EXPR = "COALESCE(batch_size, NULLIF(members, 0), 1)"

BATCH_STATS_SQL = f"""
SELECT COUNT(*) AS n,
       AVG({BATCH_SIZE_EXPR}) AS mean,
       quantile_disc({BATCH_SIZE_EXPR}, 0.5) AS p50,
       quantile_disc({BATCH_SIZE_EXPR}, 0.95) AS p95,
       MAX({BATCH_SIZE_EXPR}) AS max,
       SUM(CASE WHEN {BATCH_SIZE_EXPR} = 1 THEN 1 ELSE 0 END) AS size1,
       SUM(CASE WHEN padded_tokens > 0 AND input_tokens IS NOT NULL THEN input_tokens END)
           AS real_tokens,
       SUM(CASE WHEN padded_tokens > 0 AND input_tokens IS NOT NULL THEN padded_tokens END)
           AS padded_tokens
FROM batches {{where}}
"""

HISTOGRAM_SQL = f"""
SELECT {BATCH_SIZE_EXPR} AS size, COUNT(*) AS n FROM batches {{where}}
GROUP BY size ORDER BY size
"""


@dataclass(frozen=True)
class BatchStats:
    n: int
    mean: float | None
    p50: int | None
    p95: int | None
    max: int | None
    size1: int
    real_tokens: int | None
    padded_tokens: int | None
    histogram: dict[int, int]

    @property
    def size1_share(self) -> float | None:
        return ratio(self.size1, self.n)

    @property
    def padding_ratio(self) -> float | None:
        if not self.padded_tokens or self.real_tokens is None:
            return None
        return max(0.0, 1.0 - self.real_tokens / self.padded_tokens)

    def to_json(self) -> dict[str, Any]:
        return {
            "batches": self.n,
            "mean": rounded(self.mean, 3),
            "p50": self.p50,
            "p95": self.p95,
            "max": self.max,
            "size1_ratio": rounded(self.size1_share, 4),
            "padding_ratio": rounded(self.padding_ratio, 4),
            "histogram": {str(k): v for k, v in self.histogram.items()},
        }


def batch_stats(con: Any, where: str = "", params: tuple[Any, ...] = ()) -> BatchStats:
    """Batch-size distribution over ``batches`` filtered by ``where`` (``WHERE model = ?``)."""
    row = con.execute(BATCH_STATS_SQL.format(where=where), list(params)).fetchone()
    hist = {int(s): int(n) for s, n in
            con.execute(HISTOGRAM_SQL.format(where=where), list(params)).fetchall()}
    n = int(row[0])
    return BatchStats(
        n=n,
        mean=None if not n else float(row[1]),
        p50=None if not n else int(row[2]),
        p95=None if not n else int(row[3]),
        max=None if not n else int(row[4]),
        size1=int(row[5] or 0),
        real_tokens=None if row[6] is None else int(row[6]),
        padded_tokens=None if row[7] is None else int(row[7]),
        histogram=hist,
    )


def batching_findings(stats: BatchStats, conc: Concurrency) -> list[Finding]:
    out: list[Finding] = []
    share1 = stats.size1_share
    busy_conc = conc.mean_while_busy
    if (stats.n >= th.MIN_BATCHES_FOR_BATCHING and share1 is not None
            and share1 >= th.UNBATCHED_SIZE1_SHARE and busy_conc is not None
            and busy_conc >= th.UNBATCHED_MIN_CONCURRENCY):
        out.append(Finding(
            id="unbatched_serving",
            title="Requests overlap but every model call carries one of them",
            severity="high" if busy_conc >= th.UNBATCHED_HIGH_CONCURRENCY else "medium",
            layer="runtime",
            evidence={
                "batches": stats.n,
                "size1_ratio": round(share1, 4),
                "batch_size_p50": stats.p50,
                "concurrency_while_device_busy": round(busy_conc, 3),
                "concurrency_max": conc.max_concurrency,
                "threshold_size1_ratio": th.UNBATCHED_SIZE1_SHARE,
                "threshold_concurrency": th.UNBATCHED_MIN_CONCURRENCY,
            },
            detail=("While a device runs a model call, on average more than one of the requests "
                    "it serves is in flight, yet calls carry one request each: the others wait "
                    "behind it or run beside it in calls of their own. Dynamic or continuous "
                    "batching serves them in the same call."),
        ))
    pad = stats.padding_ratio
    if pad is not None and pad >= th.PADDING_WASTE_RATIO:
        out.append(Finding(
            id="padding_waste",
            title="A large share of batched input tokens is padding",
            severity="medium" if pad >= th.PADDING_WASTE_HIGH_RATIO else "low",
            layer="runtime",
            evidence={
                "padding_ratio": round(pad, 4),
                "real_input_tokens": stats.real_tokens,
                "padded_input_tokens": stats.padded_tokens,
                "threshold_ratio": th.PADDING_WASTE_RATIO,
            },
            detail=("Padding to the longest sequence spends device time on tokens nobody asked "
                    "for; bucket by length or use a ragged/paged-attention runtime."),
        ))
    return out
