"""One serving scenario of the example: the tiny GPT-2 server under a replayed plan, traced.

:func:`run_scenario` runs it in this process, :func:`run_scenario_subprocess` in a fresh
interpreter (its own tracer provider); both return a :class:`ScenarioResult`.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import inferaudit_sdk as ia
from examples.loadgen import (
    ClientResult,
    ReplayPlan,
    replay,
)
from examples.server import MODES, InferenceServer
from examples.tiny_gpt2 import TinyGPT2
from examples.workload import COUNT_BIN_S
from inferaudit_sdk import semconv

COUNT_BIN_LABEL = f"{COUNT_BIN_S:g}-s"

AUTO_REQUESTS_MIN = 40
AUTO_REQUESTS_MAX = 600
WARMUP_CALLS = 5
CLOCK_JUMP_WARN_S = 0.5


@dataclass
class ScenarioResult:
    """One serving mode's run, measured from the client side. Times in seconds."""

    mode: str
    n_requests: int
    n_errors: int
    latencies_s: list[float]
    wall_s: float
    trace_dir: str
    manifest_path: str
    batch_sizes: list[int] = field(default_factory=list)  # one per model call
    spans_by_role: dict[str, int] = field(default_factory=dict)
    output_tokens: int = 0
    ttfts_s: list[float] = field(default_factory=list)  # streaming runs only
    warmup_call_ms: float | None = None  # median warm-up generate call: the machine's speed
    # how far the wall clock moved against the monotonic one during the run: span timestamps
    # are wall-clock, so a jump (a VM or sandbox adjusting time) inflates span latencies
    clock_jump_s: float = 0.0
    # the server's summed model-call time, and that over the plan's arrival span: the load the
    # replay actually offered (sequential: the utilisation the plan aimed at)
    busy_s: float = 0.0
    achieved_utilisation: float | None = None

    def latency_pct_s(self, pct: float) -> float:
        return float(np.percentile(self.latencies_s, pct)) if self.latencies_s else float("nan")

    @property
    def p50_s(self) -> float:
        return self.latency_pct_s(50)

    @property
    def p95_s(self) -> float:
        return self.latency_pct_s(95)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ScenarioResult:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def count_spans(trace_dir: str | Path) -> dict[str, int]:
    """Spans in the OTLP JSON lines files of ``trace_dir``, by ``inferaudit.span.role``
    (``"other"`` for spans without one)."""
    counts: Counter[str] = Counter()
    for path in sorted(Path(trace_dir).glob("*.jsonl*")):
        if path.suffix not in (".jsonl", ".gz"):
            continue  # .zst needs zstandard; the analyzer reads those
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                for rs in json.loads(line).get("resourceSpans", ()):
                    for ss in rs.get("scopeSpans", ()):
                        for span in ss.get("spans", ()):
                            role = "other"
                            for attr in span.get("attributes", ()):
                                if attr.get("key") == semconv.SPAN_ROLE:
                                    role = attr["value"].get("stringValue", "other")
                            counts[role] += 1
    return dict(counts)


async def _serve(server: InferenceServer, plan: ReplayPlan, stream: bool) -> list[ClientResult]:
    async with server:
        return await replay(server, plan, stream=stream)


def run_scenario(
    mode: str,
    plan: ReplayPlan,
    *,
    out_dir: str | Path,
    model: TinyGPT2 | None = None,
    max_batch: int = 8,
    batch_timeout_s: float = 0.0,
    torch_threads: int = 1,
    stream: bool = False,
) -> ScenarioResult:
    """Serve ``plan`` in ``mode`` with the SDK writing to ``<out_dir>/traces``.

    Configures the SDK (file exporter) and shuts it down at the end, so call it once per
    process (see the module docstring); runs its own event loop (do not call from async code).
    """
    if mode not in MODES:
        raise ValueError(f"run_scenario: mode must be one of {MODES}, got {mode!r}")
    out = Path(out_dir)
    trace_dir = out / "traces"
    # A run replaces the previous run's traces in the same place: the file sink only adds
    # files, and the audit reads the whole directory, so a re-run would otherwise audit both.
    if trace_dir.is_dir():
        shutil.rmtree(trace_dir)
    trace_dir.mkdir(parents=True, exist_ok=True)
    model = model or TinyGPT2()
    # Warm the model up before serving, as a production server is: the first generate calls
    # of a fresh process pay one-off allocation and dispatch costs that no request should.
    # The median warm-up call also tells how fast this machine is right now (a shared host's
    # speed drifts between runs; the comparison reports it).
    torch.set_num_threads(torch_threads)
    warm_ns = []
    for _ in range(WARMUP_CALLS):
        t_w = time.perf_counter_ns()
        model.generate([model.prompt_ids(16, seed=0)], [8])
        warm_ns.append(time.perf_counter_ns() - t_w)
    handle = ia.configure(exporters=("file",), trace_dir=str(trace_dir))
    server = InferenceServer(
        model, mode=mode, max_batch=max_batch, batch_timeout_s=batch_timeout_s,
        torch_threads=torch_threads,
    )
    t0 = time.perf_counter()
    offset0 = time.time() - t0  # span timestamps are wall-clock; the run's wall is monotonic
    try:
        results = asyncio.run(_serve(server, plan, stream))
    finally:
        handle.force_flush(timeout_s=30)
        ia.shutdown()
    wall_s = time.perf_counter() - t0
    clock_jump_s = (time.time() - time.perf_counter()) - offset0
    manifest = out / "run-manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "mode": mode,
                "scale": asdict(plan.scale),
                "model": {"name": model.name, **asdict(model.spec)},
                "server": {
                    "max_batch": server.max_batch,
                    "batch_timeout_s": batch_timeout_s,
                    "torch_threads": torch_threads,
                    "stream": stream,
                },
                "host": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
                "trace_dir": str(trace_dir),
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    ok = [r for r in results if r.error is None]
    busy_s = sum(server.call_durations_ns) / 1e9
    span_s = plan.requests[-1].arrival_s - plan.requests[0].arrival_s if plan.requests else 0.0
    return ScenarioResult(
        mode=mode,
        n_requests=len(results),
        n_errors=len(results) - len(ok),
        latencies_s=[r.latency_s for r in ok],
        wall_s=wall_s,
        trace_dir=str(trace_dir),
        manifest_path=str(manifest),
        batch_sizes=list(server.batch_sizes),
        spans_by_role=count_spans(trace_dir),
        output_tokens=sum(r.output_tokens for r in ok),
        ttfts_s=[r.ttft_s for r in ok if r.ttft_s is not None],
        warmup_call_ms=float(np.median(warm_ns)) / 1e6,
        clock_jump_s=clock_jump_s,
        busy_s=busy_s,
        achieved_utilisation=achieved_utilisation(busy_s, span_s),
    )


def achieved_utilisation(busy_s: float, arrival_span_s: float) -> float | None:
    """Summed service time over the arrival span (0-1 for a server that keeps up). For the
    sequential run this is the offered load the plan's ``target_utilisation`` aimed at."""
    return busy_s / arrival_span_s if arrival_span_s > 0 else None


def run_scenario_subprocess(
    mode: str, plan_path: str | Path, *, out_dir: str | Path, extra_args: list[str] | None = None
) -> ScenarioResult:
    """:func:`run_scenario` in a fresh interpreter (own tracer provider); raises
    ``RuntimeError`` with the child's output if it fails."""
    out = Path(out_dir)
    cmd = [
        sys.executable, "-m", "examples.main_job", "--mode", mode, "--plan", str(plan_path),
        "--out", str(out), "--no-analyze", "--quiet", *(extra_args or []),
    ]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"scenario {mode!r} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return ScenarioResult.load(out / "scenario.json")


def analyze(trace_dir: str | Path, out_path: str | Path) -> int | None:
    """Run the offline analyzer on ``trace_dir`` if it is installed; ``None`` if it is not."""
    try:
        from inferaudit_analyzer.cli import analyze_main
    except ImportError:  # the SDK alone is installed (no `analyzer` extra)
        return None
    return int(analyze_main([str(trace_dir), "--format", "json", "--out", str(out_path)]))


def auto_requests(probe_service_s: float, target_utilisation: float, budget_s: float) -> int:
    """How many requests arrive in ``budget_s`` seconds at the offered rate, within bounds."""
    n = int(budget_s * target_utilisation / probe_service_s)
    return max(AUTO_REQUESTS_MIN, min(AUTO_REQUESTS_MAX, n))


def window_line(win: dict) -> str:
    """The replayed trace window against the whole trace, in one line."""
    ws, ts = win["stats"], win["trace_stats"]
    return (f"trace window: rows {win['start']}..{win['start'] + win['size'] - 1} of "
            f"{win['trace_rows']} ({win['chosen']}); window vs whole trace: gap CV "
            f"{ws['gap_cv']:.2f} vs {ts['gap_cv']:.2f}, prompt median {ws['prompt_median']:.0f} "
            f"vs {ts['prompt_median']:.0f}, output median {ws['output_median']:.0f} vs "
            f"{ts['output_median']:.0f}, {COUNT_BIN_LABEL} count var/mean "
            f"{ws['count_dispersion']:.2f} vs {ts['count_dispersion']:.2f}, rate "
            f"{ws['rate_rps']:.2f} vs {ts['rate_rps']:.2f} req/s")


def summary_lines(plan: ReplayPlan, results: list[ScenarioResult], *,
                  with_plan: bool = True) -> list[str]:
    """The run's summary; ``with_plan=False`` leaves out the plan's own lines (workload,
    window, scaling), for a second run of a plan already summarised."""
    s = plan.scale
    lines = [
        f"workload: {s.source} ({s.n_requests} requests)",
        *([window_line(s.window)] if s.window else []),
        f"scaling: prompt x{s.lengths.prompt_scale:g} (cap {s.lengths.prompt_cap}), "
        f"output x{s.lengths.output_scale:g} (cap {s.lengths.output_cap}), "
        f"time x{s.time_scale:.4g}; probe service {s.probe_service_s * 1e3:.1f} ms, "
        f"offered {s.offered_rps:.2f} req/s (target utilisation {s.target_utilisation:.0%})",
    ] if with_plan else []
    lines += [
        f"{'mode':<11}{'served':>8}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'mean bs':>9}"
        f"{'max bs':>8}{'spans':>8}{'wall s':>8}   (latency as the load generator timed it; "
        "the audit's p95 is the server spans')",
    ]
    lines[-1:-1] = [f"{r.mode}: achieved utilisation {r.achieved_utilisation:.0%} (summed "
                    f"model-call time / arrival span; target {s.target_utilisation:.0%})"
                    for r in results if r.achieved_utilisation is not None]
    for r in results:
        bs = r.batch_sizes or [0]
        lines.append(
            f"{r.mode:<11}{r.n_requests - r.n_errors:>8}{r.n_errors:>8}{r.p50_s * 1e3:>9.1f}"
            f"{r.p95_s * 1e3:>9.1f}{np.mean(bs):>9.2f}{max(bs):>8}"
            f"{sum(r.spans_by_role.values()):>8}{r.wall_s:>8.1f}"
        )
    for r in results:
        if r.ttfts_s:
            p50, p95 = np.percentile(r.ttfts_s, [50, 95])
            lines.append(f"{r.mode}: time to first token p50 {p50 * 1e3:.1f} ms, p95 "
                         f"{p95 * 1e3:.1f} ms (client side)")
    lines += [f"traces ({r.mode}): {r.trace_dir}" for r in results]
    lines += [f"WARNING ({r.mode}): the wall clock moved {r.clock_jump_s:+.1f} s against the "
              "monotonic clock during the run; span timestamps (wall clock) are unreliable, "
              "re-run" for r in results if abs(r.clock_jump_s) > CLOCK_JUMP_WARN_S]
    return lines

