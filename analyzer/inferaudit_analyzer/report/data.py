"""The few raw series the plots need beyond the JSON report: every request's latency.

Kept to at most :data:`MAX_POINTS` quantiles so a million-request input gives a small report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_POINTS = 400


def plot_data(con: Any) -> dict[str, Any]:
    """``{"latency_ms_quantiles": [[q, ms], ...], "requests": n}`` from the requests view."""
    rows = con.execute(
        "SELECT latency_ns FROM requests WHERE latency_ns IS NOT NULL"  # np.quantile sorts
    ).fetchall()
    lat = np.asarray([r[0] for r in rows], dtype=np.float64) / 1e6
    if not lat.size:
        return {"latency_ms_quantiles": [], "requests": 0}
    qs = np.linspace(0.0, 1.0, min(MAX_POINTS, lat.size) + 1)[1:]
    vals = np.quantile(lat, qs, method="inverted_cdf")
    return {"latency_ms_quantiles": [[float(q), float(v)] for q, v in zip(qs, vals, strict=True)],
            "requests": int(lat.size)}
