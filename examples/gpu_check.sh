#!/usr/bin/env bash
# One device call: install the prebuilt mamba-ssm / causal-conv1d wheels (carried in .gpu/),
# check every fast path against the reference (pytest -m gpu), then run the latency harness.
#   bash examples/gpu_check.sh [harness options...]      results under $OUT (or ./gpu_out)
set -euo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
if ls .gpu/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -m pytest -q -m gpu tests/ 2>&1 | tee "$OUT/pytest_gpu.txt" || echo "GPU TESTS FAILED"
python3 examples/compare_latency.py --out "$OUT" "$@" 2>&1 | tee "$OUT/harness.txt"
