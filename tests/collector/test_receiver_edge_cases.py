"""Review regressions: JSON enum names, the stop line's byte count, zstd temp files, start line."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from collector_helpers import disk_spans

from inferaudit_collector import decode, sinks
from inferaudit_collector.buffer import BoundedBuffer
from inferaudit_collector.service import Collector, CollectorConfig
from inferaudit_collector.writer import Writer

SPAN = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
        "name": "s", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}


def _traces(span: dict) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


# -- enums in OTLP/JSON --------------------------------------------------------------------------
@pytest.mark.parametrize(("span", "where"), [
    (dict(SPAN, kind="SPAN_KIND_SERVR"), "$.resourceSpans[0].scopeSpans[0].spans[0].kind"),
    (dict(SPAN, status={"code": "STATUS_CODE_FINE"}),
     "$.resourceSpans[0].scopeSpans[0].spans[0].status.code"),
    (dict(SPAN, kind="span_kind_server"), "spans[0].kind"),  # names are case-sensitive
])
def test_unknown_enum_name_is_an_error_naming_its_json_path(span: dict, where: str) -> None:
    with pytest.raises(decode.DecodeError) as err:
        decode.parse_traces(_traces(span), json_body=True)
    assert where in str(err.value) and repr(span.get("kind") or "STATUS_CODE_FINE") in str(
        err.value)


def test_unknown_enum_name_in_metrics_is_an_error() -> None:
    body = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m", "sum": {
        "aggregationTemporality": "AGGREGATION_TEMPORALITY_WEEKLY",
        "dataPoints": [{"asInt": "1"}]}}]}]}]}
    with pytest.raises(decode.DecodeError, match=r"metrics\[0\]\.sum\.aggregationTemporality"):
        decode.parse_metrics(json.dumps(body).encode(), json_body=True)


def test_known_enum_names_numbers_and_unknown_field_names_still_parse() -> None:
    span = dict(SPAN, kind="SPAN_KIND_CLIENT", status={"code": 2, "futureField": "NOPE"},
                futureField={"kind": "NOT_AN_ENUM_HERE"}, links=[{"traceId": SPAN["traceId"],
                                                                  "spanId": SPAN["spanId"]}])
    req = decode.parse_traces(_traces(span), json_body=True)
    s = req.resource_spans[0].scope_spans[0].spans[0]
    assert s.kind == 3 and s.status.code == 2
    assert s.links[0].span_id.hex() == SPAN["spanId"]
    # An enum number outside the known values is legal proto3 (open enums): kept as is.
    req = decode.parse_traces(_traces(dict(SPAN, kind=9)), json_body=True)
    assert req.resource_spans[0].scope_spans[0].spans[0].kind == 9


def test_enum_numbers_given_as_strings_parse_as_protobufs_json_parser_reads_them() -> None:
    """``"kind": "2"`` is what json_format.ParseDict and the old decoder accept: only an
    unknown name is an error."""
    span = dict(SPAN, kind="2", status={"code": "2"})
    s = decode.parse_traces(_traces(span), json_body=True).resource_spans[0].scope_spans[0].spans[0]
    assert s.kind == 2 and s.status.code == 2
    s = decode.parse_traces(_traces(dict(SPAN, kind="9")), json_body=True)
    assert s.resource_spans[0].scope_spans[0].spans[0].kind == 9  # as a bare 9 (open enum)
    body = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m", "sum": {
        "aggregationTemporality": "1", "dataPoints": [{"asInt": "1"}]}}]}]}]}
    req = decode.parse_metrics(json.dumps(body).encode(), json_body=True)
    assert req.resource_metrics[0].scope_metrics[0].metrics[0].sum.aggregation_temporality == 1
    for text in ("2x", " 2", "+2", "２"):  # not a number (a full-width digit neither): a name
        with pytest.raises(decode.DecodeError, match=r"spans\[0\]\.kind"):
            decode.parse_traces(_traces(dict(SPAN, kind=text)), json_body=True)


def test_unknown_enum_name_over_http_is_400_and_stores_nothing(tmp_path: Path) -> None:
    with Collector(CollectorConfig(directory=tmp_path, http_port=0, grpc_port=None)) as col:
        c = http.client.HTTPConnection("127.0.0.1", col.http_port, timeout=5)
        c.request("POST", "/v1/traces", _traces(dict(SPAN, kind="NOPE")),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        answer = json.loads(r.read())
        assert r.status == 400 and "spans[0].kind: 'NOPE'" in answer["message"]
        c.close()
    assert list(disk_spans(tmp_path)) == []


# -- the stop line counts only bytes that reached the disk ---------------------------------------
def test_stop_line_bytes_exclude_lines_that_never_reached_disk(tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real_write = sinks._write_fd

    def half_then_full(fd: int, data) -> int:
        calls["n"] += 1
        if calls["n"] == 1:  # the first line reaches the disk, the second only half of it
            nl = bytes(data).index(b"\n") + 1
            return real_write(fd, bytes(data[: nl + 5]))
        raise OSError(28, "No space left on device")

    buf = BoundedBuffer(1 << 20)
    w = Writer(buf, sinks.RotatingFileSink(tmp_path), flush_interval_s=0.05)
    monkeypatch.setattr(sinks, "_write_fd", half_then_full)
    first, second = b'{"resourceSpans":[]}\n', b'{"resourceSpans":[{}]}\n'
    buf.put(("traces", first))
    buf.put(("traces", second))
    assert not w.stop(timeout_s=1.5)
    assert w.lines_lost == 1 and w.lines_written == 1
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("traces-*.jsonl"))
    assert on_disk == first  # the half line was cut off
    assert w.bytes_written == len(first)


# -- a failed zstd compression leaves no temp file -----------------------------------------------
def test_failed_compression_removes_its_temp_file_and_keeps_the_plain_one(
    tmp_path: Path, monkeypatch,
) -> None:
    zstandard = pytest.importorskip("zstandard")
    path = tmp_path / "traces-x.jsonl"
    path.write_bytes(b'{"resourceSpans":[]}\n' * 1000)

    def full_disk(self, src, dst, *a, **k):  # type: ignore[no-untyped-def]
        dst.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zstandard.ZstdCompressor, "copy_stream", full_disk)
    with pytest.raises(OSError):
        sinks.compress_file_zstd(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traces-x.jsonl"]
    assert path.read_bytes().count(b"\n") == 1000


# -- the whole-request deadline is an option ---------------------------------------------------
def test_request_timeout_is_a_cli_option(tmp_path: Path) -> None:
    from inferaudit_collector.cli import build_parser, config_from_args

    def cfg(*extra: str) -> CollectorConfig:
        return config_from_args(build_parser().parse_args(["--dir", str(tmp_path), *extra]))

    assert cfg().http_request_timeout_s == 60.0
    assert cfg("--request-timeout-s", "2.5").http_request_timeout_s == 2.5
    for bad in ("0", "-1", "nan", "soon"):
        with pytest.raises(SystemExit) as exit_:
            cfg("--request-timeout-s", bad)
        assert exit_.value.code == 2


# -- the start line names only the receivers that run --------------------------------------------
@pytest.mark.parametrize(("flag", "absent"), [("--no-grpc", "OTLP/gRPC"),
                                              ("--no-http", "OTLP/HTTP")])
def test_start_line_does_not_name_a_receiver_that_is_off(tmp_path: Path, flag: str,
                                                         absent: str) -> None:
    ready = tmp_path / "ready.json"
    port_flag = "--http-port" if flag == "--no-grpc" else "--grpc-port"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferaudit_collector.cli", "--dir", str(tmp_path / "out"),
         flag, port_flag, "0", "--ready-file", str(ready)],
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert ready.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    start = next(line for line in err.splitlines() if "writing" in line)
    assert absent not in start and "None" not in start
    assert ("OTLP/HTTP" if absent == "OTLP/gRPC" else "OTLP/gRPC") in start
