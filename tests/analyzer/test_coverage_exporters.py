"""Coverage when the SDK fed several exporters: each sees every span, so they must not add up."""

from __future__ import annotations

import pytest
from _ingest_fixtures import RESOURCE, make_spans, otlp_json, trace_request, write_jsonl
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from inferaudit_analyzer.store import coverage, load_store
from inferaudit_sdk import semconv as sc


@pytest.fixture(scope="module")
def sdk_spans():
    return make_spans()


def _counters(per_exporter: dict[str, tuple[int, int]]):
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create(RESOURCE), metric_readers=[reader])
    meter = provider.get_meter(sc.INSTRUMENTATION_NAME)
    exported = meter.create_counter(sc.METRIC_SDK_SPANS_EXPORTED)
    dropped = meter.create_counter(sc.METRIC_SDK_SPANS_DROPPED)
    for name, (ok, lost) in per_exporter.items():
        exported.add(ok, {sc.SDK_EXPORTER: name})
        dropped.add(lost, {sc.SDK_EXPORTER: name})
    data = reader.get_metrics_data()
    provider.shutdown()
    return encode_metrics(data)


def test_two_exporters_are_not_double_counted(tmp_path, sdk_spans):
    n = len(sdk_spans)
    # The file sink kept everything; the OTLP endpoint was down and lost all of it.
    mreq = _counters({"file": (n, 0), "otlp": (0, n)})
    path = write_jsonl(tmp_path / "mixed.jsonl", [otlp_json(trace_request(sdk_spans)),
                                                   otlp_json(mreq)])
    with load_store([path], cache=False) as store:
        cov = coverage(store.con)
    assert cov["spans_read"] == n
    assert cov["coverage_ratio"] == pytest.approx(1.0)
    assert cov["dropped_by_exporter"] == {"file": 0, "otlp": n}


def test_drops_of_the_busiest_exporter_lower_coverage(tmp_path, sdk_spans):
    n = len(sdk_spans)
    mreq = _counters({"file": (n, 4)})
    path = write_jsonl(tmp_path / "mixed.jsonl", [otlp_json(trace_request(sdk_spans)),
                                                   otlp_json(mreq)])
    with load_store([path], cache=False) as store:
        cov = coverage(store.con)
    assert cov["spans_dropped_reported"] == 4
    assert cov["coverage_ratio"] == pytest.approx(n / (n + 4))


def test_the_reports_coverage_reads_the_counters_the_same_way(tmp_path, sdk_spans):
    from inferaudit_analyzer.analyze import analyze

    n = len(sdk_spans)
    mreq = _counters({"file": (n, 0), "otlp": (0, n)})
    path = write_jsonl(tmp_path / "mixed.jsonl", [otlp_json(trace_request(sdk_spans)),
                                                   otlp_json(mreq)])
    rep = analyze([str(path)])
    assert rep["input"]["coverage"]["dropped_spans"] == 0
    assert rep["input"]["coverage"]["exported_spans"] == n
    assert "low_coverage" not in {f["id"] for f in rep["findings"]}
