"""The end-to-end job: serve a replayed production workload, audit it, apply the top fix, compare.

    python -m examples.main_job [--requests N] [--out DIR] [--mode audit|sequential|batched|both]

Default (``--mode audit``), the README's first command:

1. load the workload (the real Splitwise trace if present, else the generator fitted to it),
   build the tiny GPT-2, probe its sequential service time and scale the workload into a
   :class:`~examples.loadgen.ReplayPlan` (``<out>/plan.json``);
2. sweep the model over batch sizes x lengths (``<out>/calibration.json``): the sequential spans
   hold batch size 1 only, so the curve's batch dimension comes from this sweep, anchored to the
   spans (the report's assumptions say so). It runs first so that the two serving runs are back
   to back (a shared host's speed drifts; the comparison reports the drift it measured);
3. serve the plan one request at a time (``<out>/sequential/``, in a child process with its own
   tracer provider; traces are OTLP JSON lines);
4. ``inferaudit report`` on the sequential traces and the sweep only: ``<out>/report.html``,
   ``report.md``, ``report.json`` with the ranked roadmap and projections;
5. apply the top roadmap item the example can apply for real (batching: the server's batched
   mode, at the projected max batch) on the SAME plan (``<out>/batched/``), analyse it, and print
   projected vs measured cost per request and p95 side by side, against the 15% target
   (``<out>/comparison.json``; the report files gain a "projection check" section).

``--mode sequential|batched`` runs one scenario inline (what the child processes do);
``--mode both`` runs both scenarios and analyses each, without the report. With ``--isolation
inline`` both run in this process (torch imported once); OpenTelemetry lets the meter provider
be set only once per process, so the second scenario's ``gen_ai.server.*`` histograms are then
lost (its spans, which the analyzer reads, are complete).
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
DEFAULT_BUDGET_S = 40.0
AUTO_REQUESTS_MIN = 40
AUTO_REQUESTS_MAX = 600
WARMUP_CALLS = 5
CLOCK_JUMP_WARN_S = 0.5
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
    warmup_call_ms: float | None = None  # median warm-up generate call: the machine's speed
    # how far the wall clock moved against the monotonic one during the run: span timestamps
    # are wall-clock, so a jump (a VM or sandbox adjusting time) inflates span latencies
    clock_jump_s: float = 0.0

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


# --- the audit: sequential run -> report with roadmap -> apply the top item -> compare ---------

CALIBRATION_BATCHES = (1, 2, 4, 8)
CALIBRATION_IN_TOKENS = (16, 128)
CALIBRATION_OUT_TOKENS = (8, 40)
TARGET_DIFF_RATIO = 0.15  # the "measured within 15% of projected"


def calibrate(model: TinyGPT2, out_path: Path, torch_threads: int, say) -> Path:
    """Sweep the example model over batch sizes x lengths (the sequential spans only hold batch
    size 1, so the curve's batch dimension comes from here); writes the calibration JSON."""
    from inferaudit_analyzer.roi.calibrate import sweep

    t0 = time.perf_counter()
    doc = sweep("examples.tiny_gpt2:TinyGPT2", batches=CALIBRATION_BATCHES,
                in_tokens=CALIBRATION_IN_TOKENS, out_tokens=CALIBRATION_OUT_TOKENS, repeats=3,
                torch_threads=torch_threads, model=model)
    doc["model"] = "examples.tiny_gpt2:TinyGPT2"
    out_path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    say(f"calibration: {len(doc['points'])} points in {time.perf_counter() - t0:.1f} s -> "
        f"{out_path}")
    return out_path


def write_report(trace_dir: str | Path, out: Path, calibration: Path, args: argparse.Namespace
                 ) -> dict:
    """``inferaudit report`` on the sequential traces: HTML, Markdown and JSON into ``out``."""
    from inferaudit_analyzer.cli_report import build_report, build_report_parser, write_outputs

    argv = [str(trace_dir), "--json", str(out / "report.json"), "--calibration",
            str(calibration), "--max-batch", str(args.max_batch), "--policy", "dynamic",
            "--max-wait-ms", str(args.batch_timeout_ms), "--bootstrap", str(args.bootstrap)]
    ns = build_report_parser().parse_args(argv)
    report = build_report(ns)
    write_outputs(report, html=str(out / "report.html"), md=str(out / "report.md"),
                  json_path=str(out / "report.json"))
    return report


def top_applicable(report: dict) -> dict | None:
    """The best-ranked roadmap item the example server can apply for real (batching)."""
    for item in report.get("roadmap") or []:
        if item.get("applicable_in_example"):
            return item
    return None


def measured_numbers(trace_dir: str | Path) -> dict:
    """The analyzer's own numbers for a run (same definitions as the projection's baseline)."""
    from inferaudit_analyzer.analyze import analyze as analyze_traces

    rep = analyze_traces([str(trace_dir)])
    ov = rep["baseline"]["overall"]
    (Path(trace_dir).parent / "analysis.json").write_text(json.dumps(rep, indent=1),
                                                           encoding="utf-8")
    return {"cost_per_request_usd": ov.get("cost_per_request_usd"),
            "busy_cost_per_request_usd": ov.get("busy_cost_per_request_usd"),
            "p95_ms": (ov.get("latency_ms") or {}).get("p95"),
            "p50_ms": (ov.get("latency_ms") or {}).get("p50"),
            "batch_size_mean": (ov.get("batch_size") or {}).get("mean"),
            "device_utilization": ov.get("device_utilization")}


def hindsight_replay(seq_trace_dir: str | Path, bat_trace_dir: str | Path, max_batch: int
                     ) -> dict:
    """Separate the model's error from the machine's drift: refit the curve on the batched
    run's OWN calls and replay the sequential run's requests through dynamic batching. If this
    lands near the measured p95 while the projection does not, the gap is the machine's speed
    changing between runs, not the replay model."""
    from inferaudit_analyzer.roi.data import observe
    from inferaudit_analyzer.roi.fit import fit_curve
    from inferaudit_analyzer.roi.project import Scenario, replay
    from inferaudit_analyzer.roi.simulate import ServiceCurve
    from inferaudit_analyzer.store import load_store
    from inferaudit_analyzer.views import create_views

    def obs(path: str | Path):
        store = load_store([str(path)], cache=True)
        try:
            create_views(store.con)
            return observe(store.con)
        finally:
            store.close()

    seq, bat = obs(seq_trace_dir), obs(bat_trace_dir)
    fit = fit_curve(bat.calls, max_batch=max_batch)
    curve = fit.curve
    curve = ServiceCurve(curve.fixed_ns + bat.call_gap_ns, curve.prefill_ns_per_token,
                         curve.step_ns, curve.step_ns_per_seq)
    rep = replay(seq.workload(), np.zeros(seq.n, dtype=bool), curve,
                 Scenario("dynamic", max_batch))
    return {"replayed_p95_ms": rep.p(0.95) / 1e6,
            "measured_p95_ms": float(np.quantile(bat.latency_ns, 0.95,
                                                 method="inverted_cdf")) / 1e6,
            "fit_mape_ratio": fit.goodness.get("mape_ratio"),
            "note": "curve refit on the batched run's own calls (hindsight), same replay model"}


def compare(item: dict, measured: dict, baseline: dict) -> dict:
    """Projected vs measured, with the relative difference against the 15% target."""
    p = item["projected"]
    iv = item.get("interval") or {}
    rows = []
    for label, proj, meas, base, ivk in (
        ("cost per request (bill, USD)", p.get("cost_per_request_usd"),
         measured["cost_per_request_usd"], baseline["cost_per_request_usd"],
         "cost_per_request_usd"),
        ("cost per request (busy floor, USD)", p.get("busy_cost_per_request_usd"),
         measured["busy_cost_per_request_usd"], baseline["busy_cost_per_request_usd"],
         "busy_cost_per_request_usd"),
        ("p95 latency (ms)", (p.get("latency_ms") or {}).get("p95"), measured["p95_ms"],
         baseline["p95_ms"], "latency_ms_p95"),
    ):
        diff = None if not proj or meas is None else (meas - proj) / proj
        rows.append({"metric": label, "baseline_measured": base, "projected": proj,
                     "interval": iv.get(ivk), "measured": meas, "diff_ratio": diff,
                     "within_target": diff is not None and abs(diff) <= TARGET_DIFF_RATIO})
    return {"intervention": item["intervention"], "params": item.get("params"),
            "target_diff_ratio": TARGET_DIFF_RATIO, "rows": rows}


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}"


def comparison_lines(cmp: dict) -> list[str]:
    lines = [f"projected vs measured after applying {cmp['intervention']} {cmp['params']}:",
             f"{'metric':<36}{'baseline':>12}{'projected':>12}{'90% interval':>24}"
             f"{'measured':>12}{'diff':>9}  within 15%"]
    for r in cmp["rows"]:
        iv = r["interval"] or {}
        ivs = (f"{_fmt(iv.get('low'))}-{_fmt(iv.get('high'))}" if iv.get("low") is not None
               else "n/a")
        diff = "n/a" if r["diff_ratio"] is None else f"{r['diff_ratio']:+.1%}"
        lines.append(f"{r['metric']:<36}{_fmt(r['baseline_measured']):>12}"
                     f"{_fmt(r['projected']):>12}{ivs:>24}{_fmt(r['measured']):>12}{diff:>9}  "
                     f"{'yes' if r['within_target'] else 'NO'}")
    return lines


def run_audit(args: argparse.Namespace, model: TinyGPT2, plan: ReplayPlan, plan_path: Path,
              server_args: list[str], say) -> int:
    """The README's first command: see the module docstring."""
    out: Path = args.out
    # Calibrate first, so the two serving runs are back to back: on a shared host the machine's
    # speed drifts, and the comparison is fairest when both runs see the same spell.
    say("[1/5] calibration sweep of the example model...")
    cal = calibrate(model, out / "calibration.json", args.torch_threads, say)
    say(f"[2/5] sequential serving ({len(plan.requests)} requests)...")
    seq = run_scenario_subprocess("sequential", plan_path, out_dir=out / "sequential",
                                  extra_args=server_args)
    for line in _summary_lines(plan, [seq]):
        say(line)
    say("[3/5] audit + roadmap report (from the sequential traces and the sweep only)...")
    t0 = time.perf_counter()
    report = write_report(seq.trace_dir, out, cal, args)
    say(f"report: {out / 'report.html'}, {out / 'report.md'}, {out / 'report.json'} "
        f"({time.perf_counter() - t0:.1f} s)")
    for r in report.get("roadmap") or []:
        p = r["projected"]
        say(f"  #{r['rank']} {r['intervention']:<20} risk {r['risk']['score']}  p95 "
            f"{_fmt((p.get('latency_ms') or {}).get('p95'))} ms  cost/req "
            f"{_fmt(p.get('cost_per_request_usd'))} ({p.get('saving_kind')})")
    item = top_applicable(report)
    if item is None:
        say("no roadmap item the example can apply (batching needs an unbatched_serving or idle "
            "finding); stopping after the report")
        return 0 if seq.n_errors == 0 else 1
    mb = int(item["params"]["max_batch"])
    wait_ms = float(item["params"].get("max_wait_ms") or 0.0)
    say(f"[4/5] applying {item['intervention']} for real: batched mode, max batch {mb}...")
    batched_args = ["--max-batch", str(mb), "--batch-timeout-ms", str(wait_ms),
                    "--torch-threads", str(args.torch_threads)]
    bat = run_scenario_subprocess("batched", plan_path, out_dir=out / "batched",
                                  extra_args=batched_args)
    for line in _summary_lines(plan, [bat])[2:]:
        say(line)
    say("[5/5] measuring the batched run with the analyzer...")
    measured = measured_numbers(bat.trace_dir)
    ov = report["baseline"]["overall"]
    baseline = {"cost_per_request_usd": ov.get("cost_per_request_usd"),
                "busy_cost_per_request_usd": ov.get("busy_cost_per_request_usd"),
                "p95_ms": (ov.get("latency_ms") or {}).get("p95")}
    cmp = compare(item, measured, baseline)
    cmp["measured_batched"] = measured
    cmp["calibration"] = str(cal)
    drift = None
    if seq.warmup_call_ms and bat.warmup_call_ms:
        drift = bat.warmup_call_ms / seq.warmup_call_ms - 1
    cmp["clock_jump_s"] = {"sequential": seq.clock_jump_s, "batched": bat.clock_jump_s}
    try:
        cmp["hindsight_replay"] = hindsight_replay(seq.trace_dir, bat.trace_dir, mb)
    except ValueError as exc:  # no usable call in the batched run
        cmp["hindsight_replay"] = {"error": str(exc)}
    cmp["machine_speed"] = {
        "warmup_call_ms": {"sequential": seq.warmup_call_ms, "batched": bat.warmup_call_ms},
        "drift_ratio": drift,
        "note": ("median warm-up generate call before each run; a positive drift means the "
                 "machine was slower during the batched run (shared host), which the "
                 "projection cannot know"),
    }
    (out / "comparison.json").write_text(json.dumps(cmp, indent=1), encoding="utf-8")
    # the report gains its projection check (same JSON, HTML and Markdown files)
    from inferaudit_analyzer.cli_report import write_outputs

    report["validation"] = cmp
    write_outputs(report, html=str(out / "report.html"), md=str(out / "report.md"),
                  json_path=str(out / "report.json"))
    for line in comparison_lines(cmp):
        say(line)
    if drift is not None:
        say(f"machine speed: warm-up call {seq.warmup_call_ms:.1f} ms before the sequential run, "
            f"{bat.warmup_call_ms:.1f} ms before the batched run ({drift:+.0%})")
    hs = cmp["hindsight_replay"]
    if "replayed_p95_ms" in hs:
        say(f"hindsight check (replay model alone): curve refit on the batched run's own calls "
            f"-> replayed p95 {hs['replayed_p95_ms']:.0f} ms vs measured "
            f"{hs['measured_p95_ms']:.0f} ms")
    say(f"comparison: {out / 'comparison.json'}")
    return 0 if seq.n_errors == 0 and bat.n_errors == 0 else 1


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m examples.main_job", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--requests", type=int, default=None,
                   help="requests to replay (default: what fits --budget-s of offered load)")
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                   help="seconds of offered load per scenario when --requests is not given")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--mode", choices=("audit", *MODES, "both"), default="audit",
                   help="audit (default): sequential -> report -> apply top item -> compare")
    p.add_argument("--target-util", type=float, default=0.6,
                   help="offered load as a fraction of measured sequential capacity")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-timeout-ms", type=float, default=0.0)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--prompt-cap", type=int, default=LengthScale.prompt_cap)
    p.add_argument("--output-cap", type=int, default=LengthScale.output_cap)
    p.add_argument("--seed", type=int, default=0, help="seed of the fitted generator")
    p.add_argument("--fitted", action="store_true", help="use the fitted generator, not the trace")
    p.add_argument("--plan", type=Path, help="replay this saved plan instead of building one")
    p.add_argument("--stream", action="store_true", help="clients stream tokens (TTFT measured)")
    p.add_argument("--isolation", choices=("process", "inline"), default="process",
                   help="with --mode both: one child process per scenario, or both in this one")
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap replicates (audit)")
    p.add_argument("--no-analyze", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def _build_plan(args: argparse.Namespace, model: TinyGPT2, say) -> tuple[ReplayPlan, Path]:
    if args.plan is not None:
        return ReplayPlan.load(args.plan), args.plan
    lengths = LengthScale(prompt_cap=args.prompt_cap, output_cap=args.output_cap)
    n = args.requests
    if n is None:
        pilot = load_workload(AUTO_REQUESTS_MAX, seed=args.seed, use_trace=not args.fitted)
        n = auto_requests(probe_workload(pilot, model, lengths), args.target_util,
                          args.budget_s)
    workload = load_workload(n, seed=args.seed, use_trace=not args.fitted)
    say(f"workload: {workload.source}")
    # build_plan probes again, on the requests actually replayed: the pilot's length mix (600
    # requests) can differ several-fold from the first n's, which would mis-set the offered load.
    plan = build_plan(workload, model, lengths=lengths, target_utilisation=args.target_util)
    if args.requests is None:
        # The pilot's probe sized n; the replayed requests' own probe sets the rate. Re-size n
        # from the latter (reusing it) so the run lasts about --budget-s, as intended.
        n2 = auto_requests(plan.scale.probe_service_s, args.target_util, args.budget_s)
        if n2 != n:
            workload = load_workload(n2, seed=args.seed, use_trace=not args.fitted)
            plan = build_plan(workload, model, lengths=lengths,
                              target_utilisation=args.target_util,
                              probe_service_s=plan.scale.probe_service_s)
    return plan, plan.save(args.out / "plan.json")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    os.environ.setdefault("OTEL_SERVICE_NAME", SERVICE_NAME)
    # The probe must run with the server's thread count, or it mis-sizes the offered load.
    torch.set_num_threads(args.torch_threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda *_: None) if args.quiet else (lambda *a: print(*a, flush=True))
    t_start = time.perf_counter()
    model = TinyGPT2(TinyGPT2Spec())
    plan, plan_path = _build_plan(args, model, say)
    server_args = ["--max-batch", str(args.max_batch), "--batch-timeout-ms",
                   str(args.batch_timeout_ms), "--torch-threads", str(args.torch_threads)]
    if args.stream:
        server_args.append("--stream")
    if args.mode == "audit":
        code = run_audit(args, model, plan, Path(plan_path), server_args, say)
        say(f"main job done in {time.perf_counter() - t_start:.0f} s")
        return code
    modes = list(MODES) if args.mode == "both" else [args.mode]
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
