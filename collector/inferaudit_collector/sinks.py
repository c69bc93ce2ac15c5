"""Where accepted lines go: rotating OTLP-JSON-lines files, and optionally an upstream endpoint.

Files follow docs/data-model.md: ``<dir>/traces-<UTC yyyymmddThhmmss>-<pid>-<seq>.jsonl`` and
``metrics-...``, one request per line, so the analyzer reads this receiver's output and the
Collector's ``file`` exporter output the same way. A file is written under its final name (a
crash leaves a readable prefix, never a hidden temp file); when it rotates (size or age) it is
fsynced and, with ``compression="zstd"``, replaced by ``<name>.jsonl.zst`` in a background
thread.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

__all__ = ["RotatingFileSink", "Sink", "UpstreamForwarder"]

_log = logging.getLogger(__name__)
SIGNALS = ("traces", "metrics")


class Sink(Protocol):
    """What the writer thread drives. Called from that one thread only."""

    def write(self, signal: str, line: bytes) -> None: ...
    def flush(self, *, fsync: bool) -> None: ...
    def close(self) -> None: ...


@dataclass
class _Open:
    path: Path
    fh: BinaryIO
    opened_at_s: float
    size_bytes: int = 0


@dataclass
class RotatingFileSink:
    """One open file per signal, rotated by size and age. Not thread-safe (one writer thread).

    Args:
        directory: created if missing.
        max_file_bytes: rotate before a write would take a non-empty file past this size.
        max_file_age_s: rotate a file this old at the next write or flush.
        compression: ``None`` or ``"zstd"`` (rotated files become ``.jsonl.zst``).
    """

    directory: Path
    max_file_bytes: int = 64 * 1024 * 1024
    max_file_age_s: float = 3600.0
    compression: str | None = None
    zstd_level: int = 3
    _open: dict[str, _Open] = field(default_factory=dict)
    _seq: int = 0
    _compress_q: deque[Path] = field(default_factory=deque)
    _compress_cv: threading.Condition = field(default_factory=threading.Condition)
    _compressor: threading.Thread | None = None
    _closing: bool = False

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.compression not in (None, "zstd"):
            raise ValueError(f"compression must be None or 'zstd', got {self.compression!r}")
        if self.compression == "zstd":
            import zstandard  # noqa: F401  (fail at start, not at the first rotation)
        # The compressor thread starts at the first rotation, not here: `--workers` forks after
        # building the parent's sink, and a process must not fork while it runs threads.

    def _new_file(self, signal: str) -> _Open:
        self._seq += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.directory / f"{signal}-{stamp}-{os.getpid()}-{self._seq:06d}.jsonl"
        fh = open(path, "ab", buffering=1024 * 1024)  # noqa: SIM115 (closed on rotate/close)
        _fsync_dir(self.directory)  # the new name itself survives a power loss
        return _Open(path, fh, time.monotonic())

    def write(self, signal: str, line: bytes) -> None:
        cur = self._open.get(signal)
        if cur is not None and cur.size_bytes and (
            cur.size_bytes + len(line) > self.max_file_bytes
            or time.monotonic() - cur.opened_at_s >= self.max_file_age_s
        ):
            self._rotate(signal)
            cur = None
        if cur is None:
            cur = self._open[signal] = self._new_file(signal)
        cur.fh.write(line)
        cur.size_bytes += len(line)

    def flush(self, *, fsync: bool) -> None:
        """Push buffered lines to the OS; with ``fsync`` also to the disk. Rotates old files."""
        now = time.monotonic()
        for signal, cur in list(self._open.items()):
            if cur.size_bytes and now - cur.opened_at_s >= self.max_file_age_s:
                self._rotate(signal)
                continue
            cur.fh.flush()
            if fsync:
                os.fsync(cur.fh.fileno())

    def _rotate(self, signal: str) -> None:
        cur = self._open.pop(signal)
        cur.fh.flush()
        os.fsync(cur.fh.fileno())
        cur.fh.close()
        if self.compression == "zstd":
            if self._compressor is None:
                self._compressor = threading.Thread(
                    target=self._compress_loop, name="inferaudit-zstd", daemon=True
                )
                self._compressor.start()
            with self._compress_cv:
                self._compress_q.append(cur.path)
                self._compress_cv.notify()

    def close(self) -> None:
        """Flush, fsync and close every file; finish pending compressions."""
        for signal in list(self._open):
            self._rotate(signal)
        if self._compressor is not None:
            with self._compress_cv:
                self._closing = True
                self._compress_cv.notify()
            self._compressor.join()
            self._compressor = None
        _fsync_dir(self.directory)

    def _compress_loop(self) -> None:
        while True:
            with self._compress_cv:
                while not self._compress_q and not self._closing:
                    self._compress_cv.wait()
                if not self._compress_q:
                    return
                path = self._compress_q.popleft()
            try:
                compress_file_zstd(path, level=self.zstd_level)
            except OSError:
                # The plain file stays: readable by the analyzer, only larger.
                _log.exception("inferaudit collect: could not compress %s", path)


def compress_file_zstd(path: Path, *, level: int = 3) -> Path:
    """``x.jsonl`` -> ``x.jsonl.zst`` (fsynced), then remove ``x.jsonl``. Returns the new path."""
    import zstandard

    dest = path.with_name(path.name + ".zst")
    tmp = path.with_name(path.name + ".zst.tmp")
    cctx = zstandard.ZstdCompressor(level=level)
    with open(path, "rb") as src, open(tmp, "wb") as out:
        cctx.copy_stream(src, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest)
    _fsync_dir(path.parent)
    path.unlink()
    _fsync_dir(path.parent)
    return dest


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
            os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------
# Upstream forwarding (best effort: the disk copy is the durable one)
# ------------------------------------------------------------------------------------------
_RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


class UpstreamForwarder:
    """Re-sends each accepted request, as OTLP/HTTP protobuf, to ``endpoint`` (e.g. Tempo).

    Runs its own thread with a bounded queue so a slow or dead backend never slows the
    receiver: when the queue is full, or a request still fails after ``max_attempts``, that
    request is dropped from forwarding and counted in ``dropped`` (it is still on disk).

    Args:
        endpoint: base URL such as ``http://tempo:4318``; ``/v1/traces`` etc. are appended.
        headers: extra headers, e.g. ``{"x-honeycomb-team": "..."}``.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float = 10.0,
        max_queue_bytes: int = 32 * 1024 * 1024,
        max_attempts: int = 5,
    ) -> None:
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"forward endpoint must be http(s)://host[:port], got {endpoint!r}")
        self._url = url
        self._base_path = url.path.rstrip("/")
        self._headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        self._timeout_s = timeout_s
        self._max_queue_bytes = max_queue_bytes
        self._max_attempts = max_attempts
        self._q: deque[tuple[str, bytes]] = deque()
        self._q_bytes = 0
        self._cv = threading.Condition()
        self._stopping = False
        self._conn: http.client.HTTPConnection | None = None
        self.sent = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="inferaudit-forward", daemon=True)
        self._thread.start()

    def offer(self, signal: str, body: bytes) -> None:
        """Queue a serialized ``Export*ServiceRequest``; never blocks."""
        with self._cv:
            if self._stopping or self._q_bytes + len(body) > self._max_queue_bytes:
                self.dropped += 1
                return
            self._q.append((signal, body))
            self._q_bytes += len(body)
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._q and not self._stopping:
                    self._cv.wait()
                if not self._q:
                    return
                signal, body = self._q.popleft()
                self._q_bytes -= len(body)
            if self._send(signal, body):
                self.sent += 1
            else:
                self.dropped += 1

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._url.scheme == "https" else (
                http.client.HTTPConnection
            )
            self._conn = cls(self._url.hostname or "", self._url.port, timeout=self._timeout_s)
        return self._conn

    def _send(self, signal: str, body: bytes) -> bool:
        delay_s = 0.5
        for attempt in range(self._max_attempts):
            retry_after_s = delay_s
            try:
                conn = self._connect()
                conn.request("POST", f"{self._base_path}/v1/{signal}", body, self._headers)
                resp = conn.getresponse()
                resp.read()
                if 200 <= resp.status < 300:
                    return True
                if resp.status not in _RETRYABLE_STATUS:
                    _log.warning("inferaudit collect: upstream answered %s; dropped", resp.status)
                    return False
                with contextlib.suppress(TypeError, ValueError):
                    retry_after_s = float(resp.getheader("Retry-After") or delay_s)
            except (OSError, http.client.HTTPException):
                self._reset()
            if attempt + 1 < self._max_attempts and not self._sleep(min(retry_after_s, 30.0)):
                return False
            delay_s *= 2
        return False

    def _sleep(self, seconds: float) -> bool:
        """Wait between retries; False when asked to stop (no retries during shutdown)."""
        with self._cv:
            return not self._cv.wait_for(lambda: self._stopping, timeout=seconds)

    def _reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (one attempt each, within ``timeout_s``), then stop."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout_s)
        self._reset()
