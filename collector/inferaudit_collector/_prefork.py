"""``--workers N``: N processes accepting OTLP/HTTP on one listening socket.

Rendering spans is CPU-bound Python, so one process uses one core. The parent binds the socket,
forks N-1 HTTP-only workers *before* starting any thread (forking a threaded process is unsafe),
then serves HTTP on the same socket itself, plus gRPC. Each process has its own bounded buffer,
writer and files (names carry the pid, so they never collide): the analyzer reads them all.
The kernel spreads new connections over the processes; one keep-alive connection stays with one
process, so the gain needs several senders (the usual case: many serving processes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import replace

from .service import Collector, CollectorConfig

__all__ = ["fork_http_workers", "listen_socket", "stop_workers"]


def listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=512)


def fork_http_workers(config: CollectorConfig, count: int, sock: socket.socket) -> list[int]:
    """Fork ``count`` HTTP-only workers serving ``sock``; returns their pids."""
    pids = []
    parent = os.getpid()
    for _ in range(count):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: serve until SIGTERM/SIGINT, then flush and leave
            code = 1
            try:
                code = _worker(replace(config, grpc_port=None), sock, parent)
            finally:
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    return pids


def _worker(config: CollectorConfig, sock: socket.socket, parent: int) -> int:
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    col = Collector(config).start(http_sock=sock)
    while not stop.wait(0.5):
        # the parent died without telling us (re-parented to init or a subreaper): stop cleanly
        if os.getppid() != parent:
            break
    return 0 if col.stop() else 1


def stop_workers(pids: list[int], timeout_s: float = 60.0) -> bool:
    """SIGTERM every worker and wait; True when all stopped cleanly (exit 0) in time."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    ok = True
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                ok = ok and os.waitstatus_to_exitcode(status) == 0
                break
            if time.monotonic() > deadline:
                ok = False
                break
            time.sleep(0.05)
    return ok
