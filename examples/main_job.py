"""The end-to-end job: serve a replayed production workload, write traces, analyse them.

    python -m examples.main_job [--requests N] [--out DIR] [--mode sequential|batched|both]

Steps: load the workload (the real Splitwise trace if present, else the generator fitted to
it; the summary says which), build the tiny GPT-2, probe its sequential service time and scale
the workload into a :class:`~examples.loadgen.ReplayPlan` (saved as ``<out>/plan.json``), then
for each mode run :func:`run_scenario`: configure the SDK with the file exporter, start the
server, replay, flush. Each scenario writes ``<out>/<mode>/traces/*.jsonl`` (OTLP JSON lines),
``<out>/<mode>/run-manifest.json`` (scale factors, model, settings) and
``<out>/<mode>/scenario.json`` (client-side results). Finally, if the analyzer is installed,
``inferaudit_analyzer.cli.analyze_main`` runs on each trace dir.

With ``--mode both`` each scenario by default runs in its own child process
(``--isolation process``), like two separate deployments: each gets its own tracer and meter
providers, resource and trace dir. ``--isolation inline`` runs them one after the other in this
process (faster: torch is imported once); the SDK then reuses the tracer provider it built
first, with a new file sink per scenario, but OpenTelemetry lets the *meter* provider be set
only once per process, so the second scenario's ``gen_ai.server.*`` histograms are lost (its
spans, which the analyzer reads, are complete). Both scenarios replay the SAME plan, so their
numbers compare like for like.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
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
    LengthScale,
    ReplayPlan,
    build_plan,
    probe_workload,
    replay,
)
from examples.server import MODES, InferenceServer
from examples.tiny_gpt2 import TinyGPT2, TinyGPT2Spec
from examples.workload import load_workload
from inferaudit_sdk import semconv

DEFAULT_OUT = Path("out") / "main-job"
# Without --requests, the job replays as many requests as fit BUDGET_S seconds of offered load
# per scenario (so it takes about as long on a fast machine as on a busy one), within bounds.
DEFAULT_BUDGET_S = 30.0
AUTO_REQUESTS_MIN = 40
AUTO_REQUESTS_MAX = 600
SERVICE_NAME = "inferaudit-example"  # OTEL_SERVICE_NAME unless the environment sets one


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
    trace_dir.mkdir(parents=True, exist_ok=True)
    model = model or TinyGPT2()
    handle = ia.configure(exporters=("file",), trace_dir=str(trace_dir))
    server = InferenceServer(
        model, mode=mode, max_batch=max_batch, batch_timeout_s=batch_timeout_s,
        torch_threads=torch_threads,
    )
    t0 = time.perf_counter()
    try:
        results = asyncio.run(_serve(server, plan, stream))
    finally:
        handle.force_flush(timeout_s=30)
        ia.shutdown()
    wall_s = time.perf_counter() - t0
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
    )


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
        from inferaudit_analyzer import cli as analyzer_cli
    except ImportError:
        return None
    entry = getattr(analyzer_cli, "analyze_main", None)
    if entry is None:
        return None
    return int(entry([str(trace_dir), "--format", "json", "--out", str(out_path)]))


def auto_requests(probe_service_s: float, target_utilisation: float, budget_s: float) -> int:
    """How many requests arrive in ``budget_s`` seconds at the offered rate, within bounds."""
    n = int(budget_s * target_utilisation / probe_service_s)
    return max(AUTO_REQUESTS_MIN, min(AUTO_REQUESTS_MAX, n))


def _summary_lines(plan: ReplayPlan, results: list[ScenarioResult]) -> list[str]:
    s = plan.scale
    lines = [
        f"workload: {s.source} ({s.n_requests} requests)",
        f"scaling: prompt x{s.lengths.prompt_scale:g} (cap {s.lengths.prompt_cap}), "
        f"output x{s.lengths.output_scale:g} (cap {s.lengths.output_cap}), "
        f"time x{s.time_scale:.4g}; probe service {s.probe_service_s * 1e3:.1f} ms, "
        f"offered {s.offered_rps:.2f} req/s (target utilisation {s.target_utilisation:.0%})",
        f"{'mode':<11}{'served':>8}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'mean bs':>9}"
        f"{'max bs':>8}{'spans':>8}{'wall s':>8}",
    ]
    for r in results:
        bs = r.batch_sizes or [0]
        lines.append(
            f"{r.mode:<11}{r.n_requests - r.n_errors:>8}{r.n_errors:>8}{r.p50_s * 1e3:>9.1f}"
            f"{r.p95_s * 1e3:>9.1f}{np.mean(bs):>9.2f}{max(bs):>8}"
            f"{sum(r.spans_by_role.values()):>8}{r.wall_s:>8.1f}"
        )
    lines += [f"traces ({r.mode}): {r.trace_dir}" for r in results]
    return lines


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m examples.main_job", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--requests", type=int, default=None,
                   help="requests to replay (default: what fits --budget-s)")
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                   help="seconds of replay per scenario when --requests is not given")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--mode", choices=(*MODES, "both"), default="both")
    p.add_argument("--target-util", type=float, default=0.7,
                   help="offered load as a fraction of measured sequential capacity")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-timeout-ms", type=float, default=0.0)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--prompt-cap", type=int, default=LengthScale.prompt_cap)
    p.add_argument("--output-cap", type=int, default=LengthScale.output_cap)
    p.add_argument("--stream", action="store_true", help="stream tokens (TTFT/TPOT on spans)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fitted generator")
    p.add_argument("--fitted", action="store_true", help="use the fitted generator, not the trace")
    p.add_argument("--plan", type=Path, help="replay this saved plan instead of building one")
    p.add_argument("--isolation", choices=("process", "inline"), default="process",
                   help="with --mode both: one child process per scenario, or both in this one")
    p.add_argument("--no-analyze", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    os.environ.setdefault("OTEL_SERVICE_NAME", SERVICE_NAME)  # children inherit it
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda *_: None) if args.quiet else print
    # Same thread count for the probe as for serving, or the probe mis-measures capacity.
    torch.set_num_threads(args.torch_threads)
    model = TinyGPT2(TinyGPT2Spec())
    if args.plan is not None:
        plan = ReplayPlan.load(args.plan)
        plan_path = args.plan
    else:
        workload = load_workload(
            args.requests or AUTO_REQUESTS_MAX, seed=args.seed, use_trace=not args.fitted
        )
        say(f"workload: {workload.source}")
        lengths = LengthScale(prompt_cap=args.prompt_cap, output_cap=args.output_cap)
        probe_s = probe_workload(workload, model, lengths)
        n = args.requests or auto_requests(probe_s, args.target_util, args.budget_s)
        plan = build_plan(
            workload.head(n), None, lengths=lengths, target_utilisation=args.target_util,
            probe_service_s=probe_s,
        )
        plan_path = plan.save(out / "plan.json")
    modes = list(MODES) if args.mode == "both" else [args.mode]
    server_args = ["--max-batch", str(args.max_batch), "--batch-timeout-ms",
                   str(args.batch_timeout_ms), "--torch-threads", str(args.torch_threads),
                   *(["--stream"] if args.stream else [])]
    results: list[ScenarioResult] = []
    for mode in modes:
        say(f"running {mode} ({len(plan.requests)} requests)...")
        if len(modes) == 1 or args.isolation == "inline":
            scenario_out = out if len(modes) == 1 else out / mode
            result = run_scenario(
                mode, plan, out_dir=scenario_out, model=model, max_batch=args.max_batch,
                batch_timeout_s=args.batch_timeout_ms / 1e3, torch_threads=args.torch_threads,
                stream=args.stream,
            )
            result.save(scenario_out / "scenario.json")
        else:
            result = run_scenario_subprocess(
                mode, plan_path, out_dir=out / mode, extra_args=server_args
            )
        results.append(result)
    for line in _summary_lines(plan, results):
        say(line)
    (out / "summary.json").write_text(
        json.dumps({"scale": asdict(plan.scale), "scenarios": [asdict(r) for r in results]}),
        encoding="utf-8",
    )
    if not args.no_analyze:
        for r in results:
            report = Path(r.trace_dir).parent / "analysis.json"
            code = analyze(r.trace_dir, report)
            if code is None:
                say("analysis skipped: inferaudit_analyzer.cli.analyze_main is not available yet")
                break
            say(f"analysis ({r.mode}): exit {code}, {report}")
    return 0 if all(r.n_errors == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
