"""The ROI entry point on fixture stores: batch spans, or request spans alone (foreign spans)."""

from __future__ import annotations

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


def test_empty_store_says_why_nothing_is_projected() -> None:
    db = FixtureDb()
    rep = analyze_connection(db.con)
    roi = roi_section(db.con, rep, Knobs())
    assert "nothing to project" in roi["error"]
