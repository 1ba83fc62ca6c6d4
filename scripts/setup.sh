#!/usr/bin/env bash
# Creates .venv (when missing) and installs prorl_jax into it.
#   bash scripts/setup.sh        runtime dependencies only (no torch)
#   bash scripts/setup.sh test   also the test oracle (torch 2.13.0 CPU, pytest, hypothesis) and, on Linux x86_64, the
#                                TPU compiler (libtpu) the planning tests compile with
#   bash scripts/setup.sh tpu-aot / gpu-aot   the deviceless TPU compiler (libtpu) / the JAX CUDA plugin, for
#                                `python -m experiments.plan` (combine freely: `setup.sh test gpu-aot`)
# Re-running is cheap: installs are skipped while the requirement files are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0 want_tpu=0 want_gpu=0
for arg in "$@"; do
  case "$arg" in
    test) want_test=1 ;;
    tpu-aot) want_tpu=1 ;;
    gpu-aot) want_gpu=1 ;;
    *) echo "[setup] unknown option '$arg' (use: test, tpu-aot, gpu-aot)" >&2; exit 2 ;;
  esac
done
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
  # setuptools warns at every editable install that a folder named like the package may shadow it: that is the point.
  PYTHONWARNINGS=ignore pip_install --no-deps -e .
  .venv/bin/python -c "import prorl_jax" && echo "$runtime_stamp" > .venv/.stamp-runtime
fi
if [[ $want_test == 1 ]]; then
  test_stamp=$(stamp_of requirements-test.txt requirements.txt requirements-tpu-aot.txt)
  if [[ "$(cat .venv/.stamp-test 2>/dev/null)" != "$test_stamp" ]]; then
    echo "[setup] installing test dependencies (torch 2.13.0 CPU first)"
    pip_install torch==2.13.0
    pip_install -r requirements-test.txt
    if [[ "$(uname -s)/$(uname -m)" == "Linux/x86_64" ]]; then
      echo "[setup] installing the TPU compiler (libtpu) for the planning tests"
      pip_install -r requirements-tpu-aot.txt
    fi
    .venv/bin/python -c "import torch, pytest" && echo "$test_stamp" > .venv/.stamp-test
  fi
fi
if [[ $want_tpu == 1 ]] && ! .venv/bin/python -c "import libtpu" 2>/dev/null; then
  echo "[setup] installing the TPU compiler (libtpu) for deviceless planning"
  pip_install -r requirements-tpu-aot.txt
fi
if [[ $want_gpu == 1 ]] && ! .venv/bin/python -c "import jax_plugins.xla_cuda12" 2>/dev/null; then
  echo "[setup] installing the JAX CUDA plugin for deviceless planning (no GPU needed)"
  pip_install -r requirements-gpu-aot.txt
fi
