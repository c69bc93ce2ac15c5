"""An OTEL_* value the OpenTelemetry SDK rejects at import made ``ia.configure()`` raise into
the application; now it logs why and auditing is off."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import logging
logging.basicConfig(level=logging.WARNING)
import inferaudit_sdk as ia

h = ia.configure()
assert h.disabled and h.force_flush() is True

@ia.audited(model="m")
def f(ids):
    return [1, 2]

assert f([3]) == [1, 2]
h.shutdown()
ia.shutdown()
print("served")
"""


def test_an_otel_value_the_sdk_rejects_at_import_leaves_auditing_off_not_the_app_down(tmp_path):
    env = {**os.environ, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "-1",
           "INFERAUDIT_TRACE_DIR": str(tmp_path), "INFERAUDIT_NVML": "false"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "served"
    assert "the OpenTelemetry SDK cannot load" in out.stderr
    assert "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT" in out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written: auditing is off
