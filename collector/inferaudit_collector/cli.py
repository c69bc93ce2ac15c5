"""``inferaudit collect``: run the embedded OTLP receiver until SIGINT/SIGTERM.

Example::

    inferaudit collect --dir ./traces            # OTLP/HTTP on 127.0.0.1:4318, gRPC on :4317
    inferaudit collect --dir ./traces --compress zstd --forward http://tempo:4318

SIGINT/SIGTERM stop the receivers, then write, fsync and close everything acknowledged before
the process exits 0. Exit codes: 0 clean stop, 1 the writer could not finish, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from ._prefork import Worker, fork_http_workers, listen_socket, stop_workers
from .auth import TOKEN_ENV, BindRefused
from .service import Collector, CollectorConfig, MiB, StartupError, host_port

__all__ = ["build_parser", "config_from_args", "main"]


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _int_in(low: int, high: int | None, what: str, rule: str):
    """An argparse type for an integer in ``[low, high]`` (``high`` None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{rule}, got {value}")
        return value

    return parse


_port = _int_in(0, 65535, "a port number", "port must be 0-65535")
_positive_int = _int_in(1, None, "an integer", "must be at least 1")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _http_url(text: str) -> str:
    url = urllib.parse.urlsplit(text)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise argparse.ArgumentTypeError(f"wants http(s)://host[:port], got {text!r}")
    try:
        url.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return text


def _log_level(text: str) -> str:
    if text.upper() not in _LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(_LOG_LEVELS)}, got {text!r}")
    return text.upper()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inferaudit collect",
        description="Receive OTLP traces/metrics and write them as OTLP JSON lines for the "
        "analyzer (the same files the OpenTelemetry Collector's file exporter writes).",
    )
    p.add_argument("--dir", type=Path, default=Path("inferaudit-traces"),
                   help="output directory (default ./inferaudit-traces)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--http-port", type=_port, default=4318, help="OTLP/HTTP port, 0 = any free")
    p.add_argument("--grpc-port", type=_port, default=4317, help="OTLP/gRPC port, 0 = any free")
    p.add_argument("--no-http", action="store_true", help="do not start the OTLP/HTTP receiver")
    p.add_argument("--no-grpc", action="store_true", help="do not start the OTLP/gRPC receiver")
    p.add_argument("--token", default=None,
                   help=f"require 'Authorization: Bearer TOKEN' (default: ${TOKEN_ENV})")
    p.add_argument("--allow-insecure-bind", action="store_true",
                   help="allow a non-loopback bind without a token")
    p.add_argument("--max-body-bytes", type=_positive_int, default=16 * MiB,
                   help="largest request body, before and after decompression (413 above)")
    p.add_argument("--buffer-bytes", type=_positive_int, default=64 * MiB,
                   help="bound on queued, not yet written data (429 + Retry-After above)")
    p.add_argument("--retry-after-s", type=int, default=1,
                   help="least retry delay sent when full (Retry-After / RetryInfo): each "
                   "refusal asks for a random delay between it and twice it (default 1)")
    p.add_argument("--request-timeout-s", type=_positive_float, default=60.0,
                   help="the most one OTLP/HTTP request may take to arrive, head and body, "
                   "however slowly it trickles (408 and closed after it; default 60)")
    p.add_argument("--flush-interval-s", type=_positive_float, default=1.0,
                   help="fsync period: the most an OS crash or power loss can lose (default 1)")
    p.add_argument("--max-file-bytes", type=_positive_int, default=64 * MiB,
                   help="rotate at this size")
    p.add_argument("--max-file-age-s", type=_positive_float, default=3600.0,
                   help="rotate at this age")
    p.add_argument("--compress", choices=("none", "zstd"), default="none",
                   help="compress rotated files (.jsonl.zst)")
    p.add_argument("--forward", type=_http_url, default=None, metavar="URL",
                   help="also send everything to this OTLP/HTTP endpoint, e.g. http://tempo:4318")
    p.add_argument("--forward-header", action="append", default=[], metavar="KEY=VALUE",
                   help="header for the upstream endpoint (repeatable)")
    p.add_argument("--ready-file", type=Path, default=None,
                   help="write {'http': port, 'grpc': port, 'pid': pid} here once listening")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="processes serving OTLP/HTTP on one port (one core each; default 1)")
    p.add_argument("--log-level", type=_log_level, default="INFO",
                   help="DEBUG, INFO (default), WARNING, ERROR or CRITICAL")
    return p


def config_from_args(args: argparse.Namespace) -> CollectorConfig:
    headers = []
    for item in args.forward_header:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--forward-header wants KEY=VALUE, got {item!r}")
        headers.append((key.strip(), value.strip()))
    return CollectorConfig(
        directory=args.dir,
        host=args.host,
        http_port=None if args.no_http else args.http_port,
        grpc_port=None if args.no_grpc else args.grpc_port,
        token=args.token or os.environ.get(TOKEN_ENV) or None,
        allow_insecure_bind=args.allow_insecure_bind,
        max_body_bytes=args.max_body_bytes,
        buffer_bytes=args.buffer_bytes,
        retry_after_s=args.retry_after_s,
        http_request_timeout_s=args.request_timeout_s,
        flush_interval_s=args.flush_interval_s,
        max_file_bytes=args.max_file_bytes,
        max_file_age_s=args.max_file_age_s,
        compression=None if args.compress == "none" else args.compress,
        forward_endpoint=args.forward,
        forward_headers=tuple(headers),
    )


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors argparse cannot see on one option alone (exit 2, one line)."""
    if args.no_http and args.no_grpc:
        parser.error("--no-http and --no-grpc together leave nothing to receive")
    if args.ready_file is not None and not args.ready_file.parent.is_dir():
        parser.error(f"--ready-file: directory {str(args.ready_file.parent)!r} does not exist")
    if args.retry_after_s < 0:
        parser.error(f"--retry-after-s must be 0 or more, got {args.retry_after_s}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``inferaudit collect``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    _check_args(parser, args)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(message)s")
    try:
        config = config_from_args(args)
        collector = Collector(config)
    except (BindRefused, ValueError, ImportError, OSError) as exc:
        print(f"inferaudit collect: {exc}", file=sys.stderr)
        return 2
    sock = None
    workers: list[Worker] = []
    if args.workers > 1 and config.http_port is not None:
        try:
            sock = listen_socket(config.host, config.http_port)
        except OSError as exc:
            print(f"inferaudit collect: cannot bind OTLP/HTTP to {config.host}:"
                  f"{config.http_port}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        workers = fork_http_workers(config, args.workers - 1, sock)

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    failed_start = ""
    try:
        try:
            collector.start(http_sock=sock)
        except StartupError as exc:
            failed_start = str(exc)
        except (OSError, RuntimeError, ValueError) as exc:
            failed_start = f"could not start: {exc}"
        if not failed_start:
            print(_start_line(collector), file=sys.stderr, flush=True)
            if args.ready_file is not None:
                failed_start = _write_ready_file(args.ready_file, collector)
        if not failed_start:
            while not stop.wait(0.5):
                pass
    finally:
        ok = stop_workers(workers) if workers else True
        ok = collector.stop() and ok
        for s, handler in previous.items():
            signal.signal(s, handler)
    if failed_start:
        print(f"inferaudit collect: {failed_start}", file=sys.stderr, flush=True)
        return 2
    print(_summary(collector, workers), file=sys.stderr, flush=True)
    return 0 if ok else 1


def _start_line(collector: Collector) -> str:
    """What listens where; a receiver turned off (``--no-http``/``--no-grpc``) is not named."""
    host = collector.config.host
    where = [f"{name} {host_port(host, port)}" for name, port in (
        ("OTLP/HTTP", collector.http_port), ("OTLP/gRPC", collector.grpc_port))
        if port is not None]
    token = " (token required)" if collector.auth.enabled else ""
    return (f"inferaudit collect: writing {collector.config.directory}; "
            f"{' '.join(where)}{token}")


def _write_ready_file(path: Path, collector: Collector) -> str:
    """Write the ready file atomically; returns an error line, or "" when written."""
    info = {"http": collector.http_port, "grpc": collector.grpc_port, "pid": os.getpid()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)
    except OSError as exc:
        return f"cannot write --ready-file {path}: {exc.strerror or exc}"
    return ""


def _summary(collector: Collector, workers: Sequence[Worker] = ()) -> str:
    """The stop line: what was accepted, what the writer really put on disk, what was not,
    over this process and every ``--workers`` child that reported."""
    total = collector.counts()
    reported = [w.report for w in workers if w.report is not None]
    for report in reported:
        for key in total:
            value = report.get(key, 0)
            total[key] += value if isinstance(value, int) else 0
    text = (
        f"inferaudit collect: stopped; accepted {total['spans']} spans, "
        f"{total['points']} points; wrote {total['written']} requests "
        f"({total['bytes']} bytes) to {collector.config.directory}"
    )
    if workers:
        text += f" (this process and {len(reported)} of {len(workers)} HTTP worker processes"
        missing = [str(w.pid) for w in workers if w.report is None]
        text += f"; no report from pid {', '.join(missing)})" if missing else ")"
    if total["lost"] or total["failed"]:
        text += (f"; {total['lost']} accepted requests could NOT be written "
                 "(disk failing, see errors above)")
    fwd = collector.forwarder
    if fwd is not None:
        text += (f"; forwarded {total['forwarded']} requests to {fwd.endpoint}, dropped "
                 f"{total['forward_dropped']}")
    return text


if __name__ == "__main__":
    sys.exit(main())
