"""Paths live only in dvc.yaml: ask, compare and export find the outputs they read through DVC's API, so
renaming an output in dvc.yaml is one edit. Runs on a throwaway git + DVC repository without a model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SHIPPED_PARAMS, run, shipped_params

DVC = [sys.executable, "-m", "dvc"]
# A stand-in for stages/train.py and stages/score.py: writes whatever its options name.
FAKE_STAGE = """
import json, sys
from pathlib import Path
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
if "--adapter-dir" in args:
    d = Path(args["--adapter-dir"]); d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_config.json").write_text(json.dumps({"r": int(args["--r"])}))
else:
    d = Path(args["--per-question-dir"]); d.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"q{i}", "correct_flexible": i < int(args["--right"]), "correct_strict": False} for i in range(20)]
    (d / "finetuned.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
"""


def _pipeline(adapter: str, per_question: str, r: int, right: int) -> dict:
    return {"stages": {
        "train": {"cmd": f"python fake.py --adapter-dir {adapter} --r {r}", "deps": ["fake.py"], "outs": [adapter]},
        "score": {"cmd": f"python fake.py --per-question-dir {per_question} --right {right}", "deps": ["fake.py"],
                  "outs": [{per_question: {"cache": False}}]},
    }}


@pytest.fixture
def repo(tmp_path) -> Path:
    (tmp_path / "fake.py").write_text(FAKE_STAGE)
    run(["git", "init", "-q"], tmp_path)
    run(["git", "config", "user.email", "t@vigsm.local"], tmp_path)
    run(["git", "config", "user.name", "t"], tmp_path)
    run([*DVC, "init", "-q"], tmp_path)
    run([*DVC, "config", "core.analytics", "false"], tmp_path)
    return tmp_path


def _commit(repo: Path, pipeline: dict, message: str) -> None:
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    run([*DVC, "repro", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


def test_the_project_dvc_yaml_names_the_outputs_the_tools_read():
    from vigsm.paths import adapter_dir, per_question_file

    assert adapter_dir(repo=str(ROOT)) == "models/adapter"
    assert per_question_file("base", repo=str(ROOT)) == "metrics/per_question/base.jsonl"


def test_renaming_in_dvc_yaml_is_the_one_edit(repo, monkeypatch):
    """Outputs renamed in dvc.yaml: ask's adapter (also at an older revision, where the old name holds),
    compare's per-question files, and a clear error when a stage stops declaring the path."""
    from vigsm import ask, compare
    from vigsm.errors import VigsmError
    from vigsm.paths import adapter_dir, stage_path

    monkeypatch.chdir(repo)
    _commit(repo, _pipeline("models/adapter", "metrics/per_question", r=4, right=5), "v1")
    _commit(repo, _pipeline("weights/lora", "scores/by_question", r=8, right=15), "renamed")
    assert adapter_dir() == "weights/lora" and adapter_dir(rev="HEAD~1") == "models/adapter"

    new = ask.fetch_adapter("HEAD", repo / "got-new")
    old = ask.fetch_adapter("HEAD~1", repo / "got-old")
    assert json.loads((new / "adapter_config.json").read_text()) == {"r": 8}
    assert json.loads((old / "adapter_config.json").read_text()) == {"r": 4}

    res = compare.compare("HEAD~1", "HEAD", repo=str(repo), samples=200)
    assert (res["acc_a"], res["acc_b"], res["n"]) == (5 / 20, 15 / 20, 20)

    broken = _pipeline("weights/lora", "scores/by_question", r=8, right=15)
    broken["stages"]["train"]["outs"] = ["weights/other"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(VigsmError, match="not one of its outs"):
        stage_path("train", "--adapter-dir")
    with pytest.raises(VigsmError, match="does not pass --no-such"):
        stage_path("train", "--no-such")


def test_ask_reads_its_params_file_at_a_revision(repo, monkeypatch):
    from vigsm.ask import params_at

    monkeypatch.chdir(repo)
    (repo / "other.yaml").write_text("data:\n  system_prompt: committed\n")
    _commit(repo, _pipeline("models/adapter", "metrics/per_question", r=4, right=5), "v1")
    (repo / "other.yaml").write_text("data:\n  system_prompt: workspace\n")
    assert params_at(None, "other.yaml")["data"]["system_prompt"] == "workspace"
    assert params_at("HEAD", "other.yaml")["data"]["system_prompt"] == "committed"


def test_export_takes_the_adapter_from_dvc_yaml_and_needs_an_out(repo):
    """No default output path in the code: without --out export stops; without --adapter it looks where
    dvc.yaml says train writes (here a renamed, missing directory: the error names it)."""
    (repo / "dvc.yaml").write_text(yaml.safe_dump(_pipeline("weights/lora", "scores/q", r=4, right=5)))
    (repo / "params.yaml").write_text(SHIPPED_PARAMS.read_text(encoding="utf-8"))
    no_out = run([sys.executable, "-m", "vigsm.export"], repo, check=False)
    assert no_out.returncode == 2 and "--out" in no_out.stderr
    missing = run([sys.executable, "-m", "vigsm.export", "--out", "merged"], repo, check=False,
                  env={"HF_HUB_OFFLINE": "1"})
    assert missing.returncode == 2 and "weights/lora" in missing.stderr, missing.stderr


def test_ask_falls_back_to_the_params_prompt_at_revisions_before_the_prompt_file(monkeypatch):
    """A revision whose prepare stage has no --system-prompt kept the prompt in params.yaml (data.system_prompt)."""
    import vigsm.ask as ask_mod
    from vigsm.errors import VigsmError

    def no_option(rev=None):
        raise VigsmError("dvc.yaml: stage 'prepare' does not pass --system-prompt in its cmd")

    monkeypatch.setattr(ask_mod, "resolve_rev", lambda rev: "abc123")
    monkeypatch.setattr(ask_mod, "system_prompt_file", no_option)
    assert ask_mod.system_prompt_at("old-exp", {"data": {"system_prompt": "P\n"}}) == "P\n"
    with pytest.raises(VigsmError, match="--system-prompt"):
        ask_mod.system_prompt_at("old-exp", {"data": {}})


@pytest.mark.parametrize(("generate", "asked", "cap"), [({"max_new_tokens": 7}, None, 7), ({}, None, 512),
                                                       ({"max_new_tokens": 7}, 3, 3)])
def test_ask_caps_answers_at_the_runs_max_new_tokens(monkeypatch, generate, asked, cap):
    """ask decodes at most the run's generate.max_new_tokens (512 where its params have none), unless told."""
    import vigsm.ask as ask_mod
    import vigsm.decoding as decoding_mod
    import vigsm.modeling as modeling_mod

    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return ""

    seen = []
    doc = {"model": shipped_params()["model"],
           "generate": generate}
    monkeypatch.setattr(ask_mod, "params_at", lambda rev, params_path="params.yaml": doc)
    monkeypatch.setattr(ask_mod, "system_prompt_at", lambda rev, d: "P")
    monkeypatch.setattr(modeling_mod, "check_device", lambda p: None)
    monkeypatch.setattr(modeling_mod, "load_with_adapter", lambda p, a: (None, Tok()))
    monkeypatch.setattr(modeling_mod, "chat_prompt_ids", lambda tok, messages: [1, 2])
    monkeypatch.setattr(decoding_mod, "decode", lambda model, tok, prompts, dec, **kw: seen.append(dec))
    ask_mod.ask("q", base=True, max_new_tokens=asked, stream=False)
    assert [d.max_new_tokens for d in seen] == [cap]
