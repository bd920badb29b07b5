#!/usr/bin/env bash
# One GPU call that trains the built-in model: install the prebuilt mamba-ssm / causal-conv1d
# wheels (carried in .gpu/, see ../shared/GPU.md), check training gradients of the fast paths
# against the references, then train and evaluate.
#
#   bash examples/train_default.sh sambay                 # the shipped model -> $OUT/sambay/
#   bash examples/train_default.sh dense --dense          # its dense twin    -> $OUT/dense/
#
# Extra arguments go to examples/train_default.py. Under $OUT/<name>/ (or ./runs/<name>/):
# model/ (the checkpoint to copy to reasoning/default_model/), train_log.json, stdout.txt.
set -uo pipefail
name=${1:?usage: bash examples/train_default.sh NAME [train_default.py options...]}
shift
run="${OUT:-runs}/$name"
mkdir -p "$run"
if ls .gpu/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
  python3 -m pytest -q -m gpu tests/test_train_gpu.py 2>&1 || echo "TRAINING GPU TESTS FAILED (training runs anyway)"
  python3 examples/train_default.py --out "$run" "$@" 2>&1
} | tee "$run/stdout.txt"
