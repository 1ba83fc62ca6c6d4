#!/usr/bin/env bash
# Creates .venv (when missing) and installs prorl_jax into it.
#   bash scripts/setup.sh        runtime dependencies only (no torch)
#   bash scripts/setup.sh test   also the test oracle (torch 2.13.0 CPU, pytest, hypothesis)
# Re-running is cheap: installs are skipped while the requirement files are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[[ "${1:-}" == "test" ]] && want_test=1
PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -U pip 2>&1 | grep -v "WARNING: Location" || true
fi
pip_install() { .venv/bin/pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "WARNING: Location" || true; }
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }
runtime_stamp=$(stamp_of requirements.txt setup.py)
if [[ "$(cat .venv/.stamp-runtime 2>/dev/null)" != "$runtime_stamp" ]]; then
  echo "[setup] installing runtime dependencies"
  pip_install -r requirements.txt
  pip_install --no-deps -e .
  .venv/bin/python -c "import prorl_jax" && echo "$runtime_stamp" > .venv/.stamp-runtime
fi
if [[ $want_test == 1 ]]; then
  test_stamp=$(stamp_of requirements-test.txt requirements.txt)
  if [[ "$(cat .venv/.stamp-test 2>/dev/null)" != "$test_stamp" ]]; then
    echo "[setup] installing test dependencies (torch 2.13.0 CPU first)"
    pip_install torch==2.13.0
    pip_install -r requirements-test.txt
    .venv/bin/python -c "import torch, pytest" && echo "$test_stamp" > .venv/.stamp-test
  fi
fi
