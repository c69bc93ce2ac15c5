"""A clean stop (SIGTERM/SIGINT) under load loses nothing that was acknowledged."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from collector_helpers import disk_spans, make_spans
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

SPANS_PER_REQUEST = 100
_TEMPLATE = encode_spans(make_spans(SPANS_PER_REQUEST, seed=9)).SerializeToString()


def _request(first_id: int) -> tuple[bytes, list[str]]:
    """The template request with fresh, known span ids (cheap: no SDK encoding per request)."""
    req = ExportTraceServiceRequest.FromString(_TEMPLATE)
    ids = []
    for k, span in enumerate(req.resource_spans[0].scope_spans[0].spans):
        span.span_id = struct.pack(">Q", first_id + k)
        ids.append(span.span_id.hex())
    return req.SerializeToString(), ids


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, dict]:
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferaudit_collector.cli", "--dir", str(tmp_path / "out"),
         "--http-port", "0", "--grpc-port", "0", "--ready-file", str(ready),
         # A long fsync period: the stop itself must flush and fsync, not the timer.
         "--flush-interval-s", "30", "--max-file-bytes", "200000", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"receiver did not start: {err.decode()[-2000:]}")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def _http_sender(port: int, base: int, acked: list[str], stop_after: threading.Event) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for n in range(10_000):
        body, ids = _request(base + n * SPANS_PER_REQUEST)
        try:
            conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            return  # the receiver has gone: what it acknowledged is what counts
        if resp.status != 200:
            return
        acked.extend(ids)
        if n == 20:
            stop_after.set()


def _grpc_sender(port: int, base: int, acked: list[str], stop_after: threading.Event) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        for n in range(10_000):
            body, ids = _request(base + n * SPANS_PER_REQUEST)
            try:
                call(body, timeout=10)
            except grpc.RpcError:
                return
            acked.extend(ids)
            if n == 20:
                stop_after.set()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "workers"), [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2)]
)
def test_signal_under_load_keeps_every_acknowledged_span(
    tmp_path: Path, signum: int, workers: int
) -> None:
    proc, ports = _start(tmp_path, "--workers", str(workers))
    acked: list[list[str]] = [[], [], []]
    warm = [threading.Event() for _ in acked]
    targets = [_http_sender, _http_sender, _grpc_sender]
    senders = [
        threading.Thread(target=fn, args=(ports["grpc" if fn is _grpc_sender else "http"],
                                          (k + 1) << 40, acked[k], warm[k]))
        for k, fn in enumerate(targets)
    ]
    for t in senders:
        t.start()
    try:
        for ev in warm:
            assert ev.wait(60), "senders never got going"
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        os.kill(proc.pid, signum)  # while every sender is mid-stream
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        for t in senders:
            t.join(30)
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert rc == 0, err[-2000:]
    on_disk = [s["spanId"] for s in disk_spans(tmp_path / "out")]
    assert all(len(a) > 20 * SPANS_PER_REQUEST for a in acked)
    missing = {i for a in acked for i in a} - set(on_disk)
    assert not missing, f"{len(missing)} acknowledged spans lost"
    assert len(on_disk) == len(set(on_disk))  # and none written twice
    assert "stopped;" in err
    assert len(children) == workers - 1
    # The stop line counts every process's spans: each accepted span is on disk once.
    accepted = re.search(r"stopped; accepted (\d+) spans", err)
    assert accepted and int(accepted.group(1)) == len(on_disk), err[-600:]
    if workers > 1:
        assert f"this process and {workers - 1} of {workers - 1} HTTP worker processes)" in err


def test_stop_drains_what_the_writer_has_not_written_yet(tmp_path: Path) -> None:
    from inferaudit_collector.service import Collector, CollectorConfig

    col = Collector(CollectorConfig(directory=tmp_path, http_port=0, grpc_port=None))
    gate = threading.Event()
    inner = col.sink

    class Slow:  # a disk that stalls: acknowledged lines pile up in the buffer
        def write(self, sig: str, line: bytes) -> None:
            assert gate.wait(20)
            inner.write(sig, line)

        def flush(self, *, fsync: bool) -> None:
            inner.flush(fsync=fsync)

        def close(self) -> None:
            inner.close()

    col.sink = Slow()  # type: ignore[assignment]
    col.start()
    conn = http.client.HTTPConnection("127.0.0.1", col.http_port, timeout=10)
    acked: list[str] = []
    for n in range(10):
        body, ids = _request(n * SPANS_PER_REQUEST)
        conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        acked += ids
    conn.close()
    assert not col.buffer.empty()
    threading.Timer(0.3, gate.set).start()
    assert col.stop(timeout_s=30)
    assert sorted(s["spanId"] for s in disk_spans(tmp_path)) == sorted(acked)


def test_cli_refuses_an_open_bind_without_token(tmp_path: Path, capsys) -> None:
    from inferaudit_collector.cli import main

    assert main(["--dir", str(tmp_path), "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err
    assert main(["--dir", str(tmp_path), "--forward-header", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_inferaudit_collect_is_dispatched_to_this_cli(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "inferaudit_sdk._cli", "collect", "--help"],
        capture_output=True, timeout=60, check=False,
    )
    assert out.returncode == 0 and b"--flush-interval-s" in out.stdout
