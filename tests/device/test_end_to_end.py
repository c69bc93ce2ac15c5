"""End to end in a fresh process (configure() installs global providers): an instrumented model
with profiling on, the SDK's own file sink, and the span's trace reference resolving to a real
Kineto file beside the span file."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from inferaudit_sdk import semconv

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    import inferaudit_sdk as ia
    from inferaudit_sdk.instrumentation import instrument_model
    handle = ia.configure(trace_dir=sys.argv[1], exporters=("file",), profile_every_n=1,
                          nvml_enabled=False)
    model = instrument_model(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()),
                             model="mlp")

    @ia.audited(model="mlp")
    def handle_request():
        with torch.no_grad():
            return model(torch.randn(4, 8)).shape

    handle_request()
    ia.shutdown()
    """
)


def _attrs(span: dict) -> dict:
    out = {}
    for kv in span.get("attributes", []):
        value = kv["value"]
        out[kv["key"]] = next(iter(value.values())) if value else None
    return out


def test_file_sink_span_references_its_kineto_trace(tmp_path):
    trace_dir = tmp_path / "traces"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(trace_dir)], capture_output=True,
                          text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted(trace_dir.glob("traces-*.jsonl"))
    assert files, f"no span file in {trace_dir}: {list(trace_dir.iterdir())}"
    spans = []
    for f in files:
        for line in f.read_text().splitlines():
            for rs in json.loads(line).get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    for span in ss.get("spans", []):
                        spans.append((f, span))
    batches = [(f, s) for f, s in spans if _attrs(s).get(semconv.SPAN_ROLE) == semconv.ROLE_BATCH]
    assert len(batches) == 1
    f, span = batches[0]
    a = _attrs(span)
    rel = a[semconv.PROFILE_TRACE_PATH]
    assert rel == f"profiles/{span['spanId']}.json.gz"
    with gzip.open(Path(f).parent / rel, "rt") as fh:
        assert json.load(fh)["traceEvents"]
    assert a[semconv.DEVICE_TYPE] == "cpu"
    assert int(a[semconv.BATCH_SIZE]) == 4
    assert any(e["name"] == semconv.EVENT_PROFILE_SUMMARY for e in span.get("events", []))
    request = [s for _, s in spans if _attrs(s).get(semconv.SPAN_ROLE) == semconv.ROLE_REQUEST]
    assert span["parentSpanId"] == request[0]["spanId"]
