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
from typing import Protocol

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
    """One output file. ``pending`` holds accepted bytes not yet handed to the OS: they leave
    it only once ``os.write`` took them, so a failing disk loses nothing and a retry resumes
    at the exact byte where the last attempt stopped (no line is ever written twice)."""

    path: Path
    fd: int
    opened_at_s: float
    size_bytes: int = 0  # accepted for this file, on disk or pending
    pending: bytearray = field(default_factory=bytearray)
    partial_on_disk_bytes: int = 0  # bytes of an unfinished line already on disk


_OS_WRITE_BYTES = 1024 * 1024  # hand pending bytes to the OS once this much has accumulated
# The two calls that meet a full or failing disk (module names so tests can inject faults).
_write_fd = os.write
_fsync_fd = os.fsync


@dataclass
class RotatingFileSink:
    """One open file per signal, rotated by size and age. Not thread-safe (one writer thread).

    ``write`` either takes a whole line (returns) or takes none of it (raises ``OSError``), so
    the writer can retry a failed line without duplicating it. A file leaves ``_open`` only
    after its bytes are written and fsynced; while that fails it stays, with its bytes.

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

    def probe(self) -> None:
        """Create and remove a file in the directory: an unwritable directory fails at start
        (``OSError``), not at the first acknowledged request."""
        probe = self.directory / f".inferaudit-probe-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"\n")
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                probe.unlink()

    def _new_file(self, signal: str) -> _Open:
        self._seq += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.directory / f"{signal}-{stamp}-{os.getpid()}-{self._seq:06d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _fsync_dir(self.directory)  # the new name itself survives a power loss
        return _Open(path, fd, time.monotonic())

    def write(self, signal: str, line: bytes) -> None:
        cur = self._open.get(signal)
        if cur is not None and cur.size_bytes and (
            cur.size_bytes + len(line) > self.max_file_bytes
            or time.monotonic() - cur.opened_at_s >= self.max_file_age_s
        ):
            self._rotate(signal)  # raises with the file kept: this line is not taken
            cur = None
        if cur is None:
            cur = self._open[signal] = self._new_file(signal)
        if cur.pending and len(cur.pending) + len(line) > _OS_WRITE_BYTES:
            _drain(cur)  # raises before the line is taken
        cur.pending += line
        cur.size_bytes += len(line)

    def flush(self, *, fsync: bool) -> None:
        """Push pending lines to the OS; with ``fsync`` also to the disk. Rotates old files.

        Tries every file; raises the first ``OSError`` (the failed files keep their bytes)."""
        now = time.monotonic()
        first: OSError | None = None
        for signal, cur in list(self._open.items()):
            try:
                if cur.size_bytes and now - cur.opened_at_s >= self.max_file_age_s:
                    self._rotate(signal)
                    continue
                _drain(cur)
                if fsync:
                    _fsync_fd(cur.fd)
            except OSError as exc:
                first = first or exc
        if first is not None:
            raise first

    def _rotate(self, signal: str) -> None:
        cur = self._open[signal]
        _drain(cur)
        _fsync_fd(cur.fd)
        del self._open[signal]  # only now: every byte of it is on disk
        try:
            os.close(cur.fd)
        except OSError:
            _log.warning("inferaudit collect: closing %s failed (already fsynced)", cur.path)
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
        """Flush, fsync and close every file; finish pending compressions.

        Raises the first ``OSError``; the files that failed stay open with their bytes, so
        calling ``close`` again retries them."""
        first: OSError | None = None
        for signal in list(self._open):
            try:
                self._rotate(signal)
            except OSError as exc:
                first = first or exc
        if first is not None:
            raise first
        if self._compressor is not None:
            with self._compress_cv:
                self._closing = True
                self._compress_cv.notify()
            self._compressor.join()
            self._compressor = None
        _fsync_dir(self.directory)

    def abandon(self) -> tuple[int, int]:
        """Give up on files that cannot be written: cut each back to its last whole line and
        close it. Returns the accepted lines that did not reach the disk, and their bytes
        (what is still pending plus the cut-off start of a half-written line)."""
        lost = lost_bytes = 0
        for cur in self._open.values():
            lost += cur.pending.count(b"\n")
            lost_bytes += len(cur.pending) + cur.partial_on_disk_bytes
            with contextlib.suppress(OSError):
                if cur.partial_on_disk_bytes:  # never leave half a line for the analyzer
                    end = os.lseek(cur.fd, 0, os.SEEK_END)
                    os.ftruncate(cur.fd, end - cur.partial_on_disk_bytes)
            with contextlib.suppress(OSError):
                os.close(cur.fd)
        self._open.clear()
        return lost, lost_bytes

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


def _drain(cur: _Open) -> None:
    """Hand ``cur.pending`` to the OS; what ``os.write`` took leaves it, the rest stays."""
    while cur.pending:
        n = _write_fd(cur.fd, cur.pending)
        chunk_nl = cur.pending.rfind(b"\n", 0, n)
        if chunk_nl >= 0:
            cur.partial_on_disk_bytes = n - chunk_nl - 1
        else:
            cur.partial_on_disk_bytes += n
        del cur.pending[:n]


def compress_file_zstd(path: Path, *, level: int = 3) -> Path:
    """``x.jsonl`` -> ``x.jsonl.zst`` (fsynced), then remove ``x.jsonl``. Returns the new path."""
    import zstandard

    dest = path.with_name(path.name + ".zst")
    tmp = path.with_name(path.name + ".zst.tmp")
    cctx = zstandard.ZstdCompressor(level=level)
    try:
        with open(path, "rb") as src, open(tmp, "wb") as out:
            cctx.copy_stream(src, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        # The plain file stays, complete; a half-written .zst.tmp beside it is only clutter
        # (and disk space, when the error was a full disk).
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
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
_WARN_EVERY_S = 30.0


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
        self.endpoint = endpoint
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
        self._last_warning_s = -float("inf")
        self._unwarned_drops = 0
        self._thread = threading.Thread(target=self._loop, name="inferaudit-forward", daemon=True)
        self._thread.start()

    def _drop(self, why: str) -> None:
        """Count a dropped request; warn at most every ``_WARN_EVERY_S`` (a dead upstream
        would otherwise log once per request), saying how many were dropped meanwhile."""
        self.dropped += 1
        self._unwarned_drops += 1
        now = time.monotonic()
        if now - self._last_warning_s >= _WARN_EVERY_S:
            _log.warning(
                "inferaudit collect: forwarding to %s failed (%s); dropped %d request(s) from "
                "forwarding since the last warning, %d in all (still written to disk)",
                self.endpoint, why, self._unwarned_drops, self.dropped,
            )
            self._last_warning_s = now
            self._unwarned_drops = 0

    def offer(self, signal: str, body: bytes) -> None:
        """Queue a serialized ``Export*ServiceRequest``; never blocks."""
        with self._cv:
            if self._stopping or self._q_bytes + len(body) > self._max_queue_bytes:
                self._drop("stopping" if self._stopping else "forward queue full")
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
            why = self._send(signal, body)
            if not why:
                self.sent += 1
            else:
                with self._cv:
                    self._drop(why)

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._url.scheme == "https" else (
                http.client.HTTPConnection
            )
            self._conn = cls(self._url.hostname or "", self._url.port, timeout=self._timeout_s)
        return self._conn

    def _send(self, signal: str, body: bytes) -> str:
        """POST with retries; "" when delivered, else why not."""
        delay_s = 0.5
        why = "not attempted"
        for attempt in range(self._max_attempts):
            retry_after_s = delay_s
            try:
                conn = self._connect()
                conn.request("POST", f"{self._base_path}/v1/{signal}", body, self._headers)
                resp = conn.getresponse()
                resp.read()
                if 200 <= resp.status < 300:
                    return ""
                why = f"upstream answered HTTP {resp.status}"
                if resp.status not in _RETRYABLE_STATUS:
                    return why
                with contextlib.suppress(TypeError, ValueError):
                    retry_after_s = float(resp.getheader("Retry-After") or delay_s)
            except (OSError, http.client.HTTPException) as exc:
                why = f"{type(exc).__name__}: {exc}"
                self._reset()
            if attempt + 1 < self._max_attempts and not self._sleep(min(retry_after_s, 30.0)):
                return why
            delay_s *= 2
        return why

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
