"""scripts/gpu_check.py keeps its record on disk whatever ends the run: a host without CUDA,
a fault before any check, or ``timeout``'s SIGTERM. The checks themselves need a GPU."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _record(out: Path) -> tuple[dict, str]:
    (json_path,) = out.glob("gpu_check-*.json")
    (log_path,) = out.glob("gpu_check-*.log")
    return json.loads(json_path.read_text()), log_path.read_text()


def test_without_cuda_it_skips_and_says_so_on_disk(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 77, proc.stdout + proc.stderr
    record, log = _record(tmp_path)
    assert record["skipped"] is True and record["checks"] == {}
    assert record["torch"] and record["python"]
    assert "SKIP: no CUDA device" in log and "record: " in log


_STUB = """
import sys, time, runpy
sys.argv = ["gpu_check.py", "--out", sys.argv[1]]
mod = runpy.run_path({script!r}, run_name="gpu_check")
def body(out):
    mod["say"]("started")
    mod["RESULTS"]["checks"]["two_streams"] = {{"ok": True}}
    {body}
mod["_run"].__globals__["_run"] = body
raise SystemExit(mod["main"]())
"""


def _stub(tmp_path: Path, body: str) -> subprocess.Popen:
    code = _STUB.format(script=str(SCRIPT), body=body)
    return subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigterm_from_timeout_still_leaves_the_record(tmp_path: Path) -> None:
    proc = _stub(tmp_path, "time.sleep(60)")
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("gpu_check-*.log")) or "started" not in \
            next(tmp_path.glob("gpu_check-*.log")).read_text():
        assert time.monotonic() < deadline, "the stub never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 124, out
    record, log = _record(tmp_path)
    assert record["aborted"] == "SystemExit: 124"
    assert record["checks"] == {"two_streams": {"ok": True}}  # what was done is kept
    assert "started" in log and "ABORTED" in log


def test_a_fault_outside_the_checks_is_recorded_with_its_traceback(tmp_path: Path) -> None:
    proc = _stub(tmp_path, "raise RuntimeError('driver went away')")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    record, log = _record(tmp_path)
    assert record["aborted"] == "RuntimeError: driver went away"
    assert "Traceback" in log and "driver went away" in log
