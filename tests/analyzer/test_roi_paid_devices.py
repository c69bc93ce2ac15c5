"""How the ROI model counts and prices paid devices.

Pins two ways it misled: the paid devices no server used were counted per resource, so two
worker processes sharing one host (one GPU each) left "an idle GPU" to right-size away; and
``--price-per-hour`` priced a replica at max(paid, replicas) devices, so one GPU running three
calls at once cost three GPUs' $/h per replica.
"""

from __future__ import annotations

from typing import Any

import pytest
from _analysis_fixtures import MS, T0, FixtureDb

from inferaudit_analyzer.analyze import analyze_connection
from inferaudit_analyzer.roi.interventions import Knobs
from inferaudit_analyzer.roi.model import roi_section
from inferaudit_sdk import semconv

UNDERUSED = {"id": "device_underused", "severity": "high", "layer": "hardware", "evidence": {}}


def _shared_host_db(gpu_count: int) -> FixtureDb:
    """Two worker processes (resources 1 and 2) on one host with ``gpu_count`` paid GPUs, each
    serving on its own GPU (device ids 0 and 1), 60 ms calls every 400 ms in turn."""
    db = FixtureDb()
    for rid in (1, 2):
        db.resource(rid, gpu_model="NVIDIA A10G", gpu_count=gpu_count, service_name="svc",
                    host_name="gpu-host-1", price_usd_per_hour=1.0)
    for i in range(200):
        rid = 1 + i % 2
        arr = T0 + i * 400 * MS
        r = db.request(arr, arr + 60 * MS, input_tokens=100 + i % 17,
                       output_tokens=20 + i % 5, resource_id=rid)
        db.batch(arr, arr + 60 * MS, [r], parent=r, device_time_ns=55 * MS, resource_id=rid,
                 attributes={semconv.DEVICE_ID: str(rid - 1)})
    return db


def _roi_underused(db: FixtureDb) -> dict[str, Any]:
    rep = analyze_connection(db.con)
    rep["findings"] = [f for f in rep["findings"] if f["id"] != "device_underused"] + [UNDERUSED]
    return roi_section(db.con, rep, Knobs(max_batch=4, slo_p95_ms=200), bootstrap=0)


def test_two_workers_sharing_a_host_leave_no_idle_gpu() -> None:
    roi = _roi_underused(_shared_host_db(gpu_count=2))
    assert roi["price"]["paid_devices"] == 2
    assert roi["price"]["replicas"] == 2
    assert roi["price"]["idle_paid_devices"] == 0
    right = {it["intervention"]: it for it in roi["roadmap"]}["right_size"]
    # every paid GPU served: a replica costs one GPU today, nothing to release
    assert right["params"]["idle_paid_devices"] == 0
    assert right["params"]["replica_price_ratio"] == pytest.approx(1.0)
    # what is left is dropping one of the two underused replicas, at most half the bill
    assert right["impact"]["bill_saving_ratio"] <= 0.5 + 1e-9


def test_idle_gpus_on_a_shared_host_count_the_servers_of_every_worker() -> None:
    """Same two workers on a 4-GPU host: the two GPUs no worker ran on are idle, not three."""
    roi = _roi_underused(_shared_host_db(gpu_count=4))
    assert roi["price"]["paid_devices"] == 4
    assert roi["price"]["idle_paid_devices"] == 2
    right = {it["intervention"]: it for it in roi["roadmap"]}["right_size"]
    assert right["params"]["replica_price_ratio"] == pytest.approx(2 / 4)


def _one_gpu_three_in_flight_db() -> FixtureDb:
    """One 1-GPU worker at 1 $/h that records no device id and runs 3 calls at once."""
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA A10G", gpu_count=1, service_name="svc",
                price_usd_per_hour=1.0)
    for i in range(100):
        for k in range(3):
            s = T0 + i * 10 * MS + k * MS
            r = db.request(s, s + 9 * MS, input_tokens=50, output_tokens=10)
            db.batch(s, s + 9 * MS, [r], parent=r, device_time_ns=8 * MS)
    return db


def test_price_per_hour_prices_the_paid_devices_over_the_serving_replicas() -> None:
    db = _one_gpu_three_in_flight_db()
    rep = analyze_connection(db.con)
    own = roi_section(db.con, rep, Knobs(max_batch=1, slo_p95_ms=1000), bootstrap=0)
    given = roi_section(db.con, rep, Knobs(max_batch=1, slo_p95_ms=1000, price_per_hour=1.0),
                        bootstrap=0)
    assert own["price"]["replicas"] == 3
    assert own["price"]["paid_devices"] == 1
    # 1 $/device-hour x 1 paid GPU over 3 serving replicas, whichever way the price came in
    assert own["price"]["usd_per_replica_hour"] == pytest.approx(1 / 3)
    assert given["price"]["usd_per_replica_hour"] == pytest.approx(1 / 3)
    report_cost = rep["baseline"]["overall"]["cost_per_request_usd"]
    assert given["baseline"]["replayed"]["cost_per_request_usd"] == pytest.approx(
        report_cost, rel=0.05)


def _one_thread_on_two_cores_db() -> FixtureDb:
    """One CPU replica at 1 $/h on a 2-core host whose model calls use one intra-op thread:
    half its cores can never be busy (the main job's server)."""
    db = FixtureDb()
    db.resource(1, cpu_cores=2, service_name="svc", host_name="cpu-host",
                price_usd_per_hour=1.0)
    for i in range(200):
        arr = T0 + i * 50 * MS
        out = 8 + (i * 7) % 23
        call = (5 + out) * MS
        r = db.request(arr, arr + call, input_tokens=40 + i % 13, output_tokens=out)
        db.batch(arr, arr + call, [r], parent=r, device_type="cpu", cpu_time_ns=call,
                 attributes={semconv.DEVICE_CPU_THREADS: 1})
    return db


def test_cores_no_model_call_can_use_are_right_sized_away() -> None:
    # cores_unreachable said half the bill could never work, and the roadmap said "right_size:
    # no finding supports it": both proposals then read "cost per request unchanged"
    db = _one_thread_on_two_cores_db()
    rep = analyze_connection(db.con)
    assert "cores_unreachable" in {f["id"] for f in rep["findings"]}
    roi = roi_section(db.con, rep, Knobs(max_batch=4, slo_p95_ms=200), bootstrap=20)
    right = {it["intervention"]: it for it in roi["roadmap"]}["right_size"]
    assert "cores_unreachable" in right["evidence"]
    # it serves as today does: today's p95 spread, not one adjusted by itself to no width
    p95 = right["interval"]["latency_ms_p95"]
    assert p95["low"] <= right["projected"]["latency_ms"]["p95"] <= p95["high"]
    assert p95["high"] > p95["low"]
    assert right["params"]["replica_price_ratio"] == pytest.approx(0.5)
    assert right["params"]["cores_used_ratio"] == pytest.approx(0.5)
    assert right["impact"]["bill_saving_ratio"] == pytest.approx(0.5, abs=1e-6)
