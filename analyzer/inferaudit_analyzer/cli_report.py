"""``inferaudit report`` (HTML / Markdown / JSON audit report with the ranked roadmap) and
``inferaudit calibrate`` (sweep a model over batch sizes to pin its service-time curve).

Exit codes as ``inferaudit analyze``: 0 done, 2 unusable input or bad flag (the message names
what and where), 1 internal error (one line; traceback with ``INFERAUDIT_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from inferaudit_analyzer.cli import (
    EXIT_OK,
    EXIT_UNUSABLE,
    _nonneg_float,
    _Parser,
    _positive_float,
    internal_error,
    parse_args,
    unwritable,
)


def _ratio(text: str) -> float:
    v = _nonneg_float(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1, got {text!r}")
    return v


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r}")
        return v

    return parse


_pos_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def build_report_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="inferaudit report",
                description="Audit traces and write the report: summary, findings, bottleneck, "
                            "ranked roadmap with calibrated projections, plots.")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="OTLP trace files (JSON lines or protobuf, .gz/.zst too), directories "
                        "or globs; Kineto (PyTorch profiler) traces too")
    p.add_argument("--from-json", metavar="FILE",
                   help="render a report JSON written before (--json, examples/audit.py) "
                        "instead of analysing traces: the same figures, this version's "
                        "layout; the analysis flags below are then not used")
    p.add_argument("--html", metavar="FILE", help="write the self-contained HTML report here")
    p.add_argument("--md", metavar="FILE", help="write the Markdown report here")
    p.add_argument("--json", metavar="FILE", help="write the JSON report (with roadmap[]) here")
    p.add_argument("--max-batch", type=_pos_int, default=8, help="batching: largest batch")
    p.add_argument("--policy", choices=("dynamic", "continuous"), default="dynamic",
                   help="batching policy projected")
    p.add_argument("--max-wait-ms", type=_nonneg_float, default=0.0,
                   help="batching: longest wait for a batch to fill")
    p.add_argument("--cache-hit-share", type=_ratio, metavar="X",
                   help="prompt cache hit share (capped at the measured duplicate share)")
    p.add_argument("--routing-split", type=_ratio, metavar="X",
                   help="share of computed requests, the shortest on the largest model, routed "
                        "to a smaller model (capped at the short-on-largest share)")
    p.add_argument("--small-model-speedup", type=_positive_float, metavar="X",
                   help="how many times cheaper per token the smaller model is (assumption)")
    p.add_argument("--quantization-speedup", type=_positive_float, metavar="X",
                   help="decode speed-up from quantisation (assumption; capped at 2)")
    p.add_argument("--graph-speedup", type=_positive_float, metavar="X",
                   help="overhead speed-up from CUDA graphs / compile (default and ceiling: "
                        "1 / (1 - launch-idle share))")
    p.add_argument("--slo-p95-ms", type=_positive_float, metavar="MS",
                   help="latency SLO for replica sizing (default: today's p95 over successful "
                        "requests, measured, or replayed where the replay is slower)")
    p.add_argument("--call-time-scale", type=_positive_float, default=1.0, metavar="X",
                   help="every model call (and the server's per-call overhead) takes X times "
                        "as long as audited: a slower or faster host, or one that drifted")
    p.add_argument("--price-per-hour", type=_nonneg_float, metavar="USD",
                   help="price per device-hour (per GPU; per instance on CPU)")
    p.add_argument("--price-file", metavar="FILE", help="JSON price table like prices.json")
    p.add_argument("--gpu-model", metavar="MODEL", help="GPU model for the price lookup")
    p.add_argument("--calibration", metavar="FILE",
                   help="calibration JSON from `inferaudit calibrate` (preferred for the curve)")
    p.add_argument("--bootstrap", type=_nonneg_int, default=100, metavar="B",
                   help="bootstrap replicates for the intervals (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="re-read inputs, ignore the cache")
    return p


def build_report(args: argparse.Namespace) -> dict[str, Any]:
    """Analyse, project, and return the full report dict (analyzer JSON + roadmap + roi)."""
    from inferaudit_analyzer.analyze import AnalyzeParams, analyze
    from inferaudit_analyzer.report.data import plot_data
    from inferaudit_analyzer.roi.interventions import Knobs
    from inferaudit_analyzer.roi.model import load_calibration, roi_section

    calibration = load_calibration(args.calibration) if args.calibration else None
    params = AnalyzeParams(price_per_hour=args.price_per_hour, price_file=args.price_file,
                           gpu_model=args.gpu_model, cache=not args.no_cache)
    knobs = Knobs(policy=args.policy, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                  cache_hit_share=args.cache_hit_share, routing_split=args.routing_split,
                  small_model_speedup=args.small_model_speedup,
                  quantization_speedup=args.quantization_speedup,
                  graph_speedup=args.graph_speedup, slo_p95_ms=args.slo_p95_ms,
                  price_per_hour=args.price_per_hour, call_time_scale=args.call_time_scale)
    extra: dict[str, Any] = {}

    def project(con: Any, rep: dict[str, Any]) -> None:
        extra["roi"] = roi_section(con, rep, knobs, calibration=calibration,
                                   bootstrap=args.bootstrap, seed=args.seed)
        extra["plots"] = plot_data(con)

    report = analyze(args.paths, params, then=project)
    roi: dict[str, Any] = extra.get("roi", {"error": "no OTLP spans: nothing to project"})
    plots: dict[str, Any] = extra.get("plots", {})
    report["roadmap"] = roi.pop("roadmap", [])
    report["roi"] = roi
    report["plots"] = plots
    if calibration is not None:
        left = calibration.get("unusable_points")
        report["roi"].setdefault("assumptions", []).append(
            f"service-time curve shape from calibration file {args.calibration}"
            + (f" ({left} of its {len(calibration['points'])} points left out: no batch size "
               ">= 1, a non-finite token count or no positive duration)" if left else ""))
    from inferaudit_analyzer.report_json import _clean

    return _clean(report)


def report_main(argv: list[str] | None = None) -> int:
    """Entry of ``inferaudit report``; returns the exit code."""
    args = parse_args(build_report_parser(), argv)
    if isinstance(args, int):
        return args
    if not (args.html or args.md or args.json):
        print("inferaudit report: give at least one of --html, --md, --json", file=sys.stderr)
        return EXIT_UNUSABLE
    if bool(args.paths) == bool(args.from_json):
        print("inferaudit report: give trace PATHs or --from-json FILE (one of the two)",
              file=sys.stderr)
        return EXIT_UNUSABLE
    for flag, path in (("--html", args.html), ("--md", args.md), ("--json", args.json)):
        problem = unwritable(path, flag)
        if problem:
            print(f"inferaudit report: {problem}", file=sys.stderr)
            return EXIT_UNUSABLE
    if args.from_json:
        return _rerender(args)
    try:
        from inferaudit_analyzer.cost import PriceFileError
        from inferaudit_analyzer.engines import BadClickHouseURL, SourceUnavailable
        from inferaudit_analyzer.roi.model import CalibrationError
        from inferaudit_analyzer.store import UnusableInput

        try:
            report = build_report(args)
        except (UnusableInput, PriceFileError, CalibrationError, BadClickHouseURL,
                SourceUnavailable) as exc:
            print(f"inferaudit report: unusable input: {exc}", file=sys.stderr)
            return EXIT_UNUSABLE
        write_outputs(report, html=args.html, md=args.md, json_path=args.json)
        written = [p for p in (args.html, args.md, args.json) if p]
        print(f"inferaudit report: wrote {', '.join(written)}")
        return EXIT_OK
    except (KeyboardInterrupt, Exception) as exc:
        return internal_error("inferaudit report", exc)


def _rerender(args: argparse.Namespace) -> int:
    """``--from-json``: the outputs of a report dict read back, nothing analysed again (a
    report an example wrote, with its workload and projection check, renders as it was)."""
    try:
        report = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"inferaudit report: unusable input: --from-json {args.from_json}: {exc}",
              file=sys.stderr)
        return EXIT_UNUSABLE
    if not isinstance(report, dict) or not isinstance(report.get("baseline"), dict):
        print(f"inferaudit report: unusable input: --from-json {args.from_json}: not a report "
              "JSON (no baseline object)", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        write_outputs(report, html=args.html, md=args.md, json_path=args.json, from_json=True)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        # a report edited by hand, or written by another version, lacks what rendering reads
        print(f"inferaudit report: unusable input: --from-json {args.from_json}: not a report "
              f"this version can render ({type(exc).__name__}: {exc}; re-run the report on "
              "the traces)", file=sys.stderr)
        return EXIT_UNUSABLE
    except (KeyboardInterrupt, Exception) as exc:
        return internal_error("inferaudit report", exc)
    print(f"inferaudit report: wrote {', '.join(p for p in (args.html, args.md, args.json) if p)}")
    return EXIT_OK


def write_outputs(report: dict[str, Any], *, html: str | None = None, md: str | None = None,
                  json_path: str | None = None, from_json: bool = False) -> None:
    """Write the asked outputs; ``from_json``: ``report`` was read back (--from-json), where
    the price flags are not read, so the renderers say how else to get a price."""
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=1), encoding="utf-8")
    if html:
        from inferaudit_analyzer.report.html import render_html

        Path(html).write_text(render_html(report, from_json), encoding="utf-8")
    if md:
        from inferaudit_analyzer.report.markdown import render_markdown

        Path(md).write_text(render_markdown(report, from_json), encoding="utf-8")


def build_calibrate_parser() -> argparse.ArgumentParser:
    from inferaudit_analyzer.roi.calibrate import (
        DEFAULT_BATCHES,
        DEFAULT_FACTORY,
        DEFAULT_IN_TOKENS,
        DEFAULT_OUT_TOKENS,
    )

    def ints(text: str) -> list[int]:
        try:
            vals = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}"
                                             ) from None
        if not vals or min(vals) < 1:
            raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
        return vals

    p = _Parser(prog="inferaudit calibrate",
                description="Sweep a model over batch sizes x lengths on this device and write "
                            "a calibration JSON for `inferaudit report --calibration`.")
    p.add_argument("--model", default=DEFAULT_FACTORY, metavar="MODULE:FACTORY",
                   help=f"import path of a zero-argument model factory (default {DEFAULT_FACTORY})")
    p.add_argument("--batches", type=ints, default=list(DEFAULT_BATCHES), metavar="1,2,4,8")
    p.add_argument("--in-tokens", type=ints, default=list(DEFAULT_IN_TOKENS), metavar="16,96")
    p.add_argument("--out-tokens", type=ints, default=list(DEFAULT_OUT_TOKENS), metavar="8,32")
    p.add_argument("--repeats", type=_pos_int, default=2)
    p.add_argument("--torch-threads", type=_nonneg_int, default=1,
                   help="torch intra-op threads during the sweep (match the server; 0: leave)")
    p.add_argument("--lengths-from", action="append", default=[], metavar="TRACES",
                   help="exported traces whose requests' (input, output) token counts make the "
                        "batches (padded, mixed lengths, as served) instead of the "
                        "--in-tokens x --out-tokens grid; repeatable")
    p.add_argument("--per-size", type=_pos_int, default=6,
                   help="with --lengths-from: batches drawn per batch size (default 6)")
    p.add_argument("--idle-pause-ms", type=float, default=0.0, metavar="MS",
                   help="also time each point after the thread slept MS, giving the factor by "
                        "which calls that start on an idle server run slower (0: off)")
    p.add_argument("--reference", action="store_true",
                   help="time a one-row call before each batch, to take the host's speed "
                        "drift out of the points")
    p.add_argument("--seed", type=int, default=0, help="seed of the batches' draw")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the JSON")
    p.add_argument("--quiet", action="store_true")
    return p


def request_lengths(paths: list[str]) -> list[tuple[int, int]]:
    """(input, output) tokens of every request in exported traces, for a mixed-length sweep."""
    from inferaudit_analyzer.store import UnusableInput, load_store
    from inferaudit_analyzer.views import create_views

    store = load_store(paths, cache=True)
    try:
        create_views(store.con)
        rows = store.con.execute(
            "SELECT input_tokens, output_tokens FROM requests "
            "WHERE input_tokens > 0 AND output_tokens > 0").fetchall()
    finally:
        store.close()
    if not rows:
        raise UnusableInput(", ".join(paths), None,
                            "no request reports both input and output tokens")
    return [(int(a), int(b)) for a, b in rows]


def calibrate_main(argv: list[str] | None = None) -> int:
    """Entry of ``inferaudit calibrate``; returns the exit code."""
    args = parse_args(build_calibrate_parser(), argv)
    if isinstance(args, int):
        return args
    problem = unwritable(args.out, "--out")
    if problem:
        print(f"inferaudit calibrate: {problem}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        from inferaudit_analyzer.roi.calibrate import FactoryError, sweep
        from inferaudit_analyzer.store import UnusableInput

        say = None if args.quiet else (lambda m: print(m, file=sys.stderr))
        if args.idle_pause_ms < 0:
            print("inferaudit calibrate: --idle-pause-ms must be >= 0", file=sys.stderr)
            return EXIT_UNUSABLE
        mix = None
        if args.lengths_from:
            try:
                mix = request_lengths(args.lengths_from)
            except UnusableInput as exc:
                print(f"inferaudit calibrate: --lengths-from: {exc}", file=sys.stderr)
                return EXIT_UNUSABLE
        try:
            doc = sweep(args.model, batches=args.batches, in_tokens=args.in_tokens,
                        out_tokens=args.out_tokens, repeats=args.repeats,
                        torch_threads=args.torch_threads or None, progress=say, mix=mix,
                        per_size=args.per_size, seed=args.seed,
                        idle_pause_ms=args.idle_pause_ms, reference=args.reference)
        except FactoryError as exc:
            print(f"inferaudit calibrate: unusable model: {exc}", file=sys.stderr)
            return EXIT_UNUSABLE
        Path(args.out).write_text(json.dumps(doc, indent=1), encoding="utf-8")
        return EXIT_OK
    except (KeyboardInterrupt, Exception) as exc:
        return internal_error("inferaudit calibrate", exc)
