"""The ROI model does each deterministic piece of work once: a projection the roadmap needs in
two places (rank 1 and the first cumulative step, today's serving and right-sizing without idle
devices) is replayed once, the bootstrap reads its block length off the point fit instead of
refitting every call, and the replay's p95 is the report's (``quantile_disc`` over the
successful requests)."""

from __future__ import annotations

from collections import Counter

import duckdb
import numpy as np
import pytest

from inferaudit_analyzer.roi import bootstrap as bs
from inferaudit_analyzer.roi import roadmap as roadmap_mod
from inferaudit_analyzer.roi.fit import CallPoints, fit_curve
from inferaudit_analyzer.roi.interventions import Knobs
from inferaudit_analyzer.roi.project import Prices, Scenario, latency_quantile, replay
from inferaudit_analyzer.roi.replicas import size_for_slo
from inferaudit_analyzer.roi.roadmap import RoiInputs, build_roadmap
from inferaudit_analyzer.roi.simulate import ServiceCurve, Workload

MS = 1e6
CURVE = ServiceCurve(fixed_ns=5 * MS, prefill_ns_per_token=0.02 * MS, step_ns=2 * MS,
                     step_ns_per_seq=0.1 * MS)


def _calls(n: int = 120, seed: int = 0) -> CallPoints:
    rng = np.random.default_rng(seed)
    b = rng.choice([1, 2, 4, 8], n)
    tin, tout = rng.integers(10, 120, n), rng.integers(5, 30, n)
    y = [CURVE.call_ns(int(x), float(i), float(o)) * f
         for x, i, o, f in zip(b, tin, tout, rng.lognormal(0, 0.1, n), strict=True)]
    return CallPoints.of(b, tin, tout, y)


def _inputs(replicas: int) -> RoiInputs:
    rng = np.random.default_rng(1)
    n = 200
    work = Workload.of(np.cumsum(rng.exponential(15 * MS, n)), rng.integers(10, 120, n),
                       rng.integers(5, 30, n))
    return RoiInputs(_calls(), None, work, np.zeros(n, bool), None,
                     Scenario("sequential", 1, replicas=replicas), Prices(2.0, 1e-5, 0.0), None,
                     {"current_replicas": replicas})


def _finding(fid: str) -> dict:
    return {"id": fid, "severity": "high", "layer": "runtime", "evidence": {}}


def test_each_projection_is_sized_once_and_each_replicate_replays_a_scenario_once(
        monkeypatch) -> None:
    """Rank 1 and the first cumulative step are one scenario, as are today's serving and
    right-sizing where no paid device is idle, and the avoided swap's non-model composition is
    the last cumulative step (no model-layer item here): each is sized at the SLO once, and
    replayed once in every bootstrap replicate (a replay is fixed by its requests, curve,
    scenario and seed; the replicates draw once each, the point projections pool draws)."""
    sized: Counter = Counter()
    runs: Counter = Counter()

    def counted_sizing(work, repeats, curve, sc, *args, **kw):
        sized[sc] += 1
        return size_for_slo(work, repeats, curve, sc, *args, **kw)

    def counted_replay(work, repeats, curve, sc, seed=0, draws=1):
        if draws == 1:
            runs[(id(work), id(curve), sc, seed)] += 1
        return replay(work, repeats, curve, sc, seed, draws)

    monkeypatch.setattr(roadmap_mod, "size_for_slo", counted_sizing)
    monkeypatch.setattr(roadmap_mod, "replay", counted_replay)
    inp = _inputs(replicas=4)
    findings = [_finding("unbatched_serving"), _finding("pageable_copies"),
                _finding("device_underused")]
    out = build_roadmap(inp, findings, Knobs(max_batch=8, slo_p95_ms=300),
                        fit_curve(inp.calls), bootstrap=6)
    road = out["roadmap"]
    assert len(road) == 3 and "right_size" in {r["intervention"] for r in road}
    assert road[0]["cumulative"]["projected"] == road[0]["projected"]
    assert road[0]["cumulative"]["projected"] is not road[0]["projected"]  # each its own copy
    assert road[0]["interval"] == road[0]["cumulative"]["interval"]
    assert out["avoided_model_swap"]["non_model_projected"] == road[-1]["cumulative"]["projected"]
    assert inp.base in sized and set(sized.values()) == {1}
    assert runs and set(runs.values()) == {1}, {k[2:]: n for k, n in runs.items() if n > 1}


def test_the_bootstrap_block_length_comes_from_the_point_fit_given() -> None:
    """With the point fit given, every refit is a replicate's; the resamples are those the
    refit of all calls would have given (that refit is the point fit)."""
    calls = _calls(240, seed=3)
    work = Workload.of(np.arange(3.0), np.ones(3), np.ones(3))
    fitted: list[int] = []

    def refit(c: CallPoints, cal: CallPoints | None):
        fitted.append(len(c))
        return fit_curve(c, calibration=cal, max_batch=8, keep_residuals=False)

    point = fit_curve(calls, max_batch=8)
    given = bs.resamples(calls, None, work, np.zeros(3, bool), refit, 4, seed=5, point=point)
    assert len(fitted) == 4
    refitted = bs.resamples(calls, None, work, np.zeros(3, bool), refit, 4, seed=5)
    assert len(fitted) == 4 + 5
    assert [r.call_block for r in given] == [r.call_block for r in refitted]
    assert [r.curve_fit.curve for r in given] == [r.curve_fit.curve for r in refitted]


@pytest.mark.parametrize("n", [1, 7, 20, 101])
def test_the_replay_quantile_is_quantile_disc_over_the_successful_requests(n) -> None:
    """The replay's percentiles and the measured p95 they are checked against are on the
    report baseline's definition: ``quantile_disc`` of the latencies of requests that did not
    fail (every request's where all failed)."""
    rng = np.random.default_rng(n)
    lat = rng.integers(1, 10_000, n).astype(np.float64)
    for failed in (rng.random(n) < 0.3, np.zeros(n, bool), np.ones(n, bool)):
        con = duckdb.connect()
        con.execute("CREATE TABLE r (lat DOUBLE, failed BOOLEAN)")
        con.executemany("INSERT INTO r VALUES (?, ?)",
                        [(float(x), bool(f)) for x, f in zip(lat, failed, strict=True)])
        where = "" if failed.all() else " WHERE NOT failed"
        for q in (0.5, 0.95, 0.99):
            want = con.execute(f"SELECT quantile_disc(lat, {q}) FROM r{where}").fetchone()[0]
            assert latency_quantile(lat, failed, q) == want
        con.close()
    assert np.isnan(latency_quantile(np.zeros(0), None, 0.95))
