"""Separate runs read together are named, with the idle time between them that gets billed."""

from __future__ import annotations

from _analysis_fixtures import MS, T0, FixtureDb

from inferaudit_analyzer.analyze import AnalyzeParams, analyze_connection

S = 1000 * MS


def _serve(db: FixtureDb, resource_id: int, start_ns: int, n: int) -> None:
    for i in range(n):
        t = start_ns + i * 100 * MS
        r = db.request(t, t + 50 * MS, resource_id=resource_id, input_tokens=5, output_tokens=5)
        db.batch(t, t + 40 * MS, [r], resource_id=resource_id, device_time_ns=40 * MS)


def _runs(db: FixtureDb) -> list[dict]:
    rep = analyze_connection(db.con, AnalyzeParams())
    return [f for f in rep["findings"] if f["id"] == "separate_runs"]


def test_two_processes_one_after_the_other_are_two_runs_with_the_gap_billed():
    db = FixtureDb()
    for rid in (1, 2):
        db.resource(rid, cpu_cores=2)
    _serve(db, 1, T0, 10)  # 0 - 0.95 s
    _serve(db, 2, T0 + 10 * S, 10)  # 10 - 10.95 s
    (f,) = _runs(db)
    ev = f["evidence"]
    assert ev["runs"] == 2 and ev["processes_per_run"] == [1, 1]
    assert abs(ev["gap_s"] - (10 - 0.95)) < 1e-6
    assert f["severity"] == "medium" and ev["gap_share_of_window_ratio"] > 0.8


def test_replicas_that_overlap_and_a_restart_within_a_second_are_one_run():
    db = FixtureDb()
    for rid in (1, 2, 3):
        db.resource(rid, cpu_cores=2)
    _serve(db, 1, T0, 20)  # 0 - 1.95 s
    _serve(db, 2, T0 + 1 * S, 20)  # overlaps the first: a second replica
    _serve(db, 3, T0 + int(3.5 * S), 10)  # starts 0.55 s after the others end: a restart
    assert _runs(db) == []
