"""The ranked roadmap: project each applicable intervention, rank by ROI, compose in rank order.

ROI rule (written into the JSON): ``impact / (risk x (1 + effort_weeks))`` with
``impact = bill_saving_ratio + 0.5 x capacity_saving_ratio + 0.5 x p95_reduction_ratio``, each a
0-1 ratio against the replayed baseline (a worse projection contributes 0). The bill counts in
full because it is money today; freed capacity and latency count half because they are worth
money only when traffic grows or the SLO binds. The bill ratio is one of replica-hours per
request, which the invoice is proportional to, so it is there with or without a price.

Replicas: each projection is priced at today's count less the replicas it needs fewer than
today's serving sized at the SLO (``replicas.credited_replicas``): the replicas today's load does
not need are right-sizing's saving, counted once, for ``right_size`` alone.

SLO: an intervention whose projected p95, at the replicas it is priced at, is over the SLO (by
more than the replay's draw noise) and over today's replayed p95 is not proposed
(``not_proposed`` says by how much): a saving bought with a tail the SLO rules out is no
recommendation. Where today's serving misses the SLO too, an item that lowers the tail stays.

Composition: interventions are applied cumulatively in rank order (each step's scenario is the
previous one with the next intervention applied), each step re-sized for the SLO and priced.

Avoided model swap: when the non-model interventions alone, composed in rank order, close most
(>= 80 %) of the gap a model swap would close (the largest model's traffic on a model
``small_model_speedup`` times cheaper), the swap's engineering effort is reported as avoided.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from inferaudit_analyzer.roi import bootstrap as bs
from inferaudit_analyzer.roi.fit import CallPoints, Fit, fit_curve
from inferaudit_analyzer.roi.interventions import EFFORT_WEEKS, Knobs, Plan, applicable
from inferaudit_analyzer.roi.project import (
    NS_PER_MS,
    Prices,
    Replay,
    Scenario,
    replay,
    summarize,
)
from inferaudit_analyzer.roi.replicas import (
    Sizing,
    credited_replicas,
    meets,
    saving_kind,
    size_for_slo,
)
from inferaudit_analyzer.roi.simulate import ServiceCurve, Workload

# Beyond this the replay of today's serving misses today's measured p95 by more than half:
# the projections are flagged (roi.warnings) rather than presented as calibrated.
REPLAY_P95_ERROR_WARN_RATIO = 0.5
# A service-time curve that explains under this share of the calls' variance AND misses them by
# more than FIT_MAPE_WARN_RATIO on average is flagged: the projections rest on a poor fit. Both,
# because calls that are all alike give a low R² with accurate predictions.
FIT_R2_WARN = 0.3
FIT_MAPE_WARN_RATIO = 0.25
ROI_RULE = ("roi = impact / (risk x (1 + effort_weeks)); impact = bill_saving_ratio + 0.5 x "
            "capacity_saving_ratio + 0.5 x p95_reduction_ratio (ratios vs the replayed baseline)")
GAP_CLOSED_FOR_AVOIDED_SWAP = 0.8
RIGHT_SIZE = "right_size"
# A projection whose p95 is over the SLO by more than this share, and over today's replayed p95,
# is not proposed. Below it the miss is within how far the pooled replay's p95 moves with its
# noise draws (one draw: 5-10 %; 16 pooled: ~2 %), and the item stays, marked meets_slo false.
SLO_MISS_TOLERANCE_RATIO = 0.02
# Noise draws pooled per point projection (project.replay); bootstrap replicates use one each,
# so the interval also carries the draw-to-draw spread one measured run is subject to.
POINT_DRAWS = 16
MODEL_SWAP_EFFORT = "months"
DEFAULT_USD_PER_ENGINEER_WEEK = 4_000.0


@dataclass(frozen=True)
class RoiInputs:
    calls: CallPoints
    calibration: CallPoints | None
    work: Workload
    repeats: np.ndarray  # per-request marks (project.MARK_DTYPE) or a bool array of repeats
    measured_p95_ms: float | None
    base: Scenario
    prices: Prices
    device: dict[str, Any] | None
    ctx: dict[str, Any]
    overhead_ns: float = 0.0  # worker time per call outside the model call (data.call_gap)
    idle_factor: float | None = None  # the calibration sweep's measured idle-start factor

    def serve_curve(self, c: ServiceCurve) -> ServiceCurve:
        """The fitted model-call curve plus the server's own per-call overhead (a field of its
        own: a scenario's speed-ups leave it as measured)."""
        return replace(c, overhead_ns=self.overhead_ns)


def _refit(inp: RoiInputs, max_batch: int, point: Fit):
    """A bootstrap replicate's refit: the point fit's terms (``Fit.columns``), re-estimated."""
    def refit(c: CallPoints, cal: CallPoints | None) -> Fit:
        return fit_curve(c, calibration=cal, max_batch=max_batch, device=inp.device,
                         keep_residuals=False, idle_factor=inp.idle_factor,
                         columns=point.columns or None)
    return refit


def _ratio_drop(base: float | None, new: float | None) -> float:
    if base is None or new is None or base <= 0:
        return 0.0
    return max(0.0, (base - new) / base)


def _replica_s(s: dict[str, Any]) -> float:
    """Paid replica-seconds of a replay (window x replicas in today's $/replica-hour): the bill
    without its price."""
    return float(s["window_s"]) * float(s["paid_replicas"])


class _Projections:
    """The point projections of one roadmap, each scenario sized at the SLO and each (scenario,
    right-sized) priced once. The same ones come back: the first cumulative step is rank 1's own
    projection, the avoided swap's non-model composition is a cumulative step wherever the
    model-layer items rank last, and right-sizing without idle paid devices is today's serving
    (sized first, as ``base_sizing``). Every projection is deterministic (seed 0), so a repeat
    is the same replay run again."""

    def __init__(self, inp: RoiInputs, curve: ServiceCurve, slo_ns: float,
                 base_sum: dict[str, Any], prices: Prices) -> None:
        self.inp, self.curve, self.slo_ns = inp, curve, slo_ns
        self.base_sum, self.prices = base_sum, prices
        self._sizings: dict[Scenario, Sizing] = {}
        self._replays: dict[Scenario, Replay] = {}  # scenarios with their replica count
        self._done: dict[tuple[Scenario, bool], tuple[Scenario, dict[str, Any]]] = {}
        # today's serving sized at the SLO: what every intervention but right-sizing is
        # priced from
        self.base_sizing = self.sizing(inp.base)

    def sizing(self, sc: Scenario) -> Sizing:
        if sc not in self._sizings:
            sizing = size_for_slo(self.inp.work, self.inp.repeats, self.curve, sc, self.slo_ns,
                                  self.inp.base.replicas, draws=POINT_DRAWS)
            self._sizings[sc] = sizing
            self._replays.setdefault(sc.with_(replicas=sizing.replicas), sizing.replay)
        return self._sizings[sc]

    def _replay(self, sc: Scenario) -> Replay:
        if sc not in self._replays:
            self._replays[sc] = replay(self.inp.work, self.inp.repeats, self.curve, sc, 0,
                                       POINT_DRAWS)
        return self._replays[sc]

    def __call__(self, sc: Scenario, right_sized: bool) -> tuple[Scenario, dict[str, Any]]:
        """``sc`` sized at the SLO and priced at :func:`credited_replicas` (``right_sized``:
        right-sizing is part of ``sc``); the summary is the caller's own copy."""
        key = (sc, right_sized)
        if key not in self._done:
            self._done[key] = self._project(sc, right_sized)
        sized, s = self._done[key]
        return sized, copy.deepcopy(s)

    def _project(self, sc: Scenario, right_sized: bool) -> tuple[Scenario, dict[str, Any]]:
        inp, base_sum = self.inp, self.base_sum
        sizing = self.sizing(sc)
        r = credited_replicas(inp.base.replicas, self.base_sizing.replicas, sizing.replicas,
                              right_sized)
        rep = self._replay(sc.with_(replicas=r))
        s = summarize(rep, self.prices)
        s["replicas_needed"] = sizing.replicas_needed
        s["meets_slo"] = meets(rep.p(0.95), self.slo_ns)
        s["saving_kind"] = saving_kind(base_sum["paid_replicas"], s["paid_replicas"],
                                       _replica_s(base_sum), _replica_s(s),
                                       base_sum["busy_device_s"], s["busy_device_s"])
        return sc.with_(replicas=r), s


def _impact(base: dict[str, Any], s: dict[str, Any]) -> dict[str, float]:
    # money saved on the invoice only where fewer replicas carry the load (saving_kind "bill");
    # replica-seconds per request, the bill's ratio with or without a price
    bill = (_ratio_drop(_replica_s(base), _replica_s(s))
            if s.get("saving_kind") == "bill" else 0.0)
    return {
        "bill_saving_ratio": bill,
        "capacity_saving_ratio": _ratio_drop(base["busy_device_s"], s["busy_device_s"]),
        "p95_reduction_ratio": _ratio_drop(base["latency_ms"]["p95"], s["latency_ms"]["p95"]),
    }


def _score(imp: dict[str, float], risk: int, effort_weeks: float) -> float:
    impact = (imp["bill_saving_ratio"] + 0.5 * imp["capacity_saving_ratio"]
              + 0.5 * imp["p95_reduction_ratio"])
    return impact / (risk * (1.0 + effort_weeks))


def _intervals(inp: RoiInputs, fit: Fit, scenarios: list[Scenario], points: list[dict[str, Any]],
               b: int, seed: int, max_batch: int, base_sum: dict[str, Any]
               ) -> list[dict[str, Any]]:
    """Per scenario: 90 % intervals of cost per request, busy floor and p95 (ms), around the
    scenario's point projection (``points``, same order), and of its bill relative to today's
    (around the point's ratio to ``base_sum``, the replayed baseline), like the others.

    Paired: a replicate's bill and busy floor are its scenario's over the same replicate's
    baseline (replica-seconds, busy time), times the point baseline, so the spread is that of
    the saving, not of the resampled traffic's level the baseline shares. The p95 takes the
    same out by regression (:func:`bootstrap.control_adjusted`): as much of it as goes with the
    replicate's baseline p95. Near saturation both move with the resampled bursts (a routing
    step that only removes work got 209 - 820 ms around 373, above today's 443), while a
    batched server's p95 does not follow them (a plain ratio to the baseline's would widen its
    interval from 114 - 152 to 66 - 190 ms). Today's own p95 keeps its spread, and so does a
    scenario that serves as today does (right-sizing's price alone: adjusted by itself, its
    interval had no width at all). A scenario listed
    twice (the first cumulative step is rank 1's, or today's own) is replayed once per
    replicate: a replay is determined by its replicate and scenario."""
    base_cost = base_sum["cost_per_request_usd"]
    base_point_rs = _replica_s(base_sum)
    nb = bs.replicates(b, len(inp.work), len(scenarios) + 1)
    res = bs.resamples(inp.calls, inp.calibration, inp.work, inp.repeats,
                       _refit(inp, max_batch, fit), nb, seed, point=fit)
    how = bs.method(res[0].call_block if res else 1)
    vals: list[dict[str, list[float | None]]] = [
        {"cost": [], "ratio": [], "busy": [], "p95": []} for _ in scenarios]
    base_p95: list[float | None] = []  # each replicate's baseline p95: the control variate
    for k, r in enumerate(res):
        rseed = seed + 1 + k  # each replicate its own draws (service noise, cache hits)
        curve = inp.serve_curve(r.curve_fit.curve)
        base_rep = replay(r.work, r.repeats, curve, inp.base, rseed)
        pr = Prices(inp.prices.usd_per_replica_hour,
                    inp.prices.baseline_busy_cost_per_request_usd, base_rep.busy_ns)
        summaries: dict[Scenario, dict[str, Any]] = {inp.base: summarize(base_rep, pr)}
        base_rs = _replica_s(summaries[inp.base])
        base_p95.append(summaries[inp.base]["latency_ms"]["p95"])
        for i, sc in enumerate(scenarios):
            if sc not in summaries:
                summaries[sc] = summarize(replay(r.work, r.repeats, curve, sc, rseed), pr)
            s = summaries[sc]
            ratio = _replica_s(s) / base_rs if base_rs > 0 else None
            vals[i]["ratio"].append(ratio)
            vals[i]["cost"].append(None if ratio is None or base_cost is None
                                   else base_cost * ratio)
            vals[i]["busy"].append(s["busy_cost_per_request_usd"])
            vals[i]["p95"].append(s["latency_ms"]["p95"])
    return [{"cost_per_request_usd": bs.interval(v["cost"], pt["cost_per_request_usd"]),
             "bill_ratio_to_baseline": bs.interval(
                 v["ratio"], _replica_s(pt) / base_point_rs if base_point_rs > 0 else None),
             "busy_cost_per_request_usd": bs.interval(v["busy"],
                                                      pt["busy_cost_per_request_usd"]),
             "latency_ms_p95": bs.interval(
                 v["p95"] if sc == inp.base or v["p95"] == base_p95 else bs.control_adjusted(
                     v["p95"], base_p95, base_sum["latency_ms"]["p95"]),
                 pt["latency_ms"]["p95"]),
             "level": 0.9, "method": how + "; bill and busy floor paired with each "
             "replicate's own baseline; p95 adjusted by the replicate's baseline p95 as a "
             "control variate (the part of its spread the resampled traffic's level explains "
             "taken out); bill_ratio_to_baseline (scenario / baseline replica-hours per "
             "request) around the point's ratio, like the others"}
            for sc, v, pt in zip(scenarios, vals, points, strict=True)]


def _plan_json(p: Plan) -> dict[str, Any]:
    return {"intervention": p.id, "title": p.title, "layer": p.layer,
            "evidence": list(p.evidence), "params": p.params,
            "risk": {"score": p.risk, "reasons": list(p.risk_reasons)},
            "effort": {"class": p.effort, "weeks": p.effort_weeks},
            "applicable_in_example": p.applicable_in_example}


def build_roadmap(inp: RoiInputs, findings: list[dict[str, Any]], knobs: Knobs, fit: Fit,
                  *, bootstrap: int = 100, seed: int = 0) -> dict[str, Any]:
    """The ``roi`` section of the report: fit, baseline replay, ranked roadmap, cumulative.

    ``fit`` must be the fit of ``inp.calls`` (and ``inp.calibration``) that the bootstrap's
    replicates refit (``fit_curve``, as ``roi.model`` passes it): the intervals resample around
    it instead of fitting the point curve again."""
    curve = inp.serve_curve(fit.curve)
    base_rep = replay(inp.work, inp.repeats, curve, inp.base, seed, POINT_DRAWS)
    prices = Prices(inp.prices.usd_per_replica_hour,
                    inp.prices.baseline_busy_cost_per_request_usd, base_rep.busy_ns)
    base_sum = summarize(base_rep, prices)
    measured_p95 = inp.measured_p95_ms
    slo_ms, slo_source = _default_slo(knobs.slo_p95_ms, measured_p95,
                                      base_sum["latency_ms"]["p95"])
    slo_ns = slo_ms * NS_PER_MS
    project = _Projections(inp, curve, slo_ns, base_sum, prices)
    base_sizing = project.base_sizing
    base_sized = base_sizing.replicas
    base_p95 = base_sum["latency_ms"]["p95"]
    plans = applicable(findings, knobs, inp.ctx)
    items = []
    no_gain: list[dict[str, str]] = []
    for p in plans:
        sized, s = project(p.apply(inp.base), p.id == RIGHT_SIZE)
        imp = _impact(base_sum, s)
        p95 = s["latency_ms"]["p95"]
        if p95 > slo_ms * (1 + SLO_MISS_TOLERANCE_RATIO) and p95 > base_p95:
            no_gain.append({"intervention": p.id, "reason": _slo_miss(s, slo_ms, base_p95)})
            continue
        if not any(v > 0 for v in imp.values()):
            # evidence, but the replay shows nothing gained (no saving, no faster tail): a
            # roadmap item that changes nothing would only read as a recommendation
            no_gain.append({"intervention": p.id,
                            "reason": "projected no saving and no lower p95 in this input"})
            continue
        items.append((p, sized, s, imp, _score(imp, p.risk, p.effort_weeks)))
    items.sort(key=lambda t: (-t[4], t[0].risk, t[0].id))
    # cumulative, in rank order
    cum_sc = inp.base
    right_sized = False
    cumulative: list[tuple[Scenario, dict[str, Any]]] = []
    for p, *_ in items:
        right_sized = right_sized or p.id == RIGHT_SIZE
        cum_sc, s = project(p.apply(cum_sc.with_(replicas=inp.base.replicas)), right_sized)
        cumulative.append((cum_sc, s))
    scen = [t[1] for t in items] + [c[0] for c in cumulative]
    points = [t[2] for t in items] + [c[1] for c in cumulative]
    ivals = (_intervals(inp, fit, scen, points, bootstrap, seed, knobs.max_batch, base_sum)
             if scen else [])
    roadmap = []
    for rank, (p, sized, s, imp, score) in enumerate(items, start=1):
        cum = cumulative[rank - 1][1]
        roadmap.append({
            "rank": rank, **_plan_json(p), "scenario": sized.to_json(),
            "projected": s, "interval": ivals[rank - 1] if ivals else None,
            "impact": imp, "roi_score": score,
            "cumulative": {"projected": cum,
                           "interval": ivals[len(items) + rank - 1] if ivals else None},
            "assumptions": list(p.assumptions) + list(fit.assumptions) + _overhead_note(inp),
        })
    swap = _avoided_swap(inp, project, items, base_sum, knobs)
    replay_error = (None if not measured_p95 else base_sum["latency_ms"]["p95"] / measured_p95 - 1)
    warnings = []
    if replay_error is not None and abs(replay_error) > REPLAY_P95_ERROR_WARN_RATIO:
        warnings.append(
            f"replayed as deployed, today's serving gives p95 "
            f"{base_sum['latency_ms']['p95']:.0f} ms against {measured_p95:.0f} ms measured "
            f"({replay_error:+.0%}): the model of the serving path does not reproduce today, so "
            "the projections below are indicative only (are all model calls traced?)")
    warnings += _fit_warnings(fit)
    return {
        "fit": {**fit.to_json(), "server_overhead_ns_per_call": inp.overhead_ns,
                "server_overhead_samples": inp.ctx.get("overhead_samples", 0)},
        "fit_points": list(fit.residuals),
        "baseline": {"scenario": inp.base.to_json(), "replayed": base_sum,
                     "measured_p95_ms": measured_p95,
                     "replay_p95_error_ratio": replay_error,
                     "replicas_at_slo": base_sized,
                     "replicas_needed_at_slo": base_sizing.replicas_needed},
        "warnings": warnings,
        "slo": {"p95_ms": slo_ms, "source": slo_source},
        "price": {"usd_per_replica_hour": inp.prices.usd_per_replica_hour,
                  "replicas": inp.base.replicas,
                  "paid_devices": inp.ctx.get("paid_devices", inp.base.replicas),
                  "idle_paid_devices": inp.ctx.get("idle_paid_devices", 0)},
        "params": {"policy": knobs.policy, "max_batch": knobs.max_batch,
                   "max_wait_ms": knobs.max_wait_ms, "cache_hit_share": knobs.cache_hit_share,
                   "routing_split": knobs.routing_split,
                   "small_model_speedup": knobs.small_model_speedup,
                   "quantization_speedup": knobs.quantization_speedup,
                   "graph_speedup": knobs.graph_speedup, "slo_p95_ms": slo_ms,
                   "price_per_hour": knobs.price_per_hour,
                   "call_time_scale": knobs.call_time_scale, "bootstrap": bootstrap,
                   "seed": seed},
        "rank_rule": ROI_RULE,
        "roadmap": roadmap,
        "avoided_model_swap": swap,
        "not_proposed": _not_proposed(plans) + no_gain,
    }


def _overhead_note(inp: RoiInputs) -> list[str]:
    if inp.overhead_ns <= 0:
        return []
    return [f"the server's own time between back-to-back calls ({inp.overhead_ns / 1e6:.2f} ms, "
            f"median of {inp.ctx.get('overhead_samples', 0)} measured gaps) is added to every "
            "call and stays the same after the intervention"]


def _slo_miss(s: dict[str, Any], slo_ms: float, base_p95_ms: float) -> str:
    """Why a projection that misses the SLO is not proposed, with the numbers."""
    need = s.get("replicas_needed")
    where = (f"at {s['replicas']} replicas (it needs {need} to meet it)" if need is not None else
             "at any replica count searched")
    return (f"projected p95 {s['latency_ms']['p95']:.0f} ms misses the SLO {slo_ms:.0f} ms "
            f"{where}; today's replayed p95 is {base_p95_ms:.0f} ms")


def _default_slo(given_ms: float | None, measured_ms: float | None,
                 replayed_ms: float | None) -> tuple[float, str]:
    """The p95 SLO replica sizing aims at, and where it came from. Without one given: keep
    today's tail, as measured, or as replayed where the replay of today is slower. Sized against
    a tail that today's own replay misses, today's deployment would need more replicas than it
    has, and every saving would be measured from that inflated count."""
    if given_ms is not None:
        return given_ms, "given"
    if measured_ms is None:
        return replayed_ms, ("replayed baseline p95 (keep today's tail latency; none measured "
                             "at this host speed)")
    if replayed_ms is not None and replayed_ms > measured_ms:
        return replayed_ms, ("replayed baseline p95, above the measured "
                             f"{measured_ms:.0f} ms (keep today's tail as the model replays it)")
    return measured_ms, "measured baseline p95 (keep today's tail latency)"


def _fit_warnings(fit: Any) -> list[str]:
    """What the fit could not estimate (its own warnings) and a poor fit, on the points
    fitted or on the measured calls, said in words."""
    out = list(getattr(fit, "warnings", ()) or ())
    for label, good in (("the points it was fitted to", fit.goodness),
                        ("today's measured model calls", fit.span_goodness)):
        r2, mape = (good or {}).get("r2"), (good or {}).get("mape_ratio")
        if r2 is not None and mape is not None and r2 < FIT_R2_WARN and mape > FIT_MAPE_WARN_RATIO:
            out.append(f"the service-time curve explains little of {label} (R² {r2:.2f}, mean "
                       f"error {mape:.0%}): the projections rest on a poor fit; a calibration "
                       "sweep (`inferaudit calibrate`) pins it")
    return out


def _not_proposed(plans: list[Plan]) -> list[dict[str, str]]:
    from inferaudit_analyzer.roi.interventions import IDS

    have = {p.id for p in plans}
    return [{"intervention": i, "reason": "no finding supports it in this input"}
            for i in IDS if i not in have]


def _avoided_swap(inp: RoiInputs, project: _Projections, items: list,
                  base_sum: dict[str, Any], knobs: Knobs) -> dict[str, Any] | None:
    if not items:
        return None
    speed = knobs.small_model_speedup or inp.ctx.get("small_model_speedup") or 3.0
    _, swap = project(inp.base.with_(routing_split=1.0, small_model_speedup=speed), False)
    # the non-model interventions alone, composed in rank order (the roadmap's cumulative steps
    # carry the model-layer items ranked among them, which are what a swap would replace)
    non_model = [p for p, *_ in items if p.layer != "model"]
    best = None
    if non_model:
        sc = inp.base
        for p in non_model:
            sc = p.apply(sc)
        _, best = project(sc, any(p.id == RIGHT_SIZE for p in non_model))
    metric = "busy_device_s"
    gap = base_sum[metric] - swap[metric]
    closed = None if best is None or gap <= 0 else (base_sum[metric] - best[metric]) / gap
    applies = closed is not None and closed >= GAP_CLOSED_FOR_AVOIDED_SWAP
    weeks = EFFORT_WEEKS[MODEL_SWAP_EFFORT]
    return {
        "applies": applies,
        "metric": metric,
        "gap_closed_ratio": closed,
        "model_swap_projected": swap,
        "non_model_composed": [p.id for p, *_ in items if p.layer != "model"],
        "non_model_projected": best,
        "model_swap_assumption": (f"all traffic of the largest model on a model x{speed:g} "
                                  "cheaper per token (the routing speed-up), quality unchanged"),
        "avoided_engineering_weeks": weeks if applies else 0.0,
        "avoided_cost_usd": weeks * DEFAULT_USD_PER_ENGINEER_WEEK if applies else 0.0,
        "cost_rule": (f"{weeks:g} engineer-weeks (effort class '{MODEL_SWAP_EFFORT}': evaluate, "
                      f"fine-tune, validate, deploy) x {DEFAULT_USD_PER_ENGINEER_WEEK:g} $/week "
                      "(assumed)"),
    }
