#!/usr/bin/env bash
# Issue 22's learning check on one H200: SmolLM2-135M-Instruct (real weights) on vigsm.sample's notebook-scale
# set (7473 / 1319), SFT then GRPO, then the SFT and RL adapters answer the test split. The stages are
# dvc.yaml's own commands (benchmarks/run_stages.py; the device has no DVC and no dvclive, so --live-dir is
# dropped). Scoring is a CPU stage and the device lacks rouge_score: the predictions come back and
# benchmarks/rl_results.py scores them here and writes benchmarks/results/<date>-h200-rl.json.
#
# What travels (carry), prepared on the calling machine under /work/main (ignored paths):
#   .wt-rl      this worktree's tracked files, with .wt-rl/.whl-rl holding trl 1.14.0, datasets 4.8.5, dill,
#               multiprocess and gguf 0.19.0 (the image has torch, transformers, peft, accelerate)
#   .gguf-rl-a  SmolLM2's GGUF's first 38,000,000 bytes; .gguf-rl-b the rest (one call carries 64 MiB at most)
# Calls, back to back (a machine stays warm 30 s):
#   1. carry .wt-rl .gguf-rl-a:  cd .wt-rl && bash benchmarks/run_device_rl.sh install
#   2. carry .wt-rl .gguf-rl-b:  cd .wt-rl && bash benchmarks/run_device_rl.sh start     (starts the chain, watches)
#   3. carry .wt-rl:             cd .wt-rl && bash benchmarks/run_device_rl.sh watch     (again until "done: yes")
# Environment: SFT_STEPS (default 300), RL_STEPS (60), RL_BUDGET seconds for the rl stage (330: past it the
# stage is stopped and the RL variant is generated from its last checkpoint, which the results then say),
# RL_SET (further rl.key=value overrides), WATCH seconds a call watches (default 520), BASE=1 to also
# generate the base model's answers at the end.
set -uo pipefail
what=${1:-watch}
CHAIN=/tmp/rl
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
here=$(cd "$(dirname "$0")/.." && pwd)

site() {  # the carried wheels, installed once into /tmp (kept while the machine is warm)
  [[ -f /tmp/site-rl/.ok ]] && return
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-rl \
    "$here"/.whl-rl/*.whl > "$OUT/pip.log" 2>&1 || { tail "$OUT/pip.log"; return 1; }
  touch /tmp/site-rl/.ok
}

watch() {  # wait up to $WATCH s for the chain to end, then bring back what it wrote (one archive)
  local deadline=$((SECONDS + ${WATCH:-520}))
  while [[ ! -f $CHAIN/done && $SECONDS -lt $deadline ]]; do sleep 5; done
  echo "done: $([[ -f $CHAIN/done ]] && echo yes || echo no)"
  grep -h "^\[stages\]\|^\[rl-chain\]" "$CHAIN/chain.log" 2>/dev/null | tail -n 20
  grep -ho "{'loss'[^}]*}" "$CHAIN/out/rl.log" 2>/dev/null | tail -n 2 | cut -c1-600
  tar czf "$OUT/rl-chain.tgz" -C "$CHAIN" out chain.log 2>/dev/null
  ls -la "$OUT"
}

case $what in
  install)
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    site || exit 1
    mkdir -p /tmp/rl-parts && cp ../.gguf-rl-a /tmp/rl-parts/ 2>/dev/null || cp .gguf-rl-a /tmp/rl-parts/ || exit 1
    ls -la /tmp/rl-parts /tmp/site-rl | head
    ;;
  start)
    site || exit 1
    [[ -f /tmp/rl-parts/.gguf-rl-a ]] || { echo "no first part: run install first"; exit 1; }
    b=../.gguf-rl-b; [[ -f $b ]] || b=.gguf-rl-b
    if [[ ! -f $CHAIN/started ]]; then
      mkdir -p "$CHAIN/out" && cp -a . "$CHAIN/repo" && mkdir -p "$CHAIN/repo/.gguf" \
        && cat /tmp/rl-parts/.gguf-rl-a "$b" > "$CHAIN/repo/.gguf/SmolLM2-135M-Instruct.Q4_1.gguf" \
        && touch "$CHAIN/started" || exit 1
      (cd "$CHAIN/repo" && setsid nohup bash benchmarks/run_device_rl.sh chain > "$CHAIN/chain.log" 2>&1 < /dev/null &)
    fi
    watch
    ;;
  watch)
    watch
    ;;
  chain)
    trap 'touch $CHAIN/done' EXIT
    export PYTHONPATH=/tmp/site-rl:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 VIGSM_CACHE=$PWD/.cache-vigsm
    OUT=$CHAIN/out
    sha256sum .gguf/SmolLM2-135M-Instruct.Q4_1.gguf
    python3 -m vigsm.sample --out /tmp/nb-sample --train 7473 --test 1319 || exit 1
    # params.yaml as shipped but for: the data and the model (SmolLM2 in bfloat16: the image has no
    # bitsandbytes, so no 4-bit and no 8-bit optimiser), SFT shortened to fit the device time, and RL on.
    # shellcheck disable=SC2086
    python3 benchmarks/override_params.py params.yaml data.source=/tmp/nb-sample model.name="$PWD/.gguf" \
      model.gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf model.load_in_4bit=false train.optim=adamw_torch \
      train.backend=peft train.max_steps="${SFT_STEPS:-300}" train.eval_steps=100 train.save_steps=100 \
      rl.steps="${RL_STEPS:-60}" rl.prompts_per_step=16 rl.num_generations=8 rl.learning_rate=2e-5 \
      rl.max_completion_length=192 rl.save_steps=10 ${RL_SET:-} || exit 1
    cp params.yaml "$OUT/params.yaml"
    python3 benchmarks/run_stages.py --out "$OUT/stages.json" --log-dir "$OUT" --drop-option=--live-dir \
      check prepare train || exit 1
    # The rl stage as dvc.yaml runs it, within RL_BUDGET seconds.
    argv=$(python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from run_stages import stage_command; \
import shlex; print(shlex.join(stage_command('rl', ['--live-dir'])))")
    t0=$SECONDS
    timeout "${RL_BUDGET:-330}" bash -c "$argv" > "$OUT/rl.log" 2>&1
    rc=$?
    echo "{\"seconds\": $((SECONDS - t0)), \"rc\": $rc}" > "$OUT/rl-stage.json"
    echo "[rl-chain] rl: rc=$rc $((SECONDS - t0))s"
    if [[ $rc != 0 ]]; then   # stopped at the budget: the last checkpoint's adapter stands in for the RL adapter
      last=$(ls -d models/checkpoints-rl/checkpoint-* 2>/dev/null | sort -t- -k3 -n | tail -n 1)
      [[ -n $last ]] || exit 1
      rm -rf models/adapter-rl && mkdir -p models/adapter-rl \
        && cp "$last"/adapter_config.json "$last"/adapter_model.safetensors models/adapter-rl/ || exit 1
      echo "{\"stopped_at_budget\": true, \"checkpoint\": \"$last\"}" > "$OUT/rl-fallback.json"
      echo "[rl-chain] generating the RL variant from $last"
    fi
    cp metrics/train.json metrics/rl.json "$OUT/" 2>/dev/null
    python3 benchmarks/run_stages.py --out "$OUT/stages.json" --log-dir "$OUT" --drop-option=--live-dir \
      generate generate-rl
    [[ ${BASE:-0} == 1 ]] && python3 benchmarks/run_stages.py --out "$OUT/stages.json" --log-dir "$OUT" generate-base
    cp data/prepared/test.jsonl data/prepared/stats.json data/predictions/*.jsonl metrics/*.json "$OUT/" 2>/dev/null
    echo "[rl-chain] finished"
    ;;
esac
