"""awss3exporter partitions via fsspec: prune by upload time, keep by span time.

An in-memory fsspec filesystem holds objects laid out as the exporter writes them
(``year=/month=/day=/hour=/minute=`` of the upload time, ``traces_<random>.json[.gz]`` or
``.binpb``), each uploaded some seconds after its last span ended. The report must hold exactly
the spans that start inside the window (counted independently from the JSON), no partition far
outside the window may even be listed, and a late upload inside the lag must still be read.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import gzip
import json
from typing import Any

import fsspec
import pytest
from _engine_fixtures import T0, workload_requests
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from inferaudit_analyzer.analyze import AnalyzeParams
from inferaudit_analyzer.sources.s3_partitions import (
    PartitionedSource,
    analyze_partitions,
    partition_bounds_ns,
)
from inferaudit_analyzer.store import UnusableInput
from inferaudit_sdk import semconv as sc

S = 1_000_000_000
MIN = 60 * S


def _shift(req: dict[str, Any], delta_ns: int, session: int) -> dict[str, Any]:
    """The same workload later, under fresh trace ids (a session of its own)."""
    out = copy.deepcopy(req)
    for rs in out["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                s["startTimeUnixNano"] = str(int(s["startTimeUnixNano"]) + delta_ns)
                s["endTimeUnixNano"] = str(int(s["endTimeUnixNano"]) + delta_ns)
                for node in (s, *s.get("links", ())):
                    node["traceId"] = f"{session:02x}" + node["traceId"][2:]
    return out


def _spans(req: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for rs in req["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def _key(upload_ns: int, name: str) -> str:
    t = dt.datetime.fromtimestamp(upload_ns / S, tz=dt.timezone.utc)
    return t.strftime(f"bucket/otel/year=%Y/month=%m/day=%d/hour=%H/minute=%M/{name}")


def _binpb(req: dict[str, Any]) -> bytes:
    def ids(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (base64.b64encode(bytes.fromhex(v)).decode()
                        if k in ("traceId", "spanId", "parentSpanId") and v else ids(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [ids(x) for x in node]
        return node

    return json_format.ParseDict(ids(req), ExportTraceServiceRequest()).SerializeToString()


@pytest.fixture()
def bucket() -> Any:
    """Sessions at T0, T0+10 min, T0+19m58s (straddling the window's end) and T0+2 h."""
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    base = workload_requests(n_batches=12, seed=11)
    sessions: list[tuple[int, dict[str, Any], str]] = []
    for i, (offset, fmt) in enumerate(((0, "json"), (10 * MIN, "json.gz"),
                                       (20 * MIN - 2 * S, "binpb"), (120 * MIN, "json"))):
        for h, req in enumerate(base):
            shifted = _shift(req, offset, i)
            last_end = max(int(s["endTimeUnixNano"]) for s in _spans(shifted))
            upload = last_end + (20 + 7 * h + i) * S
            name = f"traces_{i}{h}abcdefg.{fmt}"
            body = json.dumps(shifted).encode()
            data = {"json": body, "json.gz": gzip.compress(body), "binpb": _binpb(shifted)}[fmt]
            fs.pipe(_key(upload, name), data)
            sessions.append((upload, shifted, name))
    fs.pipe(_key(T0 + 11 * MIN, "logs_zzzzzzzzz.json"), b"{}")  # not a traces object
    return sessions


SINCE, UNTIL = T0 + 5 * MIN, T0 + 20 * MIN


def test_partition_bounds_cover_each_level() -> None:
    assert partition_bounds_ns({"year": 2026}) == (T0, T0 + 365 * 86_400 * S)
    assert partition_bounds_ns({"year": 2026, "month": 12}) == (
        T0 + 334 * 86_400 * S, T0 + 365 * 86_400 * S)
    assert partition_bounds_ns({"year": 2026, "month": 1, "day": 1, "hour": 2, "minute": 3}) == (
        T0 + 123 * MIN, T0 + 124 * MIN)


def test_pruning_by_upload_time_with_lag(bucket: Any) -> None:
    src = PartitionedSource("memory://bucket/otel", SINCE, UNTIL, upload_lag_s=300)
    got = {o.rpartition("/")[2] for o in src.objects()}
    assert got == {name for _u, _r, name in bucket if "_1" in name or "_2" in name}
    # the 02:00 hour and the 00:00 minute are pruned without being listed below
    assert src.listed_dirs <= 12
    strict = PartitionedSource("memory://bucket/otel", SINCE, UNTIL, upload_lag_s=0)
    assert not any("_2" in o for o in strict.objects())  # the late upload needs the lag


def test_report_holds_exactly_the_spans_starting_in_the_window(bucket: Any) -> None:
    report = analyze_partitions("memory://bucket/otel", AnalyzeParams(cache=False),
                                since_ns=SINCE, until_ns=UNTIL, upload_lag_s=300)
    spans = [s for _u, req, _n in bucket for s in _spans(req)]
    inside = [s for s in spans if SINCE <= int(s["startTimeUnixNano"]) < UNTIL]
    straddle = [s for _u, req, n in bucket if "_2" in n for s in _spans(req)]
    assert any(int(s["startTimeUnixNano"]) >= UNTIL for s in straddle)  # filtering is exercised
    assert any(SINCE <= int(s["startTimeUnixNano"]) < UNTIL for s in straddle)

    def is_request(s: dict[str, Any]) -> bool:
        return any(a["key"] == sc.SPAN_ROLE and a["value"].get("stringValue") == sc.ROLE_REQUEST
                   for a in s.get("attributes", ()))

    assert report["input"]["spans"] == len(inside)
    assert report["input"]["requests"] == sum(is_request(s) for s in inside)
    assert report["input"]["partitions"]["objects"] == 4
    assert report["window"]["start_ns"] >= SINCE


def test_empty_window_is_unusable(bucket: Any) -> None:
    with pytest.raises(UnusableInput, match="no trace objects"):
        analyze_partitions("memory://bucket/otel", since_ns=T0 + 300 * MIN,
                           until_ns=T0 + 301 * MIN)


def test_cli_reads_a_partitioned_prefix(bucket: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from inferaudit_analyzer.cli import analyze_main

    rc = analyze_main(["memory://bucket/otel", "--format", "json", "--no-cache",
                       "--since", str(SINCE / S), "--until", str(UNTIL / S)])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    # the default upload lag (15 min) also keeps the late upload; spans still filtered by start
    assert report["input"]["partitions"]["objects"] == 4
    assert report["window"]["start_ns"] >= SINCE
