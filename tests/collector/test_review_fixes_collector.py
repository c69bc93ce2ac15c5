"""Regressions from the collector review: disk-full durability, startup checks, gzip, auth."""

from __future__ import annotations

import errno
import gzip
import json
import os
from pathlib import Path

import pytest

from inferaudit_collector import sinks
from inferaudit_collector.buffer import BoundedBuffer
from inferaudit_collector.sinks import RotatingFileSink
from inferaudit_collector.writer import Writer


def _lines(n: int, size: int = 300) -> list[bytes]:
    """Distinct JSON lines of about ``size`` bytes each."""
    return [json.dumps({"i": i, "pad": "x" * size}).encode() + b"\n" for i in range(n)]


def _disk_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.glob("traces-*.jsonl")))


class _FlakyDisk:
    """``os.write`` / ``os.fsync`` stand-ins: the first ``failures`` calls of each misbehave
    like a full disk (a write first takes part of its bytes, then refuses); ``None`` = forever."""

    def __init__(self, failures: int | None) -> None:
        self.write_failures = failures
        self.fsync_failures = failures
        self._half_next = True

    def write(self, fd: int, data) -> int:
        if self.write_failures is None or self.write_failures > 0:
            if self.write_failures is not None:
                self.write_failures -= 1
            if self._half_next and len(data) > 1:  # a short write, then ENOSPC
                self._half_next = False
                return os.write(fd, bytes(data[: len(data) // 2 + 7]))
            self._half_next = self.write_failures is not None  # forever: one short write only
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fsync_failures is None or self.fsync_failures > 0:
            if self.fsync_failures is not None:
                self.fsync_failures -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        os.fsync(fd)


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch):
    def install(failures: int | None) -> _FlakyDisk:
        disk = _FlakyDisk(failures)
        monkeypatch.setattr(sinks, "_write_fd", disk.write)
        monkeypatch.setattr(sinks, "_fsync_fd", disk.fsync)
        return disk

    return install


# -- 1. disk full at rotation / stop -------------------------------------------------------------
def test_failed_rotation_keeps_the_file_and_retries_every_byte(tmp_path: Path, flaky) -> None:
    sink = RotatingFileSink(tmp_path, max_file_bytes=2_000)
    lines = _lines(20)
    flaky(5)
    taken: list[bytes] = []
    for line in lines:
        for _ in range(20):  # the writer's retry: a refused line was not taken
            try:
                sink.write("traces", line)
            except OSError:
                continue
            taken.append(line)
            break
    for _ in range(20):
        try:
            sink.close()
            break
        except OSError:
            continue
    assert taken == lines
    assert _disk_bytes(tmp_path) == b"".join(lines)


def test_failed_close_is_retried_and_nothing_is_lost(tmp_path: Path, flaky) -> None:
    sink = RotatingFileSink(tmp_path)
    lines = _lines(50)
    for line in lines:
        sink.write("traces", line)
    flaky(3)
    failures = 0
    while True:
        try:
            sink.close()
            break
        except OSError:
            failures += 1
            assert failures < 20
    assert failures > 0
    assert _disk_bytes(tmp_path) == b"".join(lines)


def test_writer_retries_a_full_disk_until_stop_succeeds(tmp_path: Path, flaky) -> None:
    buf = BoundedBuffer(64 * 1024 * 1024)
    writer = Writer(buf, RotatingFileSink(tmp_path, max_file_bytes=5_000), flush_interval_s=0.05)
    lines = _lines(60)
    flaky(6)
    for line in lines:
        assert buf.put(("traces", line))
    assert writer.stop(timeout_s=20.0) is True
    assert _disk_bytes(tmp_path) == b"".join(lines)
    assert writer.lines_written == len(lines) and writer.lines_lost == 0


def test_writer_reports_failure_when_the_disk_never_recovers(tmp_path: Path, flaky) -> None:
    buf = BoundedBuffer(64 * 1024 * 1024)
    writer = Writer(buf, RotatingFileSink(tmp_path), flush_interval_s=0.05)
    lines = _lines(10)
    flaky(None)
    for line in lines:
        assert buf.put(("traces", line))
    assert writer.stop(timeout_s=2.5) is False
    assert writer.lines_lost > 0 and writer.lines_written + writer.lines_lost == len(lines)
    # What did reach the disk is cut back to whole lines, never half of one, and counted.
    assert _disk_bytes(tmp_path) == b"".join(lines[: writer.lines_written])


# -- 3. multi-member gzip --------------------------------------------------------------------------
def test_gzip_body_with_several_members_is_fully_decoded() -> None:
    from inferaudit_collector.receiver_http import _decompress

    parts = [b'{"a":1,', b'"b":2}']
    body = b"".join(gzip.compress(p) for p in parts)
    assert _decompress(body, "gzip", 1000) == b"".join(parts)


def test_gzip_members_count_toward_the_size_limit() -> None:
    from inferaudit_collector.receiver_http import _BodyTooLarge, _decompress

    body = gzip.compress(b"x" * 600) + gzip.compress(b"y" * 600)
    with pytest.raises(_BodyTooLarge):
        _decompress(body, "gzip", 1000)


def test_gzip_with_trailing_garbage_is_a_bad_request() -> None:
    from inferaudit_collector.receiver_http import _BadRequest, _decompress

    with pytest.raises(_BadRequest):
        _decompress(gzip.compress(b"{}") + b"not gzip at all", "gzip", 1000)


# -- 7. auth scheme is case-insensitive --------------------------------------------------------
def test_bearer_scheme_is_case_insensitive() -> None:
    from inferaudit_collector.auth import TokenAuth

    auth = TokenAuth("s3cret")
    for header in ("Bearer s3cret", "bearer s3cret", "BEARER s3cret", b"bEaReR s3cret"):
        assert auth.allows(header), header
    for header in ("bearer S3CRET", "Basic s3cret", "bearer", "s3cret", "bearer s3cret2", None):
        assert not auth.allows(header), header


# -- 2. / 5. startup errors: one line, exit 2, before listening --------------------------------
def _unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o500)
        return d
    if os.access("/proc", os.W_OK) and Path("/proc").is_dir():
        return Path("/proc")  # root can write anywhere but not create files here
    pytest.skip("no unwritable directory available")


def test_unwritable_dir_fails_at_start(tmp_path: Path, capsys) -> None:
    from inferaudit_collector.cli import main
    from inferaudit_collector.service import Collector, CollectorConfig, StartupError

    d = _unwritable_dir(tmp_path)
    with pytest.raises(StartupError, match="cannot write to"):
        Collector(CollectorConfig(directory=d, http_port=0, grpc_port=None))
    assert main(["--dir", str(d), "--http-port", "0", "--no-grpc"]) == 2
    err = capsys.readouterr().err
    assert f"inferaudit collect: cannot write to {d}" in err and "Traceback" not in err
    assert not list(d.glob(".inferaudit-probe-*"))


def test_dir_that_is_a_file_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    from inferaudit_collector.cli import main

    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["--dir", str(f), "--http-port", "0", "--no-grpc"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"inferaudit collect: cannot write to {f}: it exists and is not a directory"


@pytest.mark.parametrize("extra", [
    ["--flush-interval-s", "0"],
    ["--forward", "ftp://x"],
    ["--http-port", "70000"],
    ["--grpc-port", "70000"],
    ["--grpc-port", "-1"],
    ["--log-level", "bogus"],
    ["--no-http", "--no-grpc"],
    ["--ready-file", "/nonexistent-dir-for-inferaudit/ready.json"],
    ["--workers", "0"],
])
def test_bad_options_are_usage_errors(tmp_path: Path, capsys, extra: list[str]) -> None:
    from inferaudit_collector.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--dir", str(tmp_path), "--http-port", "0", "--grpc-port", "0", *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and extra[0] in err.splitlines()[-1]


def test_grpc_port_in_use_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    import socket

    from inferaudit_collector.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc = main(["--dir", str(tmp_path), "--http-port", "0", "--grpc-port", str(port)])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"inferaudit collect: cannot bind OTLP/gRPC to 127.0.0.1:{port}" in err
    assert "Traceback" not in err


def test_http_port_in_use_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    import socket

    from inferaudit_collector.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc = main(["--dir", str(tmp_path), "--http-port", str(port), "--no-grpc"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"inferaudit collect: cannot bind OTLP/HTTP to 127.0.0.1:{port}" in err
    assert "Traceback" not in err


# -- 4. forwarding failures are visible -----------------------------------------------------------
def _dead_port() -> int:
    import socket

    with socket.socket() as s:  # bound, never listening, then closed: connection refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_upstream_warns_once_naming_it(caplog) -> None:
    import logging

    from inferaudit_collector.sinks import UpstreamForwarder

    endpoint = f"http://127.0.0.1:{_dead_port()}"
    fwd = UpstreamForwarder(endpoint, max_attempts=1, timeout_s=2.0)
    with caplog.at_level(logging.WARNING, logger="inferaudit_collector.sinks"):
        for _ in range(3):
            fwd.offer("traces", b"\x0a\x00")
        fwd.close(timeout_s=10.0)
    assert fwd.dropped == 3 and fwd.sent == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # rate-limited, not one per request
    assert endpoint in warnings[0] and "Connection" in warnings[0]


# -- 6. / 4. the stop summary tells what was written, lost, forwarded ----------------------------
def test_summary_reports_what_was_written_not_accepted(tmp_path: Path, flaky) -> None:
    from collector_helpers import make_spans
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from inferaudit_collector.cli import _summary
    from inferaudit_collector.service import Collector, CollectorConfig

    col = Collector(CollectorConfig(directory=tmp_path, http_port=None, grpc_port=None,
                                    flush_interval_s=0.05)).start()
    flaky(None)
    body = encode_spans(make_spans(4, seed=3)).SerializeToString()
    assert col.ingest("traces", body, json_body=False).accepted == 4
    assert col.stop(timeout_s=2.0) is False  # the CLI turns this into exit code 1
    text = _summary(col)
    assert "accepted 4 spans" in text and "wrote 0 requests" in text
    assert "1 accepted requests could NOT be written" in text


def test_summary_counts_written_and_forwarding(tmp_path: Path) -> None:
    from collector_helpers import make_spans
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from inferaudit_collector.cli import _summary
    from inferaudit_collector.service import Collector, CollectorConfig

    endpoint = f"http://127.0.0.1:{_dead_port()}"
    col = Collector(CollectorConfig(directory=tmp_path, http_port=None, grpc_port=None,
                                    forward_endpoint=endpoint)).start()
    for seed in range(2):
        body = encode_spans(make_spans(3, seed=seed)).SerializeToString()
        assert col.ingest("traces", body, json_body=False).accepted == 3
    assert col.stop(timeout_s=10.0) is True
    text = _summary(col)
    assert "accepted 6 spans" in text and "wrote 2 requests" in text
    assert "could NOT" not in text
    assert f"forwarded 0 requests to {endpoint}, dropped 2" in text
