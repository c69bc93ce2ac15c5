"""Discrete-event replay of observed requests through a model of the serving path.

The ROI model's projections come from here: the measured arrivals and token counts are replayed
through ``replicas`` identical servers under a batching policy, with service times from a fitted
:class:`ServiceCurve`. Replaying the real arrivals (rather than a Poisson assumption) keeps the
burstiness that decides queueing, which is what p95 is made of.

Policies:
- ``sequential``: one request at a time per replica, FIFO (what an unbatched server does).
- ``dynamic``: when a replica frees up it takes up to ``max_batch`` waiting requests (after
  waiting at most ``max_wait_ns`` for the batch to fill) and runs them as one padded call: the
  call lasts as long as its longest prompt and its longest output (static batching, as
  Hugging Face ``generate`` does), and pays the ragged-step cost when its prompts differ.
- ``continuous``: iteration-level scheduling (Orca/vLLM style): requests join and leave the running
  batch at decode-step boundaries, at most ``max_batch`` in flight; a joining request's prefill is
  charged to the step it joins in.

Service-time noise: a deterministic curve predicts the mean call, but queueing (and so p95)
grows with the variance of service times. A curve may carry ``noise``, multiplicative factors
(measured / predicted, normalised to mean 1, in call order) from the calls it was fitted to; the
static policies then draw one factor per model call (seeded, so a replay is reproducible),
keeping the total work while restoring the spread. With ``noise_block`` > 1 the draws come in
runs of that many consecutive factors (a moving-block bootstrap), for hosts whose slow spells
last several calls; the fit leaves it at 1 (independent draws) because on the example the
block draws over-stated the measured batched p95 (see docs/roi-model.md) and reports the
residuals' correlation length separately. The continuous policy stays deterministic (a call's
noise averages out over its many steps).

Times are integer-valued float ns internally; all inputs and outputs are ns.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from inferaudit_analyzer.analyses.percentiles import exact_quantile

POLICIES = ("sequential", "dynamic", "continuous")


@dataclass(frozen=True)
class ServiceCurve:
    """Device time of one model call, fitted to measurements.

    ``call_ns(b, in_tokens, out_tokens, ragged) = fixed_ns + prefill_ns_per_token * b *
    in_tokens + out_tokens * (step_ns + step_ns_per_seq * b + ragged_step_ns * ragged)``, with
    ``in_tokens``/``out_tokens`` the padded (longest) lengths of the batch. One decode step of a
    batch of ``b`` costs ``step_ns + step_ns_per_seq * b``, plus ``ragged_step_ns`` when its rows
    have unequal lengths: a padded batch runs its attention with a mask, a path a single row or
    equal-length rows skip (on the example's GPT-2, ~10 % of a step; a fit without this term
    bends the batch dimension, under-stating every padded call). All coefficients are ns and
    non-negative.

    ``overhead_ns`` is the server's own time per call outside the model call (scheduling,
    setting results: ``data.call_gap``), added to every call beside ``fixed_ns``. It is a field
    of its own so that a scenario's speed-ups (``project.Scenario.curve``) and :meth:`scaled`
    change the model call and leave the server's code path as measured.
    """

    fixed_ns: float
    prefill_ns_per_token: float
    step_ns: float
    step_ns_per_seq: float
    ragged_step_ns: float = 0.0
    # Multiplicative service-time factors (mean 1, in call order) drawn per call by the
    # replay; () = none. Drawn in runs of noise_block consecutive factors (1: independently).
    noise: tuple[float, ...] = ()
    noise_block: int = 1
    # x duration of a call that starts on an idle replica (measured; fit.idle_start_factor)
    idle_factor: float = 1.0
    overhead_ns: float = 0.0

    def call_ns(self, batch: int, in_tokens: float, out_tokens: float,
                ragged: bool = False) -> float:
        return (
            self.fixed_ns + self.overhead_ns
            + self.prefill_ns_per_token * batch * in_tokens
            + out_tokens * self.step_time_ns(batch, ragged)
        )

    def step_time_ns(self, batch: int, ragged: bool = False) -> float:
        return self.step_ns + self.step_ns_per_seq * batch + (self.ragged_step_ns if ragged
                                                               else 0.0)

    def scaled(self, factor: float) -> ServiceCurve:
        """The same model call running ``factor`` times as long (e.g. 1/speed-up); the server's
        ``overhead_ns`` is not the model's and stays."""
        return replace(
            self,
            fixed_ns=self.fixed_ns * factor,
            prefill_ns_per_token=self.prefill_ns_per_token * factor,
            step_ns=self.step_ns * factor,
            step_ns_per_seq=self.step_ns_per_seq * factor,
            ragged_step_ns=self.ragged_step_ns * factor,
        )

    def with_noise(self, measured_ns: np.ndarray, predicted_ns: np.ndarray) -> ServiceCurve:
        """This curve carrying the spread of ``measured / predicted`` (clipped to 0.2-5x, then
        normalised to mean 1 so the total work is unchanged)."""
        ok = (predicted_ns > 0) & np.isfinite(measured_ns)
        if ok.sum() < 2:
            return self
        ratio = np.clip(measured_ns[ok] / predicted_ns[ok], 0.2, 5.0)
        ratio = ratio / ratio.mean()
        return replace(self, noise=tuple(float(r) for r in ratio), noise_block=1)

    def noise_draws(self, n: int, seed: int) -> np.ndarray | None:
        """``n`` factors: a moving-block bootstrap of ``noise`` (None without noise)."""
        noise = np.asarray(self.noise, dtype=np.float64)
        if not noise.size or n <= 0:
            return None
        block = int(min(max(1, self.noise_block), noise.size))
        return noise[block_index(noise.size, n, block, np.random.default_rng(seed))]


def block_index(size: int, n: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """Moving-block bootstrap: ``n`` positions into a series of ``size``, in runs of ``block``
    (consecutive positions keep whatever correlation the series has within a block)."""
    starts = rng.integers(0, size - block + 1, size=-(-n // block))
    return (starts[:, None] + np.arange(block)[None, :]).reshape(-1)[:n]


MAX_NOISE_BLOCK = 20


def correlation_block(x: np.ndarray, max_lag: int = MAX_NOISE_BLOCK) -> int:
    """Block length for a moving-block bootstrap of the series ``x``: one more than the number
    of leading lags whose autocorrelation exceeds the 95 % white-noise band (2 / sqrt(n))."""
    n = int(x.size)
    if n < 8:
        return 1
    d = x - x.mean()
    var = float(d @ d)
    if var <= 0:
        return 1
    band = 2.0 / np.sqrt(n)
    block = 1
    for lag in range(1, min(max_lag, n // 4) + 1):
        if float(d[:-lag] @ d[lag:]) / var <= band:
            break
        block = lag + 1
    return block


@dataclass(frozen=True)
class Workload:
    """Observed requests: arrival (ns from any origin), input and output tokens; sorted by
    arrival on construction via :meth:`of`."""

    arrival_ns: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    @classmethod
    def of(cls, arrival_ns, input_tokens, output_tokens) -> Workload:
        a = np.asarray(arrival_ns, dtype=np.float64)
        order = np.argsort(a, kind="stable")
        return cls(
            a[order] - (a.min() if a.size else 0.0),
            np.asarray(input_tokens, dtype=np.float64)[order],
            np.asarray(output_tokens, dtype=np.float64)[order],
        )

    def __len__(self) -> int:
        return int(self.arrival_ns.size)

    def subset(self, mask: np.ndarray) -> Workload:
        return Workload(self.arrival_ns[mask], self.input_tokens[mask], self.output_tokens[mask])


@dataclass(frozen=True)
class SimResult:
    """Per-request outcome of a replay, plus what the devices did."""

    start_ns: np.ndarray  # service start per request (same order as the workload)
    finish_ns: np.ndarray
    latency_ns: np.ndarray  # finish - arrival
    busy_ns: float  # summed device-busy time over all replicas
    window_ns: float  # first arrival to last finish
    batch_sizes: np.ndarray  # size of every model call (dynamic/sequential) or step (continuous)
    replicas: int

    def p(self, q: float) -> float:
        return exact_quantile(self.latency_ns, q)

    @property
    def utilization(self) -> float:
        """Device-busy share of the paid device time (replicas x window), 0-1."""
        if self.window_ns <= 0:
            return 0.0
        return min(1.0, self.busy_ns / (self.window_ns * self.replicas))


def simulate(
    work: Workload,
    curve: ServiceCurve,
    *,
    policy: str = "sequential",
    max_batch: int = 1,
    max_wait_ns: float = 0.0,
    replicas: int = 1,
    seed: int = 0,
) -> SimResult:
    """Replay ``work`` through ``replicas`` servers under ``policy``; see the module docstring."""
    if policy not in POLICIES:
        raise ValueError(f"unknown batching policy {policy!r}; expected one of {POLICIES}")
    if max_batch < 1 or replicas < 1:
        raise ValueError("max_batch and replicas must be >= 1")
    n = len(work)
    if n == 0:
        empty = np.zeros(0)
        return SimResult(empty, empty, empty, 0.0, 0.0, np.zeros(0, dtype=np.int64), replicas)
    if policy == "continuous":
        return _simulate_continuous(work, curve, max_batch, replicas)
    if policy == "sequential":
        max_batch, max_wait_ns = 1, 0.0
    return _simulate_static(work, curve, max_batch, max_wait_ns, replicas, seed)


def _simulate_static(
    work: Workload, curve: ServiceCurve, max_batch: int, max_wait_ns: float, replicas: int,
    seed: int,
) -> SimResult:
    n = len(work)
    tin, tout = work.input_tokens, work.output_tokens
    # The loop reads one element at a time: Python floats (the same doubles) read ~10x faster
    # than numpy scalars, and a one-request call needs no slice to take the longest row of.
    arr, tin_at, tout_at = (work.arrival_ns.tolist(), tin.tolist(), tout.tolist())
    start = np.zeros(n)
    finish = np.zeros(n)
    free_at = [0.0] * replicas  # heap of times each replica becomes free
    heapq.heapify(free_at)
    sizes: list[int] = []
    busy = 0.0
    noise = curve.noise_draws(n, seed)
    draws = None if noise is None else noise.tolist()
    i = 0
    while i < n:
        t_free = heapq.heappop(free_at)
        t = max(t_free, arr[i])
        # Wait for the batch to fill, but never past max_wait after the first request was ready.
        if max_batch > 1 and max_wait_ns > 0:
            deadline = t + max_wait_ns
            j_full = min(i + max_batch, n) - 1
            if arr[j_full] > t:
                t = min(deadline, arr[j_full])
        j = i
        while j < n and j - i < max_batch and arr[j] <= t:
            j += 1
        j = max(j, i + 1)
        b = j - i
        if b == 1:
            dur = curve.call_ns(1, tin_at[i], tout_at[i], ragged=False)
        else:
            rows = tin[i:j]
            longest = float(rows.max())
            dur = curve.call_ns(b, longest, float(tout[i:j].max()),
                                ragged=bool(rows.min() < longest))
        if t_free <= arr[i]:  # the replica was idle when this call's first request arrived
            dur *= curve.idle_factor
        if draws is not None:
            dur *= draws[len(sizes)]
        start[i:j] = t
        finish[i:j] = t + dur
        busy += dur
        sizes.append(b)
        heapq.heappush(free_at, t + dur)
        i = j
    lat = finish - work.arrival_ns
    return SimResult(start, finish, lat, busy, float(finish.max() - work.arrival_ns.min()),
                     np.asarray(sizes, dtype=np.int64), replicas)


def _simulate_continuous(
    work: Workload, curve: ServiceCurve, max_batch: int, replicas: int
) -> SimResult:
    """Iteration-level batching: each replica advances in decode steps; requests join at step
    boundaries (FIFO, shortest-queue replica) and leave when their output is done."""
    n = len(work)
    arr, tin, tout = work.arrival_ns, work.input_tokens, work.output_tokens
    start = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    clock = [0.0] * replicas
    running: list[dict[int, float]] = [{} for _ in range(replicas)]  # req -> tokens left
    waiting: deque[int] = deque()
    sizes: list[int] = []
    busy = 0.0
    nxt = 0
    done = 0
    while done < n:
        # The replica whose clock is earliest acts next.
        r = min(range(replicas), key=lambda k: clock[k])
        if not running[r] and not waiting:
            if nxt >= n:
                clock[r] = float("inf")
                continue
            clock[r] = max(clock[r], arr[nxt])
        while nxt < n and arr[nxt] <= clock[r]:
            waiting.append(nxt)
            nxt += 1
        joining = []
        while waiting and len(running[r]) < max_batch:
            q = waiting.popleft()
            joining.append(q)
            running[r][q] = tout[q]
            start[q] = clock[r]
        if not running[r]:
            continue
        b = len(running[r])
        # rows in flight sit at different positions: a multi-row step is a padded one
        step = curve.step_time_ns(b, ragged=b > 1)
        if joining:
            step += (curve.fixed_ns + curve.overhead_ns
                     + curve.prefill_ns_per_token * float(tin[joining].sum()))
        clock[r] += step
        busy += step
        sizes.append(b)
        for q in list(running[r]):
            running[r][q] -= 1
            if running[r][q] <= 0:
                del running[r][q]
                finish[q] = clock[r]
                done += 1
    lat = finish - arr
    return SimResult(start, finish, lat, busy, float(np.nanmax(finish) - arr.min()),
                     np.asarray(sizes, dtype=np.int64), replicas)
