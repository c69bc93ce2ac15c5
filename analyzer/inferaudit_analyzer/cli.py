"""``inferaudit analyze``: audit exported traces; JSON or a terminal summary.

Exit codes: 0 analysed (possibly with unreadable parts listed in the report), 2 unusable input
(the message names the file and the position), 1 internal error (one line, no traceback unless
``INFERAUDIT_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from contextlib import contextmanager
from typing import Any

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_UNUSABLE = 2


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would sys.exit(2) itself
        raise _ArgError(message)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return v


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return v


# Wider buckets than this (about 30 years) say nothing a single bucket would not, and overflow
# the nanosecond arithmetic of the bucket SQL.
MAX_BUCKET_S = 1e9


def _bucket_s(text: str) -> float:
    v = _positive_float(text)
    if v > MAX_BUCKET_S:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_BUCKET_S:g} s, got {text!r}")
    return v


def unwritable(path: str | None, flag: str) -> str | None:
    """Why ``path`` (an output flag's value) cannot be written, or None: checked before a long
    read or sweep, so a typo in an output path costs nothing."""
    if path is None:
        return None
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"{flag} {path}: is a directory"
    if not os.path.isdir(parent):
        return f"{flag} {path}: directory {parent} does not exist"
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return f"{flag} {path}: not writable"
    return None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="inferaudit analyze",
                description="Audit exported traces: baseline, cost, findings, bottleneck.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="OTLP trace files (JSON lines or protobuf, .gz/.zst too), directories "
                        "or globs; Kineto (PyTorch profiler) traces too; or one "
                        "clickhouse://host:port/db?table=otel_traces, or one s3://bucket/prefix "
                        "in the awss3exporter layout (docs/clickhouse.md)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--out", metavar="FILE", help="write the report here instead of stdout")
    price = p.add_mutually_exclusive_group()
    price.add_argument("--price-per-hour", type=_nonneg_float, metavar="USD",
                       help="price per device-hour (per GPU; per instance on CPU)")
    price.add_argument("--price-file", metavar="FILE",
                       help="JSON price table shaped like the bundled prices.json")
    p.add_argument("--gpu-model", metavar="MODEL",
                   help="GPU model for the price lookup when the traces do not say")
    p.add_argument("--bucket-s", type=_bucket_s, metavar="S",
                   help="width of the per-time-bucket baseline in seconds (default: ~20 buckets)")
    p.add_argument("--no-cache", action="store_true", help="re-read inputs, ignore the cache")
    p.add_argument("--since", type=_time_ns, metavar="TIME",
                   help="URL sources only: spans starting at or after TIME (ISO 8601, epoch "
                        "seconds, or a duration before now such as 6h)")
    p.add_argument("--until", type=_time_ns, metavar="TIME",
                   help="URL sources only: spans starting before TIME")
    return p


def _time_ns(text: str) -> int:
    from inferaudit_analyzer.engines.timespec import parse_time_ns

    try:
        return parse_time_ns(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@contextmanager
def _progress(enabled: bool):
    """A rich progress bar for long reads; yields the store's ``progress`` callback."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn("[bold]reading[/bold] {task.description}"), BarColumn(),
                    TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True)
    task = prog.add_task("traces", total=None)

    def update(p: Any) -> None:
        try:
            kw: dict[str, Any] = {"description": os.path.basename(str(p.file))}
            if p.bytes_total:
                kw["total"] = p.bytes_total
            kw["completed"] = p.bytes_done
            prog.update(task, **kw)
        except Exception:  # a progress bar must never break the analysis
            pass

    with prog:
        yield update


def _write(text: str, out: str | None) -> None:
    if out is None:
        try:
            sys.stdout.write(text)
            if not text.endswith("\n"):
                sys.stdout.write("\n")
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            _quiet_stdout()
        return
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)


def _analyze_any(args: Any, params: Any, analyze: Any) -> dict[str, Any]:
    """Files through ``analyze``; one ``clickhouse://`` / ``chdb://`` URL in the cluster; one
    fsspec URL (``s3://bucket/prefix``) as awss3exporter partitions (docs/clickhouse.md)."""
    from inferaudit_analyzer.engines import BadClickHouseURL

    urls = [p for p in args.paths if "://" in p]
    if urls:
        if len(args.paths) != 1:
            raise BadClickHouseURL(f"{urls[0]}: a URL source must be the only input")
        if urls[0].startswith(("clickhouse://", "chdb://")):
            from inferaudit_analyzer.engines.clickhouse_analyze import analyze_clickhouse

            return analyze_clickhouse(urls[0], params, since_ns=args.since,
                                      until_ns=args.until)
        from inferaudit_analyzer.sources.s3_partitions import analyze_partitions

        return analyze_partitions(urls[0], params, since_ns=args.since, until_ns=args.until)
    if args.since is not None or args.until is not None:
        raise BadClickHouseURL("--since/--until apply to a clickhouse:// or object-store URL")
    return analyze(args.paths, params)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _pipe_safe_console() -> Any:
    """A rich Console that, when the reader goes away (``| head``), stops quietly: exit 0,
    as for the JSON output; rich's own default raises ``SystemExit(1)``."""
    from rich.console import Console

    class PipeSafeConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            _quiet_stdout()

    return PipeSafeConsole()


def internal_error(prog: str, exc: BaseException) -> int:
    """One line on stderr (the traceback with ``INFERAUDIT_DEBUG=1``); the internal-error code."""
    if isinstance(exc, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERNAL
    if isinstance(exc, ImportError) and not (exc.name or "").startswith("inferaudit"):
        # a light install (the SDK core alone) meeting the analyzer's libraries: the user's
        # install to complete, not a bug of ours
        print(f"{prog}: needs an optional part that is not installed ({exc}); from a clone: "
              "pip install -e '.[analyzer]'", file=sys.stderr)
        return EXIT_INTERNAL
    if os.environ.get("INFERAUDIT_DEBUG"):
        traceback.print_exc()
    print(f"{prog}: internal error: {type(exc).__name__}: {exc} "
          "(set INFERAUDIT_DEBUG=1 for the traceback)", file=sys.stderr)
    return EXIT_INTERNAL


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None
               ) -> argparse.Namespace | int:
    """Parse ``argv`` (default ``sys.argv[1:]``); a bad argument prints the reason and usage
    and gives ``EXIT_UNUSABLE``, ``--help`` gives its exit code: an int means return it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return parser.parse_args(argv)
    except _ArgError as exc:
        print(f"{parser.prog}: {exc}\n\n{parser.format_usage()}", file=sys.stderr)
        return EXIT_UNUSABLE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)


def analyze_main(argv: list[str] | None = None) -> int:
    """Entry of ``inferaudit analyze``; returns the exit code."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    problem = unwritable(args.out, "--out")
    if problem:
        print(f"inferaudit analyze: {problem}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        from inferaudit_analyzer.analyze import AnalyzeParams, UnusableInput, analyze
        from inferaudit_analyzer.cost import PriceFileError
        from inferaudit_analyzer.engines import BadClickHouseURL, SourceUnavailable

        unusable: tuple[type[BaseException], ...] = (UnusableInput, PriceFileError,
                                                     BadClickHouseURL, SourceUnavailable)
        show_progress = sys.stderr.isatty() and (args.format == "text" or args.out is not None)
        try:
            if args.price_file is not None:
                from inferaudit_analyzer.cost import load_price_table

                load_price_table(args.price_file)  # fail early, before a long read
            with _progress(show_progress) as cb:
                params = AnalyzeParams(
                    bucket_s=args.bucket_s, price_per_hour=args.price_per_hour,
                    price_file=args.price_file, gpu_model=args.gpu_model,
                    cache=not args.no_cache, progress=cb)
                report = _analyze_any(args, params, analyze)
        except unusable as exc:
            print(f"inferaudit analyze: unusable input: {exc}", file=sys.stderr)
            return EXIT_UNUSABLE
        if args.format == "json":
            _write(json.dumps(report, indent=2, sort_keys=False), args.out)
        else:
            from rich.console import Console

            from inferaudit_analyzer.summary_terminal import render

            if args.out is None:
                render(report, _pipe_safe_console())
            else:
                with open(args.out, "w", encoding="utf-8") as f:
                    render(report, Console(file=f, width=120, force_terminal=False))
        return EXIT_OK
    except (KeyboardInterrupt, Exception) as exc:
        return internal_error("inferaudit analyze", exc)
