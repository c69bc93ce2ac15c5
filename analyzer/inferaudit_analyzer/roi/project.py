"""Project one serving scenario: replay the observed requests through it, price the result.

A :class:`Scenario` is the serving path after zero or more interventions (batching policy, cache
hit share, routing split, speed-ups, replicas). :func:`project` replays the observed arrivals and
sizes through it (``simulate``) and prices the replay on the analyzer's definitions (cost.py):

- bill: ``window hours x replicas x $/replica-hour x replica_price_ratio / requests`` (idle paid
  time included; the ratio is below 1 only where right-sizing releases paid devices no server
  used);
- busy floor: the measured busy cost per request x (replayed busy time / baseline replayed busy
  time), so it is on the same device-time basis the analyzer measured.

Each observed request carries marks (:data:`MARK_DTYPE`, resampled with it by the bootstrap):
whether it repeats an earlier prompt exactly, whether it ran on the largest model (the only ones
routing may move), its measured latency where it took no model work (the server's cache
answered it, or it failed before any model call), and whether it failed. Requests that took no
model work are not replayed: they keep their measured latency and count in every per-request
figure. Failed requests (with or without a model call) are left out of every latency percentile,
as the report's baseline leaves them out (its p95 is over successful requests): a 3 s queue
timeout is not the tail of the requests that were served. New cache hits (``cache_hit_share``)
are drawn from the computed requests and answered without a model call (latency zero); routed
requests run on the same replicas at ``1 / small_model_speedup`` of the large model's token time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from inferaudit_analyzer.analyses.percentiles import exact_quantile
from inferaudit_analyzer.roi.data import Observed
from inferaudit_analyzer.roi.simulate import ServiceCurve, SimResult, Workload, simulate

NS_PER_HOUR = 3_600 * 1_000_000_000
NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class Scenario:
    """The serving path to replay. Factors multiply the model call's coefficients (1 =
    unchanged); the server's own per-call time (``ServiceCurve.overhead_ns``) is not scaled."""

    policy: str = "sequential"
    max_batch: int = 1
    max_wait_ns: float = 0.0
    cache_hit_share: float = 0.0  # of all requests, 0-1
    routing_split: float = 0.0  # of computed requests sent to the smaller model, 0-1
    small_model_speedup: float = 1.0
    decode_factor: float = 1.0  # x the decode-step coefficients (quantisation)
    # x fixed_ns, step_ns, ragged_step_ns (graphs / compile); the server's overhead_ns stays
    overhead_factor: float = 1.0
    all_factor: float = 1.0  # x every coefficient (copies overlapped)
    replicas: int = 1
    # x today's $/replica-hour, which spreads the paid devices no server used over the serving
    # replicas (model.py); right-sizing releases those devices, so its replicas cost less
    replica_price_ratio: float = 1.0

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
                "call_time_factor": self.all_factor, "replicas": self.replicas,
                "replica_price_ratio": self.replica_price_ratio}


@dataclass(frozen=True)
class Prices:
    """What one replica costs and the measured busy-floor anchor."""

    usd_per_replica_hour: float | None
    baseline_busy_cost_per_request_usd: float | None
    baseline_replay_busy_ns: float  # busy time of the baseline scenario's replay


@dataclass(frozen=True)
class Replay:
    """A scenario's replay: latencies of every request (hits and failures included) and device
    figures. ``failed`` (same length as ``latency_ns``; None: none) marks the latencies the
    percentiles leave out: the failed requests'."""

    latency_ns: np.ndarray
    busy_ns: float
    window_ns: float
    replicas: int
    batch_sizes: np.ndarray
    requests: int
    failed: np.ndarray | None = None
    replica_price_ratio: float = 1.0  # Scenario.replica_price_ratio

    @property
    def paid_replicas(self) -> float:
        """Replicas in today's $/replica-hour: what the invoice per hour is proportional to."""
        return self.replicas * self.replica_price_ratio

    def p(self, q: float) -> float:
        """Quantile ``q`` of the successful requests' latencies (:func:`latency_quantile`)."""
        return latency_quantile(self.latency_ns, self.failed, q)

    @property
    def utilization(self) -> float:
        paid = self.window_ns * self.replicas
        return 0.0 if paid <= 0 else min(1.0, self.busy_ns / paid)


MARK_DTYPE = np.dtype([("repeat", bool), ("routable", bool), ("served_ns", np.float64),
                       ("failed", bool)])


def marks(n: int, repeat: np.ndarray | None = None, routable: np.ndarray | None = None,
          served_ns: np.ndarray | None = None, failed: np.ndarray | None = None) -> np.ndarray:
    """Per-request marks (arrival order): exact repeat, on the largest model (routable), the
    measured latency of a request that took no model work (NaN: computed), and whether it
    failed (out of the latency percentiles)."""
    m = np.zeros(n, dtype=MARK_DTYPE)
    m["repeat"] = False if repeat is None else repeat
    m["routable"] = True if routable is None else routable
    m["served_ns"] = np.nan if served_ns is None else served_ns
    m["failed"] = False if failed is None else failed
    return m


def percentile_latencies(latency_ns: np.ndarray, failed: np.ndarray | None) -> np.ndarray:
    """The latencies a percentile is taken over: the successful requests' (the report's
    baseline definition), or every request's where none succeeded (so a run of only failures
    still has a tail to keep)."""
    if failed is None or not failed.any():
        return latency_ns
    ok = latency_ns[~failed]
    return ok if ok.size else latency_ns


def latency_quantile(latency_ns: np.ndarray, failed: np.ndarray | None, q: float) -> float:
    """Quantile ``q`` (``quantile_disc``'s rank rule) of :func:`percentile_latencies`: the
    successful requests' latencies, as the report's baseline percentiles are; NaN for no
    request. One definition for a replay's p95 and the measured p95 it is checked against."""
    lat = percentile_latencies(latency_ns, failed)
    return exact_quantile(lat, q) if lat.size else float("nan")


def as_marks(a: np.ndarray) -> np.ndarray:
    """Marks as they are, or a plain bool array of exact repeats as marks (nothing served,
    everything routable)."""
    a = np.asarray(a)
    return a if a.dtype == MARK_DTYPE else marks(a.size, repeat=a.astype(bool))


def _select(k: int, eligible: np.ndarray, preferred: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """Mask of ``k`` eligible requests, ``preferred`` ones first (in order), then at random."""
    mask = np.zeros(eligible.size, dtype=bool)
    if k <= 0:
        return mask
    take = np.flatnonzero(preferred & eligible)[:k]
    mask[take] = True
    rest = k - take.size
    if rest > 0:
        others = np.flatnonzero(eligible & ~mask)
        mask[rng.choice(others, size=min(rest, others.size), replace=False)] = True
    return mask


def scenario_workload(obs_work: Workload, repeats: np.ndarray, sc: Scenario,
                      seed: int = 0) -> tuple[Workload, np.ndarray, np.ndarray]:
    """(workload the devices see, mask of new cache hits, mask of requests the server's cache
    already answered), the masks over the observed requests.

    Already answered requests are no model work. New hits (``cache_hit_share`` of all requests,
    at most every computed one) come from the computed requests: exact repeats first, then random
    others (near duplicates are assumed spread like the rest). Routing: the shortest computed
    requests on the largest model (input + output tokens) go to the smaller model, whose token
    counts are divided by its speed-up (its calls take that much less time); ``routing_split``
    is a share of the computed requests, capped at the routable ones.
    """
    m = as_marks(repeats)
    rng = np.random.default_rng(seed)
    n = len(obs_work)
    served = np.isfinite(m["served_ns"])
    k_hits = round(min(max(sc.cache_hit_share, 0.0), 1.0) * n)
    hits = _select(k_hits, ~served, m["repeat"], rng)
    computed = ~served & ~hits
    tin = obs_work.input_tokens.copy()
    tout = obs_work.output_tokens.copy()
    if sc.routing_split > 0 and sc.small_model_speedup > 0:
        idx = np.flatnonzero(computed & m["routable"])
        k = min(round(min(sc.routing_split, 1.0) * int(computed.sum())), idx.size)
        if k:
            order = idx[np.argsort(tin[idx] + tout[idx], kind="stable")][:k]
            tin[order] = tin[order] / sc.small_model_speedup
            tout[order] = np.maximum(tout[order] / sc.small_model_speedup, 1.0)
    work = Workload(obs_work.arrival_ns[computed], tin[computed], tout[computed])
    return work, hits, served


def replay(obs_work: Workload, repeats: np.ndarray, base: ServiceCurve, sc: Scenario,
           seed: int = 0, draws: int = 1) -> Replay:
    """Replay ``sc`` (``repeats``: the requests' marks, or a bool array of exact repeats). With
    service-time noise, ``draws`` > 1 replays the same requests under that many independent
    noise draws and pools them (latencies concatenated, busy time and window averaged): the
    projection is then the expected tail of the scenario, not one draw's (one draw's p95 moves
    by ~5-10 % from seed to seed on a few hundred requests)."""
    curve = sc.curve(base)
    k = max(1, draws) if curve.noise and sc.policy != "continuous" else 1
    m = as_marks(repeats)
    work, hits, served = scenario_workload(obs_work, m, sc, seed)
    computed = ~hits & ~served
    served_ns = m["served_ns"]
    span = float(obs_work.arrival_ns.max() - obs_work.arrival_ns.min()) if len(obs_work) \
        else 0.0
    failed = m["failed"]
    lats, busy, window, sizes = [], 0.0, 0.0, []
    for d in range(k):
        res: SimResult = simulate(work, curve, policy=sc.policy, max_batch=sc.max_batch,
                                  max_wait_ns=sc.max_wait_ns, replicas=sc.replicas,
                                  seed=seed if d == 0 else seed + 7919 * d)
        lat = np.zeros(len(obs_work))
        lat[computed] = res.latency_ns
        lat[served] = served_ns[served]
        lats.append(lat)
        busy += res.busy_ns / k
        w = float(np.nanmax(res.finish_ns) - obs_work.arrival_ns.min()) if len(work) else span
        window += max(w, span) / k
        sizes.append(res.batch_sizes)
    return Replay(np.concatenate(lats), busy, window, sc.replicas, np.concatenate(sizes),
                  len(obs_work), np.tile(failed, len(lats)) if failed.any() else None,
                  sc.replica_price_ratio)


def price(rep: Replay, prices: Prices) -> dict[str, Any]:
    """Bill and busy-floor cost per request of a replay (cost.py's definitions)."""
    n = max(rep.requests, 1)
    bill = None
    if prices.usd_per_replica_hour is not None:
        bill = rep.window_ns / NS_PER_HOUR * rep.paid_replicas * prices.usd_per_replica_hour / n
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
        "paid_replicas": rep.paid_replicas,
        "batch_size_mean": float(bs.mean()) if bs.size else None,
    }


def observed_marks(obs: Observed, largest_model: str | None = None) -> np.ndarray:
    """The requests' marks in the workload's (arrival-sorted) order: exact repeats, on
    ``largest_model`` (every request when None), the measured latency of those that took no
    model work (the server's cache answered them, or they failed before any model call ran: a
    timeout or a rejected request replayed as a full call would invent load), and which are
    kept out of every latency percentile: the failed (with or without a model call) and those a
    profiled call served (replayed as work, at the curve's time, but not measured)."""
    order = np.argsort(obs.arrival_ns, kind="stable")
    routable = None if largest_model is None else obs.model == largest_model
    failed = np.zeros(obs.n, dtype=bool) if obs.errored is None else obs.errored.astype(bool)
    no_work = obs.cache_hit.copy()
    if not obs.calls_from_requests:  # else no call says whether one ran
        no_work |= failed & ~(obs.device_ns > 0)
    served = np.where(no_work, obs.latency_ns, np.nan)
    apart = obs.out_of_percentiles()  # failed, or served by a profiled call
    m = marks(obs.n, obs.exact_repeats(), routable, served,
              failed if apart is None else apart)
    return m[order]
