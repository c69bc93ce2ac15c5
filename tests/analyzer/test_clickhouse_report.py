"""The ClickHouse path gives the file path's report: same spans, DuckDB vs chDB (the real dialect).

The spans reach ClickHouse the way production gets them: through an ``otel_traces`` table made
from the Collector exporter's DDL, attributes as strings in Maps. Counts must match exactly,
exact percentiles exactly, sketch percentiles within the stated alpha, costs to the cent; and
the whole report, once the input description and the engine-specific resource ids are set aside.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from _engine_fixtures import T0, chdb_with, workload_requests, write_workload
from _ingest_fixtures import make_metrics, make_spans, otlp_json, trace_request

pytest.importorskip("chdb")

from inferaudit_analyzer.analyze import AnalyzeParams, analyze
from inferaudit_analyzer.engines.clickhouse_analyze import (
    analyze_clickhouse,
    connect,
)
from inferaudit_analyzer.engines.clickhouse_source import (
    OTEL_METRICS_GAUGE_DDL,
    OTEL_METRICS_SUM_EXTRA,
)
from inferaudit_analyzer.engines.otel_rows import insert_metric_rows
from inferaudit_analyzer.schema import SPANS_COLUMNS
from inferaudit_analyzer.store import UnusableInput, load_store

URL = "chdb://?table=otel_traces"
PARAMS = AnalyzeParams(cache=False, price_per_hour=1.006)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("engines")
    reqs = workload_requests(n_batches=40)
    duck = analyze([write_workload(tmp, reqs)], PARAMS)
    be = chdb_with(reqs, tmp)
    ch = analyze_clickhouse(URL, PARAMS, backend=be)
    return duck, ch


def _strip(report: dict[str, Any]) -> dict[str, Any]:
    """Drop what legitimately differs: the input description, the time, resource ids (each
    engine hashes the resource its own way, so lists ordered by them are compared as sets)."""
    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items() if k != "resource_id"}
        if isinstance(x, list):
            items = [walk(v) for v in x]
            if x and all(isinstance(v, dict) and "resource_id" in v for v in x):
                items.sort(key=lambda v: json.dumps(v, sort_keys=True, default=str))
            return items
        return x

    out = {k: v for k, v in report.items() if k not in ("input", "generated_at")}
    return walk(out)


def test_counts_match_exactly(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    duck, ch = both
    assert duck["input"]["requests"] > 100  # the workload is not trivially small
    for key in ("spans", "requests", "batches"):
        assert ch["input"][key] == duck["input"][key], key
    d, c = duck["baseline"]["overall"], ch["baseline"]["overall"]
    for key in ("requests", "errors", "input_tokens", "output_tokens"):
        assert c[key] == d[key], key
    assert c["batch_size"] == d["batch_size"]
    assert set(ch["baseline"]["by_model"]) == set(duck["baseline"]["by_model"]) == {
        "llama-8b", "llama-70b"}


def test_percentiles_exact_equal_and_sketch_within_alpha(
        both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    duck, ch = both
    alpha = PARAMS.sketch_alpha
    for scope in ("overall",):
        for metric in ("latency_ms", "ttft_ms", "tpot_ms", "queue_ms", "model_ms"):
            d = duck["baseline"][scope][metric]
            c = ch["baseline"][scope][metric]
            for q in ("p50", "p95", "p99"):
                assert c[q] == d[q], (metric, q)
                exact, sk = d[q], c["sketch"][q]
                assert abs(sk - exact) <= alpha * exact + 1e-4, (metric, q, sk, exact)
                assert c["sketch"][q] == d["sketch"][q]


def test_costs_agree_to_the_cent(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    duck, ch = both

    def usd(x: Any, path: str = "") -> dict[str, float]:
        out: dict[str, float] = {}
        if isinstance(x, dict):
            for k, v in x.items():
                out.update(usd(v, f"{path}.{k}"))
        elif isinstance(x, float) and "usd" in path:
            out[path] = x
        return out

    d, c = usd(duck["cost"]) | usd(duck["baseline"]), usd(ch["cost"]) | usd(ch["baseline"])
    assert d, "the report prices something"
    assert d.keys() == c.keys()
    for k in d:
        assert math.isclose(round(d[k], 2), round(c[k], 2)), k


def test_whole_report_identical_but_input(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    duck, ch = both
    assert _strip(ch) == _strip(duck)
    engine = ch["input"]["engine"]
    assert engine["name"] == "clickhouse" and engine["queries"] > 10
    assert engine["bytes_pulled"] > 0


def test_canonical_spans_columns_match_the_file_ingest(tmp_path: Path) -> None:
    """Every promoted column, every span shape (ours, vLLM, OpenLLMetry, OpenLIT)."""
    req = otlp_json(trace_request(make_spans()))
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(req) + "\n")
    store = load_store([path], cache=False)
    con = connect(URL, backend=chdb_with([req], tmp_path))
    # not compared: resource_id (engine-local hash), attributes (typed JSON vs the exporter's
    # strings), profile_path (the file ingest resolves it against the file's directory)
    cols = [c for c, _ in SPANS_COLUMNS if c not in ("resource_id", "attributes", "profile_path")]
    sql = f"SELECT {', '.join(cols)} FROM spans ORDER BY span_id"
    try:
        want = store.con.execute(sql).fetchall()
        got = con.execute(sql).fetchall()
    finally:
        store.close()
        con.close()
    assert len(want) == 8
    for w, g in zip(want, got, strict=True):
        diff = {c: (a, b) for c, a, b in zip(cols, w, g, strict=True) if a != b}
        assert not diff, (w[cols.index("name")], diff)


def test_time_window_filters_on_span_start(tmp_path: Path) -> None:
    reqs = workload_requests(n_batches=10)
    be = chdb_with(reqs, tmp_path)
    con = connect(URL, backend=be)
    try:
        (total,) = con.execute("SELECT COUNT(*) FROM spans").fetchone()
        (mid,) = con.execute("SELECT quantile_disc(start_ns, 0.5) FROM spans").fetchone()
        want = con.execute("SELECT COUNT(*) FROM spans WHERE start_ns >= ?", [mid]).fetchone()[0]
        windowed = connect(URL, since_ns=mid, backend=be)
        assert windowed.execute("SELECT COUNT(*) FROM spans").fetchone()[0] == want < total
        before = connect(URL, until_ns=T0, backend=be)
        assert before.execute("SELECT COUNT(*) FROM spans").fetchone()[0] == 0
    finally:
        con.close()


def test_empty_window_is_unusable_input(tmp_path: Path) -> None:
    be = chdb_with(workload_requests(n_batches=3), tmp_path)
    with pytest.raises(UnusableInput, match="no spans"):
        analyze_clickhouse(URL, PARAMS, until_ns=T0, backend=be)


def test_gauges_and_sums_come_from_the_exporter_metrics_tables(tmp_path: Path) -> None:
    """metric_points (NVML gauges, SDK counters) from otel_metrics_gauge / _sum; and with them
    the whole report still equals the file path's."""
    traces = otlp_json(trace_request(make_spans()))
    metrics = otlp_json(make_metrics(exported=40, dropped=3))
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(traces) + "\n" + json.dumps(metrics) + "\n")
    be = chdb_with([traces], tmp_path)
    for kind, extra in (("gauge", ""), ("sum", OTEL_METRICS_SUM_EXTRA)):
        be.command(f"DROP TABLE IF EXISTS otel_metrics_{kind}")
        be.command(OTEL_METRICS_GAUGE_DDL.format(table=f"otel_metrics_{kind}", extra=extra))
    assert insert_metric_rows(be, "otel_metrics", [metrics], str(tmp_path)) > 0
    sql = ("SELECT name, time_ns, value, start_ns, temporality FROM metric_points "
           "WHERE name NOT LIKE '%.sum' AND name NOT LIKE '%.count' ORDER BY name, time_ns")
    store = load_store([path], cache=False)
    try:
        want = store.con.execute(sql).fetchall()
        duck = analyze([path], PARAMS)
    finally:
        store.close()
    con = connect(URL, backend=be)
    got = con.execute(sql).fetchall()
    assert want and got == want
    ch = analyze_clickhouse(URL, PARAMS, backend=be)
    assert ch["baseline"]["overall"]["device_utilization_detail"] == \
        duck["baseline"]["overall"]["device_utilization_detail"] | {
            "by_resource": ch["baseline"]["overall"]["device_utilization_detail"]["by_resource"]}
    assert _strip(ch) == _strip(duck)
    be2 = chdb_with([traces], tmp_path)  # and without the metrics tables: none, no error
    for kind in ("gauge", "sum"):
        be2.command(f"DROP TABLE IF EXISTS otel_metrics_{kind}")
    assert connect(URL, backend=be2).execute("SELECT COUNT(*) FROM metric_points").fetchone() \
        == (0,)
