"""`inferaudit analyze` on traces written by the SDK's own example server (examples.main_job).

Runs the example job once (batched mode, 8 replayed requests, in a subprocess: it sets global
OpenTelemetry providers) and checks the analyzer's numbers against what the job's client
measured. Slow (~40 s on a small machine): marked ``slow``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from inferaudit_analyzer.cli import analyze_main

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> tuple[Path, dict]:
    pytest.importorskip("torch")
    if not (ROOT / "examples" / "main_job.py").is_file():
        pytest.skip("examples/main_job.py absent")
    out = tmp_path_factory.mktemp("main_job")
    proc = subprocess.run(
        [sys.executable, "-m", "examples.main_job", "--requests", "8", "--mode", "batched",
         "--out", str(out), "--no-analyze", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"example job failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    found = sorted(out.rglob("scenario.json"))
    if not found:
        pytest.fail(f"example job wrote no scenario.json under {out}:\n{proc.stdout}")
    scenario = json.loads(found[0].read_text())
    return Path(scenario["trace_dir"]), scenario


def test_report_matches_the_client(job, tmp_path, capsys):
    trace_dir, scenario = job
    report_path = tmp_path / "r.json"
    code = analyze_main([str(trace_dir), "--format", "json", "--out", str(report_path),
                         "--no-cache"])
    err = capsys.readouterr().err
    assert code == 0, err
    rep = json.loads(report_path.read_text())
    o = rep["baseline"]["overall"]
    assert rep["input"]["errors"] == []
    assert o["requests"] == scenario["n_requests"]
    assert o["output_tokens"] == scenario["output_tokens"]
    hist = {int(k): v for k, v in o["batch_size"]["histogram"].items()}
    assert hist == dict(Counter(scenario["batch_sizes"]))
    # the request span sits inside the client's wait
    client_p50_ms = sorted(scenario["latencies_s"])[len(scenario["latencies_s"]) // 2 - 1] * 1e3
    assert o["latency_ms"]["p50"] <= client_p50_ms * 1.05 + 1.0
    assert o["device_utilization"] is not None and 0 < o["device_utilization"] <= 1
    assert o["cost_per_request_usd"] is not None and o["cost_per_request_usd"] > 0
    assert rep["bottleneck"]["layer"] in {"model", "runtime", "hardware"}
    assert rep["bottleneck"]["decided_by"]


def test_text_summary_of_the_example(job, capsys):
    trace_dir, _ = job
    assert analyze_main([str(trace_dir), "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "baseline" in out and "bottleneck" in out
