#!/usr/bin/env bash
# Install the prebuilt mamba-ssm / causal-conv1d wheels (carried in .gpu/), check every fast path
# against the reference (pytest -m gpu, ~2.5 min on an H100), then run the latency harness (~7 min).
# Both together come close to a 10-minute device call: STAGE=tests or STAGE=bench runs one half.
#   [STAGE=all|tests|bench] bash examples/gpu_check.sh [harness options...]   results under $OUT (or ./gpu_out)
set -euo pipefail
OUT=${OUT:-gpu_out}
STAGE=${STAGE:-all}
case "$STAGE" in all|tests|bench) ;; *) echo "STAGE must be all, tests or bench, got '$STAGE'" >&2; exit 2;; esac
mkdir -p "$OUT"
if ls .gpu/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
if [ "$STAGE" != bench ]; then
  python3 -m pytest -q -m gpu tests/ 2>&1 | tee "$OUT/pytest_gpu.txt" || echo "GPU TESTS FAILED"
fi
if [ "$STAGE" != tests ]; then
  python3 examples/compare_latency.py --out "$OUT" "$@" 2>&1 | tee "$OUT/harness.txt"
fi
