#!/usr/bin/env bash
# One device call of checks and timings on the GPU machine. Installs the wheels carried in .gpu/
# (mamba-ssm, causal-conv1d, math-verify and its needs, the server's FastAPI / uvicorn (httptools, uvloop) / openai stack;
# see ../shared/GPU.md) and uses .gpu/o200k_base.tiktoken (the Phi-4 tokenizer, built offline), then
# runs the stages named in STAGES, each bounded by its own time limit (a slow stage still leaves the
# others' results under $OUT):
#   tests     pytest -m gpu over every GPU test file, in TESTS_WORKERS (12) pytest-xdist processes
#             sharing the GPU (one process: about 7 minutes on the H200)
#   tests-rest  the GPU test files after test_gpu.py (when a first run stopped there)
#   one       the tests named in ONE ("tests/test_x.py::test_y ..."), every failure reported
#   quick     the GPU tests of the paged kernels, the engine and fp8 only (about 2 minutes)
#   attention examples/bench_paged_attention.py (decode attention kernels, bf16 and fp8 K/V)
#   profile   examples/profile_decode.py, one model per process (batch-1 kernel timeline)
#   tune      examples/bench_gemv.py --tune: sweeps the GEMV tiles of every shape (both models, bf16 and
#             fp8) into $OUT/gemv_tiles.json, shape by shape (a cut run keeps what it swept), for
#             layers/gemv_triton.TUNED_BY_DEVICE; TUNE_LIMIT seconds (default 400)
#   prefill   examples/time_prefill.py: time to the first token by prompt length, a prefill's profile
#   sampling  examples/bench_sampling.py: the sampler's cost per step by batch size (its vocabulary sort)
#   latency-bf16  the latency stage's bf16 run only
#   latency   batch-1 decode latency of both models at 2K and 32K: bf16, fp8 weights, fp8 weights + K/V
#   capacity-dense, capacity-sambay
#             the largest batch of the 2K + 32K throughput run, bf16 K/V then fp8 K/V
#   workload  the continuous-batching workload benchmark, steady state, fixed / uniform / lognormal
#             (WORKLOAD_ARGS="--profile-host": a cProfile of the host loop in each results.json)
#   memory    lognormal in a pool of 16 max-length requests (560K tokens), both models
#   validate  the steady-state method against a complete end-to-end run of a small log-normal job
#             (256 requests, lengths up to 4K, batches up to 64), both models; each builds five engines
#             (capturing graphs each time), and 120-250 s did not see the dense model through: a call
#             of its own (VALIDATE_LIMIT, default 400 s)
#   serve     through the server vs the engine alone, concurrency 1, 16, 256, both models
#   http      examples/bench_http.py: the HTTP side alone over a stand-in engine (this machine's CPU)
#   eval      sambay eval of 64 problems x k=8 (examples/eval_gpu.sh)
#   quality   examples/fp8_quality.py on the GPU (built-in model, 500 held-out problems)
#
# COMPILE=1 compiles the batch-1 step (latency, profile; graphs only otherwise). Each stage has a
# time limit; *_LIMIT variables change them.
#   STAGES="quick latency" bash examples/gpu_check.sh   # logs and JSON in $OUT/gpu_results.tgz (or ./gpu_out)
#
# Everything is written under a work folder first and packed into one archive at the end (the
# device tool returns only a few files); checkpoints written by the eval stage are left out.
set -uo pipefail
RESULTS=${OUT:-gpu_out}
OUT=${WORK:-/tmp/gpu_work}
STAGES=${STAGES:-tests latency}
mkdir -p "$OUT" "$RESULTS"
pack() { tar czf "$RESULTS/gpu_results.tgz" -C "$OUT" --exclude='*.safetensors' --exclude='model' . ; }
trap pack EXIT
if ls .gpu/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/*.whl 2>&1 | grep -v WARNING
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
NO_COMPILE=--no-compile; [ "${COMPILE:-0}" = 1 ] && NO_COMPILE=  # COMPILE=1: torch.compile the batch-1 step too
export PYTHONUNBUFFERED=1 SAMBAY_GEMV_CACHE=${SAMBAY_GEMV_CACHE:-off} SAMBAY_O200K_BPE=$PWD/.gpu/o200k_base.tiktoken
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
bench() {  # bench SECONDS NAME ARGS...: one compare_latency run, its log under $OUT/NAME.txt
  local limit=$1 name=$2; shift 2
  timeout "$limit" python3 examples/compare_latency.py --out "$OUT/$name" --no-hf --no-plot $NO_COMPILE "$@" \
    > "$OUT/$name.txt" 2>&1 || echo "[$name: exit $?]"
  grep -vE "^    \{|^(attention|paged|linear|rope|mamba|mlp|gmu)" "$OUT/$name.txt" | tail -${TAIL:-12}
}
for stage in $STAGES; do
  echo "=== $stage ($(date +%T))"
  case "$stage" in
    tests) timeout -s INT -k 20 ${TESTS_LIMIT:-480} python3 -m pytest -q -rs -m gpu -n ${TESTS_WORKERS:-12} --durations=25 tests/ -p no:cacheprovider \
             > "$OUT/pytest_gpu.txt" 2>&1
           tail -3 "$OUT/pytest_gpu.txt"; grep -E "^(FAILED|ERROR)" "$OUT/pytest_gpu.txt" | head -20 ;;
    tests-rest)  # the GPU test files after test_gpu.py (when a first run stopped there)
           timeout ${TESTS_LIMIT:-200} python3 -m pytest -q -rs -m gpu tests/test_gpu_fp8.py tests/test_paged_kernels.py \
             tests/test_train_gpu.py -p no:cacheprovider > "$OUT/pytest_gpu_rest.txt" 2>&1
           tail -3 "$OUT/pytest_gpu_rest.txt"; grep -E "^(FAILED|ERROR)" "$OUT/pytest_gpu_rest.txt" | head -20 ;;
    one)  # one test or file, stopping at the first failure: ONE="tests/test_x.py::test_y"
           timeout ${TESTS_LIMIT:-120} python3 -m pytest -q --tb=short -m gpu $ONE -p no:cacheprovider \
             > "$OUT/pytest_one.txt" 2>&1; tail -30 "$OUT/pytest_one.txt" ;;
    attention)
      timeout ${ATTN_LIMIT:-150} python3 examples/bench_paged_attention.py --out "$OUT/attention" ${ATTN_ARGS:-} > "$OUT/attention.txt" 2>&1 \
        || echo "[attention: exit $?]"
      tail -${TAIL:-14} "$OUT/attention.txt" ;;
    profile)
      for m in ${PROFILE_MODELS:-sambay dense}; do
        timeout ${PROFILE_LIMIT:-90} python3 examples/profile_decode.py --out "$OUT/profile" --models $m $NO_COMPILE \
          > "$OUT/profile_$m.txt" 2>&1 || echo "[profile $m: exit $?]"
        grep -vE "^(attention|paged|linear|rope|mamba)" "$OUT/profile_$m.txt" | tail -8
      done ;;
    quick) timeout 240 python3 -m pytest -q -rs -m gpu tests/test_paged_kernels.py tests/test_engine.py \
             tests/test_gpu_fp8.py tests/test_gpu.py -k "rotary or dense or engine or ladder or paged or fp8" \
             -p no:cacheprovider > "$OUT/pytest_quick.txt" 2>&1
           tail -3 "$OUT/pytest_quick.txt"; grep -E "^(FAILED|ERROR)" "$OUT/pytest_quick.txt" | head -20 ;;
    tune)
      SAMBAY_GEMV_CACHE="$OUT/gemv_tiles.json" timeout ${TUNE_LIMIT:-400} python3 examples/bench_gemv.py \
        --out "$OUT/gemv" --tune > "$OUT/gemv_tune.txt" 2>&1 || echo "[tune: exit $?]"
      grep -E "swept|weights per decode step" "$OUT/gemv_tune.txt" | tail -8 ;;
    prefill)
      timeout 120 python3 examples/time_prefill.py --out "$OUT/prefill" > "$OUT/prefill.txt" 2>&1 || echo "[prefill: exit $?]"
      grep -E "^(sambay|dense|tokenizer)" "$OUT/prefill.txt" ;;
    sampling)
      timeout 90 python3 examples/bench_sampling.py --out "$OUT/sampling" > "$OUT/sampling.txt" 2>&1 || echo "[sampling: exit $?]"
      tail -6 "$OUT/sampling.txt" ;;
    latency|latency-bf16)
      common=(--models dense,sambay --contexts 2048,32768 --prompt-lengths 2048 --batch-sizes 1 --decode-steps 16)
      TAIL=16 bench ${LATENCY_LIMIT:-110} latency_bf16 "${common[@]}"
      [ "$stage" = latency-bf16 ] && continue
      TAIL=16 bench ${LATENCY_LIMIT:-110} latency_fp8w --quantize fp8 "${common[@]}"
      TAIL=16 bench ${LATENCY_LIMIT:-110} latency_fp8wkv --quantize fp8 --kv-cache-dtype fp8 "${common[@]}" ;;
    capacity-dense|capacity-sambay)  # bf16 K/V without the check (the latency stage has it), then fp8 K/V
      common=(--contexts 2048,32768 --prompt-lengths 2048 --decode-steps 6 --throughput-points 2)
      if [ "$stage" = capacity-dense ]; then
        bench 80 capacity_dense_bf16 --models dense --batch-sizes 16,24,32 --no-check "${common[@]}"
        bench 100 capacity_dense_fp8kv --models dense --batch-sizes 32,48,64 --kv-cache-dtype fp8 "${common[@]}"
      else
        bench 100 capacity_sambay_bf16 --models sambay --batch-sizes 512,768 --no-check "${common[@]}"
        bench 120 capacity_sambay_fp8kv --models sambay --batch-sizes 768,1024,1536 --kv-cache-dtype fp8 "${common[@]}"
      fi ;;
    workload)
      for w in ${WORKLOADS:-lognormal uniform fixed}; do
        TAIL=10 bench ${WORKLOAD_LIMIT:-150} workload_$w --models dense,sambay --workload $w --requests 1024 \
          --steady-steps ${STEADY_STEPS:-120} --max-batch-size ${WORKLOAD_BATCH:-256} ${WORKLOAD_ARGS:-}
      done ;;
    memory)
      TAIL=8 bench 100 workload_memory --models dense,sambay --workload lognormal --requests 256 --steady-steps 100 \
        --max-batch-size 256 --num-blocks 35001 ;;
    validate)
      TAIL=12 bench ${VALIDATE_LIMIT:-400} workload_validate --models dense,sambay --workload lognormal --requests 256 \
        --steady-steps 60 --max-batch-size 64 --validate ;;
    serve)
      for m in sambay dense; do
        timeout ${SERVE_LIMIT:-150} python3 examples/serve_vs_engine.py --model $m --shape official --max-tokens ${SERVE_TOKENS:-256} \
          --concurrency 1,16,256 --requests-per-client ${SERVE_RPC:-2} --out "$OUT/serve_$m" > "$OUT/serve_$m.txt" 2>&1 || echo "[serve $m: exit $?]"
        tail -8 "$OUT/serve_$m.txt"
      done ;;
    http)
      timeout ${HTTP_LIMIT:-90} python3 examples/bench_http.py --concurrency 256 --tokens 400 --step 0.005 \
        --out "$OUT/http.json" > "$OUT/http.txt" 2>&1 || echo "[http: exit $?]"
      tail -2 "$OUT/http.txt" ;;
    eval)
      OUT="$OUT/eval" MODEL_DIR=${MODEL_DIR:-/dev/shm/sambay_eval_model} MAX_NEW_TOKENS=${EVAL_TOKENS:-1024} timeout ${EVAL_LIMIT:-200} bash examples/eval_gpu.sh > "$OUT/eval.txt" 2>&1 || echo "[eval: exit $?]"
      tail -25 "$OUT/eval.txt" ;;
    quality)
      timeout 200 python3 examples/fp8_quality.py --out "$OUT/quality" --device cuda > "$OUT/quality.txt" 2>&1 \
        || echo "[quality: exit $?]"
      tail -7 "$OUT/quality.txt" ;;
    *) echo "unknown stage '$stage' (tests, tests-rest, one, quick, attention, tune, prefill, sampling, profile, latency, latency-bf16, capacity-dense, capacity-sambay, workload, memory, validate, serve, http, eval, quality)" >&2; exit 2 ;;
  esac
done
