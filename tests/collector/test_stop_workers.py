"""``stop_workers`` leaves no report pipe open, whichever way a worker ends."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from inferaudit_collector._prefork import Worker, stop_workers

# A worker stuck in its flush: it ignores SIGTERM and outlives any stop timeout.
_STUCK = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
         "print('ready', flush=True); time.sleep(60)"


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _worker(code: str) -> tuple[subprocess.Popen, Worker, int]:
    read_fd, write_fd = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             pass_fds=(write_fd,))
    os.close(write_fd)
    return child, Worker(child.pid, read_fd), write_fd


def test_a_worker_past_the_deadline_has_its_pipe_closed() -> None:
    child, worker, _ = _worker(_STUCK)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        fd = worker.report_fd
        assert _is_open(fd)
        assert stop_workers([worker], timeout_s=0.3) is False
        assert worker.report is None
        assert not _is_open(fd) and worker.report_fd == -1
        assert stop_workers([worker], timeout_s=0.1) is False  # again: nothing to close twice
        assert child.poll() is None  # left to finish, not killed
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_a_worker_reaped_elsewhere_has_its_pipe_closed() -> None:
    child, worker, _ = _worker("pass")
    child.wait()  # reaped here, so stop_workers' waitpid finds no such child
    fd = worker.report_fd
    try:
        assert stop_workers([worker], timeout_s=1.0) is True
        assert not _is_open(fd) and worker.report_fd == -1
    finally:
        if child.stdout is not None:
            child.stdout.close()


@pytest.mark.parametrize("written", [b'{"spans": 3}', b""])
def test_a_worker_that_exits_leaves_its_report_and_no_open_pipe(written: bytes) -> None:
    code = f"import os; os.write(WFD, {written!r})" if written else "pass"
    read_fd, write_fd = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", code.replace("WFD", str(write_fd))],
                             pass_fds=(write_fd,))
    os.close(write_fd)
    worker = Worker(child.pid, read_fd)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
    assert stop_workers([worker], timeout_s=10.0) is True
    assert worker.report == ({"spans": 3} if written else None)
    assert not _is_open(read_fd)
