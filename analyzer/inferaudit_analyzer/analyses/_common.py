"""Shared plumbing for analyses: parameters, the observation window, tiny SQL helpers.

Every analysis takes an explicit connection (never DuckDB's module-default one) and an
:class:`AnalysisParams`, and returns plain typed values plus ``Finding`` s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000

# The scope keys of requests without a route / a requested model (by_route, by_model, routing).
NO_ROUTE = "(none)"
NO_MODEL = "(unknown)"


@dataclass(frozen=True)
class AnalysisParams:
    """Knobs shared by the analyses; defaults are the documented ones (docs/analysis.md).

    Attributes:
        bucket_s: width of a time bucket for the per-bucket baseline; None picks one that gives
            about 20 buckets over the window.
        sketch_alpha: relative accuracy of the log-bucket percentile sketch.
        near_dup_hamming: SimHash Hamming distance (of 64 bits) at or below which two prompts
            count as near-duplicates.
    """

    bucket_s: float | None = None
    sketch_alpha: float = 0.01
    near_dup_hamming: int = 3


@dataclass(frozen=True)
class Window:
    """The observed wall-clock window, epoch ns; ``duration_ns`` is 0 when there is nothing."""

    start_ns: int | None
    end_ns: int | None

    @property
    def duration_ns(self) -> int:
        if self.start_ns is None or self.end_ns is None:
            return 0
        return max(0, self.end_ns - self.start_ns)

    @property
    def duration_s(self) -> float:
        return self.duration_ns / NS_PER_S

    def to_json(self) -> dict[str, Any]:
        return {"start_ns": self.start_ns, "end_ns": self.end_ns, "duration_s": self.duration_s}


WINDOW_SQL = """
SELECT MIN(s), MAX(e) FROM (
    SELECT arrival_ns AS s, end_ns AS e FROM requests
    UNION ALL
    SELECT start_ns, end_ns FROM batches
) w
"""


def compute_window(con: Any) -> Window:
    """Window over requests and batches: what the devices were paid for while we watched."""
    row = con.execute(WINDOW_SQL).fetchone()
    return Window(None if row[0] is None else int(row[0]), None if row[1] is None else int(row[1]))


def scalar(con: Any, sql: str, params: Sequence[Any] = ()) -> Any:
    row = con.execute(sql, list(params)).fetchone()
    return None if row is None else row[0]


def ratio(num: float | None, den: float | None) -> float | None:
    """num / den, None when either is missing or den is 0 (a ratio we cannot state)."""
    if num is None or den is None or den == 0:
        return None
    return float(num) / float(den)


def rounded(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(float(x), digits)
