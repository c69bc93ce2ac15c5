"""The end-to-end job: serve a replayed production workload, audit it, apply the top fix, compare.

    python -m examples.main_job [--requests N] [--trace-start N] [--out DIR]
        [--mode audit|sequential|batched|both]

Default (``--mode audit``), the README's first command:

1. load the workload (a window of the real Splitwise trace if present: the one whose statistics
   are closest to the whole trace's, or ``--trace-start N``; else the generator fitted to it),
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
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from examples.audit import compare, comparison_lines, run_audit, top_applicable
from examples.loadgen import (
    LengthScale,
    ReplayPlan,
    build_plan,
    predicted_service_s,
    probe_workload,
)
from examples.scenario import (
    AUTO_REQUESTS_MAX,
    AUTO_REQUESTS_MIN,
    ScenarioResult,
    analyze,
    auto_requests,
    count_spans,
    run_scenario,
    run_scenario_subprocess,
    summary_lines,
    window_line,
)
from examples.server import MODES
from examples.tiny_gpt2 import TinyGPT2, TinyGPT2Spec
from examples.workload import load_workload

# Re-exported: the job's public pieces live in examples.scenario and examples.audit.
__all__ = [
    "AUTO_REQUESTS_MAX",
    "AUTO_REQUESTS_MIN",
    "ScenarioResult",
    "analyze",
    "auto_requests",
    "compare",
    "comparison_lines",
    "count_spans",
    "main",
    "run_audit",
    "run_scenario",
    "run_scenario_subprocess",
    "top_applicable",
]

DEFAULT_OUT = Path("out") / "main-job"
# Without --requests, the job replays as many requests as fit BUDGET_S seconds of offered load
# per scenario (so it takes about as long on a fast machine as on a busy one), within bounds.
DEFAULT_BUDGET_S = 40.0
SERVICE_NAME = "inferaudit-example"  # OTEL_SERVICE_NAME unless the environment sets one


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
    p.add_argument("--trace-start", type=int, default=None, metavar="N",
                   help="replay the trace from row N (default: the window whose statistics are "
                        "closest to the whole trace's; the first rows are its start-up ramp)")
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

    def load(count: int):
        return load_workload(count, seed=args.seed, use_trace=not args.fitted,
                             start=args.trace_start)

    if n is None:
        pilot = load(AUTO_REQUESTS_MAX)
        n = auto_requests(probe_workload(pilot, model, lengths), args.target_util,
                          args.budget_s)
    workload = load(n)
    # build_plan probes again, on the requests actually replayed: the pilot's length mix (600
    # requests) can differ several-fold from the first n's, which would mis-set the offered load.
    plan = build_plan(workload, model, lengths=lengths, target_utilisation=args.target_util)
    if args.requests is None:
        # The pilot's probe sized n; the replayed requests' own probe sets the rate. Re-size n
        # from the latter (reusing it) so the run lasts about --budget-s, as intended.
        n2 = auto_requests(plan.scale.probe_service_s, args.target_util, args.budget_s)
        if n2 != n:
            workload = load(n2)
            # the window (and so its length mix) may move: re-apply the probe's fit to it
            service_s = predicted_service_s(plan.scale.probe_fit, workload, lengths)
            plan = build_plan(workload, model, lengths=lengths,
                              target_utilisation=args.target_util,
                              probe_service_s=service_s or plan.scale.probe_service_s,
                              probe_info=plan.scale.probe_fit)
    say(f"workload: {plan.scale.source}")
    win = plan.scale.window
    if win:
        say(window_line(win))
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
    for line in summary_lines(plan, results):
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
                say("analysis skipped: the analyzer is not installed (the analyzer extra)")
                break
            say(f"analysis ({r.mode}): exit {code}, {report}")
    return 0 if all(r.n_errors == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

