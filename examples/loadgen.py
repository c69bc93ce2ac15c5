"""Replays a production workload against the example server, scaled to fit the tiny model.

The real trace's lengths (prompts of hundreds to thousands of tokens, outputs of tens to
hundreds) and its rate (~5.5 requests/s) are sized for a GPU serving a large model. To load a
tiny model on a couple of CPU cores *realistically*, we scale:

- lengths: ``prompt = clip(round(trace_prompt * prompt_scale), prompt_min, prompt_cap)`` and the
  same for outputs; the shape of both distributions survives, only the unit shrinks;
- time: a quick warm-up probe measures the mean sequential service time ``S`` of sampled scaled
  requests; arrivals are then ``(t - t0) * time_scale`` with ``time_scale`` chosen so the
  offered load is ``target_utilisation / S`` requests per second (e.g. 70 % of what a
  sequential server can do). Gaps keep their real burstiness; only the clock is stretched or
  compressed.

Every factor used is kept in :class:`ScaleFactors`, which the main job writes into the run
manifest next to the traces, so an analysis of the traces can say what was replayed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from examples.workload import Workload

if TYPE_CHECKING:  # the plan side needs no SDK; only replay() talks to a server
    from examples.server import InferenceServer
    from examples.tiny_gpt2 import TinyGPT2

PROMPT_SEED_BASE = 10_000  # prompt i's token ids are drawn with seed PROMPT_SEED_BASE + i


@dataclass(frozen=True)
class LengthScale:
    """How trace token counts map to replayed ones (see the module docstring)."""

    prompt_scale: float = 1 / 16
    prompt_min: int = 4
    prompt_cap: int = 256
    output_scale: float = 1 / 8
    output_min: int = 2
    output_cap: int = 64

    def prompt(self, trace_tokens: int) -> int:
        scaled = round(trace_tokens * self.prompt_scale)
        return int(min(max(scaled, self.prompt_min), self.prompt_cap))

    def output(self, trace_tokens: int) -> int:
        scaled = round(trace_tokens * self.output_scale)
        return int(min(max(scaled, self.output_min), self.output_cap))


@dataclass(frozen=True)
class ScaleFactors:
    """Everything that relates the replay to the trace. Times in seconds."""

    source: str  # Workload.source
    n_requests: int
    lengths: LengthScale
    time_scale: float  # replay seconds per trace second
    target_utilisation: float  # offered load / sequential capacity, 0-1 (not a pct)
    probe_service_s: float  # mean sequential service time of the probe requests
    offered_rps: float  # requests per second offered by the replay
    trace_rps: float  # requests per second in the trace window replayed
    # Workload.window: which rows of the trace, and their statistics against the whole trace's
    # (None for the fitted generator or a hand-made workload)
    window: dict | None = None
    # how probe_service_s was estimated from the probe's timings (see probe_fit)
    probe_fit: dict | None = None


@dataclass(frozen=True)
class ReplayRequest:
    """One scheduled request: when (seconds after replay start), what, and its trace origin."""

    index: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    trace_prompt_tokens: int
    trace_output_tokens: int


@dataclass(frozen=True)
class ReplayPlan:
    """A replay schedule both serving modes share, so their results compare like for like."""

    requests: tuple[ReplayRequest, ...]
    scale: ScaleFactors

    def to_json(self) -> dict[str, object]:
        return {"scale": asdict(self.scale), "requests": [asdict(r) for r in self.requests]}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ReplayPlan:
        scale = dict(data["scale"])  # type: ignore[arg-type]
        scale["lengths"] = LengthScale(**scale["lengths"])
        reqs = tuple(ReplayRequest(**r) for r in data["requests"])  # type: ignore[union-attr]
        return cls(reqs, ScaleFactors(**scale))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReplayPlan:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class ClientResult:
    """What the load generator observed for one request (client-side, seconds)."""

    index: int
    latency_s: float
    output_tokens: int
    batch_size: int  # 0 when streaming (the stream does not say) or failed
    error: str | None = None
    ttft_s: float | None = None  # streaming only: time to the first token


def probe_times(
    model: TinyGPT2, lengths: Sequence[tuple[int, int]], *, repeats: int = 2
) -> list[float]:
    """Seconds one sequential ``generate`` takes for each (prompt, output) pair.

    Runs the model directly (no server, no spans); the first call also warms torch up and is
    not counted. Each request runs ``repeats`` times and keeps its fastest time: on a shared
    machine one run can catch a neighbour's burst, and an overstated service time would
    under-load the replay.
    """
    if not lengths:
        raise ValueError("probe_times: need at least one (prompt, output) pair")
    p0, o0 = lengths[0]
    model.generate([model.prompt_ids(p0, seed=0)], [o0])  # warm-up
    times: list[float] = []
    for i, (p, o) in enumerate(lengths):
        prompt = model.prompt_ids(p, seed=i)
        best = float("inf")
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            model.generate([prompt], [o])
            best = min(best, time.perf_counter() - t0)
        times.append(best)
    return times


def _mean_prediction(coef: Sequence[float], lengths: Sequence[tuple[int, int]]) -> float:
    """Mean of ``a + b * prompt + c * output`` over ``lengths``."""
    x = np.array([(1.0, p, o) for p, o in lengths], dtype=float)
    return float((x @ np.asarray(coef, dtype=float)).mean())


def fit_service_time(
    probed: Sequence[tuple[int, int]], times_s: Sequence[float],
    all_lengths: Sequence[tuple[int, int]],
) -> tuple[float, dict]:
    """Mean sequential service seconds over ``all_lengths``, from the probe's timings.

    A handful of probe requests rarely has the whole plan's length mix (16 evenly spaced ones
    can average 15 % fewer output tokens), and the plain mean of their times would mis-set the
    offered load by as much. So fit ``t = a + b * prompt + c * output`` by least squares and
    average its prediction over every request. A degenerate fit (fewer distinct points than
    coefficients, a rank-deficient design, a negative coefficient or a non-positive mean
    prediction) falls back to the plain mean; the returned dict says which was used."""
    t = np.asarray(times_s, dtype=float)
    plain = float(t.mean())
    x = np.array([(1.0, p, o) for p, o in probed], dtype=float)
    info: dict = {"method": "mean", "probe_mean_s": plain, "probe_requests": len(t)}
    if len(t) >= 4 and len(set(probed)) >= 3:
        coef, _, rank, _ = np.linalg.lstsq(x, t, rcond=None)
        mean_pred = _mean_prediction(coef, all_lengths)
        if rank == 3 and np.isfinite(coef).all() and (coef >= 0).all() and mean_pred > 0:
            info.update(method="lstsq a + b*prompt + c*output", coefficients_s=
                        [float(c) for c in coef])
            return mean_pred, info
        info["fallback_reason"] = (f"rank {rank}" if rank < 3
                                   else "negative coefficient or prediction")
    else:
        info["fallback_reason"] = "too few distinct probe requests"
    return plain, info


def _scaled_lengths(workload: Workload, lengths: LengthScale) -> list[tuple[int, int]]:
    return [
        (lengths.prompt(r.prompt_tokens), lengths.output(r.output_tokens))
        for r in workload.requests
    ]


def probe_fit(
    workload: Workload, model: TinyGPT2, lengths: LengthScale, *, probe_requests: int = 16
) -> tuple[float, dict]:
    """Time ``probe_requests`` requests spread evenly over ``workload`` (scaled by
    ``lengths``) and return :func:`fit_service_time`'s mean over all of them, with the fit."""
    scaled = _scaled_lengths(workload, lengths)
    step = max(1, len(scaled) // max(1, probe_requests))
    probed = scaled[::step][:probe_requests]
    return fit_service_time(probed, probe_times(model, probed), scaled)


def probe_workload(
    workload: Workload, model: TinyGPT2, lengths: LengthScale, *, probe_requests: int = 16
) -> float:
    """Mean sequential service seconds over every request of ``workload`` (see
    :func:`probe_fit`)."""
    return probe_fit(workload, model, lengths, probe_requests=probe_requests)[0]


def predicted_service_s(fit: dict | None, workload: Workload, lengths: LengthScale
                        ) -> float | None:
    """:func:`probe_fit`'s linear model applied to another workload (None without one)."""
    coef = (fit or {}).get("coefficients_s")
    return _mean_prediction(coef, _scaled_lengths(workload, lengths)) if coef else None


def build_plan(
    workload: Workload,
    model: TinyGPT2 | None,
    *,
    lengths: LengthScale | None = None,
    target_utilisation: float = 0.7,
    probe_requests: int = 16,
    probe_service_s: float | None = None,
    probe_info: dict | None = None,
) -> ReplayPlan:
    """Scale ``workload`` into a replay plan for ``model``. ``probe_service_s`` skips the
    probe (tests use it to fix the clock; ``probe_info`` then says where it came from)."""
    if not target_utilisation > 0:
        raise ValueError(f"target_utilisation must be > 0, got {target_utilisation}")
    if len(workload) == 0:
        raise ValueError("build_plan: empty workload")
    lengths = lengths or LengthScale()
    scaled = _scaled_lengths(workload, lengths)
    if probe_service_s is None:
        if model is None:
            raise ValueError("build_plan: need a model to probe, or probe_service_s")
        probe_service_s, probe_info = probe_fit(workload, model, lengths,
                                                probe_requests=probe_requests)
    t0 = workload.requests[0].arrived_at_s
    span_s = workload.requests[-1].arrived_at_s - t0
    n = len(workload)
    trace_rps = (n - 1) / span_s if span_s > 0 and n > 1 else 0.0
    offered_rps = target_utilisation / probe_service_s
    # Stretch the clock so that the trace's mean rate becomes the offered rate.
    time_scale = trace_rps / offered_rps if trace_rps > 0 else 0.0
    requests = tuple(
        ReplayRequest(
            index=i,
            arrival_s=(r.arrived_at_s - t0) * time_scale,
            prompt_tokens=p,
            output_tokens=o,
            trace_prompt_tokens=r.prompt_tokens,
            trace_output_tokens=r.output_tokens,
        )
        for i, (r, (p, o)) in enumerate(zip(workload.requests, scaled, strict=True))
    )
    scale = ScaleFactors(
        source=workload.source,
        n_requests=n,
        lengths=lengths,
        time_scale=time_scale,
        target_utilisation=target_utilisation,
        probe_service_s=probe_service_s,
        offered_rps=offered_rps,
        trace_rps=trace_rps,
        window=workload.window,
        probe_fit=probe_info,
    )
    return ReplayPlan(requests, scale)


async def replay(
    server: InferenceServer, plan: ReplayPlan, *, stream: bool = False
) -> list[ClientResult]:
    """Send every request of ``plan`` at its arrival time (open loop: arrivals do not wait for
    responses) and return client-side results in plan order. Failed requests are reported
    with ``error`` set, not raised, so one bad request does not hide the others. ``stream``
    uses :meth:`InferenceServer.complete_stream` and also measures time to first token."""
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(req: ReplayRequest) -> ClientResult:
        delay = start + req.arrival_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        prompt = server.model.prompt_ids(req.prompt_tokens, seed=PROMPT_SEED_BASE + req.index)
        t0 = time.perf_counter()
        try:
            if stream:
                tokens: list[int] = []
                ttft_s = None
                async for token in server.complete_stream(
                    prompt, req.output_tokens, request_id=req.index
                ):
                    if ttft_s is None:
                        ttft_s = time.perf_counter() - t0
                    tokens.append(token)
                return ClientResult(
                    req.index, time.perf_counter() - t0, len(tokens), 0, ttft_s=ttft_s
                )
            done = await server.complete(prompt, req.output_tokens, request_id=req.index)
        except Exception as exc:
            return ClientResult(req.index, time.perf_counter() - t0, 0, 0, repr(exc))
        return ClientResult(
            req.index, time.perf_counter() - t0, len(done.output_ids), done.batch_size
        )

    return list(await asyncio.gather(*(one(r) for r in plan.requests)))
