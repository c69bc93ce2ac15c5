"""Baseline metrics on fixture databases, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from _analysis_fixtures import MS, T0, FixtureDb, batched_db, unbatched_db

from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection
from inferaudit_sdk import semconv as sc


def _report(db: FixtureDb, **kw) -> dict:
    return analyze_connection(db.con, AnalyzeParams(**kw))


def test_unbatched_baseline_numbers():
    n, gap, service, device = 40, 10, 50, 40
    rep = _report(unbatched_db(n, gap, service, device))
    o = rep["baseline"]["overall"]
    window_s = n * service / 1000  # FIFO, always busy after the first arrival
    assert o["requests"] == n
    assert o["window_s"] == pytest.approx(window_s)
    assert o["throughput_rps"] == pytest.approx(n / window_s)
    assert o["tokens_per_s"]["total"] == pytest.approx(n * 120 / window_s)
    assert o["device_utilization"] == pytest.approx(device / service)
    # latency of request i = (i+1)*service - i*gap; check p50/p99 against numpy
    lat_ms = np.array([(i + 1) * service - i * gap for i in range(n)], dtype=float)
    assert o["latency_ms"]["p50"] == pytest.approx(np.quantile(lat_ms, 0.5, method="inverted_cdf"))
    assert o["latency_ms"]["p99"] == pytest.approx(np.quantile(lat_ms, 0.99, method="inverted_cdf"))
    assert o["latency_ms"]["sketch"]["p95"] == pytest.approx(o["latency_ms"]["p95"], rel=0.01)
    # Little's law: mean concurrency = total request time / window
    assert o["concurrency_mean"] == pytest.approx(lat_ms.sum() / 1000 / window_s)
    assert o["batch_size"]["p50"] == 1 and o["batch_size"]["size1_ratio"] == 1.0
    queue_ms = np.array([i * (service - gap) for i in range(n)], dtype=float)
    assert o["queue_ms"]["max"] == pytest.approx(queue_ms.max())


def test_per_model_and_route_scopes_partition_requests():
    db = batched_db(n_batches=10, size=4)
    for i in range(6):
        r = db.request(T0 + i * 100 * MS, T0 + i * 100 * MS + 20 * MS, request_model="small",
                       input_tokens=10, output_tokens=5, route="/v1/small")
        db.batch(T0 + i * 100 * MS, T0 + i * 100 * MS + 10 * MS, [r], request_model="small",
                 device_time_ns=10 * MS)
    rep = _report(db, price_per_hour=3.6)
    bm = rep["baseline"]["by_model"]
    assert set(bm) == {"big", "small"}
    assert bm["big"]["requests"] + bm["small"]["requests"] == rep["baseline"]["overall"]["requests"]
    assert bm["small"]["batch_size"]["p50"] == 1 and bm["big"]["batch_size"]["p50"] == 4
    assert rep["baseline"]["by_route"]["/v1/small"]["requests"] == 6
    costs = [bm[m]["cost_usd"] for m in bm]
    assert sum(costs) == pytest.approx(rep["cost"]["window_cost_usd"])


def test_time_buckets_cover_all_requests_and_sketches_merge():
    db = unbatched_db(60, gap_ms=50, service_ms=40, device_ms=30)  # 3 s of arrivals
    rep = _report(db, bucket_s=1.0)
    tb = rep["baseline"]["time_buckets"]
    assert tb["bucket_s"] == 1.0
    assert sum(r["requests"] for r in tb["rows"]) == 60
    assert len(tb["rows"]) == 3
    assert tb["sketch_merge_check"]["merged_equals_whole"] is True
    # idle gaps: arrivals every 50 ms, service 40 ms -> device busy 30/50 of each bucket
    assert tb["rows"][1]["device_busy_ratio"] == pytest.approx(30 / 50, rel=0.05)


def test_cpu_utilisation_is_cpu_time_over_wall_times_cores():
    db = FixtureDb()
    db.resource(1, cpu_cores=4, host_type="c7i.xlarge")
    for i in range(10):
        start = T0 + i * 100 * MS
        r = db.request(start, start + 100 * MS, input_tokens=10, output_tokens=10)
        db.batch(start, start + 100 * MS, [r], device_type="cpu", cpu_time_ns=200 * MS)
    rep = _report(db)
    # 10 x 200 ms CPU over 1 s x 4 cores
    assert rep["baseline"]["overall"]["device_utilization"] == pytest.approx(2.0 / 4)
    assert rep["price"]["usd_per_hour"] == pytest.approx(0.1785)


def test_cpu_utilisation_states_the_ceiling_the_model_threads_allow():
    from inferaudit_analyzer.report._fmt import baseline_rows
    from inferaudit_sdk import semconv

    db = FixtureDb()
    db.resource(1, cpu_cores=4, host_type="c7i.xlarge")
    for i in range(10):
        start = T0 + i * 100 * MS
        r = db.request(start, start + 100 * MS, input_tokens=10, output_tokens=10)
        db.batch(start, start + 100 * MS, [r], device_type="cpu", cpu_time_ns=80 * MS,
                 attributes={semconv.DEVICE_CPU_THREADS: 1})
    rep = _report(db)
    o = rep["baseline"]["overall"]
    # one thread on four cores: 10 x 80 ms CPU over 1 s x 4 cores, out of at most a quarter
    assert o["device_utilization"] == pytest.approx(0.2)
    assert o["device_utilization_ceiling"] == pytest.approx(0.25)
    (res,) = o["device_utilization_detail"]["by_resource"]
    assert (res["cpu_threads"], res["cpu_cores"]) == (1, 4)
    row = dict(baseline_rows(rep))["device utilisation"]
    assert row == "20.0% of at most 25.0%: 1 of 4 cores"
    # no thread count (or a GPU): no ceiling claimed
    db2 = FixtureDb()
    db2.resource(1, cpu_cores=4)
    r = db2.request(T0, T0 + 100 * MS, input_tokens=1, output_tokens=1)
    db2.batch(T0, T0 + 100 * MS, [r], device_type="cpu", cpu_time_ns=80 * MS)
    assert _report(db2)["baseline"]["overall"]["device_utilization_ceiling"] is None


def test_empty_database_gives_empty_baseline_not_an_error():
    rep = _report(FixtureDb())
    o = rep["baseline"]["overall"]
    assert o["requests"] == 0 and o["latency_ms"]["p95"] is None
    assert o["cost_per_request_usd"] is None
    assert rep["bottleneck"]["layer"] == "unknown"


def test_multi_gpu_resource_counts_all_devices():
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA A100-SXM4-80GB", gpu_count=4)
    for dev in range(2):
        for i in range(10):
            start = T0 + i * 100 * MS
            r = db.request(start, start + 100 * MS, input_tokens=5, output_tokens=5)
            db.batch(start, start + 50 * MS, [r], device_time_ns=50 * MS,
                     attributes={"inferaudit.device.id": dev})
    rep = _report(db)
    # 2 devices busy half the time, 2 idle: 0.25 of 4 paid devices
    assert rep["baseline"]["overall"]["device_utilization"] == pytest.approx(0.25)
    assert rep["baseline"]["overall"]["device_utilization_detail"]["devices"] == 4
    assert rep["window"]["duration_s"] == pytest.approx(1.0)
    assert rep["price"]["usd_per_hour"] == pytest.approx(4 * 5.1207)


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_nvml_utilisation_when_no_model_call_is_traced(scale):
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1)
    for i in range(5):
        db.request(T0 + i * 100 * MS, T0 + i * 100 * MS + 50 * MS, input_tokens=1)
    for i, v in enumerate((0.3, 0.5)):
        db.metric("hw.gpu.utilization", T0 + i * MS, v * scale)
    o = _report(db)["baseline"]["overall"]
    assert o["device_utilization"] == pytest.approx(0.4)
    assert o["device_utilization_source"] == "nvml"
    assert o["cost_per_request_usd"] is not None  # the request's resource is the paid device


def test_memory_controller_busy_is_read_from_its_own_metric_not_memory_in_use():
    # hw.gpu.memory.utilization is the fraction of memory in use (90% here, as any exporter
    # following the hardware conventions writes it); the DRAM-bound check needs the memory
    # controller's busy time, which has its own name
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1)
    db.request(T0, T0 + 50 * MS, input_tokens=1)
    db.metric(sc.METRIC_HW_GPU_MEMORY_UTILIZATION, T0, 0.9)
    for i, v in enumerate((0.1, 0.3)):
        db.metric(sc.METRIC_GPU_MEMORY_CONTROLLER_UTILIZATION, T0 + i * MS, v)
    detail = _report(db)["baseline"]["overall"]["device_utilization_detail"]
    assert detail["memory_util_ratio"] == pytest.approx(0.2)


@pytest.mark.parametrize(("schema", "expected"), [("1", 0.9), ("2", None)])
def test_schema_1_memory_utilization_still_reads_as_memory_controller_busy(schema, expected):
    # schema "1" SDKs wrote NVML's memory-busy fraction under hw.gpu.memory.utilization;
    # from "2" on (as in the hardware conventions) that name is memory in use
    import json

    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1,
                attributes=json.dumps({sc.RES_SCHEMA_VERSION: schema}))
    db.request(T0, T0 + 50 * MS, input_tokens=1)
    db.metric(sc.METRIC_HW_GPU_MEMORY_UTILIZATION, T0, 0.9)
    detail = _report(db)["baseline"]["overall"]["device_utilization_detail"]
    assert detail["memory_util_ratio"] == (None if expected is None
                                           else pytest.approx(expected))


def test_processes_on_one_host_share_its_gpus_and_its_bill():
    db = FixtureDb()
    # two worker processes on one 2-GPU machine, one GPU each, each busy half the window
    for rid, dev in ((1, 0), (2, 1)):
        db.resource(rid, host_name="node-a", gpu_model="NVIDIA L4", gpu_count=2)
        for i in range(10):
            start = T0 + i * 100 * MS
            r = db.request(start, start + 100 * MS, input_tokens=5, resource_id=rid)
            db.batch(start, start + 50 * MS, [r], resource_id=rid, device_time_ns=50 * MS,
                     attributes={"inferaudit.device.id": dev})
    rep = _report(db)
    assert rep["baseline"]["overall"]["device_utilization"] == pytest.approx(0.5)
    assert rep["baseline"]["overall"]["device_utilization_detail"]["devices"] == 2
    assert rep["price"]["usd_per_hour"] == pytest.approx(2 * 0.8048)  # not 4 GPUs' worth


def test_streamed_requests_are_counted_so_a_missing_ttft_can_be_explained() -> None:
    db = FixtureDb()
    db.resource(1)
    for i in range(3):
        db.request(T0 + i * 1000 * MS, T0 + i * 1000 * MS + 50 * MS, stream=True)
    db.request(T0 + 5000 * MS, T0 + 5050 * MS)
    overall = analyze_connection(db.con)["baseline"]["overall"]
    assert overall["streamed_requests"] == 3
    assert overall["ttft_ms"]["n"] == 0  # streamed, but nothing recorded the first token


def test_an_unknown_stream_flag_is_not_counted_as_not_streamed() -> None:
    """Foreign spans often carry no stream flag: 'no streamed requests' would be a guess."""
    db = FixtureDb()
    db.resource(1)
    for i in range(3):
        db.request(T0 + i * 1000 * MS, T0 + i * 1000 * MS + 50 * MS, stream=None)
    assert analyze_connection(db.con)["baseline"]["overall"]["streamed_requests"] is None
    known = FixtureDb()
    known.resource(1)
    known.request(T0, T0 + 50 * MS, stream=False)
    assert analyze_connection(known.con)["baseline"]["overall"]["streamed_requests"] == 0
