"""The embedded receiver as one object: config, the shared ingest path, start and clean stop.

Both receivers (OTLP/HTTP and OTLP/gRPC) call :meth:`Collector.ingest`, so admission, decoding,
partial success and forwarding behave the same whichever protocol a sender uses.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .auth import TokenAuth, check_bind
from .buffer import BoundedBuffer
from .decode import DecodeError, encode_metrics, encode_traces, parse_metrics, parse_traces
from .sinks import RotatingFileSink, UpstreamForwarder
from .writer import Writer

__all__ = ["Collector", "CollectorConfig", "IngestResult", "Outcome", "StartupError"]

_log = logging.getLogger(__name__)
MiB = 1024 * 1024


class StartupError(OSError):
    """The collector cannot start (directory not writable, port taken); one line for users."""


def host_port(host: str, port: int | None) -> str:
    """``host:port`` as a socket address is written (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class CollectorConfig:
    """Every knob of ``inferaudit collect``; the CLI builds one, tests build their own.

    Ports: ``0`` binds an ephemeral port; ``None`` turns that receiver off.
    """

    directory: Path
    host: str = "127.0.0.1"
    http_port: int | None = 4318
    grpc_port: int | None = 4317
    token: str | None = None
    allow_insecure_bind: bool = False
    max_body_bytes: int = 16 * MiB  # wire and decompressed; larger -> 413
    buffer_bytes: int = 64 * MiB  # queued lines awaiting the disk; full -> 429 + Retry-After
    retry_after_s: int = 1  # each refusal asks for a random delay in [n, 2n] s (no herd)
    flush_interval_s: float = 1.0  # fsync period = the most a power loss can lose
    max_file_bytes: int = 64 * MiB
    max_file_age_s: float = 3600.0
    compression: str | None = None  # None | "zstd"
    forward_endpoint: str | None = None
    forward_headers: tuple[tuple[str, str], ...] = ()
    grpc_workers: int = 4
    # Request bodies being read at once over all HTTP connections (default 4 x max_body_bytes,
    # at least 64 MiB); over it new bodies get 429. With the buffer bound this caps memory.
    http_body_budget_bytes: int | None = None
    idle_timeout_s: float = 120.0
    # The most one HTTP request may take to arrive, head and body, however it trickles in
    # (the idle timeout restarts with every byte; this does not). Over it -> 408, closed.
    http_request_timeout_s: float = 60.0


class Outcome(enum.Enum):
    OK = "ok"
    PARTIAL = "partial"  # some items rejected; the rest stored
    INVALID = "invalid"  # malformed payload -> 400 / INVALID_ARGUMENT
    FULL = "full"  # buffer full -> 429 / UNAVAILABLE, retry later
    UNAVAILABLE = "unavailable"  # disk failing or stopping -> 503 / UNAVAILABLE


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    accepted: int = 0
    rejected: int = 0
    message: str = ""


@dataclass
class Stats:
    """Counters since start (read by tests and the benchmark)."""

    requests: int = 0
    spans_accepted: int = 0
    spans_rejected: int = 0
    points_accepted: int = 0
    refused_full: int = 0
    invalid: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Collector:
    """Receivers + bounded buffer + writer (+ forwarder). ``start()`` binds; ``stop()`` flushes.

    Thread-safe: ``ingest`` runs on the HTTP event-loop thread and on gRPC worker threads.
    """

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.auth = TokenAuth(config.token)
        check_bind(config.host, auth_enabled=self.auth.enabled,
                   allow_insecure=config.allow_insecure_bind)
        self.stats = Stats()
        self.buffer = BoundedBuffer(config.buffer_bytes)
        directory = Path(config.directory)
        if directory.exists() and not directory.is_dir():
            raise StartupError(f"cannot write to {directory}: it exists and is not a directory")
        try:
            self.sink = RotatingFileSink(
                directory,
                max_file_bytes=config.max_file_bytes,
                max_file_age_s=config.max_file_age_s,
                compression=config.compression,
            )
            # Fail now, not by acknowledging the first request and then losing it.
            self.sink.probe()
        except OSError as exc:
            raise StartupError(f"cannot write to {directory}: {exc.strerror or exc}") from exc
        self.forwarder: UpstreamForwarder | None = None
        self.writer: Writer | None = None
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._http = None
        self._grpc = None
        self._stopped = False

    # -- the shared path ---------------------------------------------------------------------
    def ingest(self, signal: str, body: bytes, *, json_body: bool) -> IngestResult:
        """Admit, decode, queue for disk (and forwarding) one request body (decompressed)."""
        buf = self.buffer
        if buf.sink_error or buf.closed:
            return IngestResult(Outcome.UNAVAILABLE, message=buf.sink_error or "stopping")
        if not buf.has_room():
            with self.stats._lock:
                self.stats.refused_full += 1
            return IngestResult(Outcome.FULL, message="receiver buffer full; retry later")
        try:
            if signal == "traces":
                req = parse_traces(body, json_body=json_body)
                enc = encode_traces(req, None if json_body else body)
            else:
                req = parse_metrics(body, json_body=json_body)
                enc = encode_metrics(req)
        except DecodeError as exc:
            with self.stats._lock:
                self.stats.invalid += 1
            return IngestResult(Outcome.INVALID, message=str(exc))
        if enc.line and not buf.put((signal, enc.line)):
            return IngestResult(Outcome.UNAVAILABLE, message="stopping")
        if self.forwarder is not None and enc.accepted:
            self.forwarder.offer(signal, req.SerializeToString() if json_body else body)
        with self.stats._lock:
            self.stats.requests += 1
            if signal == "traces":
                self.stats.spans_accepted += enc.accepted
                self.stats.spans_rejected += enc.rejected
            else:
                self.stats.points_accepted += enc.accepted
        if enc.rejected:
            return IngestResult(Outcome.PARTIAL, enc.accepted, enc.rejected, enc.error)
        return IngestResult(Outcome.OK, enc.accepted)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, *, http_sock: socket.socket | None = None) -> Collector:
        """Start the writer and bind the receivers; returns once they accept connections."""
        cfg = self.config
        self.writer = Writer(self.buffer, self.sink, flush_interval_s=cfg.flush_interval_s)
        if cfg.forward_endpoint:
            self.forwarder = UpstreamForwarder(
                cfg.forward_endpoint, headers=dict(cfg.forward_headers)
            )
        if cfg.http_port is not None or http_sock is not None:
            from .receiver_http import HttpReceiver

            self._loop = asyncio.new_event_loop()
            self._http = HttpReceiver(self, max_body_bytes=cfg.max_body_bytes,
                                      idle_timeout_s=cfg.idle_timeout_s,
                                      body_budget_bytes=cfg.http_body_budget_bytes,
                                      request_timeout_s=cfg.http_request_timeout_s)
            ready = threading.Event()
            errors: list[BaseException] = []

            def run() -> None:
                assert self._loop is not None
                asyncio.set_event_loop(self._loop)
                try:
                    self.http_port = self._loop.run_until_complete(
                        self._http.start(cfg.host, cfg.http_port or 0, sock=http_sock)
                    )
                except BaseException as exc:  # reported to start()'s caller below
                    errors.append(exc)
                    ready.set()
                    return
                ready.set()
                self._loop.run_forever()
                self._loop.run_until_complete(self._http.close())
                self._loop.close()

            self._loop_thread = threading.Thread(target=run, name="inferaudit-http", daemon=True)
            self._loop_thread.start()
            ready.wait()
            if errors:
                self.stop()
                exc = errors[0]
                if isinstance(exc, OSError):
                    where = "the given socket" if http_sock is not None else host_port(
                        cfg.host, cfg.http_port)
                    raise StartupError(
                        f"cannot bind OTLP/HTTP to {where}: {exc.strerror or exc}"
                    ) from exc
                raise exc
        if cfg.grpc_port is not None:
            from .receiver_grpc import GrpcReceiver

            self._grpc = GrpcReceiver(self, max_body_bytes=cfg.max_body_bytes,
                                      workers=cfg.grpc_workers)
            try:
                self.grpc_port = self._grpc.start(cfg.host, cfg.grpc_port)
            except (OSError, RuntimeError) as exc:  # grpcio raises RuntimeError on a taken port
                self.stop()
                raise StartupError(
                    f"cannot bind OTLP/gRPC to {host_port(cfg.host, cfg.grpc_port)}: address in "
                    "use or not available"
                ) from exc
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop receiving, then write, fsync and close everything acknowledged. Idempotent.

        Returns True when the writer finished within ``timeout_s``.
        """
        if self._stopped:
            return True
        self._stopped = True
        if self._grpc is not None:
            self._grpc.stop(grace_s=min(5.0, timeout_s))
        if self._loop is not None and self._loop_thread is not None:
            if self._loop.is_running():
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout_s)
        ok = True
        if self.writer is not None:
            ok = self.writer.stop(timeout_s)
        if self.forwarder is not None:
            self.forwarder.close()
        return ok

    def counts(self) -> dict[str, int]:
        """What this process accepted, wrote, lost and forwarded: the stop line's numbers, in
        a form a ``--workers`` child hands to its parent."""
        st, w, fwd = self.stats, self.writer, self.forwarder
        return {
            "spans": st.spans_accepted,
            "points": st.points_accepted,
            "written": w.lines_written if w is not None else 0,
            "bytes": w.bytes_written if w is not None else 0,
            "lost": w.lines_lost if w is not None else 0,
            "failed": int(bool(w is not None and w.failed)),
            "forwarded": fwd.sent if fwd is not None else 0,
            "forward_dropped": fwd.dropped if fwd is not None else 0,
        }

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
