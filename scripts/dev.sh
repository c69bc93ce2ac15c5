#!/usr/bin/env bash
# One entry point that does its own set-up on a fresh machine.
#   bash scripts/dev.sh audit   # example server under replayed load -> traces -> audit report
#   bash scripts/dev.sh test    # the whole test suite (what .ci/run calls)
#   bash scripts/dev.sh setup   # only create/refresh the virtual environment
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${INFERAUDIT_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

# PyPI's Linux torch wheels carry CUDA (gigabytes). On a machine without an NVIDIA driver,
# torch alone is first installed with PyTorch's CPU index beside the usual ones, when that index
# answers (2.13.0+cpu satisfies ==2.13.0), so the main install finds it in place. If that step
# fails, the main install takes torch as before. INFERAUDIT_TORCH_INDEX overrides the choice (an
# index URL, or empty for none). Where the index does not answer (an offline mirror, as in CI),
# nothing changes.
torch_index() {
  if [ -n "${INFERAUDIT_TORCH_INDEX+set}" ]; then
    printf '%s' "$INFERAUDIT_TORCH_INDEX"
    return
  fi
  if command -v nvidia-smi >/dev/null 2>&1; then
    return
  fi
  local url="https://download.pytorch.org/whl/cpu"
  if timeout 10 "$PY" -c 'import sys, urllib.request as u
u.urlopen(u.Request(sys.argv[1] + "/torch/", method="HEAD"), timeout=5)' "$url" \
      >/dev/null 2>&1; then
    printf '%s' "$url"
  fi
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.inferaudit-setup"
  local want
  want=$(cat pyproject.toml constraints/ci.txt analyzer/inferaudit_analyzer/ingest/*.c | sha256sum | cut -c1-16)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    local index
    index=$(torch_index)
    if [ -n "$index" ]; then
      echo "torch: trying the CPU build from $index (no NVIDIA driver here)" >&2
      "$VENV/bin/python" -m pip install -q --retries 1 --timeout 15 --extra-index-url "$index" \
          -c constraints/ci.txt torch \
        || echo "torch: that index failed; the usual index provides torch" >&2
    fi
    "$VENV/bin/python" -m pip install -q -c constraints/ci.txt -e ".[all]"
    echo "$want" > "$stamp"
  fi
}

# The report test renders the HTML in a real headless browser (Debian's chromium).
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the report's browser test..." >&2
    if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
        >/dev/null 2>&1; then
      return 0
    fi
  fi
  echo "note: chromium is not installed; the headless-browser report test will be skipped" >&2
}

case "${1:-}" in
  setup)
    setup ;;
  test)
    shift
    setup
    ensure_chromium
    "$VENV/bin/python" -m ruff check .
    "$VENV/bin/lint-imports"
    "$VENV/bin/python" -m pytest -q "$@" ;;
  audit)
    shift
    setup
    "$VENV/bin/python" -m examples.main_job "$@" ;;
  *)
    echo "usage: bash scripts/dev.sh {audit|test|setup} [args...]" >&2
    exit 2 ;;
esac
