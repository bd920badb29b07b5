#!/usr/bin/env bash
# The evaluation workload on the GPU (issue 15): 64 problems x k=8 samples through the continuous
# engine, on a SambaY with random bf16 weights in the official shapes (every sample runs to the
# limit or to a random <|end|>), with `sambay eval`, one device call.
#
#   bash examples/eval_gpu.sh                      # 1 GPU; OUT, MODEL_DIR, MAX_NEW_TOKENS, NPROC, PROBLEMS, K, SHAPE override
#   NPROC=8 bash examples/eval_gpu.sh               # torchrun over 8 GPUs of the host
#   SHAPE=tiny DEVICE=cpu MAX_NEW_TOKENS=8 PROBLEMS=4 K=2 bash examples/eval_gpu.sh   # CPU smoke run
#
# Carry .gpu/ holding the pure-Python wheels the GPU machine lacks (math_verify, latex2sympy2_extended,
# antlr4_python3_runtime 4.13.2; `pip download --no-deps -d .gpu math-verify==0.9.0
# latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2`), the mamba-ssm / causal-conv1d wheels of
# ../shared/wheels/ and o200k_base.tiktoken from ../shared/tokenizers/ (the Phi-4 tokenizer, built offline).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/eval_gpu}
MODEL_DIR=${MODEL_DIR:-$OUT/model}  # e.g. /dev/shm/...: writing 7.7 GB of weights to disk took a minute
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-2048}
NPROC=${NPROC:-1}
PROBLEMS=${PROBLEMS:-64}
K=${K:-8}
SHAPE=${SHAPE:-official}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
if ls .gpu/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --target /tmp/site .gpu/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
export SAMBAY_O200K_BPE=${SAMBAY_O200K_BPE:-$PWD/.gpu/o200k_base.tiktoken}
mkdir -p "$OUT"

# The model folder: config.json + safetensors, no tokenizer.json (so the Phi-4 tokenizer of o200k is used).
$PY - "$MODEL_DIR" "$SHAPE" "$DEVICE" <<'EOF'
import sys, time, torch
from sambay import SambaYConfig, SambaYForCausalLM
folder, shape, device = sys.argv[1:]
config = SambaYConfig.official() if shape == "official" else SambaYConfig.tiny(vocab_size=200064)
dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
t0 = time.perf_counter()
torch.manual_seed(0)
model = SambaYForCausalLM(config).to(device=device, dtype=dtype)
model.save_pretrained(folder)
print(f"random {shape} SambaY ({sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters, {dtype}) "
      f"saved to {folder} in {time.perf_counter() - t0:.0f} s")
EOF

$PY - "$OUT/problems.jsonl" "$PROBLEMS" <<'EOF'
import sys
from reasoning.curriculum import generate_problems, write_jsonl
write_jsonl(generate_problems(int(sys.argv[2]), seed=0, split="test"), sys.argv[1])
EOF

ARGS=(eval "$OUT/problems.jsonl" --model "$MODEL_DIR" --k "$K" --out "$OUT/eval" --max-new-tokens "$MAX_NEW_TOKENS"
      --temperature 0.6 --top-p 0.95 --device "$DEVICE")
if [ "$NPROC" -gt 1 ]; then
    $PY -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m reasoning "${ARGS[@]}"
else
    $PY -m reasoning "${ARGS[@]}"
fi
$PY -c "import json, sys; s = json.load(open(sys.argv[1])); print(json.dumps({k: s[k] for k in ('samples', 'length', 'truncated', 'timing')}, indent=1))" "$OUT/eval/summary.json"
