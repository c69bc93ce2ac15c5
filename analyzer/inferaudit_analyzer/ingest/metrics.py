"""OTLP/JSON ``ExportMetricsServiceRequest`` objects → ``metric_points`` rows.

Gauges and sums become one point per data point (``temporality`` 1 = delta, 2 = cumulative, NULL
for gauges) so the SDK's ``inferaudit.sdk.spans.dropped`` / ``exported`` counters and the NVML
``hw.gpu.*`` gauges can be read back with plain SQL; histograms (explicit and exponential) and
summaries become two points, ``<name>.sum`` and ``<name>.count``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from inferaudit_analyzer.ingest.foreign import INT64_MAX, INT64_MIN
from inferaudit_analyzer.ingest.otlp_values import attr_dict, dumps

if TYPE_CHECKING:
    from inferaudit_analyzer.ingest.otlp_json import RowBuilder

_TEMPORALITY_NAMES = {
    "AGGREGATION_TEMPORALITY_UNSPECIFIED": 0,
    "AGGREGATION_TEMPORALITY_DELTA": 1,
    "AGGREGATION_TEMPORALITY_CUMULATIVE": 2,
}


def _temporality(x: Any) -> int | None:
    if x is None:
        return None
    return x if type(x) is int else _TEMPORALITY_NAMES.get(x)


def _time_ns(x: Any, field: str) -> int:
    """A data point's time; one beyond int64 (fixed64 in protobuf) fails here, not in Arrow."""
    v = int(x)
    if not INT64_MIN <= v <= INT64_MAX:
        raise ValueError(f"{field} {v} is outside the signed 64-bit range")
    return v


def _int_or_none(x: Any, field: str) -> int | None:
    return None if x is None else _time_ns(x, field)


def _finite(v: float, field: str) -> float:
    """A point's value: NaN and infinities (valid OTLP JSON, "NaN") are no count or level any
    reader could add up, so the point is reported and left out, not summed into a total."""
    if not math.isfinite(v):
        raise ValueError(f"{field} {v} is not a finite number")
    return v


def _number(dp: dict[str, Any]) -> float | None:
    v = dp.get("asDouble")
    if v is not None:
        return _finite(float(v), "asDouble")
    v = dp.get("asInt")
    return None if v is None else float(int(v))


def add_metrics(b: RowBuilder, obj: dict[str, Any], line: int | None,
                offset: int | None) -> None:
    """Add every data point of one metrics export request to ``b.metric_rows``."""
    rms = obj.get("resourceMetrics")
    if type(rms) is not list:
        b.error(line, offset, f"resourceMetrics must be a list, got {type(rms).__name__}")
        return
    rows = b.metric_rows
    before = len(rows)
    for r, rm in enumerate(rms):
        if type(rm) is not dict:
            b.error(line, offset, f"resourceMetrics #{r} must be an object, got "
                                  f"{type(rm).__name__}")
            continue
        try:
            rid, _ = b.resource(rm.get("resource"))
            scope_metrics = rm.get("scopeMetrics")
            if scope_metrics is None:
                scope_metrics = rm.get("instrumentationLibraryMetrics") or ()
            if type(scope_metrics) is not list and scope_metrics != ():
                b.error(line, offset, f"resourceMetrics #{r}: scopeMetrics must be a list, got "
                                      f"{type(scope_metrics).__name__}")
                continue
            for j, sm in enumerate(scope_metrics):
                if type(sm) is not dict:
                    b.error(line, offset, f"resourceMetrics #{r}: scopeMetrics #{j} must be an "
                                          f"object, got {type(sm).__name__}")
                    continue
                metrics = sm.get("metrics") or ()
                if type(metrics) is not list and metrics != ():
                    b.error(line, offset, f"resourceMetrics #{r}: scopeMetrics #{j}: metrics "
                                          f"must be a list, got {type(metrics).__name__}")
                    continue
                for m in metrics:
                    if type(m) is not dict:
                        b.error(line, offset, f"a metric must be an object, got "
                                              f"{type(m).__name__}")
                        continue
                    name = m.get("name")
                    if not isinstance(name, str) or not name:
                        b.error(line, offset, "metric without a name")
                        continue
                    def bad(exc: BaseException, name: str = name) -> None:
                        b.error(line, offset, f"metric {name}: {type(exc).__name__}: {exc}")

                    try:
                        _metric(rows, m, name, rid, bad)
                    except (TypeError, ValueError, KeyError, AttributeError) as exc:
                        bad(exc)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            b.error(line, offset, f"malformed resourceMetrics entry: {exc}")
    b.metric_points += len(rows) - before
    if len(rows) >= b.chunk_spans:
        b.on_spans(b)


_POINT_ERRORS = (TypeError, ValueError, KeyError, AttributeError, OverflowError)


def _points(body: Any, bad: Callable[[BaseException], None]) -> list[Any]:
    """The data points of a metric body; a body or point list of the wrong type is one error."""
    if type(body) is not dict:
        bad(TypeError(f"the metric's data must be an object, got {type(body).__name__}"))
        return []
    points = body.get("dataPoints") or []
    if type(points) is not list:
        bad(TypeError(f"dataPoints must be a list, got {type(points).__name__}"))
        return []
    out = [dp for dp in points if type(dp) is dict]
    if len(out) < len(points):
        bad(TypeError(f"{len(points) - len(out)} data point(s) not an object; skipped"))
    return out


def _metric(rows: list[tuple[Any, ...]], m: dict[str, Any], name: str, rid: int,
            bad: Callable[[BaseException], None]) -> None:
    """Rows of one metric; a bad data point is reported through ``bad`` and loses only itself."""
    for kind in ("gauge", "sum"):
        body = m.get(kind)
        if body is None:
            continue
        temporality = _temporality(body.get("aggregationTemporality")) if kind == "sum" else None
        for dp in _points(body, bad):
            try:
                value = _number(dp)
                if value is None:
                    continue
                rows.append((name, _time_ns(dp.get("timeUnixNano") or 0, "timeUnixNano"),
                             value, rid, dumps(attr_dict(dp.get("attributes"))),
                             _int_or_none(dp.get("startTimeUnixNano"), "startTimeUnixNano"),
                             temporality))
            except _POINT_ERRORS as exc:
                bad(exc)
        return
    for kind in ("histogram", "exponentialHistogram", "summary"):
        body = m.get(kind)
        if body is None:
            continue
        temporality = _temporality(body.get("aggregationTemporality"))
        for dp in _points(body, bad):
            try:
                t = _time_ns(dp.get("timeUnixNano") or 0, "timeUnixNano")
                attrs = dumps(attr_dict(dp.get("attributes")))
                start = _int_or_none(dp.get("startTimeUnixNano"), "startTimeUnixNano")
                total = _finite(float(dp.get("sum") or 0.0), "sum")
                count = float(int(dp.get("count") or 0))
            except _POINT_ERRORS as exc:
                bad(exc)
                continue
            rows.append((f"{name}.sum", t, total, rid, attrs, start, temporality))
            rows.append((f"{name}.count", t, count, rid, attrs, start, temporality))
        return
