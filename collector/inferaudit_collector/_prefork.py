"""``--workers N``: N processes accepting OTLP/HTTP on one listening socket.

Rendering spans is CPU-bound Python, so one process uses one core. The parent binds the socket,
forks N-1 HTTP-only workers *before* starting any thread (forking a threaded process is unsafe),
then serves HTTP on the same socket itself, plus gRPC. Each process has its own bounded buffer,
writer and files (names carry the pid, so they never collide): the analyzer reads them all.
The kernel spreads new connections over the processes; one keep-alive connection stays with one
process, so the gain needs several senders (the usual case: many serving processes). Each worker
reports its counts (:meth:`Collector.counts`) to the parent through a pipe as it exits, so the
stop line covers every process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import replace

from .service import Collector, CollectorConfig

__all__ = ["Worker", "fork_http_workers", "listen_socket", "stop_workers"]


class Worker:
    """A forked HTTP worker: its pid, the pipe it reports on, and (after stop) its report."""

    __slots__ = ("pid", "report", "report_fd")

    def __init__(self, pid: int, report_fd: int) -> None:
        self.pid = pid
        self.report_fd = report_fd
        self.report: dict[str, int] | None = None  # None: it exited without reporting


def listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=512)


def fork_http_workers(config: CollectorConfig, count: int, sock: socket.socket
                      ) -> list[Worker]:
    """Fork ``count`` HTTP-only workers serving ``sock``."""
    workers: list[Worker] = []
    parent = os.getpid()
    for _ in range(count):
        sys.stdout.flush()
        sys.stderr.flush()
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: serve until SIGTERM/SIGINT, then flush, report and leave
            code = 1
            try:
                os.close(read_fd)
                for w in workers:  # its elder siblings' pipes are the parent's business
                    os.close(w.report_fd)
                code = _worker(replace(config, grpc_port=None), sock, parent, write_fd)
            finally:
                sys.stderr.flush()
                os._exit(code)
        os.close(write_fd)
        workers.append(Worker(pid, read_fd))
    return workers


def _worker(config: CollectorConfig, sock: socket.socket, parent: int, report_fd: int) -> int:
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    col = Collector(config).start(http_sock=sock)
    while not stop.wait(0.5):
        # the parent died without telling us (re-parented to init or a subreaper): stop cleanly
        if os.getppid() != parent:
            break
    ok = col.stop()
    with contextlib.suppress(OSError):  # a parent that is gone reads nothing
        os.write(report_fd, json.dumps(col.counts()).encode())
        os.close(report_fd)
    return 0 if ok else 1


def _read_report(fd: int) -> dict[str, int] | None:
    """The worker's counts (it has exited, so the pipe holds all it wrote), or None."""
    if fd < 0:  # already closed by an earlier stop
        return None
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        _close(fd)
    try:
        report = json.loads(b"".join(chunks))
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def stop_workers(workers: list[Worker], timeout_s: float = 60.0) -> bool:
    """SIGTERM every worker and wait; True when all stopped cleanly (exit 0) in time. Each
    worker that exited leaves its report on ``Worker.report``. A worker still running at the
    deadline is left to finish its flush (killing it would lose what it holds), but its pipe
    is closed here: nothing it writes later can be read, and the descriptor must not leak."""
    for w in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(w.pid, signal.SIGTERM)
    ok = True
    deadline = time.monotonic() + timeout_s
    for w in workers:
        while True:
            try:
                done, status = os.waitpid(w.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its exit status is not ours to read
                _close(w.report_fd)
                w.report_fd = -1
                break
            if done:
                ok = ok and os.waitstatus_to_exitcode(status) == 0
                w.report = _read_report(w.report_fd)  # closes the pipe
                w.report_fd = -1
                break
            if time.monotonic() > deadline:
                ok = False
                _close(w.report_fd)
                w.report_fd = -1
                break
            time.sleep(0.05)
    return ok


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
