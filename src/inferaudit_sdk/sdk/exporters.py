"""The local file sink: OTLP/JSON lines, exactly as the OpenTelemetry Collector ``file`` exporter.

One export call becomes one line (an ``ExportTraceServiceRequest`` or
``ExportMetricsServiceRequest``), written with a single unbuffered ``os.write`` loop on a file
opened for appending. A failed write is cut back to the last whole line, so a reader never finds
a broken line followed by good ones; a crash can at most leave the last line short. Files are
``<dir>/traces-<UTC yyyymmddThhmmss>-<pid>-<seq>.jsonl`` (``metrics-`` for metrics), rotated
when the next line would push one past ``max_bytes``, fsynced on rotation, force_flush and
shutdown. Thread-safe: one lock per file.

Also here: choosing exporters by name (``file``, ``otlp``, ``console``, ``none``) from
``AuditConfig.exporters`` / ``OTEL_*_EXPORTER`` and the OTLP protocol from
``OTEL_EXPORTER_OTLP_*PROTOCOL``, and the export timeout from ``OTEL_EXPORTER_OTLP_*TIMEOUT``
in the spec's milliseconds; the OTLP exporters read their endpoint, headers and TLS settings
from the standard environment themselves.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from inferaudit_sdk._guard import swallow
from inferaudit_sdk.config import AuditConfig
from inferaudit_sdk.sdk import otlp_json, otlp_json_text

_logger = logging.getLogger("inferaudit_sdk")


_writers: weakref.WeakSet[RotatingLineWriter] = weakref.WeakSet()


def _reset_writers_after_fork() -> None:
    for w in list(_writers):
        w._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_writers_after_fork)


class RotatingLineWriter:
    """Appends whole lines to ``<directory>/<prefix>-<UTC time>-<pid>-<seq>.jsonl`` files.

    Args:
        directory: created on first write (not before: configuring must not touch the disk).
        prefix: ``"traces"`` or ``"metrics"``.
        max_bytes: rotate before a line would make the file larger than this; a single line
            larger than ``max_bytes`` still goes into a file of its own.
    """

    def __init__(self, directory: str | os.PathLike[str], prefix: str, max_bytes: int) -> None:
        self.directory = Path(directory)
        self._prefix = prefix
        self._max_bytes = max(1, int(max_bytes))
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._seq = 0
        self._closed = False
        self._pid = os.getpid()
        self.files: list[Path] = []  # every file this writer opened, in order
        _writers.add(self)

    @property
    def path(self) -> Path | None:
        """The file being written now (None before the first line)."""
        return self._path

    def write_line(self, line: bytes) -> None:
        """Append one newline-terminated line; raises ``OSError`` (file left at a line end)."""
        with self._lock:
            if self._closed:
                raise OSError("writer is closed")
            if self._pid != os.getpid():
                # A forked worker (gunicorn & co.) writes its own files, named for its pid;
                # the parent keeps its file and descriptor.
                if self._fd is not None:
                    os.close(self._fd)
                self._fd, self._path, self._size, self._seq = None, None, 0, 0
                self._pid = os.getpid()
                self.files = []
            if self._fd is not None and self._size and self._size + len(line) > self._max_bytes:
                self._close_current()
            if self._fd is None:
                self._open_next()
            assert self._fd is not None
            start = self._size
            try:
                view = memoryview(line)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
            except OSError:
                # Cut back to the last complete line so later lines are not glued to a half one.
                try:
                    os.ftruncate(self._fd, start)
                except OSError:
                    self._close_current()  # cannot repair: start a new file next time
                raise
            self._size = start + len(line)

    def flush(self) -> bool:
        """fsync the current file (the data is already in the kernel: writes are unbuffered);
        False if that failed, as an exporter's ``force_flush`` reports it."""
        with self._lock:
            try:
                if self._fd is not None:
                    os.fsync(self._fd)
            except OSError:
                return False
        return True

    def close(self) -> None:
        """Close for good; a failure is logged, not raised (exporter shutdown must not)."""
        with self._lock:
            self._closed = True
            try:
                self._close_current()
            except OSError:
                _logger.warning("inferaudit: file sink could not close %s", self._path)

    def _after_fork_in_child(self) -> None:
        """A fork while the parent's export thread held the lock (mid-write) left it held in
        the child, where no thread will release it: the child's first write, and its exit
        (``close``), waited forever and its spans were lost. A fresh lock; ``write_line``'s pid
        check then starts the child's own file."""
        self._lock = threading.Lock()

    def _open_next(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        pid = os.getpid()
        while True:
            self._seq += 1
            path = self.directory / f"{self._prefix}-{stamp}-{pid}-{self._seq}.jsonl"
            try:
                # O_EXCL: two writers (or a re-configured SDK) in one second never share a file.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            except FileExistsError:
                continue
            break
        self._fd, self._path, self._size = fd, path, 0
        self.files.append(path)

    def _close_current(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


class _WriteFailures:
    """How a file sink reports failing writes: one warning line when writing stops working
    (no traceback: an unwritable directory or a full disk fails every batch, and a server's
    log must not fill with the same stack), one line when it works again. The batches lost
    in between are counted by the processor as ``export_failed``."""

    __slots__ = ("counted", "failed", "what", "writer")

    def __init__(self, writer: RotatingLineWriter, what: str, counted: str = "") -> None:
        self.writer, self.what, self.counted, self.failed = writer, what, counted, 0

    def failure(self, exc: BaseException) -> None:
        self.failed += 1
        if self.failed == 1:
            _logger.warning(
                "inferaudit: the file sink cannot write %s to %s (%s: %s); they are dropped%s "
                "until writing works again", self.what, self.writer.directory,
                type(exc).__name__, exc, self.counted)

    def write(self, line: bytes) -> bool:
        """Append ``line``; False (reported as above) when the disk refused it."""
        try:
            self.writer.write_line(line)
        except OSError as exc:
            self.failure(exc)
            return False
        self.success()
        return True

    def success(self) -> None:
        if self.failed:
            _logger.warning("inferaudit: the file sink writes %s to %s again (%d exports were "
                            "lost)", self.what, self.writer.directory, self.failed)
            self.failed = 0


class FileSpanExporter(SpanExporter):
    """Span exporter writing one OTLP/JSON ``ExportTraceServiceRequest`` line per batch."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = 64 * 1024 * 1024):
        self.writer = RotatingLineWriter(directory, "traces", max_bytes)
        self._failures = _WriteFailures(
            self.writer, "spans", " and counted (inferaudit.sdk.spans.dropped, export_failed)")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            line = otlp_json_text.encode_spans_line(spans)
        except Exception as exc:  # ours: counted as a fault, and the batch is lost
            swallow("file_sink.encode", exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if self._failures.write(line) else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.writer.flush()

    def shutdown(self) -> None:
        self.writer.close()


class FileMetricExporter(MetricExporter):
    """Metric exporter writing one OTLP/JSON ``ExportMetricsServiceRequest`` line per collection.

    Cumulative temporality (the SDK default), so the last line of a file holds the totals; the
    analyzer reads the coverage counters (``inferaudit.sdk.spans.*``) from it.
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = 64 * 1024 * 1024):
        super().__init__(preferred_temporality=None, preferred_aggregation=None)
        self.writer = RotatingLineWriter(directory, "metrics", max_bytes)
        self._failures = _WriteFailures(self.writer, "metrics")

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            request = otlp_json.encode_metrics_request(metrics_data)
            if not request.get("resourceMetrics"):
                return MetricExportResult.SUCCESS
            line = otlp_json.dumps_line(request)
        except Exception as exc:
            swallow("file_sink.encode", exc)
            return MetricExportResult.FAILURE
        return (MetricExportResult.SUCCESS if self._failures.write(line)
                else MetricExportResult.FAILURE)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.writer.flush()

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.writer.close()


# ---------------------------------------------------------------------------------------------
# Choosing exporters by name (from AuditConfig.exporters / OTEL_*_EXPORTER), warn + default
# ---------------------------------------------------------------------------------------------
EXPORTER_FILE = "file"
EXPORTER_OTLP = "otlp"
EXPORTER_CONSOLE = "console"
EXPORTER_NONE = "none"
_KNOWN_EXPORTERS = (EXPORTER_FILE, EXPORTER_OTLP, EXPORTER_CONSOLE, EXPORTER_NONE)
_PROTOCOLS = ("http/protobuf", "grpc")


_warned: set[tuple[str, str]] = set()


def _warn_once(variable: str, value: str, message: str, *args: Any) -> None:
    """One warning per setting and value: traces and metrics read the same variables, and
    ``configure()`` may run again."""
    key = (variable, value)
    if key not in _warned:
        _warned.add(key)
        _logger.warning(message, *args)


def _parse_exporter_list(raw: Sequence[str] | str, source: str) -> tuple[str, ...] | None:
    """Known names in order, without duplicates; None when nothing usable was given."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    names: list[str] = []
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        if name not in _KNOWN_EXPORTERS:
            _warn_once(source, name,
                       "inferaudit: unknown exporter %r in %s (known: %s); ignoring it",
                       name, source, ", ".join(_KNOWN_EXPORTERS))
            continue
        if name not in names:
            names.append(name)
    if not names:
        return None
    if EXPORTER_NONE in names:
        return ()
    return tuple(names)


def resolve_exporters(config: AuditConfig, signal: str) -> tuple[tuple[str, ...], str]:
    """(exporter names for ``signal`` "traces"/"metrics", where they came from: "config",
    "env", "endpoint" (an OTLP endpoint set, no exporter named) or "default"). Precedence:
    ``AuditConfig.exporters`` (``INFERAUDIT_EXPORTERS``), then ``OTEL_<SIGNAL>_EXPORTER``, then
    ``otlp`` when an ``OTEL_EXPORTER_OTLP_[<SIGNAL>_]ENDPOINT`` is set, then (metrics only) the
    traces choice, then ``file``."""
    if config.exporters:
        names = _parse_exporter_list(config.exporters, "INFERAUDIT_EXPORTERS")
        if names is not None:
            return names, "config"
    env_name = "OTEL_TRACES_EXPORTER" if signal == "traces" else "OTEL_METRICS_EXPORTER"
    raw = os.environ.get(env_name)
    if raw:
        names = _parse_exporter_list(raw, env_name)
        if names is not None:
            return names, "env"
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
            f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"):
        # an OTLP endpoint given without an exporter choice: OpenTelemetry's own default
        # (otlp) is clearly meant; files would silently miss the collector
        return (EXPORTER_OTLP,), "endpoint"
    if signal == "metrics":
        return resolve_exporters(config, "traces")[0], "default"
    return (EXPORTER_FILE,), "default"


def resolve_protocol(signal: str) -> str:
    """``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``, else
    ``http/protobuf`` (the spec default). ``http/json`` is not offered by the Python exporters:
    warn and use ``http/protobuf``."""
    for name in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        raw = os.environ.get(name, "").strip().lower()
        if not raw:
            continue
        if raw in _PROTOCOLS:
            return raw
        _warn_once(name, raw, "inferaudit: %s=%r is not supported (use http/protobuf or "
                   "grpc); using http/protobuf", name, raw)
        return "http/protobuf"
    return "http/protobuf"


DEFAULT_OTLP_TIMEOUT_MS = 10_000.0  # the spec's default


def resolve_timeout_s(signal: str) -> float:
    """``OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT``, else ``OTEL_EXPORTER_OTLP_TIMEOUT``, read in
    milliseconds as the specification defines them (default 10000), as the seconds the Python
    exporters' constructors take. Left to themselves, the installed exporters read these
    variables in seconds (opentelemetry-python #4044): the standard ``10000`` would mean almost
    three hours of retries per export, with the export thread blocked and spans dropped
    behind it. A bad value warns and takes the default."""
    for name in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        try:
            ms = float(raw)
        except ValueError:
            ms = math.nan
        if not (0 < ms < math.inf):
            _warn_once(name, raw, "inferaudit: %s=%r is not a positive number of "
                       "milliseconds; using %d", name, raw, DEFAULT_OTLP_TIMEOUT_MS)
            break
        if ms < 1000:
            _warn_once(name, raw, "inferaudit: %s=%s is read in milliseconds, as the "
                       "OpenTelemetry specification says (%.3f s per export)",
                       name, raw, ms / 1000)
        return ms / 1000
    return DEFAULT_OTLP_TIMEOUT_MS / 1000


def _otlp_span_exporter() -> SpanExporter:
    timeout_s = resolve_timeout_s("traces")
    if resolve_protocol("traces") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(timeout=timeout_s)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    return HTTPSpanExporter(timeout=timeout_s)


def _otlp_metric_exporter() -> MetricExporter:
    timeout_s = resolve_timeout_s("metrics")
    if resolve_protocol("metrics") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(timeout=timeout_s)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HTTPMetricExporter,
    )

    return HTTPMetricExporter(timeout=timeout_s)


def make_span_exporter(name: str, config: AuditConfig) -> SpanExporter | None:
    """The span exporter called ``name`` ("file", "otlp", "console"), or None (after a
    warning) when it cannot be built; OTLP settings come from the standard environment."""
    try:
        if name == EXPORTER_FILE:
            return FileSpanExporter(config.trace_dir, config.file_max_bytes)
        if name == EXPORTER_OTLP:
            return _otlp_span_exporter()
        if name == EXPORTER_CONSOLE:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter(out=sys.stdout)  # stdout as of configure()
    except Exception as exc:
        _logger.warning(
            "inferaudit: cannot build the %s span exporter (%s); skipping it", name, exc
        )
    return None


def make_metric_exporter(name: str, config: AuditConfig) -> MetricExporter | None:
    """The metric exporter called ``name``, or None (after a warning)."""
    try:
        if name == EXPORTER_FILE:
            return FileMetricExporter(config.trace_dir, config.file_max_bytes)
        if name == EXPORTER_OTLP:
            return _otlp_metric_exporter()
        if name == EXPORTER_CONSOLE:
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            return ConsoleMetricExporter(out=sys.stdout)
    except Exception as exc:
        _logger.warning(
            "inferaudit: cannot build the %s metric exporter (%s); skipping it", name, exc
        )
    return None


__all__ = [
    "EXPORTER_CONSOLE",
    "EXPORTER_FILE",
    "EXPORTER_NONE",
    "EXPORTER_OTLP",
    "FileMetricExporter",
    "FileSpanExporter",
    "RotatingLineWriter",
    "make_metric_exporter",
    "make_span_exporter",
    "resolve_exporters",
    "resolve_protocol",
]
