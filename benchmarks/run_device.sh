#!/usr/bin/env bash
# The device side of the GPU work: one H200, nothing downloadable there, logs under $OUT.
#
#   bash benchmarks/run_device.sh bench     the whole benchmark (benchmarks/gpu_bench.py all); it needs about
#                                           650 s, over one call's 600 s: run `padded` and `generate` instead
#   bash benchmarks/run_device.sh train     the training paths only, each with a profiled step (where the
#                                           fixed per-step cost goes)
#   bash benchmarks/run_device.sh padded    unsloth's compiled layers on padded batches rounded to 64 tokens
#   bash benchmarks/run_device.sh defaults  params.yaml's training as shipped against the notebook's baseline,
#                                           interleaved, 3 runs each, and the notebook's decoding each round
#                                           (benchmarks/defaults_bench.py -> h200-defaults.json)
#   bash benchmarks/run_device.sh generate  the generation paths only (16-bit base with the adapter separate
#                                           or merged, and the notebook's), after a 5-step training run
#   bash benchmarks/run_device.sh tests     the GPU test tier on the tiny random model
#   bash benchmarks/run_device.sh stash     keep the carried first part of SmolLM2's GGUF (see below)
#   bash benchmarks/run_device.sh smollm2   SmolLM2-135M-Instruct (real weights): the GPU test tier (tiny
#                                           model and SmolLM2), then the real train and generate stages, both
#                                           for each backend in $BACKENDS (default "unsloth peft"), generating
#                                           from the 16-bit base (adapter separate, and merged) and the plain
#                                           4-bit + adapter path (greedy agreement: benchmarks/agreement.py);
#                                           the predictions come back for scoring; TIER=0 skips the tier
#   bash benchmarks/run_device.sh tier      the GPU test tier alone (tiny model and SmolLM2), for each
#                                           backend in $BACKENDS (default "peft unsloth")
#   bash benchmarks/run_device.sh reload    SmolLM2: the live PEFT model's greedy texts against its saved
#                                           adapter reloaded three ways (benchmarks/reload_precision.py)
#
#   bash benchmarks/run_device.sh pipeline  the whole pipeline as `dvc repro` runs it at the notebook's scale
#                                           (check -> prepare -> train, 2 epochs -> generate-base -> generate
#                                           -> score) on the 3B-shaped random model with params.yaml as shipped
#                                           but for the model and the data source, then `defaults` (40 timed
#                                           steps). It runs as one chain in its own process session, which
#                                           outlives the call while the machine stays warm (30 s): call this
#                                           mode again at once, and again, each call watching for up to
#                                           $WATCH s (default 540) and bringing back what has finished; carry
#                                           .whl .bench-tok.tar.xz on the first call
#   bash benchmarks/run_device.sh x2        on nvidia-h200-x2: the train stage (40 steps) and the generate-base
#                                           stage with gpus 2 then 1, $RUNS rounds (default 1); carry .whl
#                                           .bench-tok.tar.xz; assemble with `benchmarks/assemble.py x2`
#   bash benchmarks/run_device.sh notebook768  the notebook's decoding at its 768 new tokens on the 3B model
#                                           ($RUNS runs, default 2; carry .whl .bench-tok.tar.xz)
#   bash benchmarks/run_device.sh decode    issue 21's decoding and loading (benchmarks/decode_bench.py), no
#                                           wheels but pydantic's: carry .tok/ (SmolLM2's tokenizer files) and
#                                           .whl-dec (see below); PARTS (default
#                                           "ragged cap3b load") picks the parts, so two calls can share them: the
#                                           ragged rounds of the paths in PATHS_RAGGED (decode_bench.py's PATHS),
#                                           profiles, text equality; the 3B cap rounds (PATHS_CAP); the loading
#                                           phases and an import-time profile. Time limits RAGGED_S, CAP_S;
#                                           assemble with `benchmarks/assemble.py decode`
#   bash benchmarks/run_device.sh rows      issue 12's rows with fewer than 3 runs, as one chain like `pipeline`
#                                           (watched the same way): the 3B generate stage (separate adapter)
#                                           and the notebook's decoding, 3 rounds interleaved; then SmolLM2's
#                                           learning check (one epoch; EPOCHS=2 for two) and the generation
#                                           paths with 3 rounds. Call 1 carries .whl .gguf-a .bench-tok.tar.xz,
#                                           call 2 .gguf-b; assemble with `benchmarks/assemble.py defaults`
#   bash benchmarks/run_device.sh rl-install|rl-start|rl-watch   issue 22's learning check on SmolLM2-135M-Instruct
#                                           (real weights) on vigsm.sample 7473 / 1319: SFT, then GRPO (the rl stage
#                                           as dvc.yaml runs it, once per learning rate), then the SFT and RL adapters
#                                           answer the test split. Between SFT and RL, benchmarks/rollout_bench.py
#                                           times the rl.rollout engines; the RL runs use the fastest (or ROLLOUT).
#                                           one chain in its own process session (rl-chain), like `pipeline`.
#                                           The stages are dvc.yaml's commands (run_stages.py, --live-dir dropped).
#                                           Carried (ignored paths under /work/main): the tree with .whl-rl inside
#                                           (trl 1.14.0, datasets 4.8.5, dill, multiprocess, gguf 0.19.0, pydantic
#                                           2.14.4 and its four deps for Python 3.12; the
#                                           image has torch, transformers, peft, accelerate), .gguf-rl-a (SmolLM2's
#                                           GGUF's first 38,000,000 bytes) and .gguf-rl-b (the rest). Calls back to
#                                           back: 1. carry tree + .gguf-rl-a: rl-install; 2. tree + .gguf-rl-b:
#                                           rl-start (starts the chain, watches); 3. tree: rl-watch, again until
#                                           "done: yes". Env: SFT_STEPS (300), RL_STEPS (60), RL_LRS (learning rates,
#                                           one RL run each, results in out/lr<rate>/; default 5e-6), RL_PROMPTS
#                                           (prompts per step, 32), ROLLOUT, RL_BUDGET seconds for each
#                                           rl stage (330; past it the RL variant is generated from its last
#                                           checkpoint, which the results say), RL_SET (more rl.key=value), WATCH
#                                           (520), BASE=1 to also generate the base's answers, ADAPTER_DTYPES
#                                           (e.g. "float32 compute": the SFT adapter's answers with each
#                                           generate.adapter_dtype; RL_LRS=none then stops there). Assemble with
#                                           `benchmarks/assemble.py rl` (it scores the predictions here)
#
# The notebook-scale pair (issue 12), two calls in a row while the machine is warm:
#   call 1, carry .whl .gguf-a .bench-tok.tar.xz:  bash benchmarks/run_device.sh gen3b
#   call 2, carry .gguf-b:                         bash benchmarks/run_device.sh learning
# (.gguf-a is SmolLM2's GGUF's first 38,000,000 bytes, .gguf-b the rest; .bench-tok.tar.xz is .bench/tokenizer
# packed; bitsandbytes' wheel is stripped of the ROCm and CUDA 11/12 libraries to fit the 64 MiB.)
#
# What travels (`carry` of the device tool): .whl (../shared/tools/device-wheels.sh .whl, then
# `pip download --no-deps gguf==0.19.0 -d .whl`) and .bench/tokenizer (SmolLM2's tokenizer files). The
# wheels are installed into .site and kept in /tmp/site, which stays on the machine while it is warm
# (ignored paths inside the repository copy did not reliably survive the next call). SmolLM2's 94 MB GGUF is over one call's 64 MiB, so it travels in two parts
# (`split -b 55M`, renamed .gguf-a and .gguf-b) carried by consecutive calls:
#   call 1, carry .whl .bench:       bash benchmarks/run_device.sh install   (or bench)
#   call 2, carry .gguf-a:           bash benchmarks/run_device.sh stash
#   call 3, carry .gguf-b .bench:    bash benchmarks/run_device.sh smollm2   (or tier, reload)
set -uo pipefail
what=${1:-bench}
# a chain outlives the call that starts it: its logs stay in its folder on the machine
case $what in chain) CHAIN=/tmp/pipe ;; rows-chain) CHAIN=/tmp/rows ;; *) CHAIN= ;; esac
[[ -n $CHAIN ]] && OUT=$CHAIN/out
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# Only 8 files come back from a call: pack everything into one archive, keep the benchmark's JSON beside it.
pack() {  # the JSONs stay beside the archive only while they fit in the 8 files
  tar czf /tmp/logs.tgz -C "$OUT" . || return
  if (( $(find "$OUT" -type f -name 'h200*.json' | wc -l) <= 7 )); then find "$OUT" -type f ! -name 'h200*.json' -delete
  else find "$OUT" -type f -delete; fi
  mv /tmp/logs.tgz "$OUT/"
}
[[ -n $CHAIN || $what == rl-* ]] || trap pack EXIT  # rl-* brings back its own archive
trap 'exit 143' TERM
# decode: the image's own torch and transformers are enough (no 4-bit, no unsloth): no wheels to install
if [[ $what == decode ]]; then
  # pydantic (vigsm.config) is not in the image: carry its wheels in .whl-dec (pydantic 2.14.4, pydantic-core
  # 2.50.5, annotated-types, typing-inspection, typing-extensions 4.16.0; Python 3.12)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-dec/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  b=benchmarks/decode_bench.py
  if [[ ${GPU_TEST:-1} == 1 ]]; then  # the static decoder's GPU test first: a broken path stops here, cheaply
    VIGSM_TEST_TOKENIZER=$PWD/.tok timeout 120 python3 -m pytest -q -m gpu tests/test_decoding.py -p no:cacheprovider \
      > "$OUT/gpu-test.log" 2>&1 || { tail -n 20 "$OUT/gpu-test.log"; exit 1; }
    tail -n 1 "$OUT/gpu-test.log"
  fi
  parts=${PARTS:-ragged cap3b load}
  if [[ $parts == *ragged* || $parts == *load* ]]; then
    python3 $b build --tokenizer .tok --work /tmp/db > "$OUT/build.log" 2>&1 || { tail "$OUT/build.log"; exit 1; }
  fi
  if [[ $parts == *ragged* ]]; then
    timeout "${RAGGED_S:-290}" python3 $b ragged --work /tmp/db --out "$OUT/h200-decode-ragged.json" \
      --eager-budget "${EAGER_S:-170}" ${PATHS_RAGGED:+--paths "$PATHS_RAGGED"} > "$OUT/ragged.log" 2>&1
    grep -v "round\|Warning\|warn" "$OUT/ragged.log" | tail -n 8
  fi
  if [[ $parts == *cap3b* ]]; then
    timeout "${CAP_S:-160}" python3 $b cap3b --tokenizer .tok --out "$OUT/h200-decode-cap3b.json" \
      ${PATHS_CAP:+--cap-paths "$PATHS_CAP"} > "$OUT/cap3b.log" 2>&1
    tail -n 3 "$OUT/cap3b.log"
  fi
  if [[ $parts == *load* ]]; then
    for i in 1 2 3; do timeout 60 python3 $b load --work /tmp/db --out "$OUT/h200-decode-load-$i.json" > "$OUT/load-$i.log" 2>&1; done
    # where the import time goes (the largest cumulative entries), in a fresh process after the three loads
    python3 -X importtime -c "import torch; from transformers import AutoModelForCausalLM; from peft import PeftModel" \
      2> "$OUT/importtime.txt"; sort -t'|' -k2 -n -r "$OUT/importtime.txt" | head -n 25
  fi
  python3 $b table "$OUT"/*.json
  exit 0
fi
# rl-*: issue 22's learning check (header above); its own wheels (.whl-rl), no .site, one archive back
if [[ $what == rl-* ]]; then
  RL=/tmp/rl
  here=$(cd "$(dirname "$0")/.." && pwd)
  rl_site() {  # the carried wheels, installed once into /tmp (kept while the machine is warm)
    [[ -f /tmp/site-rl/.ok ]] && return
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-rl \
      "$here"/.whl-rl/*.whl > "$OUT/pip.log" 2>&1 || { tail "$OUT/pip.log"; return 1; }
    touch /tmp/site-rl/.ok
  }
  rl_watch() {  # wait up to $WATCH s for the chain to end, then bring back what it wrote (one archive)
    local deadline=$((SECONDS + ${WATCH:-520}))
    while [[ ! -f $RL/done && $SECONDS -lt $deadline ]]; do sleep 5; done
    echo "done: $([[ -f $RL/done ]] && echo yes || echo no)"
    grep -h "^\[stages\]\|^\[rl-chain\]" "$RL/chain.log" 2>/dev/null | tail -n 20
    grep -ho "{'loss'[^}]*}" "$RL"/out/*/rl.log 2>/dev/null | tail -n 2 | cut -c1-600
    tar czf "$OUT/rl-chain.tgz" -C "$RL" out chain.log 2>/dev/null
    ls -la "$OUT"
  }
  case $what in
    rl-install)
      nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
      rl_site || exit 1
      mkdir -p /tmp/rl-parts && cp ../.gguf-rl-a /tmp/rl-parts/ 2>/dev/null || cp .gguf-rl-a /tmp/rl-parts/ || exit 1
      ls -la /tmp/rl-parts /tmp/site-rl | head
      ;;
    rl-start)
      rl_site || exit 1
      [[ -f /tmp/rl-parts/.gguf-rl-a ]] || { echo "no first part: run rl-install first"; exit 1; }
      b=../.gguf-rl-b; [[ -f $b ]] || b=.gguf-rl-b
      if [[ ! -f $RL/started ]]; then
        mkdir -p "$RL/out" && cp -a . "$RL/repo" && mkdir -p "$RL/repo/.gguf" \
          && cat /tmp/rl-parts/.gguf-rl-a "$b" > "$RL/repo/.gguf/SmolLM2-135M-Instruct.Q4_1.gguf" \
          && touch "$RL/started" || exit 1
        (cd "$RL/repo" && setsid nohup bash benchmarks/run_device.sh rl-chain > "$RL/chain.log" 2>&1 < /dev/null &)
      fi
      rl_watch
      ;;
    rl-watch)
      rl_watch
      ;;
    rl-chain)
      trap 'touch $RL/done' EXIT
      export PYTHONPATH=/tmp/site-rl:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 VIGSM_CACHE=$PWD/.cache-vigsm
      OUT=$RL/out
      sha256sum .gguf/SmolLM2-135M-Instruct.Q4_1.gguf
      python3 -m vigsm.sample --out /tmp/nb-sample --train 7473 --test 1319 || exit 1
      # params.yaml as shipped but for: the data and the model (SmolLM2 in bfloat16: the image has no
      # bitsandbytes, so no 4-bit and no 8-bit optimiser), SFT shortened to fit the device time, and RL on.
      # shellcheck disable=SC2086
      python3 benchmarks/override_params.py params.yaml data.source=/tmp/nb-sample model.name="$PWD/.gguf" \
        model.gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf model.load_in_4bit=false train.optim=adamw_torch \
        train.backend=peft train.max_steps="${SFT_STEPS:-300}" train.eval_steps=100 train.save_steps=100 \
        rl.steps="${RL_STEPS:-60}" rl.prompts_per_step="${RL_PROMPTS:-32}" rl.num_generations=8 \
        rl.max_completion_length=192 rl.save_steps=10 ${RL_SET:-} || exit 1
      cp params.yaml "$OUT/params.yaml"
      python3 benchmarks/run_stages.py --out "$OUT/stages.json" --log-dir "$OUT" --drop-option=--live-dir \
        check prepare train || exit 1
      cp metrics/train.json "$OUT/"
      # ADAPTER_DTYPES (e.g. "float32 compute"): the SFT adapter's answers with each generate.adapter_dtype,
      # the generate stage as dvc.yaml runs it, each kept in out/adapter-<dtype>/; RL_LRS=none then skips RL.
      for dt in ${ADAPTER_DTYPES:-}; do
        python3 benchmarks/override_params.py params.yaml generate.adapter_dtype="$dt" || exit 1
        mkdir -p "$OUT/adapter-$dt"
        python3 benchmarks/run_stages.py --out "$OUT/adapter-$dt/stages.json" --log-dir "$OUT/adapter-$dt" generate
        cp data/predictions/finetuned.jsonl metrics/generate.json "$OUT/adapter-$dt/" 2>/dev/null
        echo "[rl-chain] generate with adapter_dtype $dt done"
      done
      [[ ${RL_LRS:-} == none ]] && { cp data/prepared/test.jsonl data/prepared/stats.json "$OUT/"; echo "[rl-chain] finished"; exit 0; }
      # The rollout engines (rl.rollout) on one step's rollouts from the SFT adapter, interleaved; the RL
      # runs below use the fastest that worked unless ROLLOUT names one.
      timeout 240 python3 benchmarks/rollout_bench.py --params params.yaml --train data/prepared/train.jsonl \
        --adapter models/adapter --out "$OUT/rollouts.json" > "$OUT/rollouts.log" 2>&1
      tail -n 5 "$OUT/rollouts.log" | sed 's/^/[rl-chain] /'
      engine=${ROLLOUT:-$(python3 -c "import json; print(json.load(open('$OUT/rollouts.json'))['fastest'] or 'trl')" \
        2>/dev/null || echo trl)}
      # One RL run per learning rate in RL_LRS (each within RL_BUDGET seconds), each generated and kept apart.
      argv=$(python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from run_stages import stage_command; \
import shlex; print(shlex.join(stage_command('rl', ['--live-dir'])))")
      for lr in ${RL_LRS:-5e-6}; do
        python3 benchmarks/override_params.py params.yaml rl.learning_rate="$lr" rl.rollout="$engine" || exit 1
        tag=lr$lr; mkdir -p "$OUT/$tag"; cp params.yaml "$OUT/$tag/params.yaml"
        rm -rf models/checkpoints-rl
        t0=$SECONDS
        timeout "${RL_BUDGET:-330}" bash -c "$argv" > "$OUT/$tag/rl.log" 2>&1
        rc=$?
        echo "{\"seconds\": $((SECONDS - t0)), \"rc\": $rc}" > "$OUT/$tag/rl-stage.json"
        echo "[rl-chain] rl $tag ($engine): rc=$rc $((SECONDS - t0))s"
        if [[ $rc != 0 ]]; then   # stopped at the budget: the last checkpoint's adapter stands in for the RL adapter
          last=$(ls -d models/checkpoints-rl/checkpoint-* 2>/dev/null | sort -t- -k3 -n | tail -n 1)
          [[ -n $last ]] || continue
          rm -rf models/adapter-rl && mkdir -p models/adapter-rl \
            && cp "$last"/adapter_config.json "$last"/adapter_model.safetensors models/adapter-rl/ || continue
          echo "{\"stopped_at_budget\": true, \"checkpoint\": \"$last\"}" > "$OUT/$tag/rl-fallback.json"
          echo "[rl-chain] generating the RL variant from $last"
        fi
        cp metrics/rl.json "$OUT/$tag/" 2>/dev/null
        [[ -f data/predictions/finetuned.jsonl ]] || python3 benchmarks/run_stages.py --out "$OUT/stages.json" \
          --log-dir "$OUT" --drop-option=--live-dir generate
        python3 benchmarks/run_stages.py --out "$OUT/$tag/stages.json" --log-dir "$OUT/$tag" generate-rl
        cp data/predictions/rl.jsonl metrics/generate-rl.json "$OUT/$tag/" 2>/dev/null
      done
      [[ ${BASE:-0} == 1 ]] && python3 benchmarks/run_stages.py --out "$OUT/stages.json" --log-dir "$OUT" generate-base
      cp data/prepared/test.jsonl data/prepared/stats.json data/predictions/finetuned.jsonl data/predictions/base.jsonl \
        metrics/generate.json "$OUT/" 2>/dev/null
      echo "[rl-chain] finished"
      ;;
    *) echo "unknown mode $what"; exit 2 ;;
  esac
  exit 0
fi
# Files outside the repository copy (/tmp) stay on the machine between calls while it is warm.
if [[ $what == stash ]]; then mkdir -p /tmp/gguf-parts && cp .gguf-a /tmp/gguf-parts/ && ls -la /tmp/gguf-parts; exit; fi
[[ -f .site/.ok || ! -f /tmp/site/.ok ]] || cp -a /tmp/site .site
if [[ ! -f .site/.ok ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl \
    > "$OUT/pip.log" 2>&1 || { tail "$OUT/pip.log"; exit 1; }
  touch .site/.ok && rm -rf /tmp/site && cp -a .site /tmp/site
fi
[[ $what == install ]] && exit
export PYTHONPATH=$PWD/.site:$PWD/src:$PWD/tests PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  VIGSM_TEST_TOKENIZER=$PWD/.bench/tokenizer VIGSM_CACHE=$PWD/.cache-vigsm
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[[ -f .bench/tokenizer/tokenizer.json || ! -f .bench-tok.tar.xz ]] || { mkdir -p .bench && tar xJf .bench-tok.tar.xz -C .bench; }
# The smoke params: params.yaml as shipped with these changes (so a new key in params.yaml needs no edit here).
SMOKE=(data.source=sample model.name=/tmp/qwen25-3b-random generate.batch_size=128 generate.limit=100
       generate.max_new_tokens=256 train.eval_limit=32 train.eval_steps=15 train.save_steps=15 train.max_steps=30
       train.logging_steps=5 train.per_device_train_batch_size=6 train.per_device_eval_batch_size=6
       train.gradient_accumulation_steps=2 train.pad_to_multiple_of=0)
python3 benchmarks/override_params.py /tmp/p-smoke.yaml "${SMOKE[@]}" || exit 1
[[ -n $CHAIN || $what == x2 ]] || python3 stages/prepare.py --sample-dir data/sample --system-prompt data/system_prompt.txt --out-dir data/prepared \
  --params /tmp/p-smoke.yaml \
  > "$OUT/prepare.log" 2>&1 || { tail "$OUT/prepare.log"; exit 1; }

# vi_gsm8k's sizes from vigsm.sample (7473 / 1319), prepared with params.yaml as shipped but for the model
# ($1, and $2 its GGUF file or "") and the data source, plus any further overrides ($4...): the workspace's
# params.yaml is this copy's own. $3 names the stage-times file.
prepare_notebook_scale() {
  python3 -m vigsm.sample --out /tmp/nb-sample --train 7473 --test 1319 || return 1
  python3 benchmarks/override_params.py params.yaml data.source=/tmp/nb-sample model.name="$1" model.gguf_file="$2" \
    "${@:4}" || return 1
  local first=(prepare); grep -q "^  check:" dvc.yaml && first=(check prepare)
  python3 benchmarks/run_stages.py --out "$OUT/h200-$3-stages.json" --log-dir "$OUT" "${first[@]}"
}

gpu_tests() {  # one process per backend: importing unsloth patches transformers and TRL process-wide
  for backend in ${BACKENDS:-peft unsloth}; do
    python3 -m pytest -q -s -m gpu tests/test_gpu.py -k "${2:-}$backend" -p no:cacheprovider 2>&1 \
      | tee "$OUT/gpu-tests-$1-$backend.log" | grep -E "^\[gpu\]|passed|failed|Error" | tail -12
  done
}

gguf_join() {  # $1 $2: SmolLM2's GGUF from its two carried parts, in .gguf/
  mkdir -p .gguf && cat "$1" "$2" > .gguf/SmolLM2-135M-Instruct.Q4_1.gguf && sha256sum .gguf/SmolLM2-135M-Instruct.Q4_1.gguf
}

smollm2_setup() {  # SmolLM2's GGUF from its two carried parts, and the smoke params pointing at it
  gguf_join /tmp/gguf-parts/.gguf-a .gguf-b || return 1
  sed -e "s#name: /tmp/qwen25-3b-random#name: $PWD/.gguf#" \
      -e "s#gguf_file: ''#gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf#" /tmp/p-smoke.yaml > /tmp/p.yaml
}

start_chain() {  # $1 its folder, $2 its mode: a copy of this tree runs it in its own process session
  mkdir -p "$1/out" && cp -a . "$1/repo" && touch "$1/started" || return 1
  (cd "$1/repo" && setsid nohup bash benchmarks/run_device.sh "$2" > "$1/chain.log" 2>&1 < /dev/null &)
}

watch_chain() {  # $1 its folder: wait up to $WATCH s (default 540) for it to end, bring back what it wrote
  local deadline=$((SECONDS + ${WATCH:-540}))
  while [[ ! -f $1/done && $SECONDS -lt $deadline ]]; do sleep 10; done
  cp -a "$1/out/." "$1/chain.log" "$OUT/"
  echo "chain done: $([[ -f $1/done ]] && echo yes || echo no)"; tail -n 4 "$1/chain.log"
}

random_3b() {  # the 3B-shaped random model with a fresh r=32 adapter where the generate stage reads it
  python3 benchmarks/gpu_bench.py adapter --tokenizer .bench/tokenizer --model /tmp/qwen25-3b-random \
    --adapter models/adapter > "$OUT/adapter.log" 2>&1 || { tail "$OUT/adapter.log"; return 1; }
}

gen3b_setup() {  # random_3b, then the notebook-scale data prepared for it (check needs the model built)
  random_3b && prepare_notebook_scale /tmp/qwen25-3b-random "" gen3b
}

smollm2_notebook_scale() {  # $1 $2 SmolLM2's GGUF parts, $3 the stage-times name, $4...: further overrides
  gguf_join "$1" "$2" || return 1
  prepare_notebook_scale "$PWD/.gguf" SmolLM2-135M-Instruct.Q4_1.gguf "$3" "${@:4}"
}

notebook_gen() {  # $1 result JSON, $2 new tokens (default 128): the notebook's decoding (4-bit + adapter,
                  # sampling, batch 20) on the 3B model
  VIGSM_SDPA_CUDNN=1 timeout 300 python3 benchmarks/gpu_bench.py generate --label notebook-4bit-adapter-b20-sample \
    --result "$1" --model /tmp/qwen25-3b-random --adapter models/adapter --batch 20 --questions 20 \
    --max-new-tokens "${2:-128}" --sample > "${1%.json}.log" 2>&1 || tail -n 3 "${1%.json}.log"
}

learning_check() {  # $1 $2 SmolLM2's GGUF parts: the real stages on 7473 / 1319, then the generation paths
  # one epoch (EPOCHS=2 for the notebook's two) when the session's device time is short
  smollm2_notebook_scale "$1" "$2" learning train.num_train_epochs="${EPOCHS:-1}" || return 1
  python3 benchmarks/run_stages.py --out "$OUT/h200-learning-stages.json" --log-dir "$OUT" --drop-option=--live-dir \
    train generate-base generate || return 1
  mkdir -p "$OUT/learning" && cp data/predictions/*.jsonl metrics/*.json data/prepared/stats.json "$OUT/learning/"
  # the generate stage's slot path against the static batch on the fine-tuned model (texts, answers, time)
  python3 benchmarks/generation_paths.py --params params.yaml --test data/prepared/test.jsonl \
    --adapter models/adapter --repeats 3 --out "$OUT/h200-genpaths.json" 2>&1 | tee "$OUT/genpaths.log" \
    | grep -v "^\[bench\] round"
}

case $what in
  bench)
    python3 benchmarks/gpu_bench.py all --tokenizer .bench/tokenizer --out "$OUT/h200.json" 2>&1 \
      | tee "$OUT/bench.log" | grep -v "^\[bench\] {"
    ;;
  train|padded|generate)
    python3 benchmarks/gpu_bench.py all --plan "$what" --steps 12 --tokenizer .bench/tokenizer --out "$OUT/h200.json" \
      2>&1 | tee "$OUT/bench.log" | grep -v "^\[bench\] {"
    ;;
  gen3b)
    # first of two calls in a row (the second is `learning`): stash SmolLM2's first part, then time the
    # generate stage as shipped on the 3B-shaped random model with a separate r=32 adapter, 1319 questions
    mkdir -p /tmp/gguf-parts && cp .gguf-a /tmp/gguf-parts/ || exit 1
    gen3b_setup || exit 1
    for i in 1 2 3; do
      python3 benchmarks/run_stages.py --out "$OUT/h200-gen3b-stages.json" --log-dir "$OUT" generate || exit 1
      cp metrics/generate.json "$OUT/h200-gen3b-run$i.json"
    done
    ;;
  learning)
    # second call: SmolLM2-135M-Instruct (real weights) through the real stages with params.yaml as shipped,
    # on 7473 / 1319 problems from vigsm.sample; predictions come back for scoring on the calling machine
    learning_check /tmp/gguf-parts/.gguf-a .gguf-b
    ;;
  pipeline)
    if [[ ! -f /tmp/pipe/started ]]; then   # the first call: a second copy of this tree for the bench (data prepared)
      mkdir -p /tmp/pipe && cp -a . /tmp/pipe/bench && start_chain /tmp/pipe chain || exit 1
    fi
    watch_chain /tmp/pipe
    grep -h "^\[vigsm\]" /tmp/pipe/out/train.log 2>/dev/null | tail -n 3
    for f in /tmp/pipe/out/h200-pipeline-stages.json /tmp/pipe/out/pipeline/train.json \
             /tmp/pipe/out/pipeline/generate*.json; do [[ -f $f ]] && { echo "== $f"; cat "$f"; echo; }; done
    ;;
  base-paths)
    # SmolLM2's base model (no adapter) through the generation paths: what the stop rules change in the base's
    # answers (1123 of its 1319 answers stop as loops). Call 1, carry .whl .gguf-a .bench-tok.tar.xz:
    # `bash benchmarks/run_device.sh stash; bash benchmarks/run_device.sh install`; call 2 carries .gguf-b.
    smollm2_notebook_scale /tmp/gguf-parts/.gguf-a .gguf-b base-paths || exit 1
    python3 benchmarks/generation_paths.py --params params.yaml --test data/prepared/test.jsonl --repeats 1 \
      --out "$OUT/h200-genpaths-base.json" 2>&1 | tee "$OUT/genpaths-base.log" | grep -v "^\[bench\] round"
    ;;
  graphs-texts)
    # Greedy texts of the CUDA-graph decoder (generate.cuda_graphs true, the default) against the eager slot
    # decoder (false) on SmolLM2's real base weights, 1319 questions from vigsm.sample, the generate-base stage
    # as dvc.yaml runs it, interleaved ROUNDS times (default 1); then texts/answers agreement
    # (benchmarks/agreement.py) and the score stage with eager as "base", graphs as "finetuned" (so its delta
    # and McNemar count the EM verdicts that change). Call 1, carry .whl .gguf-a:
    # `bash benchmarks/run_device.sh stash; bash benchmarks/run_device.sh install`; call 2 carries .gguf-b.
    smollm2_notebook_scale /tmp/gguf-parts/.gguf-a .gguf-b graphs-texts model.load_in_4bit=false || exit 1
    for r in $(seq "${ROUNDS:-1}"); do
      for g in false true; do
        python3 benchmarks/override_params.py "/tmp/p-$g.yaml" generate.cuda_graphs=$g || exit 1
        python3 stages/generate.py --test data/prepared/test.jsonl --params "/tmp/p-$g.yaml" \
          --out "$OUT/graphs-$g.jsonl" --metrics "$OUT/h200-graphs-$g-r$r.json" > "$OUT/gen-$g-r$r.log" 2>&1 \
          || { tail "$OUT/gen-$g-r$r.log"; exit 1; }
        echo "[bench] round $r cuda_graphs=$g: $(tail -n 1 "$OUT/gen-$g-r$r.log")"
      done
    done
    python3 benchmarks/agreement.py "$OUT/graphs-true.jsonl" "$OUT/graphs-false.jsonl" --tokenizer .gguf-tok \
      --out "$OUT/h200-graphs-agreement.json" 2>&1 | tail -n 12
    python3 stages/score.py --test data/prepared/test.jsonl --params /tmp/p-true.yaml \
      --predictions base="$OUT/graphs-false.jsonl" finetuned="$OUT/graphs-true.jsonl" \
      --metrics "$OUT/h200-graphs-score.json" --details "$OUT/graphs-details.json" --per-question-dir "$OUT/pq" \
      --report "$OUT/graphs-report.md" 2>&1 | tail -n 3
    ;;
  notebook768)
    # the notebook's decoding at its own 768 new tokens (the `rows` runs decode 128), $RUNS runs (default 2)
    random_3b || exit 1
    for i in $(seq "${RUNS:-2}"); do
      notebook_gen "$OUT/h200-notebook768-run$i.json" 768
      echo "[bench] run $i: $(head -c 400 "$OUT/h200-notebook768-run$i.json" 2>/dev/null)"
    done
    ;;
  rows)
    # call 1 (carry .whl .gguf-a .bench-tok.tar.xz) starts the chain; call 2 (carry .gguf-b) hands it SmolLM2's
    # second part; later calls watch. The part is renamed into place whole, so the chain never reads half of it.
    if [[ -f .gguf-b && ! -f /tmp/gguf-parts/.gguf-b ]]; then
      mkdir -p /tmp/gguf-parts && cp .gguf-b /tmp/gguf-parts/.gguf-b.part && mv /tmp/gguf-parts/.gguf-b{.part,}
    fi
    [[ -f /tmp/rows/started ]] || start_chain /tmp/rows rows-chain || exit 1
    watch_chain /tmp/rows
    grep -h "^\[stages\]\|^\[bench\]\|^\[vigsm\]" /tmp/rows/chain.log | tail -n 20
    ;;
  rows-chain)
    trap 'touch /tmp/rows/done' EXIT
    cp -a . /tmp/rows/learn || exit 1   # the learning check's own tree, before gen3b rewrites params.yaml
    gen3b_setup || exit 1
    for i in 1 2 3; do   # interleaved: the generate stage (separate adapter), then the notebook's decoding
      mkdir -p "$OUT/gen3b-run$i"
      python3 benchmarks/run_stages.py --out "$OUT/h200-gen3b-stages-run$i.json" --log-dir "$OUT/gen3b-run$i" generate \
        && cp metrics/generate.json "$OUT/h200-gen3b-run$i.json"
      notebook_gen "$OUT/h200-notebook-gen-run$i.json"
      echo "[bench] round $i: $(cat "$OUT/h200-notebook-gen-run$i.json" 2>/dev/null | head -c 300)"
    done
    echo "[bench] waiting for SmolLM2's second part"
    for _ in $(seq 180); do [[ -f /tmp/gguf-parts/.gguf-b ]] && break; sleep 5; done
    cd /tmp/rows/learn && learning_check .gguf-a /tmp/gguf-parts/.gguf-b
    ;;
  x2)
    # nvidia-h200-x2 (issue 15): the train stage (40 steps) and the generate-base stage (1319 questions) with
    # train.gpus / generate.gpus 2 and 1 on the 3B-shaped random model, params.yaml as shipped otherwise;
    # 2 GPUs first, so that any warm cache favours the 1-GPU runs. $RUNS rounds (default 1).
    python3 -c "import torch; print('cuda devices', torch.cuda.device_count())"
    python3 benchmarks/gpu_bench.py build --tokenizer .bench/tokenizer > "$OUT/build.log" 2>&1 || exit 1
    python3 -m vigsm.sample --out /tmp/nb-sample --train 7473 --test 1319 >> "$OUT/build.log" 2>&1 || exit 1
    for g in 2 1; do
      python3 benchmarks/override_params.py "/tmp/p$g.yaml" data.source=/tmp/nb-sample \
        model.name=/tmp/qwen25-3b-random train.max_steps=40 train.eval_limit=48 train.gpus=$g generate.gpus=$g || exit 1
    done
    python3 stages/prepare.py --sample-dir data/sample --system-prompt data/system_prompt.txt --out-dir data/prepared \
      --params /tmp/p1.yaml > "$OUT/prepare-x2.log" 2>&1 || { tail "$OUT/prepare-x2.log"; exit 1; }
    mkdir -p "$OUT/x2"
    for r in $(seq "${RUNS:-1}"); do
      for g in 2 1; do
        ( time python3 stages/train.py --data-dir data/prepared --adapter-dir /tmp/a$g --checkpoint-dir /tmp/c$g-$r \
            --metrics "$OUT/x2/train-g$g-r$r.json" --params /tmp/p$g.yaml ) > "$OUT/x2/train-g$g-r$r.log" 2>&1
        echo "train gpus=$g run $r: $(tail -n 4 "$OUT/x2/train-g$g-r$r.log" | tr '\n' ' ')"
      done
      for g in 2 1; do
        ( time python3 stages/generate.py --test data/prepared/test.jsonl --out /tmp/base-g$g-r$r.jsonl \
            --metrics "$OUT/x2/gen-g$g-r$r.json" --params /tmp/p$g.yaml ) > "$OUT/x2/gen-g$g-r$r.log" 2>&1
        echo "generate gpus=$g run $r: $(tail -n 4 "$OUT/x2/gen-g$g-r$r.log" | tr '\n' ' ')"
      done
      cmp -s /tmp/base-g1-r$r.jsonl /tmp/base-g2-r$r.jsonl && echo "run $r: 2-GPU predictions identical to 1-GPU" \
        || echo "run $r: 2-GPU predictions differ from 1-GPU"
      cp /tmp/base-g*-r$r.jsonl "$OUT/x2/" 2>/dev/null
    done
    python3 - "$OUT/x2" <<'EOF'
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + "/*.json")):
    d = json.load(open(f))
    keys = ("train_tokens_per_second", "train_wall_seconds", "rows_per_step", "processes", "peak_gpu_memory_gb",
            "generate_seconds", "new_tokens_per_second", "questions")
    print(f.split("/")[-1], {k: d[k] for k in keys if k in d})
EOF
    ;;
  chain)
    trap 'touch /tmp/pipe/done' EXIT
    # the model, an input outside the pipeline's timing (a hub download for a user)
    python3 benchmarks/gpu_bench.py build --tokenizer .bench/tokenizer > "$OUT/build.log" 2>&1
    # dvc.yaml's commands in order, timed into one file (no DVC on the device: its hashing and caching are not
    # included; no dvclive either, so train runs without --live-dir)
    prepare_notebook_scale /tmp/qwen25-3b-random "" pipeline && python3 benchmarks/run_stages.py \
      --out "$OUT/h200-pipeline-stages.json" --log-dir "$OUT" --drop-option=--live-dir train generate-base generate score
    mkdir -p "$OUT/pipeline" && cp metrics/*.json metrics/report.md data/prepared/stats.json "$OUT/pipeline/"
    cd /tmp/pipe/bench && python3 benchmarks/defaults_bench.py --tokenizer .bench/tokenizer --steps 40 \
      --out "$OUT/h200-defaults.json" > "$OUT/bench.log" 2>&1
    ;;
  defaults)
    python3 benchmarks/defaults_bench.py --tokenizer .bench/tokenizer --out "$OUT/h200-defaults.json" --notebook-gen \
      2>&1 | tee "$OUT/bench.log" | grep -v "^\[bench\] {"
    ;;
  tests)
    gpu_tests tiny
    ;;
  tier)
    smollm2_setup || exit 1
    VIGSM_GPU_GGUF_DIR=$PWD/.gguf gpu_tests all
    ;;
  reload)
    smollm2_setup || exit 1
    python3 benchmarks/reload_precision.py --params /tmp/p.yaml --data-dir data/prepared --work /tmp/rp \
      --out "$OUT/reload-precision.json" 2>&1 | tee "$OUT/reload.log" | grep "^\[reload\]"
    ;;
  smollm2)
    smollm2_setup || exit 1
    # the GPU tier first (tiny model and SmolLM2): it matters most; TIER=0 skips it (the stages alone)
    [[ ${TIER:-1} == 0 ]] || VIGSM_GPU_GGUF_DIR=$PWD/.gguf gpu_tests all
    for backend in ${BACKENDS:-unsloth peft}; do
      sed "s/backend: auto/backend: $backend/" /tmp/p.yaml > "/tmp/p-$backend.yaml"
      sed "s/base_16bit: true/base_16bit: false/" "/tmp/p-$backend.yaml" > "/tmp/p-$backend-plain.yaml"
      sed "s/merge_adapter: false/merge_adapter: true/" "/tmp/p-$backend.yaml" > "/tmp/p-$backend-merged.yaml"
      d=/tmp/s-$backend
      ( time python3 stages/train.py --data-dir data/prepared --adapter-dir $d/adapter --checkpoint-dir $d/ckpt \
          --metrics "$OUT/smollm2-train-$backend.json" --params "/tmp/p-$backend.yaml" ) > "$OUT/smollm2-$backend.log" 2>&1
      for m in base finetuned finetuned-plain finetuned-merged; do   # plain: the notebook's 4-bit base + adapter
        adapter=(); [[ $m == finetuned* ]] && adapter=(--adapter $d/adapter)
        p="/tmp/p-$backend.yaml"; [[ $m == finetuned-* ]] && p="/tmp/p-$backend-${m#finetuned-}.yaml"
        python3 stages/generate.py --test data/prepared/test.jsonl "${adapter[@]}" --out $d/$m.jsonl \
          --metrics "$d/gen-$m.json" --params "$p" >> "$OUT/smollm2-$backend.log" 2>&1
      done
      # score is a CPU stage and the device image lacks rouge_score: the predictions come back (in
      # logs.tgz) and are scored on the calling machine with stages/score.py.
      mkdir -p "$OUT/smollm2-$backend" && cp $d/*.jsonl $d/gen-*.json "$OUT/smollm2-$backend/" 2>/dev/null
      python3 - "$backend" "$d" "$OUT" <<'EOF'
import json, sys
b, d, out = sys.argv[1:]
t = json.load(open(f"{out}/smollm2-train-{b}.json"))
keys = ("backend", "global_step", "train_loss", "eval_loss", "prompt_tokens_labelled", "completion_tokens_labelled")
print(f"[smollm2] {b}: " + " ".join(f"{k}={t.get(k)}" for k in keys))
for m in ("base", "finetuned", "finetuned-plain", "finetuned-merged"):
    try:
        g = json.load(open(f"{d}/gen-{m}.json"))
    except FileNotFoundError:
        print(f"[smollm2] {b}: generate {m}: FAILED")
        continue
    print(f"[smollm2] {b}: generate {m}: {g['questions']} q in {g['generate_seconds']}s, "
          f"{g.get('new_tokens_per_second')} new tokens/s")
EOF
      for m in finetuned finetuned-merged; do   # greedy agreement with the plain 4-bit + adapter path, real weights
        [[ -f $d/$m.jsonl && -f $d/finetuned-plain.jsonl ]] || continue
        echo "[smollm2] $backend: greedy agreement $m vs 4-bit+adapter: $(python3 benchmarks/agreement.py \
          $d/$m.jsonl $d/finetuned-plain.jsonl --tokenizer .bench/tokenizer \
          --out "$OUT/smollm2-$backend/agreement-$m.json" | tr -d '\n ')"
      done
      tail -n 3 "$OUT/smollm2-$backend.log"
    done
    ;;
esac
