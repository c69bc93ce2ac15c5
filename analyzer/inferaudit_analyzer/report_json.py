"""Assemble the versioned JSON report (docs/report-schema.md); nothing here computes.

Bump :data:`REPORT_SCHEMA` on any incompatible change (a key removed, renamed or re-typed);
adding keys is compatible.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

from inferaudit_analyzer.analyses._common import Window
from inferaudit_analyzer.analyses.coverage import Coverage
from inferaudit_analyzer.bottleneck import Verdict
from inferaudit_analyzer.cost import CostModel
from inferaudit_analyzer.findings import Finding
from inferaudit_sdk import semconv

REPORT_SCHEMA = "inferaudit.report/1"
MAX_ERRORS_LISTED = 200  # a million broken lines must not make a million-line report


def _price_summary(cost: CostModel) -> dict[str, Any]:
    sources = sorted({p.source for p in cost.prices})
    per_hour = sum(p.usd_per_hour for p in cost.prices) if cost.priced else None
    return {
        "usd_per_hour": per_hour,
        "source": "; ".join(sources) if sources else "no paid device found",
        "list_price_note": ("Bundled prices are dated list prices (see prices.json); override "
                            "with --price-per-hour or --price-file."),
        "resources": cost.to_json()["resources"],
    }


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf become None (json.dumps would write invalid JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def build_report(*, input_info: dict[str, Any], coverage: Coverage, window: Window,
                 params: dict[str, Any], baseline: dict[str, Any], cost: CostModel,
                 findings: list[Finding], verdict: Verdict, kernels: dict[str, Any] | None,
                 sections: dict[str, Any]) -> dict[str, Any]:
    inp = {
        "paths": input_info.get("paths", []),
        "files": input_info.get("files", []),
        "kineto_files": input_info.get("kineto_files", []),
        "skipped": input_info.get("skipped", []),
        "spans": coverage.spans,
        "requests": coverage.requests,
        "batches": coverage.batches,
        "coverage": coverage.to_json(),
        "errors": list(input_info.get("errors", []))[:MAX_ERRORS_LISTED],
        "errors_total": len(input_info.get("errors", [])),
    }
    report = {
        "schema": REPORT_SCHEMA,
        "span_schema_version": semconv.SCHEMA_VERSION,
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "params": params,
        "input": inp,
        "window": window.to_json(),
        "price": _price_summary(cost),
        "cost": cost.to_json(),
        "baseline": baseline,
        "findings": [f.to_json() for f in findings],
        "bottleneck": verdict.to_json(),
        "kernels": kernels,
        **sections,
    }
    return _clean(report)
