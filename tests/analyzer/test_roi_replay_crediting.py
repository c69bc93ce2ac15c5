"""The replay of today's serving and what each roadmap item is credited with.

Each test pins one way the projection misled: replicas taken from paid GPUs instead of the
servers that ran calls, the idle-replica saving credited to every item, cache hits replayed as
model calls, model-layer items counted as non-model in the model-swap check, replica savings lost
without a price, the server's own overhead scaled by speed-ups, routing of requests already on a
smaller model or of none when the request names no model, SLO misses ranked, and an
unpaired bill interval.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from _analysis_fixtures import MS, T0, FixtureDb, fifo_schedule
from test_roi_roadmap import _finding, _inputs, _work

from inferaudit_analyzer.analyze import analyze_connection
from inferaudit_analyzer.roi import data, project
from inferaudit_analyzer.roi.fit import fit_curve
from inferaudit_analyzer.roi.interventions import Knobs, applicable
from inferaudit_analyzer.roi.model import roi_section
from inferaudit_analyzer.roi.project import Prices, Scenario, scenario_workload
from inferaudit_analyzer.roi.roadmap import build_roadmap
from inferaudit_analyzer.views import create_views


def _one_worker_db(gpu_count: int) -> FixtureDb:
    """One worker queue on a host with ``gpu_count`` paid GPUs: 80 requests every 40 ms, 50 ms
    each, first come first served (the queue grows to ~800 ms)."""
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA A10G", gpu_count=gpu_count, service_name="svc",
                price_usd_per_hour=4.0)
    for i, arrival, start, end in fifo_schedule(80, 40, 50):
        req = db.request(arrival, end, input_tokens=100 + i % 7, output_tokens=20 + i % 5,
                         queue_ns=start - arrival)
        db.batch(start, end, [req], parent=req, device_time_ns=45 * MS,
                 batch_input_tokens=100 + i % 7, batch_output_tokens=20 + i % 5)
    return db


def test_the_replay_runs_the_servers_that_ran_calls_not_the_paid_gpus() -> None:
    db = _one_worker_db(gpu_count=4)
    rep = analyze_connection(db.con)
    roi = roi_section(db.con, rep, Knobs(max_batch=4), bootstrap=0)
    base = roi["baseline"]
    assert base["scenario"]["replicas"] == 1
    assert abs(base["replay_p95_error_ratio"]) < 0.1
    # the four GPUs are still paid: one serving replica costs the host's whole $/h (4 x 4 $/h)
    assert roi["price"]["paid_devices"] == 4
    assert rep["price"]["usd_per_hour"] == pytest.approx(16.0)
    assert roi["price"]["usd_per_replica_hour"] == pytest.approx(16.0)
    given = roi_section(db.con, rep, Knobs(max_batch=4, price_per_hour=4.0), bootstrap=0)
    assert given["price"]["usd_per_replica_hour"] == pytest.approx(16.0)  # $/device-hour x 4
    # no replica to drop, and no evidence of an underused device: nothing may claim a bill
    # saving from 4 -> 1 (releasing the idle GPUs is right_size's, with its evidence: below)
    assert all(it["impact"]["bill_saving_ratio"] == 0.0 for it in roi["roadmap"])


def test_right_size_releases_paid_gpus_no_server_used() -> None:
    """One worker on a 4-GPU host, the GPUs underused: the three that ran no call are a real
    saving, credited to right_size alone (each replica then costs one GPU, not four)."""
    db = _one_worker_db(gpu_count=4)
    rep = analyze_connection(db.con)
    rep["findings"] = [*rep["findings"],
                       {"id": "device_underused", "severity": "high", "layer": "hardware",
                        "evidence": {}}]
    roi = roi_section(db.con, rep, Knobs(max_batch=4), bootstrap=0)
    by_id = {it["intervention"]: it for it in roi["roadmap"]}
    right = by_id["right_size"]
    assert right["params"]["idle_paid_devices"] == 3
    assert right["projected"]["replicas"] == 1
    assert right["projected"]["saving_kind"] == "bill"
    assert right["impact"]["bill_saving_ratio"] == pytest.approx(0.75, rel=0.02)
    base_cost = roi["baseline"]["replayed"]["cost_per_request_usd"]
    assert right["projected"]["cost_per_request_usd"] == pytest.approx(base_cost / 4, rel=0.02)
    assert all(it["impact"]["bill_saving_ratio"] == 0.0 for pid, it in by_id.items()
               if pid != "right_size")
    # composed after it, the released GPUs stay released
    assert roi["roadmap"][-1]["cumulative"]["projected"]["paid_replicas"] == pytest.approx(0.25)


def _call(start: int, end: int, resource: int, device: str | None) -> tuple:
    # rows shaped like CALLS_SQL: start, ..., end at 11, resource at 12, device at 13
    return (start, end - start, None, 1, 1, 1, None, None, None, "m", start, end, resource,
            device, 1)


def test_serving_devices_counts_side_by_side_servers_not_restarts() -> None:
    # one process restarted (resource 1 then 2, never at once): one server
    restart = [_call(0, 10, 1, None), _call(10, 20, 1, None), _call(30, 40, 2, None)]
    assert data.serving_devices(restart) == 1
    # two workers on two GPUs, one of them mostly idle: two servers
    two = [_call(0, 10, 1, "0"), _call(10, 20, 1, "0"), _call(100, 110, 1, "1"),
           _call(200, 210, 1, "0")]
    assert data.serving_devices(two) == 2
    # workers that record no device, calls in flight together: counted from the overlap
    overlap = [_call(0, 10, 1, None), _call(5, 15, 1, None), _call(6, 16, 1, None)]
    assert data.serving_devices(overlap) == 3


def test_only_right_size_is_credited_with_the_replicas_todays_load_does_not_need() -> None:
    # light load on 6 replicas, SLO 400 ms: today's serving needs 2 of them
    inp = _inputs(_work(300, mean_gap_ms=30.0), replicas=6)
    out = build_roadmap(inp, [_finding("unbatched_serving"), _finding("pageable_copies"),
                              _finding("device_underused")],
                        Knobs(max_batch=8, slo_p95_ms=400), fit_curve(inp.calls), bootstrap=0)
    by_id = {it["intervention"]: it for it in out["roadmap"]}
    pinned, right = by_id["pinned_memory"], by_id["right_size"]
    assert pinned["impact"]["bill_saving_ratio"] < 0.05  # a 3.5 % speed-up frees no replica
    assert out["baseline"]["replicas_at_slo"] == 2
    assert pinned["projected"]["replicas"] == 6
    assert right["impact"]["bill_saving_ratio"] == pytest.approx(4 / 6, rel=0.05)
    assert right["rank"] < pinned["rank"]
    # the composition drops the idle replicas once right-sizing is among its steps
    cum = [it["cumulative"]["projected"]["replicas"] for it in out["roadmap"]]
    assert cum[-1] <= 2


def test_requests_the_servers_cache_answered_are_not_replayed_as_model_calls() -> None:
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1, service_name="svc")
    free = T0
    for i in range(80):
        arr = T0 + i * 40 * MS
        if i % 2:  # every other request is answered from the server's cache in 1 ms
            db.request(arr, arr + 1 * MS, input_tokens=50, output_tokens=20, cache_hit=True)
            continue
        start = max(arr, free)
        end = free = start + 50 * MS
        r = db.request(arr, end, input_tokens=50, output_tokens=20)
        db.batch(start, end, [r], device_time_ns=45 * MS)
    rep = analyze_connection(db.con)
    roi = roi_section(db.con, rep, Knobs(max_batch=4), bootstrap=0)
    base = roi["baseline"]
    assert abs(base["replay_p95_error_ratio"]) < 0.1
    assert base["replayed"]["busy_device_s"] == pytest.approx(2.0, rel=0.05)  # 40 calls x 50 ms
    # the hits keep their measured 1 ms: half the requests sit there in the replay
    assert base["replayed"]["latency_ms"]["p50"] == pytest.approx(1.0, abs=0.01)


def test_requests_that_failed_before_any_model_call_are_not_replayed_as_model_calls() -> None:
    """A fast timeout or a rejected request ran no model call: replayed as a full call it would
    invent load (20 of 80 such requests once took the replayed p95 from 45 to 420 ms)."""
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1, service_name="svc")
    free = T0
    for i in range(80):
        arr = T0 + i * 40 * MS
        if i % 4 == 3:  # a quarter fail in 2 ms, before reaching the model
            db.request(arr, arr + 2 * MS, input_tokens=50, error_type="Timeout", status_code=2)
            continue
        start = max(arr, free)
        end = free = start + 30 * MS
        r = db.request(arr, end, input_tokens=50, output_tokens=20)
        db.batch(start, end, [r], device_time_ns=28 * MS)
    rep = analyze_connection(db.con)
    roi = roi_section(db.con, rep, Knobs(max_batch=4), bootstrap=0)
    base = roi["baseline"]
    assert abs(base["replay_p95_error_ratio"]) < 0.1
    assert base["replayed"]["busy_device_s"] == pytest.approx(60 * 0.030, rel=0.05)


def test_new_cache_hits_come_only_from_computed_requests() -> None:
    work = _work(100)
    served = np.full(100, np.nan)
    served[:50] = 1 * MS  # the first half was answered by the server's cache already
    m = project.marks(100, served_ns=served)
    sub, hits, was = scenario_workload(work, m, Scenario(cache_hit_share=0.3))
    assert was[:50].all() and not was[50:].any()
    assert hits.sum() == 30 and not (hits & was).any()
    assert len(sub) == 20
    # never more hits than computed requests
    _, hits, _ = scenario_workload(work, m, Scenario(cache_hit_share=0.9))
    assert hits.sum() == 50


def test_the_avoided_model_swap_composes_only_the_non_model_items() -> None:
    # routing (model layer) ranks first; pinned memory alone closes ~6 % of the swap's gap
    inp = _inputs(_work(300, mean_gap_ms=60.0))
    out = build_roadmap(inp, [_finding("routing_opportunity", short_on_largest_ratio=0.95),
                              _finding("pageable_copies")], Knobs(), fit_curve(inp.calls),
                        bootstrap=0)
    assert out["roadmap"][0]["layer"] == "model"
    swap = out["avoided_model_swap"]
    assert swap["applies"] is False and swap["avoided_cost_usd"] == 0.0
    assert swap["gap_closed_ratio"] < 0.2
    assert swap["non_model_composed"] == ["pinned_memory"]


def test_without_a_price_replica_reductions_still_rank_as_bill_savings() -> None:
    inp = _inputs(_work(300, mean_gap_ms=30.0), replicas=6)
    inp = replace(inp, prices=Prices(None, None, 0.0))
    out = build_roadmap(inp, [_finding("unbatched_serving"), _finding("device_underused")],
                        Knobs(max_batch=8, slo_p95_ms=400), fit_curve(inp.calls), bootstrap=0)
    by_id = {it["intervention"]: it for it in out["roadmap"]}
    assert "right_size" in by_id
    right = by_id["right_size"]
    assert right["projected"]["saving_kind"] == "bill"
    assert right["projected"]["cost_per_request_usd"] is None
    assert right["impact"]["bill_saving_ratio"] == pytest.approx(4 / 6, rel=0.05)


def test_speed_ups_leave_the_servers_own_overhead_as_measured() -> None:
    inp = replace(_inputs(_work(300, mean_gap_ms=60.0)), overhead_ns=20 * MS)
    fit = fit_curve(inp.calls)
    served = inp.serve_curve(fit.curve)
    plans = {p.id: p for p in applicable([_finding("kernel_launch_overhead",
                                                   launch_idle_ratio=0.5),
                                          _finding("pageable_copies")], Knobs(), {})}
    empty = served.call_ns(1, 0.0, 0.0)
    assert empty == pytest.approx(fit.curve.fixed_ns + 20 * MS)
    for pid in ("graph_compile", "pinned_memory"):
        sc = plans[pid].apply(Scenario())
        after = sc.curve(served)
        model_part = fit.curve.fixed_ns * sc.overhead_factor * sc.all_factor
        assert after.call_ns(1, 0.0, 0.0) == pytest.approx(model_part + 20 * MS)


def test_routing_moves_only_requests_on_the_largest_model() -> None:
    rng = np.random.default_rng(0)
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA A10G", gpu_count=1, service_name="svc")
    free = T0
    for i in range(200):
        arr = T0 + i * 60 * MS
        short = i % 4 == 0  # 25 % short requests: half of them already on the small model
        on_small = short and i % 8 == 0
        if short:
            tin, tout = (20, 10) if on_small else (25, 12)
        else:
            tin, tout = int(rng.integers(150, 300)), int(rng.integers(40, 80))
        model = "small" if on_small else "big"
        ms = (0.02 * tin + 0.15 * tout) if on_small else (0.1 * tin + 0.6 * tout)
        start = max(arr, free)
        end = free = start + int(ms * MS)
        r = db.request(arr, end, input_tokens=tin, output_tokens=tout, request_model=model)
        db.batch(start, end, [r], parent=r, device_time_ns=int(ms * MS), request_model=model)
    create_views(db.con)
    obs = data.observe(db.con)
    work = obs.workload()
    models = obs.model[np.argsort(obs.arrival_ns, kind="stable")]
    sub, _, _ = scenario_workload(work, project.observed_marks(obs, "big"),
                                  Scenario(routing_split=0.125, small_model_speedup=3.0))
    moved = sub.input_tokens != work.input_tokens
    assert moved.sum() == 25
    assert (models[moved] == "big").all()


def test_routing_finds_the_requests_of_an_unnamed_model() -> None:
    """Requests without a model name: the routing finding calls it '(unknown)' (its MODEL_EXPR)
    and the ROI model must spell it the same, or no request is routable and routing is
    projected to save nothing."""
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1, service_name="svc",
                price_usd_per_hour=1.0)
    free = T0
    for i in range(120):
        arr = T0 + i * 60 * MS
        tin, tout = (8, 4) if i % 3 == 0 else (300 + i % 13, 60 + i % 7)
        svc = (5 + 0.02 * tin + 0.5 * tout) * MS
        start = max(arr, free)
        end = free = int(start + svc)
        r = db.request(arr, end, input_tokens=tin, output_tokens=tout, request_model=None)
        db.batch(start, end, [r], parent=r, device_time_ns=int(svc * 0.9), request_model=None,
                 batch_input_tokens=tin, batch_output_tokens=tout)
    rep = analyze_connection(db.con)
    assert [f for f in rep["findings"] if f["id"] == "routing_opportunity"]
    roi = roi_section(db.con, rep, Knobs(max_batch=4), bootstrap=0)
    (item,) = [it for it in roi["roadmap"] if it["intervention"] == "model_routing"]
    assert item["impact"]["capacity_saving_ratio"] > 0
    swap = roi["avoided_model_swap"]
    assert swap is not None
    assert swap["model_swap_projected"]["busy_device_s"] < \
        0.8 * roi["baseline"]["replayed"]["busy_device_s"]


def test_an_item_that_breaks_the_slo_is_not_proposed() -> None:
    # batching that waits 80 ms for a batch to fill doubles an 80 ms tail
    inp = _inputs(_work(300, mean_gap_ms=150.0), replicas=1)
    out = build_roadmap(inp, [_finding("unbatched_serving")], Knobs(max_batch=8, max_wait_ms=80),
                        fit_curve(inp.calls), bootstrap=0)
    assert [it["intervention"] for it in out["roadmap"]] == []
    reasons = {x["intervention"]: x["reason"] for x in out["not_proposed"]}
    assert "misses the SLO" in reasons["continuous_batching"]


def test_the_bill_interval_is_paired_with_each_replicates_baseline() -> None:
    # one replica, light load: pinned memory changes no replica and no window, so its bill per
    # request is today's in every replicate; only the resampled traffic's level moves both
    inp = _inputs(_work(300, mean_gap_ms=60.0), replicas=1)
    out = build_roadmap(inp, [_finding("pageable_copies")], Knobs(), fit_curve(inp.calls),
                        bootstrap=30)
    (item,) = out["roadmap"]
    iv = item["interval"]["cost_per_request_usd"]
    point = item["projected"]["cost_per_request_usd"]
    assert iv["replicates"] > 0
    assert (iv["high"] - iv["low"]) / point < 0.02
    ratio = item["interval"]["bill_ratio_to_baseline"]
    assert 0.98 < ratio["low"] <= ratio["high"] < 1.02


def test_every_bill_ratio_lies_in_its_own_interval() -> None:
    """The bill ratio's interval is placed around its point like the others: as plain
    percentiles the composed steps' point fell just outside it."""
    inp = _inputs(_work(400, mean_gap_ms=30.0), replicas=6)
    out = build_roadmap(inp, [_finding("device_underused"), _finding("unbatched_serving"),
                              _finding("pageable_copies")],
                        Knobs(max_batch=8, slo_p95_ms=200), fit_curve(inp.calls), bootstrap=30)
    base = out["baseline"]["replayed"]
    base_rs = base["window_s"] * base["replicas"]
    assert out["roadmap"]
    for it in out["roadmap"]:
        for blk in (it, it["cumulative"]):
            p, iv = blk["projected"], blk["interval"]["bill_ratio_to_baseline"]
            ratio = p["window_s"] * p["replicas"] / base_rs
            assert iv["low"] * (1 - 1e-12) <= ratio <= iv["high"] * (1 + 1e-12)
