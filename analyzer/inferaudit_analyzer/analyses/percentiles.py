"""Percentiles two ways: exact (``quantile_disc``) and a mergeable log-bucket sketch.

Exact is what the report shows (:func:`exact_quantile`: the same rule on values held in memory,
as the ROI replay's are). The sketch is what a distributed store (ClickHouse, many files, many
time buckets) can merge: DDSketch-style relative-error buckets with a stated ``alpha``;
bucket index ``i = ceil(ln(x) / ln(gamma))``, ``gamma = (1 + alpha) / (1 - alpha)``, computed in
SQL, merged by summing counts per index, a quantile read as the representative
``2 * gamma**i / (gamma + 1)`` of the bucket holding the rank. Both use the same rank rule
(the ``ceil(q * n)``-th smallest value, as ``quantile_disc`` does), so for every x > 0 the sketch is
within ``alpha`` relative error of the exact value (Masson et al., DDSketch, VLDB 2019).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_ALPHA = 0.01
DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)
# Index given to values <= 0 (a zero-duration span); read back as 0.
ZERO_BUCKET = -(2**40)


def gamma_for(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return (1.0 + alpha) / (1.0 - alpha)


def _qname(q: float) -> str:
    return "p" + f"{q * 100:g}".replace(".", "_")


def exact_sql(source_sql: str, value_col: str, quantiles: Sequence[float],
              group_cols: Sequence[str] = ()) -> str:
    """SQL for exact percentiles of ``value_col`` over ``source_sql`` (a SELECT or a view name).

    One ``quantile_disc(x, q)`` per quantile, plus count, mean, max. On ClickHouse
    ``engines.dialect`` computes the same ``ceil(q * n)`` rank exactly (no ``quantileExact*``
    variant uses it).
    """
    groups = ", ".join(group_cols)
    sel_groups = f"{groups}, " if groups else ""
    qs = ", ".join(
        f"quantile_disc({value_col}, {float(q)!r}) AS {_qname(q)}" for q in quantiles
    )
    group_by = f" GROUP BY {groups}" if groups else ""
    return (
        f"SELECT {sel_groups}COUNT({value_col}) AS n, AVG({value_col}) AS mean, "
        f"MAX({value_col}) AS max, {qs} FROM ({source_sql}) src "
        f"WHERE {value_col} IS NOT NULL{group_by}"
    )


def exact_quantile(values: Any, q: float) -> float:
    """The ``ceil(q * n)``-th smallest of ``values`` held in memory (numpy's ``inverted_cdf``
    method): ``quantile_disc``'s rank rule, so a quantile computed outside SQL (the ROI
    replay's) is on the same definition as the report's."""
    return float(np.quantile(values, q, method="inverted_cdf"))


def sketch_buckets_sql(source_sql: str, value_col: str, group_cols: Sequence[str] = ()) -> str:
    """SQL producing ``(group..., idx, n)`` bucket counts; parameter ``?`` is ``ln(gamma)``."""
    groups = ", ".join(group_cols)
    sel_groups = f"{groups}, " if groups else ""
    idx = (
        f"CASE WHEN {value_col} > 0 THEN CAST(CEIL(LN({value_col}) / ?) AS BIGINT) "
        f"ELSE {ZERO_BUCKET} END"
    )
    return (
        f"SELECT {sel_groups}{idx} AS idx, COUNT(*) AS n FROM ({source_sql}) src "
        f"WHERE {value_col} IS NOT NULL GROUP BY {sel_groups}idx"
    )


@dataclass
class LogHistogram:
    """A mergeable log-bucket histogram: ``{bucket index: count}`` at relative accuracy alpha."""

    alpha: float = DEFAULT_ALPHA
    counts: dict[int, int] = field(default_factory=dict)

    @property
    def gamma(self) -> float:
        return gamma_for(self.alpha)

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def add(self, x: float, n: int = 1) -> None:
        idx = math.ceil(math.log(x) / math.log(self.gamma)) if x > 0 else ZERO_BUCKET
        self.counts[idx] = self.counts.get(idx, 0) + n

    def merge(self, other: LogHistogram) -> LogHistogram:
        """Sum counts per index: the whole point of the sketch. Alphas must match."""
        if not math.isclose(other.alpha, self.alpha):
            raise ValueError("cannot merge sketches with different alpha")
        out = dict(self.counts)
        for k, v in other.counts.items():
            out[k] = out.get(k, 0) + v
        return LogHistogram(self.alpha, out)

    def value_of(self, idx: int) -> float:
        if idx == ZERO_BUCKET:
            return 0.0
        g = self.gamma
        return 2.0 * g**idx / (g + 1.0)

    def quantile(self, q: float) -> float | None:
        """The representative of the bucket holding the ``ceil(q*n)``-th smallest value."""
        n = self.count
        if n == 0:
            return None
        rank = max(1, math.ceil(q * n))
        seen = 0
        for idx in sorted(self.counts):
            seen += self.counts[idx]
            if seen >= rank:
                return self.value_of(idx)
        return self.value_of(max(self.counts))

    def to_json(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "buckets": {str(k): v for k, v in sorted(self.counts.items())}}


def sketch_from_sql(con: Any, source_sql: str, value_col: str, params: Sequence[Any] = (),
                    alpha: float = DEFAULT_ALPHA,
                    group_cols: Sequence[str] = ()) -> dict[tuple[Any, ...], LogHistogram]:
    """Bucket counts computed in SQL, one sketch per group (key ``()`` when ungrouped).

    ``params`` are the source query's own bound parameters; ``ln(gamma)`` is bound first.
    """
    sql = sketch_buckets_sql(source_sql, value_col, group_cols)
    rows = con.execute(sql, [math.log(gamma_for(alpha)), *params]).fetchall()
    out: dict[tuple[Any, ...], LogHistogram] = {}
    k = len(group_cols)
    for row in rows:
        key = tuple(row[:k])
        out.setdefault(key, LogHistogram(alpha)).counts[int(row[k])] = int(row[k + 1])
    return out


def merge_all(sketches: Iterable[LogHistogram], alpha: float = DEFAULT_ALPHA) -> LogHistogram:
    total = LogHistogram(alpha)
    for s in sketches:
        total = total.merge(s)
    return total


def summarize(con: Any, source_sql: str, value_col: str, params: Sequence[Any] = (),
              scale: float = 1.0, quantiles: Sequence[float] = DEFAULT_QUANTILES,
              alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    """Exact and sketch percentiles of one column, divided by ``scale`` (e.g. 1e6 for ns -> ms).

    Returns ``{"n", "mean", "max", "p50", ..., "sketch": {"alpha", "p50", ...}}``; values None
    when the column has no non-null value.
    """
    row = con.execute(exact_sql(source_sql, value_col, quantiles), list(params)).fetchone()
    n = int(row[0]) if row else 0
    out: dict[str, Any] = {"n": n}

    def scaled(v: Any) -> float | None:
        return None if v is None else float(v) / scale

    out["mean"] = scaled(row[1]) if n else None
    out["max"] = scaled(row[2]) if n else None
    for i, q in enumerate(quantiles):
        out[_qname(q)] = scaled(row[3 + i]) if n else None
    sketch = sketch_from_sql(con, source_sql, value_col, params, alpha).get((), LogHistogram(alpha))
    out["sketch"] = {"alpha": alpha}
    for q in quantiles:
        out["sketch"][_qname(q)] = scaled(sketch.quantile(q))
    return out


def quantile_names(quantiles: Sequence[float] = DEFAULT_QUANTILES) -> list[str]:
    return [_qname(q) for q in quantiles]


def relative_error(a: float | None, b: float | None) -> float:
    """|a - b| / |b|, 0 when both are 0 or None; used by tests and the self-check."""
    if a is None or b is None:
        return 0.0 if a == b else math.inf
    if b == 0:
        return 0.0 if a == 0 else math.inf
    return abs(a - b) / abs(b)
