"""Rotating files (size, age, zstd) in the data model's layout, and upstream forwarding."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from collector_helpers import disk_spans, make_spans, read_lines
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from inferaudit_collector.decode import encode_traces
from inferaudit_collector.service import Collector, CollectorConfig
from inferaudit_collector.sinks import RotatingFileSink

# docs/data-model.md: <dir>/traces-<UTC yyyymmddThhmmss>-<pid>-<seq>.jsonl (rotated may be .zst)
NAME = re.compile(r"^(traces|metrics)-\d{8}T\d{6}-\d+-\d+\.jsonl(\.zst)?$")


def _line(n: int, seed: int) -> bytes:
    return encode_traces(encode_spans(make_spans(n, seed=seed))).line


def test_size_rotation_keeps_every_line_whole_and_in_order(tmp_path: Path) -> None:
    sink = RotatingFileSink(tmp_path, max_file_bytes=30_000)
    lines = [_line(20, seed) for seed in range(12)]
    for line in lines:
        sink.write("traces", line)
    sink.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) > 3 and all(NAME.match(f.name) for f in files)
    for f in files:  # a file over the limit holds a single line that alone exceeds it
        assert f.stat().st_size <= 30_000 or f.read_bytes().count(b"\n") == 1
    assert b"".join(f.read_bytes() for f in files) == b"".join(lines)


def test_age_rotation_and_zstd(tmp_path: Path) -> None:
    sink = RotatingFileSink(tmp_path, max_file_age_s=0.05, compression="zstd")
    sink.write("traces", _line(5, 1))
    sink.write("metrics", b'{"resourceMetrics":[]}\n')
    time.sleep(0.1)
    sink.flush(fsync=True)  # both files are now old: rotated (and queued for compression)
    sink.write("traces", _line(5, 2))
    sink.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert all(NAME.match(n) for n in names), names
    assert all(n.endswith(".jsonl.zst") for n in names)  # closed files are all compressed
    assert sum(n.startswith("traces-") for n in names) == 2
    assert sum(1 for _ in disk_spans(tmp_path)) == 10
    assert {"resourceMetrics": []} in read_lines(tmp_path)


def test_forwarding_to_an_upstream_otlp_endpoint(tmp_path: Path) -> None:
    upstream = Collector(CollectorConfig(directory=tmp_path / "up", http_port=0, grpc_port=None))
    upstream.start()
    try:
        edge = Collector(CollectorConfig(
            directory=tmp_path / "edge", http_port=0, grpc_port=0,
            forward_endpoint=f"http://127.0.0.1:{upstream.http_port}",
        )).start()
        proto = encode_spans(make_spans(30, seed=1)).SerializeToString()
        as_json = _line(20, seed=2)  # forwarded re-serialized as protobuf
        assert edge.ingest("traces", proto, json_body=False).accepted == 30
        assert edge.ingest("traces", as_json, json_body=True).accepted == 20
        edge.stop()
        assert edge.forwarder is not None and edge.forwarder.sent == 2
    finally:
        upstream.stop()
    up = sorted(json.dumps(s, sort_keys=True) for s in disk_spans(tmp_path / "up"))
    local = sorted(json.dumps(s, sort_keys=True) for s in disk_spans(tmp_path / "edge"))
    assert len(up) == 50 and up == local


def test_forwarder_drops_and_counts_when_the_backend_is_down(tmp_path: Path) -> None:
    edge = Collector(CollectorConfig(directory=tmp_path, http_port=None, grpc_port=None,
                                     forward_endpoint="http://127.0.0.1:9")).start()
    assert edge.ingest("traces", _line(3, 1), json_body=True).accepted == 3
    t0 = time.monotonic()
    edge.stop()
    assert time.monotonic() - t0 < 20
    assert edge.forwarder is not None and edge.forwarder.dropped == 1
    assert sum(1 for _ in disk_spans(tmp_path)) == 3  # the disk copy is kept regardless
