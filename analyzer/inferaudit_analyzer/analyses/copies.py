"""Host<->device copies on the hot path, and copies from pageable (unpinned) host memory.

From the batch spans' copy counters: copy time as a share of device-busy time (``hot_path_copies``,
hardware layer once it starves the device, else runtime), and the share of copied bytes that were
pageable (``pageable_copies``: synchronous staging copies the serving code can avoid by pinning,
runtime layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.analyses._common import ratio, rounded
from inferaudit_analyzer.findings import Finding

COPIES_SQL = """
SELECT SUM(COALESCE(h2d_bytes, 0)) AS h2d_bytes,
       SUM(COALESCE(d2h_bytes, 0)) AS d2h_bytes,
       SUM(COALESCE(pageable_bytes, 0)) AS pageable_bytes,
       SUM(COALESCE(copy_time_ns, 0)) AS copy_time_ns,
       SUM(CASE WHEN copy_time_ns IS NOT NULL OR h2d_bytes IS NOT NULL
                     OR d2h_bytes IS NOT NULL THEN device_ns END) AS device_ns,
       COUNT(*) FILTER (WHERE copy_time_ns IS NOT NULL OR h2d_bytes IS NOT NULL
                        OR d2h_bytes IS NOT NULL) AS batches_with_copies
FROM batches WHERE COALESCE(device_type, '') <> 'cpu'
"""


@dataclass(frozen=True)
class Copies:
    h2d_bytes: int
    d2h_bytes: int
    pageable_bytes: int
    copy_time_ns: int
    device_ns: int
    batches: int

    @property
    def copy_time_ratio(self) -> float | None:
        return ratio(self.copy_time_ns, self.device_ns)

    @property
    def pageable_ratio(self) -> float | None:
        return ratio(self.pageable_bytes, self.h2d_bytes + self.d2h_bytes)

    def to_json(self) -> dict[str, Any]:
        return {
            "h2d_bytes": self.h2d_bytes,
            "d2h_bytes": self.d2h_bytes,
            "pageable_bytes": self.pageable_bytes,
            "copy_time_s": self.copy_time_ns / 1e9,
            "copy_time_ratio": rounded(self.copy_time_ratio, 4),
            "pageable_ratio": rounded(self.pageable_ratio, 4),
        }


def analyze_copies(con: Any) -> Copies:
    r = con.execute(COPIES_SQL).fetchone()
    return Copies(*(int(v or 0) for v in r))


def copy_findings(c: Copies) -> list[Finding]:
    out: list[Finding] = []
    total_bytes = c.h2d_bytes + c.d2h_bytes
    share = c.copy_time_ratio
    if share is not None and share >= th.COPY_TIME_RATIO:
        bound = share >= th.COPY_BOUND_RATIO
        out.append(Finding(
            id="hot_path_copies",
            title="Host<->device copies take a large share of device time",
            severity="high" if bound else "medium",
            layer="hardware" if bound else "runtime",
            evidence={
                "copy_time_ratio": round(share, 4),
                "copy_time_s": c.copy_time_ns / 1e9,
                "h2d_bytes": c.h2d_bytes,
                "d2h_bytes": c.d2h_bytes,
                "threshold_ratio": th.COPY_TIME_RATIO,
                "bound_threshold_ratio": th.COPY_BOUND_RATIO,
            },
            detail=("Copies inside model calls stall the device on PCIe. Keep tensors resident, "
                    "batch transfers, overlap them with compute on a side stream."),
        ))
    pshare = c.pageable_ratio
    if (pshare is not None and pshare >= th.PAGEABLE_SHARE_RATIO
            and total_bytes >= th.MIN_COPY_BYTES):
        out.append(Finding(
            id="pageable_copies",
            title="Copies come from pageable (unpinned) host memory",
            severity="medium",
            layer="runtime",
            evidence={
                "pageable_ratio": round(pshare, 4),
                "pageable_bytes": c.pageable_bytes,
                "copied_bytes": total_bytes,
                "threshold_ratio": th.PAGEABLE_SHARE_RATIO,
            },
            detail=("Pageable memory forces a synchronous staging copy; pin host buffers "
                    "(pin_memory=True) so copies can run asynchronously and overlap compute."),
        ))
    return out
