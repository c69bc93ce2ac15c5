"""The ROI entry point on fixture stores: batch spans, or request spans alone (foreign spans)."""

from __future__ import annotations

import pytest
from _analysis_fixtures import MS, T0, FixtureDb, unbatched_db

from inferaudit_analyzer.analyze import analyze_connection
from inferaudit_analyzer.roi.interventions import Knobs
from inferaudit_analyzer.roi.model import roi_section


def test_unbatched_store_projects_batching_from_its_evidence() -> None:
    db = unbatched_db(n=60, gap_ms=30, service_ms=50, device_ms=45)
    rep = analyze_connection(db.con)
    roi = roi_section(db.con, rep, Knobs(max_batch=4), bootstrap=10)
    assert roi["baseline"]["scenario"]["policy"] == "sequential"
    assert roi["fit"]["batch_sizes_seen"] == [1]
    # the replay of today's server reproduces the measured tail it was fitted to
    assert abs(roi["baseline"]["replay_p95_error_ratio"]) < 0.05
    ids = [r["intervention"] for r in roi["roadmap"]]
    assert "continuous_batching" in ids
    item = roi["roadmap"][ids.index("continuous_batching")]
    assert item["params"]["max_batch"] == 4
    assert item["projected"]["latency_ms"]["p95"] < roi["baseline"]["replayed"]["latency_ms"]["p95"]


def test_requests_without_batch_spans_still_give_a_curve() -> None:
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1, service_name="svc")
    for i in range(30):
        start = T0 + i * 100 * MS
        db.request(start, start + (20 + i % 5) * MS, input_tokens=50 + i, output_tokens=10 + i % 5,
                   role=None, operation="chat")
    rep = analyze_connection(db.con)
    roi = roi_section(db.con, rep, Knobs(), bootstrap=0)
    assert roi["fit"]["n_points"] == 30
    assert roi["fit"]["source"] == "spans+roofline_prior"
    assert any("L4" in a for a in roi["fit"]["assumptions"])


def test_overlapping_requests_without_batch_spans_are_not_projected() -> None:
    """A continuous-batching server traced by request spans alone (e.g. vLLM's): replaying its
    requests one at a time would be off by orders of magnitude, so no roadmap, and a reason."""
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA L4", gpu_count=1, service_name="svc")
    for i in range(60):
        start = T0 + i * 20 * MS  # a new request every 20 ms, each served for ~200 ms
        db.request(start, start + (200 + i % 7) * MS, input_tokens=50 + i,
                   output_tokens=40 + i % 5, role=None, operation="chat")
    rep = analyze_connection(db.con)
    roi = roi_section(db.con, rep, Knobs(), bootstrap=0)
    assert "overlap" in roi["error"] and "roadmap" not in roi


def test_empty_store_says_why_nothing_is_projected() -> None:
    db = FixtureDb()
    rep = analyze_connection(db.con)
    roi = roi_section(db.con, rep, Knobs())
    assert "nothing to project" in roi["error"]


def test_idle_starts_follow_the_previous_call_on_the_same_device() -> None:
    from inferaudit_analyzer.roi.data import idle_starts

    def row(start, end, first, dev="d0"):  # CALLS_SQL columns the rule reads
        return (start, end - start, None, 1, 1, 1, None, None, None, "", first, end, "r", dev)

    rows = [row(0, 100, 0), row(100, 200, 50),  # arrived while busy: back to back
            row(300, 400, 250),  # arrived after the previous call ended: idle
            row(0, 50, 0, dev="d1"),  # another device's first call: idle
            row(410, 500, None)]  # member times unknown: not counted idle
    assert idle_starts(rows).tolist() == [True, False, True, True, False]


def test_a_call_is_ragged_when_its_rows_lengths_differ() -> None:
    from inferaudit_analyzer.roi.data import ragged_calls

    def row(bs, in_max, in_min, padded=None, real=None):  # CALLS_SQL columns the rule reads
        return (0, 1, None, bs, in_max, 1, padded, real, None, "", 0, 1, "r", "d", in_min)

    rows = [row(1, 9, 9), row(3, 9, 4), row(3, 9, 9),  # from the members' prompt lengths
            row(2, None, None, padded=18, real=13), row(2, None, None, padded=18, real=18),
            row(4, None, None)]  # nothing recorded: a batch of several is taken as padded
    assert ragged_calls(rows).tolist() == [False, True, False, True, False, True]


def test_the_fit_reports_its_idle_start_factor_and_noise() -> None:
    db = unbatched_db(n=60, gap_ms=30, service_ms=50, device_ms=45)
    roi = roi_section(db.con, analyze_connection(db.con), Knobs(max_batch=4), bootstrap=0)
    fit = roi["fit"]
    assert fit["idle_start_factor"] == 1.0  # overloaded: one idle start, nothing to estimate
    assert fit["noise"]["factors"] == fit["n_points"] and fit["noise"]["block_calls"] >= 1


def test_a_call_time_scale_projects_the_same_server_on_a_slower_host() -> None:
    db = unbatched_db(n=60, gap_ms=30, service_ms=50, device_ms=45)
    rep = analyze_connection(db.con)
    same = roi_section(db.con, rep, Knobs(max_batch=4), bootstrap=0)
    slow = roi_section(db.con, rep, Knobs(max_batch=4, call_time_scale=1.5), bootstrap=0)
    c0, c1 = same["fit"]["coefficients_ns"], slow["fit"]["coefficients_ns"]
    for key, value in c0.items():
        assert c1[key] == pytest.approx(1.5 * value)
    assert any("x1.5 the audited time" in a for a in slow["fit"]["assumptions"])
    assert slow["params"]["call_time_scale"] == 1.5
    base0, base1 = same["baseline"]["replayed"], slow["baseline"]["replayed"]
    assert base1["latency_ms"]["p95"] > base0["latency_ms"]["p95"]
    assert base1["busy_cost_per_request_usd"] == pytest.approx(
        1.5 * base0["busy_cost_per_request_usd"], rel=1e-6)

    def batching(roi):
        return next(r for r in roi["roadmap"] if r["intervention"] == "continuous_batching")
    assert (batching(slow)["projected"]["latency_ms"]["p95"]
            > batching(same)["projected"]["latency_ms"]["p95"])
    # the measured p95 is the audited host's: not the SLO, not a check of the replay, elsewhere
    fast = roi_section(db.con, rep, Knobs(max_batch=4, call_time_scale=0.5), bootstrap=0)
    assert fast["baseline"]["measured_p95_ms"] is None
    assert fast["baseline"]["replay_p95_error_ratio"] is None
    assert fast["slo"]["p95_ms"] == pytest.approx(fast["baseline"]["replayed"]["latency_ms"]["p95"])
    assert "at this host speed" in fast["slo"]["source"]
    assert not any("replayed as deployed" in w for w in fast.get("warnings") or [])


@pytest.mark.parametrize("policy", ["dynamic", "continuous"])
def test_the_batching_plan_states_how_a_step_is_charged(policy) -> None:
    """Continuous batching is charged the padded step this server measured: the report says
    so, and that a ragged-attention engine would do better (dynamic batching pads anyway)."""
    db = unbatched_db(n=40, gap_ms=30, service_ms=50, device_ms=45)
    roi = roi_section(db.con, analyze_connection(db.con), Knobs(max_batch=4, policy=policy),
                      bootstrap=0)
    item = next(r for r in roi["roadmap"] if r["intervention"] == "continuous_batching")
    padded = [a for a in item["assumptions"] if "padded step" in a]
    assert len(padded) == (1 if policy == "continuous" else 0), item["assumptions"]
