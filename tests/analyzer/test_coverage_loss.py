"""Coverage must show spans lost to unreadable lines: a cut line holds many spans, not one.

The SDK's own exported counter is the measure where the input has it (spans read against spans
exported over the same interval); without it, each unreadable line weighs the spans a readable
line of its file holds. Inputs: real OpenTelemetry SDK spans, encoded by the official OTLP
encoders, written as the file exporter writes them, then cut the way a torn copy is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _ingest_fixtures import RESOURCE, otlp_json, trace_request
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.analyses.coverage import Coverage, analyze_coverage
from inferaudit_analyzer.analyze import analyze
from inferaudit_analyzer.sources.s3_partitions import restrict_spans
from inferaudit_analyzer.store import coverage, load_store
from inferaudit_analyzer.views import create_views
from inferaudit_sdk import semconv as sc

T0_NS = 1_767_225_600_000_000_000
S_NS = 1_000_000_000
SPANS_PER_LINE = 8


def _spans(n: int, service: str = "chat-api", step_ns: int = S_NS) -> list[Any]:
    """``n`` request spans of one process, one starting every ``step_ns``, 0.5 s long."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({**RESOURCE, sc.SERVICE_NAME: service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(sc.INSTRUMENTATION_NAME, "0.1.0")
    for i in range(n):
        span = tracer.start_span("chat tiny-gpt", start_time=T0_NS + i * step_ns)
        span.set_attributes({sc.SPAN_ROLE: sc.ROLE_REQUEST, sc.GEN_AI_REQUEST_MODEL: "tiny-gpt",
                             sc.GEN_AI_USAGE_INPUT_TOKENS: 10, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 4})
        span.end(end_time=T0_NS + i * step_ns + S_NS // 2)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def _lines(spans: list[Any]) -> list[bytes]:
    """One OTLP/JSON export request per ``SPANS_PER_LINE`` spans, as the file exporter writes."""
    import json

    return [json.dumps(otlp_json(trace_request(spans[i:i + SPANS_PER_LINE]))).encode() + b"\n"
            for i in range(0, len(spans), SPANS_PER_LINE)]


def _cut_every_second(lines: list[bytes]) -> list[bytes]:
    return [ln if i % 2 == 0 else ln[: len(ln) // 2] + b"\n" for i, ln in enumerate(lines)]


def _sdk_counters(exported: int, service: str = "chat-api") -> bytes:
    """The SDK's exported/dropped counters, read by a real MeterProvider after the spans."""
    import json

    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create({**RESOURCE, sc.SERVICE_NAME: service}),
                             metric_readers=[reader])
    meter = provider.get_meter(sc.INSTRUMENTATION_NAME)
    meter.create_counter(sc.METRIC_SDK_SPANS_EXPORTED).add(exported, {sc.SDK_EXPORTER: "file"})
    meter.create_counter(sc.METRIC_SDK_SPANS_DROPPED).add(0, {sc.SDK_EXPORTER: "file"})
    data = reader.get_metrics_data()
    provider.shutdown()
    return json.dumps(otlp_json(encode_metrics(data))).encode() + b"\n"


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def _report(tmp_path: Path) -> dict[str, Any]:
    return analyze([str(tmp_path)])


def _coverage(con: Any) -> Coverage:
    create_views(con)
    return analyze_coverage(con)


def _low_coverage(rep: dict[str, Any]) -> dict[str, Any] | None:
    return next((f for f in rep["findings"] if f["id"] == "low_coverage"), None)


def test_cut_lines_count_every_span_they_held_against_the_exported_counter(tmp_path):
    spans = _spans(320)
    lines = _cut_every_second(_lines(spans))
    _write(tmp_path / "traces.jsonl", lines)
    _write(tmp_path / "metrics.jsonl", [_sdk_counters(len(spans))])
    rep = _report(tmp_path)
    cov = rep["input"]["coverage"]
    read = cov["spans"]
    assert read == SPANS_PER_LINE * ((len(lines) + 1) // 2)  # the whole lines only
    assert cov["ratio"] == pytest.approx(read / len(spans), abs=1e-4)
    assert cov["export_check"] == {"exporter": "file", "exported_spans": len(spans),
                                   "dropped_spans": 0, "spans_read": read}
    finding = _low_coverage(rep)
    assert finding is not None
    assert finding["severity"] == ("high" if cov["ratio"] < th.VERY_LOW_COVERAGE_RATIO
                                   else "medium")
    assert finding["evidence"]["missing_exported_ratio"] == pytest.approx(
        1 - read / len(spans), abs=1e-4)


def test_the_whole_file_with_its_counter_is_full_coverage(tmp_path):
    spans = _spans(96)
    _write(tmp_path / "traces.jsonl", _lines(spans))
    _write(tmp_path / "metrics.jsonl", [_sdk_counters(len(spans))])
    rep = _report(tmp_path)
    assert rep["input"]["coverage"]["ratio"] == pytest.approx(1.0)
    assert _low_coverage(rep) is None


def test_without_a_counter_an_unreadable_line_weighs_the_spans_a_line_holds(tmp_path):
    spans = _spans(320)
    lines = _cut_every_second(_lines(spans))
    _write(tmp_path / "traces.jsonl", lines)
    rep = _report(tmp_path)
    cov = rep["input"]["coverage"]
    lost_lines = len(lines) // 2
    assert cov["ingest_errors"] == lost_lines
    assert cov["export_check"] is None
    per_line = cov["spans"] / (len(lines) - lost_lines)
    assert cov["unreadable_spans_estimated"] == pytest.approx(lost_lines * per_line)
    assert cov["ratio"] == pytest.approx(cov["spans"] / (cov["spans"] + lost_lines * per_line),
                                         abs=1e-4)
    assert _low_coverage(rep) is not None


def _gauge_line() -> bytes:
    import json

    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create(RESOURCE), metric_readers=[reader])
    provider.get_meter(sc.INSTRUMENTATION_NAME).create_gauge(
        sc.METRIC_HW_GPU_UTILIZATION).set(0.5, {sc.HW_ID: "gpu0"})
    data = reader.get_metrics_data()
    provider.shutdown()
    return json.dumps(otlp_json(encode_metrics(data))).encode() + b"\n"


@pytest.mark.parametrize("workers", [1, 2])
def test_the_line_counts_come_back_from_the_cache_and_the_worker_pool(tmp_path, monkeypatch,
                                                                     workers):
    from inferaudit_analyzer import store as store_mod

    monkeypatch.setattr(store_mod, "SPLIT_BYTES", 20_000)  # several parts, in the pool
    lines = _cut_every_second(_lines(_spans(320)))
    (tmp_path / "in").mkdir()
    src = _write(tmp_path / "in" / "traces.jsonl", lines)
    seen = []
    for _ in range(2):  # parsed, then served from the cache
        with load_store([src], cache_root=tmp_path / "cache", workers=workers) as store:
            seen.append((store.stats["files_cached"], _coverage(store.con).unreadable_spans))
    lost = len(lines) // 2
    per_line = SPANS_PER_LINE  # every whole line holds SPANS_PER_LINE spans
    assert seen == [(0, lost * per_line), (1, lost * per_line)]


def test_an_unreadable_line_of_a_metrics_file_costs_no_spans(tmp_path):
    spans = _spans(64)
    _write(tmp_path / "traces.jsonl", _lines(spans))
    _write(tmp_path / "metrics.jsonl",
           [_gauge_line(), b'{"resourceMetrics": [\n', b"not json\n"])
    with load_store([tmp_path], cache=False) as store:
        cov = _coverage(store.con)
    assert cov.ingest_errors == 2
    assert cov.unreadable_spans == 0
    assert cov.ratio == pytest.approx(1.0)


def test_a_process_whose_traces_are_missing_counts_as_lost(tmp_path):
    a, b = _spans(64, "svc-a"), _spans(64, "svc-b")
    _write(tmp_path / "a-traces.jsonl", _lines(a))
    _write(tmp_path / "a-metrics.jsonl", [_sdk_counters(len(a), "svc-a")])
    _write(tmp_path / "b-metrics.jsonl", [_sdk_counters(len(b), "svc-b")])
    with load_store([tmp_path], cache=False) as store:
        cov = _coverage(store.con)
        ingest = coverage(store.con)
    assert cov.export_check is not None
    assert cov.export_check.exported == len(a) + len(b)
    assert cov.ratio == pytest.approx(len(a) / (len(a) + len(b)))
    assert ingest["coverage_ratio"] == pytest.approx(cov.ratio)
    # with the second process's traces too, nothing is missing
    _write(tmp_path / "b-traces.jsonl", _lines(b))
    with load_store([tmp_path], cache=False) as store:
        assert _coverage(store.con).ratio == pytest.approx(1.0)


def _cumulative_counters(resource: dict[str, Any], points: list[tuple[int, int]]) -> bytes:
    """OTLP/JSON of the SDK's cumulative exported counter at the given (time, value) points:
    a long-running process exports its counters every interval, totals since its start."""
    import json

    def point(t: int, v: int) -> dict[str, Any]:
        return {"attributes": [{"key": sc.SDK_EXPORTER, "value": {"stringValue": "file"}}],
                "startTimeUnixNano": str(T0_NS), "timeUnixNano": str(t), "asInt": str(v)}

    req = {"resourceMetrics": [{"resource": resource, "scopeMetrics": [{
        "scope": {"name": sc.INSTRUMENTATION_NAME},
        "metrics": [{"name": sc.METRIC_SDK_SPANS_EXPORTED, "sum": {
            "aggregationTemporality": 2, "isMonotonic": True,
            "dataPoints": [point(t, v) for t, v in points]}}]}]}]}
    return json.dumps(req).encode() + b"\n"


WINDOWS_S = [(300, None), (330, None), (30, None), (330, 480)]


@pytest.mark.parametrize(("since_s", "until_s"), WINDOWS_S)
def test_a_time_window_compares_only_what_was_exported_within_it(tmp_path, since_s, until_s):
    import json

    spans = _spans(600)  # one a second for ten minutes
    lines = _lines(spans)
    resource = json.loads(lines[0])["resourceSpans"][0]["resource"]
    ends = sorted(s.end_time for s in spans)
    # a point every minute with the spans ended by then (the SDK exported each at its end)
    points = [(T0_NS + m * 60 * S_NS, sum(e <= T0_NS + m * 60 * S_NS for e in ends))
              for m in range(1, 11)]
    _write(tmp_path / "traces.jsonl", lines)
    _write(tmp_path / "metrics.jsonl", [_cumulative_counters(resource, points)])
    since_ns = T0_NS + since_s * S_NS
    until_ns = None if until_s is None else T0_NS + until_s * S_NS
    with load_store([tmp_path], cache=False) as store:
        restrict_spans(store.con, since_ns, until_ns)
        full = _coverage(store.con)
    # the spans exported before and after the window are not lost
    assert full.export_check is not None
    assert full.ratio == pytest.approx(1.0)

    # within the window, every second line cut: the loss shows
    first = next(i for i, s in enumerate(spans) if s.start_time >= since_ns) // SPANS_PER_LINE
    cut = lines[:first] + _cut_every_second(lines[first:])
    _write(tmp_path / "traces.jsonl", cut)
    with load_store([tmp_path], cache=False) as store:
        restrict_spans(store.con, since_ns, until_ns)
        torn = _coverage(store.con)
    assert torn.export_check is not None
    # about half of the window's lines are gone; the comparison errs towards seeing
    # everything by an export lag at each end, which is much of a short window
    assert torn.ratio < th.LOW_COVERAGE_RATIO
    assert torn.export_check.spans_read < torn.export_check.exported


@pytest.mark.parametrize(("since_s", "until_s"), [(30, None), (330, 480)])
def test_a_clickhouse_window_compares_only_what_was_exported_within_it(tmp_path, since_s,
                                                                       until_s):
    import json

    pytest.importorskip("chdb")
    from _engine_fixtures import chdb_with

    from inferaudit_analyzer.analyze import AnalyzeParams
    from inferaudit_analyzer.engines.clickhouse_analyze import analyze_clickhouse
    from inferaudit_analyzer.engines.clickhouse_source import (
        OTEL_METRICS_GAUGE_DDL,
        OTEL_METRICS_SUM_EXTRA,
    )
    from inferaudit_analyzer.engines.otel_rows import insert_metric_rows

    spans = _spans(600)
    requests = [json.loads(ln) for ln in _lines(spans)]
    resource = requests[0]["resourceSpans"][0]["resource"]
    ends = sorted(s.end_time for s in spans)
    points = [(T0_NS + m * 60 * S_NS, sum(e <= T0_NS + m * 60 * S_NS for e in ends))
              for m in range(1, 11)]
    be = chdb_with(requests, tmp_path)
    for kind, extra in (("gauge", ""), ("sum", OTEL_METRICS_SUM_EXTRA)):
        be.command(f"DROP TABLE IF EXISTS otel_metrics_{kind}")
        be.command(OTEL_METRICS_GAUGE_DDL.format(table=f"otel_metrics_{kind}", extra=extra))
    metrics = json.loads(_cumulative_counters(resource, points))
    assert insert_metric_rows(be, "otel_metrics", [metrics], str(tmp_path)) > 0
    params = AnalyzeParams(cache=False, price_per_hour=1.0)
    url = "chdb://?table=otel_traces"
    windowed = analyze_clickhouse(
        url, params, since_ns=T0_NS + since_s * S_NS,
        until_ns=None if until_s is None else T0_NS + until_s * S_NS, backend=be, close=False)
    cov = windowed["input"]["coverage"]
    assert cov["export_check"] is not None
    assert cov["ratio"] == pytest.approx(1.0)
    whole = analyze_clickhouse(url, params, backend=be)["input"]["coverage"]
    assert whole["export_check"]["exported_spans"] == len(spans)
    assert whole["ratio"] == pytest.approx(1.0)


def test_copies_of_the_traces_and_metrics_are_not_taken_for_more_traffic(tmp_path):
    import gzip

    spans = _spans(96)
    data = b"".join(_lines(spans))
    (tmp_path / "traces.jsonl").write_bytes(data)
    (tmp_path / "traces.jsonl.gz").write_bytes(gzip.compress(data))  # the same export twice
    counters = _sdk_counters(len(spans))
    _write(tmp_path / "metrics.jsonl", [counters])
    _write(tmp_path / "metrics-copy.jsonl", [counters])
    with load_store([tmp_path], cache=False) as store:
        cov = _coverage(store.con)
    assert cov.duplicate_spans_dropped == len(spans)
    assert cov.export_check is not None
    assert (cov.export_check.exported, cov.export_check.spans_read) == (len(spans), len(spans))
    assert cov.ratio == pytest.approx(1.0)


def test_a_torn_file_of_a_process_without_counters_still_counts(tmp_path):
    # Our SDK's complete output (with its counter) beside a torn file from another producer:
    # the counter covers only its own process, so the other's unreadable lines still weigh.
    ours = _spans(96)
    _write(tmp_path / "traces-ours.jsonl", _lines(ours))
    _write(tmp_path / "metrics-ours.jsonl", [_sdk_counters(len(ours))])
    theirs = _cut_every_second(_lines(_spans(320, service="other-api")))
    _write(tmp_path / "traces-theirs.jsonl", theirs)
    rep = _report(tmp_path)
    cov = rep["input"]["coverage"]
    assert cov["export_check"] is not None
    lost = cov["unreadable_spans_estimated"]
    assert lost == pytest.approx(160)
    assert cov["ratio"] == pytest.approx(cov["spans"] / (cov["spans"] + lost), abs=1e-4)
    assert cov["ratio"] < 0.7 and _low_coverage(rep) is not None
