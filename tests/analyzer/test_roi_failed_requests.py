"""Failed requests in the ROI model: out of every latency percentile it computes, as the report's
baseline leaves them out; replayed as work only where they ran a model call.

A queue timeout is usually long: counted in the percentiles, 8 % of requests failing after 3 s
set the measured and replayed p95, the SLO and the replica sizing to 3 s, and hid the batching
item's latency gain (0.73 -> 0.0).
"""

from __future__ import annotations

import numpy as np
import pytest
from _analysis_fixtures import MS, T0, FixtureDb
from test_roi_roadmap import CURVE, _finding, _inputs, _work

from inferaudit_analyzer.analyze import analyze_connection
from inferaudit_analyzer.roi.fit import fit_curve
from inferaudit_analyzer.roi.interventions import Knobs
from inferaudit_analyzer.roi.model import roi_section
from inferaudit_analyzer.roi.project import Scenario, marks, replay
from inferaudit_analyzer.roi.roadmap import build_roadmap


def _timeouts_db(with_timeouts: bool) -> FixtureDb:
    """200 requests every 31 ms on one server (30-34 ms calls); with timeouts, 17 more that
    failed after a 3 s queue timeout without any model call."""
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1, service_name="svc",
                price_usd_per_hour=1.0)
    free = T0
    for i in range(200):
        arr = T0 + i * 31 * MS
        if with_timeouts and i % 12 == 5:
            db.request(arr + 15 * MS, arr + 3015 * MS, input_tokens=100, error_type="Timeout",
                       status_code=2)
        start = max(arr, free)
        end = free = start + (30 + i % 5) * MS
        r = db.request(arr, end, input_tokens=100 + i % 37, output_tokens=20 + i % 11,
                       queue_ns=start - arr)
        db.batch(start, end, [r], parent=r, device_time_ns=(28 + i % 5) * MS,
                 batch_input_tokens=100 + i % 37, batch_output_tokens=20 + i % 11)
    return db


def test_long_timeouts_before_any_model_call_set_no_tail_slo_or_sizing() -> None:
    out = {}
    for with_timeouts in (False, True):
        db = _timeouts_db(with_timeouts)
        rep = analyze_connection(db.con)
        out[with_timeouts] = (rep, roi_section(db.con, rep, Knobs(max_batch=4), bootstrap=0))
    (rep0, clean), (rep1, failing) = out[False], out[True]
    assert failing["slo"]["p95_ms"] == pytest.approx(clean["slo"]["p95_ms"])
    # the ROI's measured p95 means what the report's baseline p95 means
    for rep, roi in ((rep0, clean), (rep1, failing)):
        assert roi["baseline"]["measured_p95_ms"] == pytest.approx(
            rep["baseline"]["overall"]["latency_ms"]["p95"])
        assert roi["baseline"]["replayed"]["latency_ms"]["p95"] < 1000
        (item,) = [it for it in roi["roadmap"] if it["intervention"] == "continuous_batching"]
        assert item["impact"]["p95_reduction_ratio"] > 0.5
    # the timeouts are still requests: the bill per request spreads over them too
    assert failing["baseline"]["replayed"]["busy_device_s"] == pytest.approx(
        clean["baseline"]["replayed"]["busy_device_s"], rel=0.01)


def test_a_failed_request_that_ran_a_model_call_is_work_but_not_in_the_tail() -> None:
    work = _work(200, mean_gap_ms=40.0)
    n = len(work)
    failed = np.zeros(n, dtype=bool)
    failed[::10] = True
    ran = replay(work, marks(n, failed=failed), CURVE, Scenario())
    plain = replay(work, marks(n), CURVE, Scenario())
    assert ran.busy_ns == pytest.approx(plain.busy_ns)  # replayed as model calls
    ok = np.quantile(plain.latency_ns[~failed], 0.95, method="inverted_cdf")
    assert ran.p(0.95) == pytest.approx(ok)
    # before any model call: no work, and still out of the percentiles
    served = np.where(failed, 3000.0 * MS, np.nan)
    early = replay(work, marks(n, served_ns=served, failed=failed), CURVE, Scenario())
    assert early.busy_ns < plain.busy_ns * 0.95
    assert early.p(0.99) < 1000 * MS


def test_timeouts_do_not_make_right_size_keep_idle_replicas() -> None:
    """6 replicas, SLO 200 ms: today's load needs 4 of them; 8 % of requests timing out after
    3 s before any model call must not change that (counted, no replica count met the SLO)."""
    work = _work(400, mean_gap_ms=12.0)
    n = len(work)
    found = {}
    for share in (0.0, 0.08):
        rng = np.random.default_rng(5)
        idx = rng.choice(n, int(share * n), replace=False)
        served, failed = np.full(n, np.nan), np.zeros(n, dtype=bool)
        served[idx], failed[idx] = 3000 * MS, True
        inp = _inputs(work, replicas=6, repeats=marks(n, served_ns=served, failed=failed))
        out = build_roadmap(inp, [_finding("device_underused"), _finding("unbatched_serving")],
                            Knobs(max_batch=8, slo_p95_ms=200), fit_curve(inp.calls),
                            bootstrap=0)
        found[share] = out
        assert out["baseline"]["replayed"]["latency_ms"]["p95"] < 200
    assert found[0.08]["baseline"]["replicas_at_slo"] == found[0.0]["baseline"]["replicas_at_slo"]
    assert found[0.08]["baseline"]["replicas_at_slo"] < 6
