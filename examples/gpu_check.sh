#!/usr/bin/env bash
# One device call of checks and timings on the GPU machine. Installs the wheels carried in .gpu/
# (mamba-ssm, causal-conv1d, math-verify and its two pure-Python needs; see ../shared/GPU.md),
# then runs the stages named in STAGES (each bounded by its own time limit, so a slow stage
# still leaves the others' results under $OUT):
#   tests     pytest -m gpu over every GPU test file (about 5 minutes on the H200)
#   quick     the GPU tests of the paged kernels, the engine and fp8 only (about 2 minutes)
#   latency   batch-1 decode latency of both models at 2K and 32K, bf16 then fp8 weights
#   workload  the continuous-batching workload benchmark, steady state (both models)
#
#   STAGES="quick latency" bash examples/gpu_check.sh          # results under $OUT (or ./gpu_out)
set -uo pipefail
OUT=${OUT:-gpu_out}
STAGES=${STAGES:-tests latency}
mkdir -p "$OUT"
if ls .gpu/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/*.whl 2>&1 | grep -v WARNING
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 SAMBAY_GEMV_CACHE=off
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
for stage in $STAGES; do
  case "$stage" in
    tests) timeout 420 python3 -m pytest -q -rs -m gpu tests/ -p no:cacheprovider > "$OUT/pytest_gpu.txt" 2>&1
           tail -3 "$OUT/pytest_gpu.txt"; grep -E "^(FAILED|ERROR)" "$OUT/pytest_gpu.txt" | head -20 ;;
    quick) timeout 240 python3 -m pytest -q -rs -m gpu tests/test_paged_kernels.py tests/test_engine.py \
             tests/test_gpu_fp8.py tests/test_gpu.py -k "rotary or dense or engine or ladder or paged or fp8" \
             -p no:cacheprovider > "$OUT/pytest_quick.txt" 2>&1
           tail -3 "$OUT/pytest_quick.txt"; grep -E "^(FAILED|ERROR)" "$OUT/pytest_quick.txt" | head -20 ;;
    latency)
      for q in none fp8; do
        extra=(); [ "$q" = fp8 ] && extra=(--quantize fp8)
        timeout 200 python3 examples/compare_latency.py --out "$OUT/latency_$q" --models dense,sambay \
          --contexts 2048,32768 --prompt-lengths 2048 --batch-sizes 1 --decode-steps 16 --no-hf --no-plot \
          "${extra[@]}" > "$OUT/latency_$q.txt" 2>&1
        grep -v "^    {" "$OUT/latency_$q.txt" | tail -14
      done ;;
    workload)
      timeout 300 python3 examples/compare_latency.py --out "$OUT/workload" --models dense,sambay \
        --workload lognormal --requests 1024 --steady-steps 200 --max-batch-size 512 --no-plot \
        > "$OUT/workload.txt" 2>&1
      tail -25 "$OUT/workload.txt" ;;
    *) echo "unknown stage '$stage' (tests, quick, latency, workload)" >&2; exit 2 ;;
  esac
done
