#!/usr/bin/env bash
# Real-GPU check of the device instrumentation (see scripts/gpu_check.py). Never run in CI.
# Writes gpu_check-<host>-<utc>.{json,log} into ${1:-.}; exit 77 = no CUDA device (skipped).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec timeout 300 "$PY" scripts/gpu_check.py --out "${1:-.}"
