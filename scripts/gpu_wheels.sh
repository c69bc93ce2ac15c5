#!/usr/bin/env bash
# Fetch, on a machine that reaches PyPI, the pure-Python wheels scripts/gpu_check.sh needs on a
# GPU machine whose Python lacks them: OpenTelemetry's API, SDK and semantic conventions, at the
# versions this checkout's venv runs. They land in .whl/ (git-ignored); carry that folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl
rm -f .whl/opentelemetry_*.whl
for name in opentelemetry-api opentelemetry-sdk opentelemetry-semantic-conventions; do
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation py --abi none --platform any -d .whl "$name==$version"
done
ls -l .whl
