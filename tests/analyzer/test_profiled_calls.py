"""Profiled model calls (the SDK's profile sampling, on in audit mode) are out of every latency
statistic and out of the ROI's service-time fit, and count everywhere else.

A sampled call pays the profiler's start, its trace export and compression on its own path (a
20 ms call on the CPU example took hundreds of ms): one in N requests read as a tail that
serving never had, and the replay's curve was fitted to it.
"""

from __future__ import annotations

import numpy as np
import pytest
from _analysis_fixtures import MS, T0, FixtureDb

from inferaudit_analyzer.analyze import analyze_connection
from inferaudit_analyzer.roi.data import observe
from inferaudit_analyzer.roi.interventions import Knobs
from inferaudit_analyzer.roi.model import roi_section
from inferaudit_analyzer.views import create_views

PROFILE_EVERY = 10
PROFILER_MS = 400


def _served(profiled: bool, trace_written: bool = True) -> FixtureDb:
    """200 requests every 40 ms, each one 30-34 ms model call under it; with ``profiled``,
    every 10th call ran under the profiler, 400 ms longer (its device time too)."""
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1, service_name="svc",
                price_usd_per_hour=1.0)
    for i in range(200):
        arr = T0 + i * 40 * MS
        sampled = profiled and i % PROFILE_EVERY == 3
        extra = PROFILER_MS * MS if sampled else 0
        end = arr + (30 + i % 5) * MS + extra
        r = db.request(arr, end, input_tokens=100 + i % 37, output_tokens=20 + i % 11)
        db.batch(arr, end, [r], parent=r, device_time_ns=(28 + i % 5) * MS + extra,
                 batch_input_tokens=100 + i % 37, batch_output_tokens=20 + i % 11,
                 profile_path=(f"/t/profiles/{i:016x}.json.gz" if sampled and trace_written
                               else None),
                 attributes={"inferaudit.profile.sampled": True} if sampled else {})
    return db


@pytest.mark.parametrize("trace_written", [True, False])
def test_views_mark_profiled_calls_and_the_requests_they_served(trace_written):
    # a call whose trace could not be written still paid the profiler: the SDK marks it
    db = _served(True, trace_written)
    create_views(db.con)
    (calls,) = db.con.execute("SELECT COUNT(*) FILTER (WHERE profiled) FROM batches").fetchone()
    (reqs,) = db.con.execute("SELECT COUNT(*) FILTER (WHERE profiled) FROM requests").fetchone()
    assert calls == reqs == 200 // PROFILE_EVERY


def test_profiled_requests_are_out_of_the_percentiles_and_in_the_counts():
    clean = analyze_connection(_served(False).con)["baseline"]["overall"]
    sampled = analyze_connection(_served(True).con)["baseline"]["overall"]
    assert sampled["requests"] == clean["requests"] == 200
    assert sampled["profiled_requests"] == 200 // PROFILE_EVERY
    assert clean["profiled_requests"] == 0
    assert sampled["latency_ms"]["n"] == 200 - 200 // PROFILE_EVERY
    assert sampled["latency_ms"]["p99"] < 40  # no 430 ms tail from the profiler
    assert sampled["latency_ms"]["sketch"]["p99"] < 40
    assert sampled["error_latency_ms"]["n"] == 0  # not errors either


def test_the_roi_fits_and_measures_without_profiled_calls():
    found = {}
    for profiled in (False, True):
        db = _served(profiled)
        rep = analyze_connection(db.con)
        obs = observe(db.con)
        found[profiled] = (rep, obs, roi_section(db.con, rep, Knobs(max_batch=4), bootstrap=0))
    (_, obs0, roi0), (rep1, obs1, roi1) = found[False], found[True]
    assert len(obs1.calls) == len(obs0.calls) - 200 // PROFILE_EVERY  # not fitted
    assert np.max(obs1.calls.duration_ns) < 40 * MS
    assert int(obs1.out_of_percentiles().sum()) == 200 // PROFILE_EVERY
    assert obs0.out_of_percentiles() is None
    # the measured p95 the ROI keeps is the report's, and the replay's curve the clean one's
    assert roi1["baseline"]["measured_p95_ms"] == pytest.approx(
        rep1["baseline"]["overall"]["latency_ms"]["p95"])
    assert roi1["baseline"]["replayed"]["latency_ms"]["p95"] == pytest.approx(
        roi0["baseline"]["replayed"]["latency_ms"]["p95"], rel=0.1)


def test_the_report_says_how_many_requests_the_percentiles_leave_out():
    from inferaudit_analyzer.report.markdown import render_markdown

    label = "requests a profiled call served (out of the latency percentiles)"
    md = render_markdown(analyze_connection(_served(True).con))
    assert f"| {label} | {200 // PROFILE_EVERY} |" in md
    assert label not in render_markdown(analyze_connection(_served(False).con))


def _all_profiled() -> FixtureDb:
    """``profile_every_n=1``: 100 requests, every model call under the profiler."""
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1, service_name="svc",
                price_usd_per_hour=1.0)
    for i in range(100):
        arr = T0 + i * 40 * MS
        end = arr + (30 + i % 5) * MS
        r = db.request(arr, end, input_tokens=100 + i % 37, output_tokens=20 + i % 11)
        db.batch(arr, end, [r], parent=r, device_time_ns=(28 + i % 5) * MS,
                 batch_input_tokens=100 + i % 37, batch_output_tokens=20 + i % 11,
                 profile_path=f"/t/profiles/{i:016x}.json.gz")
    return db


def test_where_every_call_was_profiled_they_are_the_measurement_and_the_report_says_so():
    # Nothing unprofiled to measure instead: leaving them out emptied every percentile and the
    # ROI's fit. They stay in, counted apart, and the report names the profiler's cost.
    db = _all_profiled()
    rep = analyze_connection(db.con)
    ov = rep["baseline"]["overall"]
    assert ov["profiled_requests"] == 0
    assert ov["profiled_in_percentiles"] == 100
    assert ov["latency_ms"]["n"] == 100
    assert 30 <= ov["latency_ms"]["p50"] <= 35
    (apart,) = db.con.execute(
        "SELECT COUNT(*) FILTER (WHERE profiled_apart) FROM batches").fetchone()
    assert apart == 0
    obs = observe(db.con)
    assert len(obs.calls) == 100  # fitted
    assert obs.out_of_percentiles() is None
    from inferaudit_analyzer.report.markdown import render_markdown

    label = ("requests a profiled call served (in the latency percentiles: every call was "
             "profiled, so they include the profiler's cost)")
    assert f"| {label} | 100 |" in render_markdown(rep)
    assert label not in render_markdown(analyze_connection(_served(True).con))


def test_one_unprofiled_call_is_enough_to_keep_the_profiled_apart():
    db = _served(True)
    rep = analyze_connection(db.con)
    assert rep["baseline"]["overall"]["profiled_in_percentiles"] == 0
    assert rep["baseline"]["overall"]["profiled_requests"] == 200 // PROFILE_EVERY


def test_a_process_that_profiled_every_call_keeps_its_calls_beside_one_that_did_not():
    # Whether profiled calls can be left out is the process's (its profile_every_n): one
    # deployment at profile_every_n=1 beside another unprofiled one had its percentiles emptied.
    db = FixtureDb()
    for rid, model in ((1, "big"), (2, "small")):
        db.resource(rid, gpu_model="NVIDIA L4", gpu_count=1, service_name=f"svc{rid}",
                    price_usd_per_hour=1.0)
        for i in range(50):
            arr = T0 + i * 40 * MS + rid * MS
            end = arr + 30 * MS
            r = db.request(arr, end, input_tokens=100, output_tokens=20, request_model=model,
                           resource_id=rid)
            db.batch(arr, end, [r], parent=r, device_time_ns=28 * MS, request_model=model,
                     resource_id=rid,
                     profile_path=f"/t/profiles/{i:016x}.json.gz" if rid == 1 else None)
    ov = analyze_connection(db.con)["baseline"]
    big, small = ov["by_model"]["big"], ov["by_model"]["small"]
    assert big["latency_ms"]["n"] == 50 and big["profiled_in_percentiles"] == 50
    assert small["latency_ms"]["n"] == 50 and small["profiled_in_percentiles"] == 0
    assert ov["overall"]["profiled_requests"] == 0
