"""Throughput of ``inferaudit collect`` over OTLP/HTTP protobuf, beside the raw decode cost.

Run:  .venv/bin/python bench/collector_throughput.py [--seconds 10] [--workers 2] [--json out.json]

What it measures, on this machine, side by side (ratios are what to compare across machines):

1. ``decode``: ``ExportTraceServiceRequest.FromString`` (opentelemetry-proto, upb) alone;
2. ``decode+walk``: the receiver's parse + OTLP-JSON line building, in process, no I/O;
3. ``received`` / ``written``: the real receiver in a subprocess (``python -m
   inferaudit_collector.cli --workers N``) fed pre-encoded 512-span requests over keep-alive
   HTTP by sender threads in another process; received = acknowledged spans / send time,
   written = spans found on disk / (send time + drain after SIGTERM). Peak RSS is the VmHWM
   of the receiver processes, summed.

Target from the issue: >= 50,000 spans/s sustained on 2 cores, peak RSS < 300 MB.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SPANS_PER_REQUEST = 512
REPO = Path(__file__).resolve().parents[1]


def _template() -> bytes:
    """One 512-span request shaped like InferAudit request spans (10 attributes each)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    from inferaudit_sdk import semconv as sc

    res = Resource.create({sc.SERVICE_NAME: "bench-llm", sc.HOST_NAME: "node-1"})
    scope = InstrumentationScope(sc.INSTRUMENTATION_NAME, "0.1.0")
    spans = []
    for i in range(SPANS_PER_REQUEST):
        ctx = SpanContext((i + 1) << 64 | 7, i + 1, False, TraceFlags(1))
        spans.append(ReadableSpan(
            name="chat llama-3-8b", context=ctx, parent=None, resource=res, kind=SpanKind.SERVER,
            attributes={
                sc.GEN_AI_OPERATION_NAME: sc.OPERATION_CHAT,
                sc.GEN_AI_REQUEST_MODEL: "llama-3-8b",
                sc.GEN_AI_PROVIDER_NAME: "inferaudit.bench",
                sc.SPAN_ROLE: sc.ROLE_REQUEST,
                sc.GEN_AI_USAGE_INPUT_TOKENS: 100 + i % 900,
                sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20 + i % 300,
                sc.REQUEST_TIME_TO_FIRST_TOKEN_NS: 40_000_000 + i * 1013,
                sc.PROMPT_FINGERPRINT: f"{i * 2654435761 % 2**64:016x}" * 2,
                sc.ROUTE: "/v1/chat/completions",
                sc.CACHE_HIT: i % 4 == 0,
            },
            start_time=1_700_000_000_000_000_000 + i * 10_000,
            end_time=1_700_000_000_000_000_000 + i * 10_000 + 250_000_000,
            instrumentation_scope=scope,
        ))
    return encode_spans(spans).SerializeToString()


def _payloads(n: int, salt: int) -> list[bytes]:
    """``n`` distinct requests (fresh span ids) from the template, cheaply."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    template = _template()
    out = []
    for r in range(n):
        req = ExportTraceServiceRequest.FromString(template)
        for k, span in enumerate(req.resource_spans[0].scope_spans[0].spans):
            span.span_id = struct.pack(">HIH", salt, r, k)
        out.append(req.SerializeToString())
    return out


def _in_process(payloads: list[bytes]) -> dict[str, float]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from inferaudit_collector.decode import encode_traces, parse_traces

    spans = SPANS_PER_REQUEST * len(payloads)
    t0 = time.perf_counter()
    for p in payloads:
        ExportTraceServiceRequest.FromString(p)
    t1 = time.perf_counter()
    for p in payloads:
        encode_traces(parse_traces(p, json_body=False))
    t2 = time.perf_counter()
    return {"decode_spans_per_s": spans / (t1 - t0), "decode_walk_spans_per_s": spans / (t2 - t1)}


def _sender(port: int, payloads: list[bytes], seconds: float, threads: int,
            result: Any) -> None:
    acked = [0] * threads
    stop_at = time.monotonic() + seconds

    def run(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = k
        while time.monotonic() < stop_at:
            conn.request("POST", "/v1/traces", payloads[i % len(payloads)],
                         {"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                acked[k] += SPANS_PER_REQUEST
            elif resp.status in (429, 503):
                time.sleep(0.01)
            i += threads
        conn.close()

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    result.put((sum(acked), time.monotonic() - t0))


def _vm_hwm_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree_hwm_bytes(pid: int) -> int:
    """Peak RSS of the receiver and its worker processes (``--workers``), summed."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return _vm_hwm_bytes(pid) + sum(_vm_hwm_bytes(int(k)) for k in kids)


def _count_spans_on_disk(directory: Path) -> int:
    n = 0
    for p in directory.iterdir():
        if p.name.endswith(".jsonl"):
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    n += chunk.count(b'"startTimeUnixNano"')  # once per span, never in events
    return n


def _receiver(payloads: list[bytes], seconds: float, senders: int, extra: list[str],
              ) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="inferaudit-bench-"))
    ready = tmp / "ready.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "collector"), str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferaudit_collector.cli", "--dir", str(tmp / "out"),
         "--http-port", "0", "--no-grpc", "--ready-file", str(ready), *extra],
        env=env, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "no start")
        time.sleep(0.05)
    port = json.loads(ready.read_text())["http"]
    q: Any = mp.get_context("fork").Queue()
    sender = mp.get_context("fork").Process(
        target=_sender, args=(port, payloads, seconds, senders, q))
    sender.start()
    acked, send_s = q.get(timeout=seconds + 120)
    sender.join(30)
    hwm = _tree_hwm_bytes(proc.pid)
    t_stop = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    drain_s = time.monotonic() - t_stop
    on_disk = _count_spans_on_disk(tmp / "out")
    return {
        "acked_spans": acked,
        "spans_on_disk": on_disk,
        "send_s": send_s,
        "drain_after_stop_s": drain_s,
        "received_spans_per_s": acked / send_s,
        "written_spans_per_s": on_disk / (send_s + drain_s),
        "peak_rss_mb": hwm / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--senders", type=int, default=4, help="sender threads (keep-alive each)")
    ap.add_argument("--workers", type=int, default=2,
                    help="receiver processes (inferaudit collect --workers); 2 for 2 cores")
    ap.add_argument("--requests", type=int, default=64, help="distinct payloads cycled")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("receiver_args", nargs="*", help="extra args for inferaudit collect")
    args = ap.parse_args(argv)

    from google.protobuf.internal import api_implementation

    payloads = _payloads(args.requests, salt=1)
    results: dict[str, Any] = {
        "provenance": {
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(),
            "protobuf_backend": api_implementation.Type(),
            "cpu_count": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None,
            "load_avg_1m": os.getloadavg()[0],
            "commit": _commit(),
            "request_bytes": len(payloads[0]),
            "spans_per_request": SPANS_PER_REQUEST,
            "senders": args.senders,
            "receiver_workers": args.workers,
            "seconds": args.seconds,
        },
        "in_process": _in_process(payloads[:16]),
    }
    results["receiver_http_protobuf"] = _receiver(
        payloads, args.seconds, args.senders, ["--workers", str(args.workers), *args.receiver_args])
    r, ip = results["receiver_http_protobuf"], results["in_process"]
    results["ratios"] = {
        "received_over_decode": r["received_spans_per_s"] / ip["decode_spans_per_s"],
        "received_over_decode_walk": r["received_spans_per_s"] / ip["decode_walk_spans_per_s"],
    }
    results["target"] = {
        "spans_per_s": 50_000, "peak_rss_mb": 300,
        "met": r["written_spans_per_s"] >= 50_000 and r["peak_rss_mb"] < 300,
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
