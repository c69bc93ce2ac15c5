"""One utilisation definition everywhere: overall, per model and per time bucket agree.

Regression tests for a CPU host where per-model and per-bucket utilisation divided device time by
the window (1 of 2 cores busy read 100 %) while the overall figure divided by the paid cores, for
time buckets that dropped the tail after the last arrival, and for ``device_underused`` advising
consolidation while requests queued.
"""

from __future__ import annotations

import pytest
from _analysis_fixtures import MS, T0, FixtureDb, batched_db, fifo_schedule

from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection
from inferaudit_analyzer.thresholds import QUEUED_P95_OVER_SERVICE_RATIO

S = 1000 * MS


def _report(db: FixtureDb, **kw) -> dict:
    return analyze_connection(db.con, AnalyzeParams(**kw))


def _span_s(row: dict, tb: dict, window_s: float) -> float:
    """The bucket's overlap with the window, computed here independently of the analyzer."""
    return min(tb["bucket_s"], window_s - row["start_s"])


def _sequential_cpu_server(n: int, gap_ms: int, service_ms: int, models: tuple[str, ...] = ("m",),
                           cores: int = 2) -> FixtureDb:
    """One request at a time on one thread of a ``cores``-core CPU host, FIFO: a model call uses
    ``service_ms`` of CPU over ``service_ms`` of wall time (one core busy); model i % len."""
    db = FixtureDb()
    db.resource(1, cpu_cores=cores, host_name="box", service_name="svc")
    for i, arrival, start, end in fifo_schedule(n, gap_ms, service_ms):
        model = models[i % len(models)]
        req = db.request(arrival, end, input_tokens=20, output_tokens=10, request_model=model,
                         queue_ns=start - arrival)
        db.batch(start, end, [req], parent=req, request_model=model, device_type="cpu",
                 cpu_time_ns=service_ms * MS)
    return db


def test_cpu_host_one_busy_core_of_two_reads_half_everywhere():
    rep = _report(_sequential_cpu_server(40, gap_ms=10, service_ms=50), bucket_s=0.5)
    base = rep["baseline"]
    # always busy after the first arrival: one core of two -> 0.5
    assert base["overall"]["device_utilization"] == pytest.approx(0.5, abs=1e-3)
    assert base["by_model"]["m"]["device_utilization"] == pytest.approx(
        base["overall"]["device_utilization"], abs=1e-4)
    busy = [r["device_busy_ratio"] for r in base["time_buckets"]["rows"]]
    assert busy and max(busy) == pytest.approx(0.5, abs=1e-3)


def test_per_model_utilisation_adds_up_to_overall():
    db = _sequential_cpu_server(60, gap_ms=30, service_ms=20, models=("a", "b", "b"))
    base = _report(db)["baseline"]
    per_model = {m: s["device_utilization"] for m, s in base["by_model"].items()}
    assert set(per_model) == {"a", "b"}
    assert sum(per_model.values()) == pytest.approx(base["overall"]["device_utilization"],
                                                    abs=2e-4)
    # same call cost, b serves twice as many requests
    assert per_model["b"] == pytest.approx(2 * per_model["a"], rel=1e-3)


def test_per_model_utilisation_on_a_gpu_splits_the_union_not_the_sum():
    """Overlapping calls of two models on one GPU: busy is the union, shared by device time."""
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA A10G", gpu_count=1)
    for k in range(10):
        t = T0 + k * 100 * MS
        ra, rb = db.request(t, t + 60 * MS, request_model="a"), db.request(
            t, t + 60 * MS, request_model="b")
        db.batch(t, t + 60 * MS, [ra], request_model="a")  # wall time only, fully overlapping
        db.batch(t + 20 * MS, t + 40 * MS, [rb], request_model="b")
    base = _report(db)["baseline"]
    overall = base["overall"]["device_utilization"]
    a, b = (base["by_model"][m]["device_utilization"] for m in ("a", "b"))
    assert a + b == pytest.approx(overall, abs=2e-4)
    assert a == pytest.approx(3 * b, rel=1e-3)  # 60 vs 20 ms of (unmeasured) device time


def test_bucket_busy_is_on_the_overall_basis_and_averages_to_it():
    rep = _report(_sequential_cpu_server(50, gap_ms=40, service_ms=25, cores=4), bucket_s=0.3)
    base = rep["baseline"]
    tb, win = base["time_buckets"], base["overall"]["window_s"]
    rows = tb["rows"]
    weighted = sum(r["device_busy_ratio"] * _span_s(r, tb, win) for r in rows) / win
    assert weighted == pytest.approx(base["overall"]["device_utilization"], abs=1e-3)
    assert all(r["device_busy_ratio"] <= 0.25 + 1e-3 for r in rows)  # one core of four


def test_a_call_across_a_bucket_edge_is_split_between_the_buckets():
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA A10G", gpu_count=1)
    r0 = db.request(T0, T0 + 100 * MS)
    db.batch(T0, T0 + 100 * MS, [r0], device_time_ns=100 * MS)
    r1 = db.request(T0 + 1500 * MS, T0 + 2500 * MS)
    db.batch(T0 + 1500 * MS, T0 + 2500 * MS, [r1], device_time_ns=1000 * MS)  # 1.5-2.5 s
    r2 = db.request(T0 + 3900 * MS, T0 + 4000 * MS)
    db.batch(T0 + 3900 * MS, T0 + 4000 * MS, [r2], device_time_ns=100 * MS)
    rows = {r["bucket"]: r for r in _report(db, bucket_s=1.0)["baseline"]["time_buckets"]["rows"]}
    assert rows[1]["device_busy_ratio"] == pytest.approx(0.5)
    assert rows[2]["device_busy_ratio"] == pytest.approx(0.5)
    assert rows[2]["batches"] == 0 and rows[2]["requests"] == 0  # a row for busy time alone


def test_buckets_keep_the_tail_after_the_last_arrival():
    """All requests arrive in the first second; the sequential server works through them."""
    db = _sequential_cpu_server(30, gap_ms=30, service_ms=100)  # arrivals 0-0.87 s, ends 3 s
    tb = _report(db, bucket_s=1.0)["baseline"]["time_buckets"]
    rows = tb["rows"]
    assert [r["bucket"] for r in rows] == [0, 1, 2]
    assert sum(r["batches"] for r in rows) == 30
    assert sum(r["requests"] for r in rows) == 30
    assert rows[-1]["requests"] == 0 and rows[-1]["device_busy_ratio"] == pytest.approx(0.5)


def test_a_partial_bucket_divides_by_its_overlap_with_the_window():
    db = batched_db(n_batches=30)  # 3 s window
    base = _report(db, bucket_s=60.0)["baseline"]
    (row,) = base["time_buckets"]["rows"]
    assert row["throughput_rps"] == pytest.approx(base["overall"]["throughput_rps"], rel=1e-3)
    assert row["device_busy_ratio"] == pytest.approx(base["overall"]["device_utilization"],
                                                     abs=1e-4)
    rows = _report(db, bucket_s=2.0)["baseline"]["time_buckets"]["rows"]
    # second bucket: 2 s .. the window's end (about 1 s); 10 batches of 8 requests in it
    tail_s = base["overall"]["window_s"] - 2.0
    assert rows[1]["requests"] == 80
    assert rows[1]["throughput_rps"] == pytest.approx(80 / tail_s, rel=1e-3)


def test_no_consolidation_advice_while_requests_queue():
    rep = _report(_sequential_cpu_server(60, gap_ms=10, service_ms=50, cores=4))
    ids = {f["id"] for f in rep["findings"]}
    assert rep["baseline"]["overall"]["device_utilization"] < 0.5  # the underused range
    assert rep["baseline"]["overall"]["queue_ms"]["p95"] > QUEUED_P95_OVER_SERVICE_RATIO * 50
    assert "device_underused" not in ids
    assert "unbatched_serving" in ids


def test_underused_still_fires_when_nobody_queues():
    rep = _report(_sequential_cpu_server(30, gap_ms=200, service_ms=50, cores=4))
    f = next((f for f in rep["findings"] if f["id"] == "device_underused"), None)
    assert f is not None
    assert f["evidence"]["queue_p95_over_service_p50_ratio"] < QUEUED_P95_OVER_SERVICE_RATIO
