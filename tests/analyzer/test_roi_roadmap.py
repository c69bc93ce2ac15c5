"""Interventions, replica sizing, bootstrap and the ranked roadmap on synthetic workloads."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from inferaudit_analyzer.roi import bootstrap as bs
from inferaudit_analyzer.roi.fit import CallPoints, fit_curve
from inferaudit_analyzer.roi.interventions import IDS, Knobs, applicable
from inferaudit_analyzer.roi.project import Prices, Scenario, replay, summarize
from inferaudit_analyzer.roi.replicas import saving_kind, size_for_slo
from inferaudit_analyzer.roi.roadmap import RoiInputs, build_roadmap
from inferaudit_analyzer.roi.simulate import ServiceCurve, Workload

MS = 1e6
CURVE = ServiceCurve(fixed_ns=5 * MS, prefill_ns_per_token=0.02 * MS, step_ns=2 * MS,
                     step_ns_per_seq=0.1 * MS)


def _finding(fid: str, **evidence) -> dict:
    return {"id": fid, "severity": "high", "layer": "runtime", "evidence": evidence}


def _work(n: int = 300, mean_gap_ms: float = 40.0, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(mean_gap_ms * MS, n))
    return Workload.of(arr, rng.integers(10, 120, n), rng.integers(5, 30, n))


def _calls(seed: int = 0) -> CallPoints:
    rng = np.random.default_rng(seed)
    b = rng.choice([1, 2, 4, 8], 120)
    tin, tout = rng.integers(10, 120, 120), rng.integers(5, 30, 120)
    y = [CURVE.call_ns(int(x), float(i), float(o)) for x, i, o in zip(b, tin, tout, strict=True)]
    return CallPoints.of(b, tin, tout, y)


def _inputs(work: Workload, replicas: int = 1, repeats: np.ndarray | None = None) -> RoiInputs:
    n = len(work)
    return RoiInputs(_calls(), None, work, np.zeros(n, bool) if repeats is None else repeats,
                     None, Scenario("sequential", 1, replicas=replicas),
                     Prices(2.0, 1e-5, 0.0), None, {"current_replicas": replicas})


def test_no_evidence_no_roadmap_item() -> None:
    assert applicable([], Knobs(), {}) == []
    plans = applicable([_finding("unbatched_serving"), _finding("redundant_compute",
                                                                 cacheable_ratio=0.3)],
                       Knobs(), {})
    assert {p.id for p in plans} == {"continuous_batching", "prompt_cache"}
    assert all(p.id in IDS and p.evidence and 1 <= p.risk <= 5 and p.risk_reasons
               for p in plans)


def test_parameters_are_capped_at_their_ceilings() -> None:
    f = [_finding("redundant_compute", cacheable_ratio=0.2),
         _finding("dram_bound_decode"),
         _finding("routing_opportunity", short_on_largest_ratio=0.3)]
    plans = {p.id: p for p in applicable(
        f, Knobs(cache_hit_share=0.9, quantization_speedup=5.0, routing_split=0.8), {})}
    assert plans["prompt_cache"].params["cache_hit_share"] == pytest.approx(0.2)
    assert plans["quantization"].params["quantization_speedup"] == 2.0
    assert plans["model_routing"].params["routing_split"] == pytest.approx(0.3)
    # below the ceiling, what the user asked for is what is projected
    plans = {p.id: p for p in applicable(f, Knobs(cache_hit_share=0.05), {})}
    assert plans["prompt_cache"].params["cache_hit_share"] == pytest.approx(0.05)


def test_replica_sizing_is_the_smallest_count_meeting_the_slo() -> None:
    work = _work(400, mean_gap_ms=8.0)
    sc = Scenario("sequential", 1)
    slo = 400 * MS
    sizing = size_for_slo(work, np.zeros(len(work), bool), CURVE, sc, slo, current_replicas=16)
    brute = next(r for r in range(1, 17)
                 if replay(work, np.zeros(len(work), bool), CURVE, sc.with_(replicas=r)).p(0.95)
                 <= slo)
    assert sizing.replicas == sizing.replicas_needed == brute
    assert sizing.meets_slo and sizing.replay.p(0.95) <= slo


def test_bill_saving_only_when_replicas_fall() -> None:
    assert saving_kind(2, 1, 1.0, 0.5, 1.0, 0.5) == "bill"
    assert saving_kind(1, 1, 1.0, 1.0, 1.0, 0.5) == "capacity"
    assert saving_kind(1, 1, 1.0, 1.0, 1.0, 1.0) == "none"
    # same replicas, shorter replayed window (a backlog cleared sooner): not the invoice
    assert saving_kind(1, 1, 1.0, 0.9, 1.0, 0.5) == "capacity"


def test_batching_on_many_replicas_saves_on_the_bill() -> None:
    # light load spread over 6 replicas: batching lets fewer replicas meet today's p95
    inp = _inputs(_work(300, mean_gap_ms=6.0), replicas=6)
    out = build_roadmap(inp, [_finding("unbatched_serving")], Knobs(max_batch=8),
                        fit_curve(inp.calls), bootstrap=20)
    item = out["roadmap"][0]
    assert item["intervention"] == "continuous_batching"
    p = item["projected"]
    assert p["replicas"] < 6 and p["saving_kind"] == "bill"
    assert p["cost_per_request_usd"] < out["baseline"]["replayed"]["cost_per_request_usd"]
    assert p["latency_ms"]["p95"] <= out["slo"]["p95_ms"] + 1e-9


def test_single_replica_saving_is_capacity_not_bill() -> None:
    inp = _inputs(_work(300, mean_gap_ms=60.0), replicas=1)
    out = build_roadmap(inp, [_finding("pageable_copies")], Knobs(), fit_curve(inp.calls),
                        bootstrap=0)
    p = out["roadmap"][0]["projected"]
    assert p["replicas"] == 1 and p["saving_kind"] == "capacity"


def test_roadmap_ranks_by_roi_and_composes_in_rank_order() -> None:
    n = 300
    repeats = np.zeros(n, bool)
    repeats[::4] = True
    inp = _inputs(_work(n, mean_gap_ms=30.0), replicas=1, repeats=repeats)
    findings = [_finding("unbatched_serving"), _finding("redundant_compute", cacheable_ratio=0.25),
                _finding("pageable_copies")]
    out = build_roadmap(inp, findings, Knobs(max_batch=8), fit_curve(inp.calls), bootstrap=30,
                        seed=7)
    road = out["roadmap"]
    assert [r["rank"] for r in road] == list(range(1, len(road) + 1))
    scores = [r["roi_score"] for r in road]
    assert scores == sorted(scores, reverse=True)
    # the cumulative projection never gets slower than the best single step before it
    cum = [r["cumulative"]["projected"]["busy_device_s"] for r in road]
    assert all(b <= a * 1.0001 for a, b in itertools.pairwise(cum))
    assert cum[-1] <= min(r["projected"]["busy_device_s"] for r in road) * 1.0001
    for r in road:
        iv = r["interval"]["latency_ms_p95"]
        assert iv["replicates"] > 0 and iv["low"] <= iv["high"]
        assert r["assumptions"]
    again = build_roadmap(inp, findings, Knobs(max_batch=8), fit_curve(inp.calls),
                          bootstrap=30, seed=7)
    assert again["roadmap"][0]["interval"] == road[0]["interval"]  # seeded


def test_cache_hits_leave_the_device_queue() -> None:
    work = _work(200, mean_gap_ms=20.0)
    repeats = np.zeros(200, bool)
    repeats[1::2] = True
    base = replay(work, repeats, CURVE, Scenario())
    half = replay(work, repeats, CURVE, Scenario(cache_hit_share=0.5))
    assert half.busy_ns < base.busy_ns * 0.7
    assert (half.latency_ns[1::2] == 0).all()  # the repeats were the hits
    prices = Prices(1.0, 1e-5, base.busy_ns)
    assert summarize(half, prices)["busy_cost_per_request_usd"] < 1e-5


def test_block_bootstrap_keeps_size_and_order() -> None:
    work = _work(100)
    w, r = bs.block_resample(work, np.zeros(100, bool), np.random.default_rng(0))
    assert len(w) == 100 and r.size == 100
    assert (np.diff(w.arrival_ns) >= 0).all()
    assert bs.interval([1.0, 2.0, 3.0])["low"] <= bs.interval([1.0, 2.0, 3.0])["high"]
    assert bs.interval([])["replicates"] == 0


def test_pooled_noise_draws_steady_the_projected_tail() -> None:
    work = _work(n=250, mean_gap_ms=25.0, seed=3)
    rng = np.random.default_rng(4)
    noisy = CURVE.with_noise(rng.lognormal(0, 0.4, 200) * 10 * MS, np.full(200, 10 * MS))
    sc = Scenario("dynamic", 8)
    no_hits = np.zeros(len(work), bool)
    pooled = replay(work, no_hits, noisy, sc, seed=0, draws=8)
    assert pooled.latency_ns.size == 8 * len(work) and pooled.requests == len(work)
    assert replay(work, no_hits, noisy, sc, seed=0, draws=8).p(0.95) == pooled.p(0.95)
    single = [replay(work, no_hits, noisy, sc, seed=s).p(0.95) for s in range(8)]
    pools = [replay(work, no_hits, noisy, sc, seed=s, draws=8).p(0.95) for s in range(8)]
    assert np.std(pools) < np.std(single)  # one draw's p95 wanders; the pooled one less
    # without noise there is nothing to pool: one replay
    assert replay(work, no_hits, CURVE, sc, draws=8).latency_ns.size == len(work)


def test_interval_is_the_replicates_spread_around_the_point() -> None:
    from inferaudit_analyzer.roi.bootstrap import interval

    biased_low = [80.0 + i * 0.2 for i in range(101)]  # median 90; the point is 100
    iv = interval(biased_low, 100.0)
    assert iv["low"] <= 100.0 <= iv["high"]
    assert iv["low"] == pytest.approx(100.0 * (81.0 / 90.0))
    assert iv["high"] == pytest.approx(100.0 * (99.0 / 90.0))
    plain = interval(biased_low)
    assert plain["low"] == pytest.approx(81.0) and plain["high"] == pytest.approx(99.0)
    assert interval([], 1.0) == {"low": None, "high": None, "replicates": 0}


def test_an_intervention_that_gains_nothing_is_not_on_the_roadmap() -> None:
    """Requests far apart never queue: batching would change neither the bill nor the tail,
    so it is listed as not proposed (with why), not ranked as a recommendation."""
    inp = _inputs(_work(60, mean_gap_ms=5000.0))
    out = build_roadmap(inp, [_finding("unbatched_serving")], Knobs(max_batch=8),
                        fit_curve(inp.calls), bootstrap=0)
    assert [r["intervention"] for r in out["roadmap"]] == []
    reasons = {x["intervention"]: x["reason"] for x in out["not_proposed"]}
    assert "no saving" in reasons["continuous_batching"]


def test_a_poor_fit_is_a_warning_and_a_low_r2_alone_is_not():
    from types import SimpleNamespace

    from inferaudit_analyzer.roi.roadmap import _fit_warnings

    poor = SimpleNamespace(goodness={"r2": 0.05, "mape_ratio": 0.4}, span_goodness=None)
    (w,) = _fit_warnings(poor)
    assert "R² 0.05" in w and "40%" in w and "fitted to" in w
    # calls that are all alike: R² near 0, predictions accurate -> nothing to warn about
    alike = SimpleNamespace(goodness={"r2": 0.02, "mape_ratio": 0.03},
                            span_goodness={"r2": 0.1, "mape_ratio": 0.5})
    (w,) = _fit_warnings(alike)
    assert "measured model calls" in w
    assert _fit_warnings(SimpleNamespace(goodness={"r2": None, "mape_ratio": None},
                                         span_goodness=None)) == []


def test_the_default_slo_is_the_tail_todays_replay_can_keep():
    from inferaudit_analyzer.roi.roadmap import _default_slo

    assert _default_slo(250.0, 600.0, 800.0) == (250.0, "given")
    ms, why = _default_slo(None, 600.0, 800.0)  # the replay of today is slower than measured
    assert ms == 800.0 and "replayed" in why and "600 ms" in why
    ms, why = _default_slo(None, 600.0, 500.0)
    assert ms == 600.0 and why.startswith("measured")
    ms, why = _default_slo(None, None, 500.0)
    assert ms == 500.0 and "none measured" in why
