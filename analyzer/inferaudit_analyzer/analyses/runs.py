"""Separate runs read together: processes whose spans never overlap in time.

A directory holding two experiments (say the example's sequential and batched runs) or two
deploys of one service reads as one window, and the time between them counts as paid, idle
device time in cost per request and utilisation. Each process (resource) is active from its
first span's start to its last span's end; overlapping processes (replicas) form one run, and a
gap of at least ``MIN_RUN_GAP_S`` between runs is what the finding reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.analyses._common import ratio, rounded
from inferaudit_analyzer.findings import Finding

NS_PER_S = 1_000_000_000

PROCESS_SPANS_SQL = """
SELECT resource_id, MIN(start_ns) AS s, MAX(end_ns) AS e FROM spans
WHERE resource_id IS NOT NULL AND start_ns IS NOT NULL AND end_ns IS NOT NULL
GROUP BY resource_id ORDER BY s, e
"""


@dataclass(frozen=True)
class Runs:
    runs: tuple[tuple[int, int, int], ...]  # (start_ns, end_ns, processes) in time order

    @property
    def gap_ns(self) -> int:
        return sum(b[0] - a[1] for a, b in zip(self.runs, self.runs[1:], strict=False))

    @property
    def window_ns(self) -> int:
        return self.runs[-1][1] - self.runs[0][0] if self.runs else 0


def analyze_runs(con: Any) -> Runs:
    runs: list[list[int]] = []
    for _rid, s, e in con.execute(PROCESS_SPANS_SQL).fetchall():
        if runs and s - runs[-1][1] < th.MIN_RUN_GAP_S * NS_PER_S:
            runs[-1][1] = max(runs[-1][1], int(e))
            runs[-1][2] += 1
        else:
            runs.append([int(s), int(e), 1])
    return Runs(tuple((s, e, n) for s, e, n in runs))


def runs_findings(r: Runs) -> list[Finding]:
    if len(r.runs) < 2:
        return []
    share = ratio(r.gap_ns, r.window_ns) or 0.0
    return [Finding(
        id="separate_runs",
        title=f"The input holds {len(r.runs)} separate runs; the time between them is billed",
        severity="medium" if share >= th.SEPARATE_RUNS_GAP_SHARE else "low",
        layer="coverage",
        evidence={
            "runs": len(r.runs),
            "processes_per_run": [n for _s, _e, n in r.runs],
            "run_s": [rounded((e - s) / NS_PER_S, 3) for s, e, _n in r.runs],
            "gap_s": rounded(r.gap_ns / NS_PER_S, 3),
            "gap_share_of_window_ratio": rounded(share, 4),
            "min_gap_s": th.MIN_RUN_GAP_S,
            "threshold_gap_share": th.SEPARATE_RUNS_GAP_SHARE,
        },
        detail=("Processes whose spans never overlap, with idle time between them: separate "
                "experiments or deploys read as one window. The window, utilisation and cost "
                "per request count the gaps as paid idle time. If the runs are separate "
                "experiments, analyse each one's traces on its own."),
    )]
