"""Model loading failures: one clear line that says what to do, before any long wait."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import ROOT, tiny_params, write_params

CASES = [
    # (name, model overrides, expected fragment)
    ("wrong hub id offline", {"name": "no-such-owner/no-such-model"}, "cannot reach the Hugging Face hub"),
    ("not an id or path", {"name": "qwen"}, "model.name: 'qwen' is neither a local path nor a hub id"),
    ("local path without weights", {"name": "{empty}"}, "has no config.json"),
    ("missing local path", {"name": "/nonexistent/model"}, "does not exist"),
    ("package not installed", {"name": "pkg:no_such_vigsm_pkg", "gguf_file": "x.gguf"}, "is not installed"),
]


@pytest.mark.parametrize(("name", "model", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_model_errors_are_one_line(tmp_path, name, model, fragment):
    """Each case names its own model, so none needs the tiny model (nor skips when it is missing)."""
    (tmp_path / "empty").mkdir()
    model = {k: v.format(empty=tmp_path / "empty") for k, v in model.items()}
    write_params(tmp_path / "params.yaml", tiny_params(tmp_path / "never-read", model=model))
    test = tmp_path / "t.jsonl"
    test.write_text('{"id": "test-0", "prompt": [], "question": "q", "explanation": "", "answer": "1", '
                    '"completion": [{"role": "assistant", "content": "### 1"}]}\n')
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "generate.py"), "--test", str(test), "--out",
                           str(tmp_path / "p.jsonl"), "--params", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "HF_ENDPOINT": "http://127.0.0.1:9",
                               "HF_HUB_CACHE": str(tmp_path / "hf-cache")})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert time.time() - t0 < 60


@pytest.mark.slow
def test_adapter_for_another_base_is_a_clear_error(tmp_path, tiny_model_dir):
    import torch
    from peft import get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from vigsm.config import SECTIONS, parse_section
    from vigsm.errors import VigsmError
    from vigsm.modeling import load_with_adapter, lora_config

    params = tiny_params(tiny_model_dir)
    s = {k: parse_section(k, params[k], SECTIONS[k]) for k in ("model", "lora")}
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    other = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=96, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    torch.manual_seed(0)
    get_peft_model(other, lora_config(s["lora"])).save_pretrained(tmp_path / "adapter")
    with pytest.raises(VigsmError, match="does not match base model"):
        load_with_adapter(s["model"], str(tmp_path / "adapter"))
    with pytest.raises(VigsmError, match=r"no adapter_config\.json"):
        load_with_adapter(s["model"], str(tmp_path))
