"""Request and model-call spans from hosts whose clocks disagree.

Model calls recorded on a GPU host whose clock runs 300 ms ahead of the API host that records the
requests lie outside the requests they serve: the sweep read a device busy 90 of every 100 ms of
each request as idle the whole time requests waited (``idle_device_while_waiting`` high, the
verdict ``runtime_idle_while_waiting``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _analysis_fixtures import MS, T0, FixtureDb
from _otlp_span_builder import on_both_engines, otlp_span, resource, summary

from inferaudit_analyzer.analyses.concurrency import Concurrency, analyze_concurrency
from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection
from inferaudit_analyzer.thresholds import CLOCK_SKEW_MAX_SHARE
from inferaudit_analyzer.views import create_views
from inferaudit_sdk import semconv as sc

API, GPU = 1, 2


def _two_hosts(skew_ms: float, call_ms: int = 90, n: int = 40) -> FixtureDb:
    """Requests of 100 ms every 200 ms on the API host; each one's model call on the GPU host,
    centred in it by the true clock, stamped ``skew_ms`` ahead by the GPU host's clock."""
    db = FixtureDb()
    db.resource(API, host_name="api", service_name="api")
    db.resource(GPU, host_name="gpu", service_name="worker", gpu_count=1,
                price_usd_per_hour=1.0)
    skew = int(skew_ms * MS)
    pad = (100 - call_ms) // 2 * MS
    for i in range(n):
        st = T0 + i * 200 * MS
        r = db.request(st, st + 100 * MS, resource_id=API, input_tokens=100, output_tokens=20)
        db.batch(st + pad + skew, st + 100 * MS - pad + skew, [r], parent=r, resource_id=GPU,
                 device_time_ns=call_ms * MS)
    return db


def _conc(db: FixtureDb) -> Concurrency:
    create_views(db.con)
    return analyze_concurrency(db.con, 8 * 10**9)


def _report(db: FixtureDb) -> dict[str, Any]:
    return analyze_connection(db.con, AnalyzeParams())


def test_a_gpu_clock_ahead_is_found_and_idle_is_not_measured():
    conc = _conc(_two_hosts(skew_ms=300))
    assert len(conc.clock_skews) == 1
    skew = conc.clock_skews[0]
    assert (skew.batch_resource_id, skew.request_resource_id) == (GPU, API)
    assert 295 * MS <= skew.offset_ns <= 300 * MS   # a lower bound on the true 300 ms
    assert conc.idle_while_waiting_ratio is None
    assert conc.mean_while_busy is None


def test_a_gpu_clock_behind_is_found_too():
    conc = _conc(_two_hosts(skew_ms=-300))
    assert len(conc.clock_skews) == 1
    assert -300 * MS <= conc.clock_skews[0].offset_ns <= -295 * MS
    assert conc.idle_while_waiting_ratio is None


def test_skewed_clocks_are_not_an_idle_device_while_waiting():
    rep = _report(_two_hosts(skew_ms=300))
    assert "idle_device_while_waiting" not in {f["id"] for f in rep["findings"]}
    assert rep["bottleneck"]["case"] != "runtime_idle_while_waiting"


def test_the_report_says_the_clocks_disagree():
    """Idle time and concurrency while busy go missing under skew: a finding says why."""
    skewed = {f["id"]: f for f in _report(_two_hosts(skew_ms=300))["findings"]}
    assert skewed["clock_skew"]["layer"] == "coverage"
    (pair,) = skewed["clock_skew"]["evidence"]["resource_pairs"]
    assert (pair["batch_resource_id"], pair["request_resource_id"]) == (GPU, API)
    assert 295 <= pair["offset_ms_at_least"] <= 300
    assert "clock_skew" not in {f["id"] for f in _report(_two_hosts(skew_ms=0))["findings"]}


def test_agreeing_clocks_measure_idle_as_before():
    conc = _conc(_two_hosts(skew_ms=0))
    assert conc.clock_skews == ()
    assert conc.idle_while_waiting_ratio == 0.1     # 5 ms at each end of every 100 ms request
    assert conc.mean_while_busy == 1.0


def test_a_small_offset_inside_the_tolerance_is_ignored():
    offset_ms = CLOCK_SKEW_MAX_SHARE * 100 * 0.8
    # past the 5 ms of slack after each call, so visible, but under the tolerance
    conc = _conc(_two_hosts(skew_ms=offset_ms))
    assert conc.clock_skews == ()
    assert conc.idle_while_waiting_ratio is not None


def test_a_device_truly_idle_while_requests_wait_on_another_host_still_fires():
    # agreeing clocks; the GPU host runs 10 ms of every 100 ms request: the stack is the wait
    rep = _report(_two_hosts(skew_ms=0, call_ms=10))
    ids = {f["id"] for f in rep["findings"]}
    assert "idle_device_while_waiting" in ids
    assert rep["bottleneck"]["case"] == "runtime_idle_while_waiting"


def test_calls_on_the_requests_own_resource_are_never_a_skew():
    # one process: calls stick out of their requests (a request span closed early), one clock
    db = FixtureDb()
    db.resource(1, gpu_count=1)
    for i in range(20):
        st = T0 + i * 200 * MS
        r = db.request(st, st + 50 * MS, input_tokens=10, output_tokens=10)
        db.batch(st + 40 * MS, st + 140 * MS, [r], device_time_ns=100 * MS)
    assert _conc(db).clock_skews == ()


def _two_hosts_otlp(skew_ms: int, n: int = 40) -> dict[str, Any]:
    """The same two hosts as OTLP lines: the API host's request spans, the GPU host's calls."""
    api, gpu = [], []
    for i in range(n):
        tid, req = f"{i + 1:032x}", f"{i + 1:016x}"
        st = T0 + i * 200 * MS
        api.append(otlp_span(tid, req, st, st + 100 * MS, {
            sc.SPAN_ROLE: sc.ROLE_REQUEST, sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_REQUEST_MODEL: "m", sc.GEN_AI_USAGE_INPUT_TOKENS: 100,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20}))
        at = st + (5 + skew_ms) * MS
        gpu.append(otlp_span(tid, f"{1000 + i:016x}", at, at + 90 * MS, {
            sc.SPAN_ROLE: sc.ROLE_BATCH, sc.BATCH_MODEL: "m", sc.BATCH_SIZE: 1,
            sc.DEVICE_TYPE: "cuda", sc.DEVICE_TIME_NS: 90 * MS}, parent=req,
            links=((tid, req),)))
    return {"resourceSpans": [
        resource({sc.SERVICE_NAME: "api", sc.HOST_NAME: "api"}, sc.INSTRUMENTATION_NAME, api),
        resource({sc.SERVICE_NAME: "worker", sc.HOST_NAME: "gpu", sc.RES_GPU_COUNT: 1,
                  sc.RES_PRICE_USD_PER_HOUR: 1.0}, sc.INSTRUMENTATION_NAME, gpu)]}


@pytest.mark.parametrize("skew_ms", [300, 0])
def test_the_same_clock_reading_on_duckdb_and_clickhouse(tmp_path: Path, skew_ms: int):
    duck, ch = (summary(rep) for rep in on_both_engines(tmp_path, _two_hosts_otlp(skew_ms)))
    assert (duck["concurrency"]["mean_while_device_busy"] is None) == (skew_ms > 0)
    assert "idle_device_while_waiting" not in duck["findings"]
    assert ch == duck
