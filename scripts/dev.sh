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

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.inferaudit-setup"
  local want
  want=$(cat pyproject.toml constraints/ci.txt analyzer/inferaudit_analyzer/ingest/*.c | sha256sum | cut -c1-16)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
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
