#!/usr/bin/env bash
# GPU benchmark for one 10-minute run on a single-GPU machine (e.g. one H200) with PyTorch +
# transformers and nothing to download: prefsynth's transformers backend vs model.generate at
# batch 1/64/256 on the Qwen2.5-1.5B and SmolLM2-135M architectures (random weights, bf16), and a
# few TRL-free training steps. Writes gpu_bench.json (into $OUT when set, else the current folder).
#
#   bash benchmarks/gpu.sh [--quick] [extra gpu_bench.py flags]
#   bash benchmarks/gpu.sh --device cpu --quick      # the CPU smoke check (tests/test_gpu_bench.py)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
out_dir="${OUT:-$PWD}"
py="${PYTHON:-$(command -v python3 || command -v python)}"
mkdir -p "$out_dir"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
# 570 s hard stop: the script's own budget (540 s) ends sections first; this catches a hang
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 570 "$py" "$here/gpu_bench.py" \
  --out "$out_dir/gpu_bench.json" "$@"
rc=$?
echo "[gpu.sh] exit $rc; results: $out_dir/gpu_bench.json"
exit $rc
