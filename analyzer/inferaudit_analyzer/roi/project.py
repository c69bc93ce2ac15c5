"""Project one serving scenario: replay the observed requests through it, price the result.

A :class:`Scenario` is the serving path after zero or more interventions (batching policy, cache
hit share, routing split, speed-ups, replicas). :func:`project` replays the observed arrivals and
sizes through it (``simulate``) and prices the replay on the analyzer's definitions (cost.py):

- bill: ``window hours x replicas x $/replica-hour / requests`` (idle paid time included);
- busy floor: the measured busy cost per request x (replayed busy time / baseline replayed busy
  time), so it is on the same device-time basis the analyzer measured.

Cache hits are answered without a model call (their latency counted as zero); routed requests
run on the same replicas at ``1 / small_model_speedup`` of the large model's token time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from inferaudit_analyzer.roi.data import Observed
from inferaudit_analyzer.roi.simulate import ServiceCurve, SimResult, Workload, simulate

NS_PER_HOUR = 3_600 * 1_000_000_000
NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class Scenario:
    """The serving path to replay. Factors multiply curve coefficients (1 = unchanged)."""

    policy: str = "sequential"
    max_batch: int = 1
    max_wait_ns: float = 0.0
    cache_hit_share: float = 0.0  # of all requests, 0-1
    routing_split: float = 0.0  # of computed requests sent to the smaller model, 0-1
    small_model_speedup: float = 1.0
    decode_factor: float = 1.0  # x the decode-step coefficients (quantisation)
    overhead_factor: float = 1.0  # x fixed_ns, step_ns, ragged_step_ns (graphs / compile)
    all_factor: float = 1.0  # x every coefficient (copies overlapped)
    replicas: int = 1

    def curve(self, base: ServiceCurve) -> ServiceCurve:
        return replace(
            base,
            fixed_ns=base.fixed_ns * self.overhead_factor * self.all_factor,
            prefill_ns_per_token=base.prefill_ns_per_token * self.all_factor,
            step_ns=base.step_ns * self.decode_factor * self.overhead_factor * self.all_factor,
            step_ns_per_seq=base.step_ns_per_seq * self.decode_factor * self.all_factor,
            ragged_step_ns=(base.ragged_step_ns * self.decode_factor * self.overhead_factor
                            * self.all_factor),
        )

    def with_(self, **kw: Any) -> Scenario:
        return replace(self, **kw)

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "max_batch": self.max_batch,
                "max_wait_ms": self.max_wait_ns / NS_PER_MS,
                "cache_hit_share": self.cache_hit_share, "routing_split": self.routing_split,
                "small_model_speedup": self.small_model_speedup,
                "decode_time_factor": self.decode_factor,
                "overhead_time_factor": self.overhead_factor,
                "call_time_factor": self.all_factor, "replicas": self.replicas}


@dataclass(frozen=True)
class Prices:
    """What one replica costs and the measured busy-floor anchor."""

    usd_per_replica_hour: float | None
    baseline_busy_cost_per_request_usd: float | None
    baseline_replay_busy_ns: float  # busy time of the baseline scenario's replay


@dataclass(frozen=True)
class Replay:
    """A scenario's replay: latencies of every request (hits included) and device figures."""

    latency_ns: np.ndarray
    busy_ns: float
    window_ns: float
    replicas: int
    batch_sizes: np.ndarray
    requests: int

    def p(self, q: float) -> float:
        if not self.latency_ns.size:
            return float("nan")
        return float(np.quantile(self.latency_ns, q, method="inverted_cdf"))

    @property
    def utilization(self) -> float:
        paid = self.window_ns * self.replicas
        return 0.0 if paid <= 0 else min(1.0, self.busy_ns / paid)


def _select(n: int, share: float, preferred: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mask of round(share*n) requests, ``preferred`` ones first (in order), then at random."""
    k = round(min(max(share, 0.0), 1.0) * n)
    mask = np.zeros(n, dtype=bool)
    if k <= 0:
        return mask
    pref = np.flatnonzero(preferred)
    take = pref[:k]
    mask[take] = True
    rest = k - take.size
    if rest > 0:
        others = np.flatnonzero(~mask)
        mask[rng.choice(others, size=min(rest, others.size), replace=False)] = True
    return mask


def scenario_workload(obs_work: Workload, repeats: np.ndarray, sc: Scenario,
                      seed: int = 0) -> tuple[Workload, np.ndarray]:
    """(workload the devices see, mask of cache hits over the observed requests).

    Hits: exact repeats first, then random others (near duplicates are assumed spread like the
    rest). Routing: the shortest computed requests (input + output tokens) go to the smaller
    model, whose token counts are divided by its speed-up (its calls take that much less time).
    """
    rng = np.random.default_rng(seed)
    n = len(obs_work)
    hits = _select(n, sc.cache_hit_share, repeats, rng)
    computed = ~hits
    tin = obs_work.input_tokens.copy()
    tout = obs_work.output_tokens.copy()
    if sc.routing_split > 0 and sc.small_model_speedup > 0:
        idx = np.flatnonzero(computed)
        k = round(min(sc.routing_split, 1.0) * idx.size)
        if k:
            order = idx[np.argsort(tin[idx] + tout[idx], kind="stable")][:k]
            tin[order] = tin[order] / sc.small_model_speedup
            tout[order] = np.maximum(tout[order] / sc.small_model_speedup, 1.0)
    work = Workload(obs_work.arrival_ns[computed], tin[computed], tout[computed])
    return work, hits


def replay(obs_work: Workload, repeats: np.ndarray, base: ServiceCurve, sc: Scenario,
           seed: int = 0, draws: int = 1) -> Replay:
    """Replay ``sc``. With service-time noise, ``draws`` > 1 replays the same requests under
    that many independent noise draws and pools them (latencies concatenated, busy time and
    window averaged): the projection is then the expected tail of the scenario, not one
    draw's (one draw's p95 moves by ~5-10 % from seed to seed on a few hundred requests)."""
    curve = sc.curve(base)
    k = max(1, draws) if curve.noise and sc.policy != "continuous" else 1
    work, hits = scenario_workload(obs_work, repeats, sc, seed)
    span = float(obs_work.arrival_ns.max() - obs_work.arrival_ns.min()) if len(obs_work) \
        else 0.0
    lats, busy, window, sizes = [], 0.0, 0.0, []
    for d in range(k):
        res: SimResult = simulate(work, curve, policy=sc.policy, max_batch=sc.max_batch,
                                  max_wait_ns=sc.max_wait_ns, replicas=sc.replicas,
                                  seed=seed if d == 0 else seed + 7919 * d)
        lat = np.zeros(len(obs_work))
        lat[~hits] = res.latency_ns
        lats.append(lat)
        busy += res.busy_ns / k
        w = float(np.nanmax(res.finish_ns) - obs_work.arrival_ns.min()) if len(work) else span
        window += max(w, span) / k
        sizes.append(res.batch_sizes)
    return Replay(np.concatenate(lats), busy, window, sc.replicas, np.concatenate(sizes),
                  len(obs_work))


def price(rep: Replay, prices: Prices) -> dict[str, Any]:
    """Bill and busy-floor cost per request of a replay (cost.py's definitions)."""
    n = max(rep.requests, 1)
    bill = None
    if prices.usd_per_replica_hour is not None:
        bill = rep.window_ns / NS_PER_HOUR * rep.replicas * prices.usd_per_replica_hour / n
    busy = None
    if prices.baseline_busy_cost_per_request_usd is not None and prices.baseline_replay_busy_ns > 0:
        busy = prices.baseline_busy_cost_per_request_usd * rep.busy_ns / \
            prices.baseline_replay_busy_ns
    return {"cost_per_request_usd": bill, "busy_cost_per_request_usd": busy}


def summarize(rep: Replay, prices: Prices) -> dict[str, Any]:
    """The JSON numbers of one replay."""
    secs = rep.window_ns / 1e9
    bs = rep.batch_sizes
    return {
        **price(rep, prices),
        "latency_ms": {"p50": rep.p(0.5) / NS_PER_MS, "p95": rep.p(0.95) / NS_PER_MS,
                       "p99": rep.p(0.99) / NS_PER_MS},
        "throughput_rps": rep.requests / secs if secs > 0 else None,
        "replica_busy_ratio": rep.utilization,  # wall share of paid replica time in a call
        "busy_device_s": rep.busy_ns / 1e9,
        "window_s": secs,
        "replicas": rep.replicas,
        "batch_size_mean": float(bs.mean()) if bs.size else None,
    }


def observed_repeats(obs: Observed) -> np.ndarray:
    """Exact repeats in the workload's (arrival-sorted) order."""
    order = np.argsort(obs.arrival_ns, kind="stable")
    return obs.exact_repeats()[order]
