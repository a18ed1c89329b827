"""The GRPO stage: rewards on literal completions, the rl params, resume selection, score with and without
the RL variant, and the stage under DVC on the tiny model (pass-through, two real steps, rerun rules)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, make_project, run, shipped_params, tiny_params, write_params
from vigsm.config import SECTIONS, RLParams, parse_section
from vigsm.errors import VigsmError
from vigsm.rewards import (
    completion_text,
    correctness_reward,
    format_reward,
    group_any_share,
    has_answer_line,
    is_correct,
    reward_functions,
)

DVC = [sys.executable, "-m", "dvc"]


def _msg(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# ---------------------------------------------------------------- rewards (pure, literal inputs)

ODD = [
    "",  # empty
    "Số táo là 12 + 3 = 1",  # truncated mid-number
    "### ",  # a marker and nothing after it
    "###",
    "Giá là 1.234,5 đồng.\n### 1.234,5",  # Vietnamese thousands and decimal comma
    "### 1 234 567,5 đ",
    "### 5\n" * 200,  # looping
    "ha" * 5000,  # a long loop without a number
    "### ∞ NaN 1e400",
    "### -0",
    "\x00\ufffd### \u2212" + "9" * 400,  # control characters, a Unicode minus and a huge number
]


@pytest.mark.parametrize("text", ODD)
@pytest.mark.parametrize("mode", ["strict", "flexible"])
def test_rewards_never_raise_on_odd_text(text, mode):
    f = correctness_reward(mode, group_size=1)
    for completion in (text, _msg(text)):
        assert f(prompts=["p"], completions=[completion], completion_ids=[[1]], answer=["5"]) in ([0.0], [1.0])
        assert format_reward(prompts=["p"], completions=[completion], completion_ids=[[1]]) in ([0.0], [1.0])


def test_correctness_reads_the_answer_as_the_score_does():
    strict, flexible = correctness_reward("strict", 1), correctness_reward("flexible", 1)
    completions = [
        "Giá là 1.234,5 đồng.\n### 1.234,5",  # Vietnamese format: 1234.5
        _msg("1.000 + 234,5 = 1234,5\n### 1234,5"),  # conversational
        "Kết quả là 1234.5",  # no marker: flexible only
        "### 1234",  # wrong
        "",
        "Số táo là 12 + 3 = 1",  # truncated
        "### 1.234,5\n" * 50,  # looping, but the answer is right
    ]
    answers = ["1234.5"] * len(completions)
    assert strict(completions=completions, answer=answers) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert flexible(completions=completions, answer=answers) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    # the reference may reach the reward as a number; a missing one is never matched
    assert flexible(completions=["### 18"], answer=[18]) == [1.0]
    assert flexible(completions=["### 18"], answer=[None]) == [0.0]
    assert flexible(completions=["### 18"]) == [0.0]
    assert is_correct("### 2,5", "2.5", strict=True) and not is_correct("### 25", "2.5", strict=True)


def test_format_reward_wants_one_answer_line():
    assert has_answer_line("Có 3 + 4 = 7 quả.\n### 7")
    assert has_answer_line("lời giải\n### Đáp án: 1.234,5 đồng")
    assert not has_answer_line("### 7\n### 7")  # looping answer lines
    assert not has_answer_line("Đáp án ### 7")  # not at the start of a line
    assert not has_answer_line("### bảy")  # no number
    assert not has_answer_line("7")
    odd = ["a\n### 7", _msg("a\n### 7"), "### 7\n### 7", None, 5]
    assert format_reward(completions=odd) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_completion_text_takes_the_last_message():
    assert completion_text("x") == "x"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "b"
    assert completion_text([]) == "" and completion_text(None) == "" and completion_text([{"content": None}]) == ""


def test_group_share_and_its_logged_metric():
    assert group_any_share([False, True, False, False, False, False], 2) == pytest.approx(1 / 3)
    assert group_any_share([True] * 4, 4) == 1.0 and group_any_share([], 4) == 0.0
    logged = []
    f = correctness_reward("flexible", group_size=2)
    out = f(completions=["### 1", "### 2", "### 3", "### 4"], answer=["1", "1", "9", "9"],
            log_metric=lambda name, value: logged.append((name, value)))
    assert out == [1.0, 0.0, 0.0, 0.0] and logged == [("groups_any_correct", 0.5)]


def test_reward_functions_and_weights():
    funcs, weights = reward_functions("strict", 0.1, 8)
    assert [f.__name__ for f in funcs] == ["correct", "format_reward"] and weights == [1.0, 0.1]
    funcs, weights = reward_functions("flexible", 0.0, 8)
    assert [f.__name__ for f in funcs] == ["correct"] and weights == [1.0]
    with pytest.raises(ValueError):
        correctness_reward("loose", 8)


# ---------------------------------------------------------------- params

def _rl_raw() -> dict:
    return dict(shipped_params()["rl"])


def test_rl_defaults_parse_and_steps_zero_is_the_default():
    rl_p = parse_section("rl", _rl_raw(), SECTIONS["rl"])
    assert isinstance(rl_p, RLParams) and rl_p.steps == 0
    assert set(_rl_raw()) == {"steps", "learning_rate", "num_generations", "prompts_per_step", "max_completion_length",
                              "temperature", "beta", "loss_type", "reward", "format_reward", "rollout",
                              "logging_steps", "save_steps", "seed"}


RL_BAD = [
    ("steps", -1, "rl.steps: must be >= 0"),
    ("steps", 1.5, "rl.steps: expected an integer"),
    ("learning_rate", 0, "rl.learning_rate: must be > 0"),
    ("num_generations", 1, "rl.num_generations: must be >= 2"),
    ("prompts_per_step", 0, "rl.prompts_per_step: must be >= 1"),
    ("max_completion_length", 0, "rl.max_completion_length: must be >= 1"),
    ("temperature", 0, "rl.temperature: must be > 0"),
    ("beta", -0.1, "rl.beta: must be >= 0"),
    ("loss_type", "ppo", "rl.loss_type: 'ppo' is not one of dapo, grpo, dr_grpo, bnpo"),
    ("reward", "exact", "rl.reward: 'exact' is not one of strict, flexible"),
    ("format_reward", -1, "rl.format_reward: must be >= 0"),
    ("rollout", "vllm", "rl.rollout: 'vllm' is not one of trl, vigsm, vigsm_graphs"),
    ("logging_steps", 0, "rl.logging_steps: must be >= 1"),
    ("save_steps", 0, "rl.save_steps: must be >= 1"),
    ("seed", -3, "rl.seed: must be >= 0"),
    ("kl", 0.1, "rl.kl: unknown key"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), RL_BAD)
def test_every_rl_key_is_checked(key, value, fragment):
    raw = _rl_raw()
    raw[key] = value
    with pytest.raises(VigsmError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        parse_section("rl", raw, SECTIONS["rl"])


def test_a_bad_rl_param_stops_the_rl_stage_in_one_line_before_loading(tmp_path):
    doc = shipped_params()
    doc["rl"]["num_generations"] = 1
    write_params(tmp_path / "params.yaml", doc)
    proc = subprocess.run([sys.executable, str(ROOT / "stages/rl.py"), "--train", "t.jsonl", "--sft-adapter", "a",
                           "--adapter-dir", str(tmp_path / "o"), "--checkpoint-dir", str(tmp_path / "c"),
                           "--metrics", str(tmp_path / "m.json"), "--params", str(tmp_path / "params.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().endswith("rl.num_generations: must be >= 2, got 1"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_grpo_config_takes_every_step_in_one_generation_batch(tmp_path):
    from vigsm.rl import grpo_config

    params = shipped_params()
    sec = {k: parse_section(k, params[k], SECTIONS[k]) for k in ("model", "lora")}
    rl_p = parse_section("rl", {**_rl_raw(), "steps": 3, "num_generations": 3, "prompts_per_step": 5, "beta": 0.04,
                              "loss_type": "dr_grpo"}, SECTIONS["rl"])
    args = grpo_config(rl_p, sec["model"], True, tmp_path)
    assert args.gradient_checkpointing is True  # as resolved (vigsm.memory), never the raw "auto"
    assert (args.per_device_train_batch_size, args.generation_batch_size, args.steps_per_generation) == (15, 15, 1)
    assert (args.num_generations, args.max_steps, args.beta, args.loss_type, args.use_vllm) == (3, 3, 0.04, "dr_grpo",
                                                                                              False)


# ---------------------------------------------------------------- rollouts (rl.rollout)

@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    """The tiny model with larger random weights (texts vary token to token) under a LoRA adapter that
    matters, gradient checkpointing on and in training mode, as TRL hands it to generate; a left-padding
    tokenizer and prompts of different lengths."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    cfg = LlamaConfig.from_pretrained(tiny_model_dir)
    cfg.initializer_range = 0.3
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    model.gradient_checkpointing_enable()
    texts = ["1+1?", "Lan có 2 cây bút, mua thêm 1 cây. Lan có bao nhiêu cây bút?", "x", "hai cộng ba bằng mấy"]
    enc = tok([tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
               for t in texts], return_tensors="pt", padding=True)
    return model, tok, enc


def _completions(out, width, eos):
    """Each row's new tokens up to and including the first end-of-turn token (TRL's mask)."""
    rows = []
    for row in out[:, width:].tolist():
        rows.append(row[:row.index(eos) + 1] if eos in row else row)
    return rows


@pytest.mark.parametrize("engine", ["vigsm", "vigsm_graphs"])
def test_vigsm_rollouts_are_generates_completions_in_its_shape(policy, engine):
    """Greedy, the vigsm engines give model.generate's completions (to the first end-of-turn token) after
    the same left-padded prompts, with KV caching although the policy is in training mode with gradient
    checkpointing, which they leave as they found it; the tokens counted are the completions' lengths."""
    import torch
    from transformers import GenerationConfig

    from vigsm.rl import Rollouts

    model, tok, enc = policy
    width = enc["input_ids"].shape[1]
    plain = GenerationConfig(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=-1)
    model.eval()
    with torch.no_grad():
        free = model.generate(**enc, generation_config=plain)[:, width:].tolist()
    # Rows that end at different steps: a token some rows produce early becomes the end-of-turn token.
    eos = free[0][4]
    gc = GenerationConfig(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=eos)
    with torch.no_grad():
        ref = _completions(model.generate(**enc, generation_config=gc), width, eos)
    assert len({len(r) for r in ref}) >= 2
    model.train()
    inner = model.generate
    timer = Rollouts(model, tok, engine, seed=3)
    try:
        with torch.no_grad():
            out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], generation_config=gc)
    finally:
        model.generate = inner
    assert model.training
    assert torch.equal(out[:, :width], enc["input_ids"])
    assert _completions(out, width, eos) == ref
    assert timer.tokens == [sum(len(r) for r in ref)] and len(timer.seconds) == 1


def test_vigsm_rollouts_sample_by_seed_and_step(policy):
    """Sampling draws from the seed, the optimiser step and the row: the same step draws the same
    completions again (a resumed run), another step or seed draws others, and rows of one prompt differ."""
    import torch
    from transformers import GenerationConfig

    from vigsm.rl import Rollouts

    model, tok, enc = policy
    ids = enc["input_ids"][:1].repeat(4, 1)
    mask = enc["attention_mask"][:1].repeat(4, 1)
    gc = GenerationConfig(max_new_tokens=10, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    inner = model.generate

    def draw(seed, step):
        timer = Rollouts(model, tok, "vigsm", seed=seed)
        timer.step = step
        try:
            with torch.no_grad():
                return model.generate(input_ids=ids, attention_mask=mask, generation_config=gc).tolist()
        finally:
            model.generate = inner

    first = draw(3, 5)
    assert draw(3, 5) == first
    assert draw(3, 6) != first and draw(4, 5) != first
    assert len({tuple(r) for r in first}) > 1


# ---------------------------------------------------------------- resume selection

def test_rl_resumes_only_a_checkpoint_of_the_same_run(tmp_path):
    import dataclasses

    from vigsm.rl import rl_fingerprint
    from vigsm.training import resume_checkpoint

    params = shipped_params()
    model_p, lora_p = (parse_section(k, params[k], SECTIONS[k]) for k in ("model", "lora"))
    rl_p = parse_section("rl", {**_rl_raw(), "steps": 10}, SECTIONS["rl"])
    train, adapter = tmp_path / "train.jsonl", tmp_path / "adapter"
    train.write_text('{"id": "a"}\n')
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"sft weights")
    fp = rl_fingerprint(model_p, lora_p, rl_p, train, adapter)
    # what does not shape the RL run leaves the fingerprint alone; what does changes it
    assert rl_fingerprint(dataclasses.replace(model_p, max_seq_length=64), dataclasses.replace(lora_p, r=4), rl_p,
                          train, adapter) == fp
    assert rl_fingerprint(model_p, lora_p, dataclasses.replace(rl_p, learning_rate=1e-5), train, adapter) != fp
    flipped = dataclasses.replace(lora_p, gradient_checkpointing=not lora_p.gradient_checkpointing)
    assert rl_fingerprint(model_p, flipped, rl_p, train, adapter) != fp
    assert rl_fingerprint(dataclasses.replace(model_p, dtype="float16"), lora_p, rl_p, train, adapter) != fp

    ckpt = tmp_path / "ckpt"
    assert resume_checkpoint(ckpt, fp) is None
    for step in (2, 4, 6):
        d = ckpt / f"checkpoint-{step}"
        d.mkdir()
        for name in ("optimizer.pt", "scheduler.pt", "adapter_model.safetensors"):
            (d / name).write_bytes(b"x")
        if step != 6:  # checkpoint-6 was torn by the kill: no trainer state
            (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert resume_checkpoint(ckpt, fp) == ckpt / "checkpoint-4"
    assert not (ckpt / "checkpoint-6").exists()
    # a new SFT adapter (SFT params changed) is another run: its checkpoints are wiped, nothing resumes
    (adapter / "adapter_model.safetensors").write_bytes(b"new sft weights")
    assert resume_checkpoint(ckpt, rl_fingerprint(model_p, lora_p, rl_p, train, adapter)) is None
    assert not (ckpt / "checkpoint-4").exists()


# ---------------------------------------------------------------- score with and without the RL variant

def _test_rows(n: int) -> list[dict]:
    return [{"id": f"q{i}", "question": f"{i} + 1?", "explanation": f"{i} + 1 = {i + 1}", "answer": str(i + 1),
             "completion": [{"role": "assistant", "content": f"{i} + 1 = {i + 1}\n### {i + 1}"}]}
            for i in range(n)]


def _preds(rows: list[dict], right: int) -> str:
    return "".join(json.dumps({"id": r["id"], "raw": f"x\n### {r['answer'] if i < right else -1}"}) + "\n"
                   for i, r in enumerate(rows))


def _score(tmp: Path, rl_steps: int, rl_text: str) -> subprocess.CompletedProcess:
    rows = _test_rows(40)
    (tmp / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "base.jsonl").write_text(_preds(rows, 4))
    (tmp / "finetuned.jsonl").write_text(_preds(rows, 10))
    (tmp / "rl.jsonl").write_text(rl_text)
    doc = shipped_params()
    doc["rl"]["steps"] = rl_steps
    doc["score"]["bootstrap_samples"] = 200
    write_params(tmp / "params.yaml", doc)
    return subprocess.run([sys.executable, str(ROOT / "stages/score.py"), "--test", str(tmp / "test.jsonl"),
                           "--predictions", f"base={tmp}/base.jsonl", f"finetuned={tmp}/finetuned.jsonl",
                           f"rl={tmp}/rl.jsonl", "--metrics", str(tmp / "score.json"), "--details",
                           str(tmp / "details.json"), "--per-question-dir", str(tmp / "pq"), "--report",
                           str(tmp / "report.md"), "--params", str(tmp / "params.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_score_leaves_rl_out_when_steps_is_zero(tmp_path):
    proc = _score(tmp_path, 0, "")
    assert proc.returncode == 0, proc.stderr
    score = json.loads((tmp_path / "score.json").read_text())
    assert set(score) == {"base", "finetuned", "delta"}
    assert not (tmp_path / "pq" / "rl.jsonl").exists() and "Did RL help?" not in (tmp_path / "report.md").read_text()


def test_score_requires_the_rl_predictions_when_steps_is_set(tmp_path):
    proc = _score(tmp_path, 5, "")
    assert proc.returncode == 2 and "rl.jsonl" in proc.stderr and not (tmp_path / "score.json").exists()


def test_score_with_three_variants_compares_rl_with_sft(tmp_path):
    rows = _test_rows(40)
    proc = _score(tmp_path, 5, _preds(rows, 30))
    assert proc.returncode == 0, proc.stderr
    score = json.loads((tmp_path / "score.json").read_text())
    assert set(score) == {"base", "finetuned", "rl", "delta", "delta_rl"}
    assert score["rl"]["exact_match_flexible"] == pytest.approx(0.75)
    d = score["delta_rl"]
    assert d["exact_match_flexible"] == pytest.approx(0.5)  # 30 - 10 right of 40, paired
    assert 0 < d["exact_match_flexible_lo"] <= 0.5 <= d["exact_match_flexible_hi"]
    assert d["exact_match_flexible_mcnemar_p"] < 1e-4  # 20 discordant pairs, all one way: 2 * 0.5**20
    assert score["delta"]["exact_match_flexible"] == pytest.approx(0.15)
    report = (tmp_path / "report.md").read_text()
    assert "| metric | base | finetuned | rl |" in report
    assert "## Did RL help?" in report and "RL minus finetuned (SFT), flexible EM: 50.0 points" in report
    assert len((tmp_path / "pq" / "rl.jsonl").read_text().splitlines()) == 40


def test_generate_rl_skips_from_the_param_without_loading(tmp_path):
    doc = shipped_params()
    write_params(tmp_path / "params.yaml", doc)  # rl.steps 0, and a hub model that is never loaded
    (tmp_path / "t.jsonl").write_text(json.dumps(_test_rows(1)[0]) + "\n")
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(ROOT / "stages/generate.py"), "--test", str(tmp_path / "t.jsonl"),
                           "--adapter", str(tmp_path / "no-adapter"), "--only-if-rl", "--out",
                           str(tmp_path / "rl.jsonl"), "--metrics", str(tmp_path / "m.json"), "--params",
                           str(tmp_path / "params.yaml")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rl.jsonl").read_text() == "" and json.loads((tmp_path / "m.json").read_text())["skipped"]
    assert "torch" not in proc.stderr and time.time() - t0 < 30


# ---------------------------------------------------------------- the stage under DVC on the tiny model

RL_ON = {"steps": 2, "num_generations": 2, "prompts_per_step": 2, "max_completion_length": 8, "save_steps": 1,
         "learning_rate": 1e-3}


def _status(project: Path) -> set[str]:
    """The stages `dvc status` finds changed (their own deps or params, not what an upstream rerun would do)."""
    return set(json.loads(run([*DVC, "status", "--json"], project).stdout))


def _set(project: Path, section: str, key: str, value) -> dict:
    path = project / "params.yaml"
    before = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc[section][key] = value
    write_params(path, doc)
    return before


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir) -> Path:
    params = tiny_params(tiny_model_dir, data={"train_limit": 24, "test_limit": 6},
                         train={"max_steps": 2, "eval_steps": 2, "save_steps": 2},
                         generate={"max_new_tokens": 8})
    dest = make_project(tmp_path_factory.mktemp("rl-project"), params)
    proc = run([*DVC, "repro"], dest)
    (dest / "repro-0.log").write_text(proc.stdout + proc.stderr)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "steps 0"], dest)
    return dest


@pytest.mark.slow
def test_steps_zero_passes_through_and_score_has_no_rl(project):
    p = project
    assert sorted(f.name for f in (p / "models/adapter-rl").iterdir()) == ["RL-SKIPPED.txt"]
    assert json.loads((p / "metrics/rl.json").read_text()) == {"steps": 0, "skipped": True}
    assert (p / "data/predictions/rl.jsonl").read_text() == ""
    assert set(json.loads((p / "metrics/score.json").read_text())) == {"base", "finetuned", "delta"}
    assert "rl.steps is 0: no RL" in (p / "repro-0.log").read_text()
    plots = json.loads(run([*DVC, "plots", "show", "--json"], p).stdout)
    assert {"Loss", "RL reward", "RL groups with a correct completion"} <= set(plots["data"]), plots.get("errors")
    assert "up to date" in run([*DVC, "status"], p).stdout


@pytest.mark.slow
def test_rerun_rules(project):
    """An rl param reruns rl (and what reads it), never train; a generate param reruns neither train nor
    rl; an SFT param reruns train, whose new adapter reruns rl."""
    p = project
    params = (p / "params.yaml").read_text(encoding="utf-8")
    try:
        _set(p, "rl", "learning_rate", 1e-4)
        assert _status(p) == {"check", "rl"}
        _set(p, "rl", "steps", 3)
        assert _status(p) == {"check", "rl", "generate-rl", "score"}
        (p / "params.yaml").write_text(params, encoding="utf-8")
        _set(p, "generate", "max_new_tokens", 9)
        assert _status(p) == {"check", "generate-base", "generate", "generate-rl"}
        (p / "params.yaml").write_text(params, encoding="utf-8")
        _set(p, "train", "learning_rate", 1e-2)
        assert _status(p) == {"check", "train"}
        run([*DVC, "repro", "train"], p)
        assert {"rl", "generate"} <= _status(p) and "train" not in _status(p)
    finally:
        (p / "params.yaml").write_text(params, encoding="utf-8")
        run(["git", "checkout", "--", "."], p)
        run([*DVC, "checkout", "-f"], p)
    assert "up to date" in run([*DVC, "status"], p).stdout


@pytest.mark.slow
def test_two_grpo_steps_then_rl_is_generated_and_scored_without_rerunning_sft(project):
    p = project
    train_metrics = (p / "metrics/train.json").read_bytes()
    for key, value in RL_ON.items():
        _set(p, "rl", key, value)
    proc = run([*DVC, "repro"], p)
    log = proc.stdout + proc.stderr
    assert "Running stage 'train'" not in log and "Running stage 'rl'" in log, log[-3000:]
    assert (p / "metrics/train.json").read_bytes() == train_metrics
    m = json.loads((p / "metrics/rl.json").read_text())
    assert m["steps"] == 2 and m["skipped"] is False and m["rows_per_step"] == 4
    assert m["rollout_tokens"] > 0 and m["step_seconds_median"] > 0 and "reward_last" in m
    assert "groups_any_correct_last" in m and "completion_length_last" in m
    # The random model answers nothing right: every group is all 0, every advantage 0, and the saved adapter
    # is the SFT one, unchanged (test_rl_learns_from_a_reward_with_spread shows it moving). It is the trained
    # "default" adapter alone: no pickle, no "ref" copy.
    from safetensors.torch import load_file

    assert m["groups_any_correct_last"] == 0 and m["reward_std_last"] == 0
    sft = load_file(p / "models/adapter/adapter_model.safetensors")
    rl = load_file(p / "models/adapter-rl/adapter_model.safetensors")
    assert sft.keys() == rl.keys()
    assert all((sft[k] - rl[k]).abs().max().item() == 0 for k in sft)
    assert not [f for f in (p / "models/adapter-rl").rglob("*") if f.suffix in (".bin", ".pt", ".pth")]
    assert not (p / "models/checkpoints-rl").exists()
    for name in ("reward.tsv", "groups_any_correct.tsv", "completions/mean_length.tsv", "reward_std.tsv"):
        lines = (p / "dvclive-rl/plots/metrics" / name).read_text().splitlines()
        assert len(lines) == 3, (name, lines)  # header + one row per step
    preds = [json.loads(x) for x in (p / "data/predictions/rl.jsonl").read_text().splitlines()]
    assert len(preds) == 6
    score = json.loads((p / "metrics/score.json").read_text())
    assert {"base", "finetuned", "rl", "delta", "delta_rl"} <= set(score)
    assert "Did RL help?" in (p / "metrics/report.md").read_text()
    run(["git", "add", "-A"], p)
    run(["git", "commit", "-qm", "rl"], p)
    out = run([sys.executable, "-m", "vigsm.compare", "HEAD", "HEAD", "--variant", "finetuned", "--variant-b",
               "rl", "--json"], p)
    res = json.loads(out.stdout)
    assert res["n"] == 6 and res["acc_b"] == score["rl"]["exact_match_flexible"]
    assert res["acc_a"] == score["finetuned"]["exact_match_flexible"]


@pytest.mark.slow
def test_rl_resumes_after_sigkill(project, tmp_path):
    """Kill the rl stage as soon as its first checkpoint is complete; the rerun resumes from a checkpoint and
    ends at the asked step, not past it."""
    from vigsm.training import checkpoint_complete

    p = project
    params = yaml.safe_load((p / "params.yaml").read_text(encoding="utf-8"))
    # Completions long enough that a step outlasts the poll below by far (the CPU rollouts are quick).
    params["rl"].update(RL_ON, steps=4, seed=7, max_completion_length=48)
    write_params(tmp_path / "params.yaml", params)
    cmd = [sys.executable, str(ROOT / "stages/rl.py"), "--train", str(p / "data/prepared/train.jsonl"),
           "--sft-adapter", str(p / "models/adapter"), "--adapter-dir", str(tmp_path / "out"),
           "--checkpoint-dir", str(tmp_path / "ckpt"), "--metrics", str(tmp_path / "rl.json"),
           "--params", str(tmp_path / "params.yaml")]
    proc = subprocess.Popen(cmd, cwd=p, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 400
    while time.time() < deadline and not checkpoint_complete(tmp_path / "ckpt" / "checkpoint-1"):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out").exists() and not (tmp_path / "rl.json").exists()
    done = subprocess.run(cmd, cwd=p, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stdout
    m = json.loads((tmp_path / "rl.json").read_text())
    assert m["steps"] == 4 and m["resumed_from_step"] >= 1


class Killed(Exception):
    pass


@pytest.mark.slow
def test_rl_killed_after_its_last_checkpoint_finishes_from_it(project, tmp_path, monkeypatch):
    """A run killed between its last checkpoint and its outputs: the rerun trains no step past rl.steps
    (transformers' Trainer, resumed at the last step, would train one more) and writes the adapter the
    uninterrupted run wrote, tensor for tensor."""
    import dataclasses

    from safetensors.torch import load_file

    import vigsm.rl as rl_mod
    from vigsm.config import load_section

    params = project / "params.yaml"
    model_p, lora_p = load_section("model", path=params), load_section("lora", path=params)
    rl_p = dataclasses.replace(load_section("rl", path=params), **{**RL_ON, "steps": 2, "save_steps": 1})
    args = (model_p, lora_p, rl_p, project / "data/prepared/train.jsonl", project / "models/adapter")
    whole = rl_mod.run_rl(*args, tmp_path / "whole", tmp_path / "ckpt-whole", tmp_path / "whole.json")

    def killed(path):
        raise Killed(path)

    real = rl_mod.atomic_dir
    monkeypatch.setattr(rl_mod, "atomic_dir", killed)
    with pytest.raises(Killed):
        rl_mod.run_rl(*args, tmp_path / "out", tmp_path / "ckpt", tmp_path / "rl.json")
    assert checkpoint_is_last(tmp_path / "ckpt", 2) and not (tmp_path / "out").exists()
    monkeypatch.setattr(rl_mod, "atomic_dir", real)
    m = rl_mod.run_rl(*args, tmp_path / "out", tmp_path / "ckpt", tmp_path / "rl.json")
    assert (m["steps"], m["resumed_from_step"], whole["steps"]) == (2, 2, 2)
    a = load_file(tmp_path / "whole/adapter_model.safetensors")
    b = load_file(tmp_path / "out/adapter_model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert not (tmp_path / "ckpt").exists()


def checkpoint_is_last(ckpt_dir: Path, step: int) -> bool:
    from vigsm.training import checkpoint_complete, checkpoint_step

    found = sorted(checkpoint_step(c) for c in ckpt_dir.glob("checkpoint-*"))
    return bool(found) and found[-1] == step and checkpoint_complete(ckpt_dir / f"checkpoint-{step}")


@pytest.mark.slow
def test_rl_learns_from_a_reward_with_spread(project, tmp_path, monkeypatch):
    """With rewards that differ within a group (here: longer completions score higher), one GRPO step moves
    the LoRA weights off the SFT adapter, and the metrics report the spread."""
    import dataclasses

    import vigsm.rl as rl_mod
    from vigsm.config import load_section

    def by_length(**kw):
        return [float(len(completion_text(c))) / 100 for c in kw["completions"]]

    by_length.__name__ = "by_length"
    monkeypatch.setattr(rl_mod, "reward_functions", lambda mode, weight, group: ([by_length], [1.0]))
    params = project / "params.yaml"
    model_p, lora_p = load_section("model", path=params), load_section("lora", path=params)
    rl_p = dataclasses.replace(load_section("rl", path=params), **{**RL_ON, "steps": 1, "temperature": 2.0})
    m = rl_mod.run_rl(model_p, lora_p, rl_p, project / "data/prepared/train.jsonl", project / "models/adapter",
                      tmp_path / "out", tmp_path / "ckpt", tmp_path / "rl.json")
    assert m["steps"] == 1 and m["reward_std_last"] > 0
    from safetensors.torch import load_file

    sft = load_file(project / "models/adapter/adapter_model.safetensors")
    rl = load_file(tmp_path / "out/adapter_model.safetensors")
    assert sft.keys() == rl.keys() and any((sft[k] - rl[k]).abs().max().item() > 0 for k in sft)
