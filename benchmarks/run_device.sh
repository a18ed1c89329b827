#!/usr/bin/env bash
# One device call: install the carried wheels, run the GPU test tier, the project's real train and
# generate stages on the GPU (unsloth and peft backends, 4-bit), then the benchmark. Logs go to $OUT.
#   device run, carrying .whl and .bench (a saved tokenizer):  bash benchmarks/run_device.sh [tests|stages|bench|all]
set -uo pipefail
what=${1:-all}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  > "$OUT/pip.log" 2>&1 || { tail "$OUT/pip.log"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/tests PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 VIGSM_TEST_TOKENIZER=$PWD/.bench/tokenizer
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 stages/prepare.py --sample-dir data/sample --out-dir data/prepared --params benchmarks/params-gpu-smoke.yaml
if [[ $what == tests || $what == all ]]; then
  python3 -m pytest -q -s -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.log" | tail -15
fi
if [[ $what == stages || $what == all ]]; then
  python3 benchmarks/gpu_bench.py build --tokenizer .bench/tokenizer >/dev/null 2>&1 || true
  for backend in unsloth peft; do
    sed "s/backend: auto/backend: $backend/" benchmarks/params-gpu-smoke.yaml > /tmp/p-$backend.yaml
    ( time python3 stages/train.py --data-dir data/prepared --adapter-dir /tmp/a-$backend --checkpoint-dir /tmp/c-$backend \
        --metrics "$OUT/train-$backend.json" --params /tmp/p-$backend.yaml ) > "$OUT/stage-train-$backend.log" 2>&1
    tail -3 "$OUT/stage-train-$backend.log"
    ( time python3 stages/generate.py --test data/prepared/test.jsonl --adapter /tmp/a-$backend \
        --out "$OUT/pred-$backend.jsonl" --metrics "$OUT/gen-$backend.json" --params /tmp/p-$backend.yaml ) \
        > "$OUT/stage-gen-$backend.log" 2>&1
    tail -3 "$OUT/stage-gen-$backend.log"
  done
fi
if [[ $what == bench || $what == all || $what == gen ]]; then
  [[ $what == gen ]] && BENCH_ARGS="--skip-train"
  python3 benchmarks/gpu_bench.py all --tokenizer .bench/tokenizer --out "$OUT/h200.json" ${BENCH_ARGS:-} 2>&1 \
    | tee "$OUT/bench.log" | grep -v "^\[bench\] {"
fi
