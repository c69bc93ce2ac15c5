#!/usr/bin/env bash
# Real-GPU check of the device instrumentation (see scripts/gpu_check.py). Never run in CI.
#   bash scripts/gpu_check.sh [OUTDIR]
# Writes gpu_check-<host>-<utc>.{json,log} and gpu_check-console.log into OUTDIR (default .);
# exit 77 = no CUDA device (skipped), 3 = OpenTelemetry missing and no wheels carried, or
# another package the SDK needs missing.
# Python: $PYTHON, else .venv/bin/python, else python3 (on the GPU machines this workplace
# lends, python3 is the one with CUDA torch and nvidia-ml-py but no OpenTelemetry: carry the
# wheels that scripts/gpu_wheels.sh fetches into .whl/, and they are installed into a private
# folder here, never into that Python).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.}
mkdir -p "$OUT"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONDONTWRITEBYTECODE=1
if ! "$PY" -c "import opentelemetry.sdk.trace" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    SITE=$(mktemp -d /tmp/inferaudit-site.XXXXXX)
    trap 'rm -rf "$SITE"' EXIT
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl > "$OUT/gpu_check-console.log" 2>&1; then
      echo "gpu_check: installing the carried wheels failed (see $OUT/gpu_check-console.log)" \
        | tee -a "$OUT/gpu_check-console.log" >&2
      exit 3
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu_check: $PY has no OpenTelemetry SDK; run scripts/gpu_wheels.sh here and carry .whl" \
      | tee "$OUT/gpu_check-console.log" >&2
    exit 3
  fi
fi
if ! "$PY" -c "import wrapt, numpy, pynvml, torch" 2>>"$OUT/gpu_check-console.log"; then
  echo "gpu_check: $PY lacks one of wrapt, numpy, nvidia-ml-py (pynvml), torch" \
    | tee -a "$OUT/gpu_check-console.log" >&2
  exit 3
fi
# -k: a check stuck inside a CUDA or NVML call never reaches Python's SIGTERM handler.
PYTHONUNBUFFERED=1 timeout -k 15 300 "$PY" scripts/gpu_check.py --out "$OUT" 2>&1 \
  | tee -a "$OUT/gpu_check-console.log"
exit "${PIPESTATUS[0]}"
