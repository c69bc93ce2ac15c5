"""The few raw series the plots need beyond the JSON report: the latency of every request the
baseline's percentiles are over (successful, no profiled model call).

Kept to at most :data:`MAX_POINTS` quantiles so a million-request input gives a small report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inferaudit_analyzer.views import LATENCY_SAMPLE_SQL

MAX_POINTS = 400


def plot_data(con: Any) -> dict[str, Any]:
    """``{"latency_ms_quantiles": [[q, ms], ...], "requests": n}`` from the requests view: the
    requests the baseline's latency percentiles are over (views.LATENCY_SAMPLE_SQL)."""
    rows = con.execute(  # np.quantile sorts
        f"SELECT latency_ns FROM requests WHERE latency_ns IS NOT NULL AND {LATENCY_SAMPLE_SQL}"
    ).fetchall()
    lat = np.asarray([r[0] for r in rows], dtype=np.float64) / 1e6
    if not lat.size:
        return {"latency_ms_quantiles": [], "requests": 0}
    qs = np.linspace(0.0, 1.0, min(MAX_POINTS, lat.size) + 1)[1:]
    vals = np.quantile(lat, qs, method="inverted_cdf")
    return {"latency_ms_quantiles": [[float(q), float(v)] for q, v in zip(qs, vals, strict=True)],
            "requests": int(lat.size)}
