"""Concurrency while a device is busy is that device's: replicas are not unbatched serving.

The sweep used to count every request in flight anywhere while any model call ran anywhere, so
three hosts each serving one request at a time read as three requests waiting behind size-1
calls (``unbatched_serving``, high, and the verdict ``runtime_unbatched``).
"""

from __future__ import annotations

from typing import Any

import pytest
from _analysis_fixtures import MS, T0, FixtureDb, unbatched_db

from inferaudit_analyzer.analyses.concurrency import analyze_concurrency
from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection
from inferaudit_analyzer.views import create_views
from inferaudit_sdk import semconv as sc


def _report(db: FixtureDb) -> dict[str, Any]:
    return analyze_connection(db.con, AnalyzeParams())


def _ids(rep: dict[str, Any]) -> set[str]:
    return {f["id"] for f in rep["findings"]}


def _serial_server(db: FixtureDb, resource_id: int, offset_ms: int, n: int = 30,
                   device_id: str | None = None) -> None:
    """One request at a time, every 120 ms, nobody queues; its size-1 call inside it."""
    attrs = {sc.DEVICE_ID: device_id} if device_id is not None else None
    for i in range(n):
        st = T0 + i * 120 * MS + offset_ms * MS
        r = db.request(st, st + 100 * MS, resource_id=resource_id, input_tokens=100,
                       output_tokens=20, queue_ns=0)
        db.batch(st + 2 * MS, st + 98 * MS, [r], resource_id=resource_id,
                 device_time_ns=96 * MS, attributes=attrs)


def test_replicas_each_serving_one_request_at_a_time_are_not_unbatched():
    db = FixtureDb()
    for h in range(3):
        db.resource(h + 1, host_name=f"gpu{h}", gpu_count=1, price_usd_per_hour=1.0)
        _serial_server(db, h + 1, offset_ms=7 * h)
    rep = _report(db)
    conc = rep["baseline"]["overall"]["concurrency"]
    assert conc["max"] == 3                        # the fleet has three in flight ...
    assert conc["mean_while_device_busy"] == 1.0   # ... each device one
    assert "unbatched_serving" not in _ids(rep)
    assert rep["bottleneck"]["case"] != "runtime_unbatched"


def test_workers_pinned_to_their_own_gpu_all_reporting_device_zero():
    # CUDA_VISIBLE_DEVICES=i per worker: every process says device 0, but each is its own resource
    db = FixtureDb()
    for p in range(4):
        db.resource(p + 1, host_name="node", gpu_count=8, service_name="worker")
        _serial_server(db, p + 1, offset_ms=25 * p, device_id="0")
    assert "unbatched_serving" not in _ids(_report(db))


def test_two_gpus_of_one_process_each_serving_one_request():
    db = FixtureDb()
    db.resource(1, gpu_count=2, price_usd_per_hour=2.0)
    _serial_server(db, 1, offset_ms=0, device_id="0")
    _serial_server(db, 1, offset_ms=30, device_id="1")
    create_views(db.con)
    conc = analyze_concurrency(db.con, 4 * 10**9)
    assert conc.max_concurrency == 2
    assert conc.mean_while_busy == 1.0


def test_one_device_with_requests_waiting_behind_size1_calls_is_still_unbatched():
    rep = _report(unbatched_db())
    assert "unbatched_serving" in _ids(rep)
    assert rep["baseline"]["overall"]["concurrency"]["mean_while_device_busy"] > 2.0


def test_replicas_that_each_queue_are_unbatched_on_each():
    # two hosts, each taking one request at a time while arrivals come faster: both queue
    db = FixtureDb()
    for h in range(2):
        db.resource(h + 1, host_name=f"gpu{h}", gpu_count=1)
        free_at = T0
        for i in range(30):
            arrival = T0 + i * 20 * MS + h * 3 * MS
            start = max(arrival, free_at)
            free_at = start + 50 * MS
            r = db.request(arrival, free_at, resource_id=h + 1, input_tokens=100,
                           output_tokens=20, queue_ns=start - arrival)
            db.batch(start, free_at, [r], resource_id=h + 1, device_time_ns=50 * MS)
    rep = _report(db)
    assert "unbatched_serving" in _ids(rep)


def _queued(db: FixtureDb, ranks: int = 1, linked: bool = True, n: int = 40,
            resource_id: int = 1) -> None:
    """Requests arriving every 10 ms behind size-1 calls of 40 ms every 50 ms: they queue. With
    ``ranks`` > 1 each call runs as one span per tensor-parallel rank (device id), all linked."""
    for i in range(n):
        arrival, st = T0 + i * 10 * MS, T0 + i * 50 * MS
        r = db.request(arrival, st + 50 * MS, input_tokens=100, output_tokens=20,
                       resource_id=resource_id)
        for d in range(ranks):
            db.batch(st, st + 40 * MS, [r] if linked else [], device_time_ns=40 * MS,
                     batch_size=1, resource_id=resource_id, attributes={sc.DEVICE_ID: str(d)})


def test_calls_that_link_to_no_request_fall_back_to_the_fleet_sweep():
    # no device is known to serve any request: the per-device sweep has nothing to count, and
    # read 0.0 (a measured "nobody waits"), so unbatched serving could not fire
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA A10G", gpu_count=1)
    _queued(db, linked=False)
    rep = _report(db)
    assert rep["baseline"]["overall"]["concurrency"]["mean_while_device_busy"] > 2.0
    assert "unbatched_serving" in _ids(rep)


def test_a_device_whose_calls_serve_no_request_is_not_swept():
    # device 0 serves the queued requests; device 1 runs warm-up calls no request links to
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA A10G", gpu_count=2)
    _queued(db)
    create_views(db.con)
    alone = analyze_concurrency(db.con, 2 * 10**9).mean_while_busy
    for i in range(20):
        st = T0 + i * 100 * MS
        db.batch(st, st + 90 * MS, [], device_time_ns=90 * MS, batch_size=1,
                 attributes={sc.DEVICE_ID: "1"})
    create_views(db.con)
    conc = analyze_concurrency(db.con, 2 * 10**9)
    assert conc.mean_while_busy == alone
    assert conc.swept_devices == 1


def test_a_request_on_several_tensor_parallel_ranks_is_in_flight_on_each():
    # one request's calls on 2 ranks: each rank is busy while it waits, as on one device
    means = []
    for ranks in (1, 2):
        db = FixtureDb()
        db.resource(1, gpu_model="NVIDIA A10G", gpu_count=ranks)
        _queued(db, ranks=ranks)
        create_views(db.con)
        means.append(analyze_concurrency(db.con, 2 * 10**9).mean_while_busy)
    assert means[0] > 2.0
    assert means[1] == pytest.approx(means[0])
