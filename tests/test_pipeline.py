"""The real pipeline under DVC on a tiny random-weight model: repro, selective re-runs, experiments,
comparison between experiments, determinism, and no secrets in the outputs."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest
import yaml

from conftest import make_project, run, tiny_params, write_params

pytestmark = pytest.mark.slow
DVC = [sys.executable, "-m", "dvc"]
PLANTED_TOKEN = "hf_PLANTEDtokenVIGSMtest0123456789"


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir) -> Path:
    dest = make_project(tmp_path_factory.mktemp("project"), tiny_params(tiny_model_dir))
    # A hub token in the environment must never reach logs, params, metrics or git.
    proc = run([*DVC, "repro"], dest, env={"HF_TOKEN": PLANTED_TOKEN})
    (dest / "repro.log").write_text(proc.stdout + proc.stderr)
    return dest


def test_repro_writes_every_output(project):
    p = project
    for path in ("data/prepared/train.jsonl", "data/prepared/validation.jsonl", "data/prepared/test.jsonl",
                 "data/prepared/stats.json",
                 "models/adapter/adapter_model.safetensors", "models/adapter/adapter_config.json",
                 "data/predictions/base.jsonl", "data/predictions/finetuned.jsonl", "metrics/train.json",
                 "metrics/score.json", "metrics/report.md", "metrics/per_question/base.jsonl",
                 "metrics/per_question/finetuned.jsonl", "dvclive/metrics.json"):
        assert (p / path).is_file(), path
    stats = json.loads((p / "data/prepared/stats.json").read_text())
    assert (stats["train_count"], stats["validation_count"], stats["test_count"]) == (48, 13, 12)
    train = json.loads((p / "metrics/train.json").read_text())
    assert train["eval_split"] == "validation[:8]"
    # the adapter that `dvc push` publishes holds no pickle; outputs get the umask's permissions
    adapter = sorted(f.name for f in (p / "models/adapter").iterdir())
    assert not [n for n in adapter if n.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))], adapter
    umask = os.umask(0)
    os.umask(umask)
    for path in ("metrics/score.json", "metrics/report.md", "data/prepared/stats.json", "metrics/train.json"):
        assert stat.S_IMODE((p / path).stat().st_mode) == 0o666 & ~umask, path
    assert train["perplexity"] == pytest.approx(__import__("math").exp(train["eval_loss"]))
    assert train["prompt_tokens_labelled"] == 0 and train["completion_tokens_labelled"] > 0
    assert "completion only" in train["loss_tokens"]
    score = json.loads((p / "metrics/score.json").read_text())
    for variant in ("base", "finetuned"):
        s = score[variant]
        assert s["n"] == 12
        for key in ("exact_match_strict", "exact_match_flexible"):
            assert 0 <= s[f"{key}_lo"] <= s[key] <= s[f"{key}_hi"] <= 1
        for key in ("rouge1_f", "rouge2_f", "rougeL_f", "rouge1_f_seed", "bleu", "bleu_lo", "exact_match_seed",
                    "exact_match_strict_no_answer"):
            assert key in s
    assert "exact_match_flexible" in score["delta"]
    preds = [json.loads(x) for x in (p / "data/predictions/finetuned.jsonl").read_text().splitlines()]
    assert set(preds[0]) >= {"id", "question", "reference", "raw", "reasoning", "answer"}
    report = (p / "metrics/report.md").read_text()
    assert "EM flexible" in report and "seed" in report and "**Question:**" in report
    assert (p / "dvclive/plots/metrics/train/loss.tsv").is_file()
    status = run([*DVC, "status"], p)
    assert "up to date" in status.stdout


def test_metrics_and_params_show(project):
    shown = json.loads(run([*DVC, "metrics", "show", "--json"], project).stdout)
    flat = json.dumps(shown)
    assert "exact_match_flexible_lo" in flat and "eval_loss" in flat
    # every param and metric in one cell: a multi-line value would break the table and the CSV rows
    table = run([*DVC, "exp", "show", "--csv"], project).stdout
    rows = list(csv.reader(io.StringIO(table)))
    assert len(rows) >= 2 and {len(r) for r in rows} == {len(rows[0])}
    assert len(table.strip().splitlines()) == len(rows) and "data.validation_size" in rows[0]
    plots = json.loads(run([*DVC, "plots", "show", "--json"], project).stdout)["data"]
    assert {"Loss", "Learning rate", "Gradient norm"} <= set(plots)
    values = plots["Loss"][0]["content"]["data"]["values"]
    assert {v["filename"] for v in values} >= {"loss.tsv"} and len(values) >= 3


def stages_rerun_after(project: Path, section: str, key: str, value) -> set[str]:
    """Change one param, run `dvc repro` for real, return the stages that ran; then restore the param
    (outputs come back from DVC's run cache)."""
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    old = params[section][key]
    params[section][key] = value
    write_params(project / "params.yaml", params)
    try:
        out = run([*DVC, "repro"], project).stdout
    finally:
        params[section][key] = old
        write_params(project / "params.yaml", params)
        restored = run([*DVC, "repro"], project).stdout
    # Restoring the param brings the old model and predictions back from DVC's run cache. (prepare's
    # stats and score's outputs are kept in git, not in the cache, so those two cheap stages run again.)
    ran_again = set(re.findall(r"Running stage '([^']+)'", restored))
    assert ran_again <= {"prepare", "score"}, restored
    return set(re.findall(r"Running stage '([^']+)'", out))


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("score", "bootstrap_samples", 300, {"score"}),
        ("generate", "max_new_tokens", 8, {"generate-base", "generate", "score"}),
        ("lora", "r", 8, {"train", "generate", "score"}),
        ("train", "learning_rate", 1e-1, {"train", "generate", "score"}),
        # the test split is not the training run's business: train and its adapter stay cached
        ("data", "test_limit", 10, {"prepare", "generate-base", "generate", "score"}),
        ("data", "validation_seed", 1, {"prepare", "train", "generate", "score"}),
    ],
)
def test_selective_reruns(project, section, key, value, expected):
    assert stages_rerun_after(project, section, key, value) == expected


def test_no_secret_in_outputs(project):
    for path in project.rglob("*"):
        if path.is_file() and ".git" not in path.parts and ".dvc" not in path.parts:
            assert PLANTED_TOKEN.encode() not in path.read_bytes(), path


def test_determinism_same_params_same_metrics(project, tmp_path, tiny_model_dir):
    """A second, independent run of the whole pipeline gives identical metrics on the CPU."""
    other = make_project(tmp_path / "again", yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8")))
    run([*DVC, "repro"], other)
    for f in ("metrics/score.json", "metrics/train.json"):
        a, b = json.loads((project / f).read_text()), json.loads((other / f).read_text())
        for volatile in ("train_wall_seconds", "train_tokens_per_second"):
            a.pop(volatile, None)
            b.pop(volatile, None)
        assert a == b, f
    assert (project / "data/predictions/finetuned.jsonl").read_bytes() == (
        other / "data/predictions/finetuned.jsonl").read_bytes()


def test_experiments_and_compare(project):
    """Two experiments appear in `dvc exp show`; the compare command reads both through dvc.api."""
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline run"], project)
    run([*DVC, "exp", "run", "-n", "lr-low", "-S", "train.learning_rate=1e-5"], project)
    run([*DVC, "exp", "run", "-n", "lr-high", "-S", "train.learning_rate=5e-3"], project)
    shown = json.loads(run([*DVC, "exp", "show", "--json"], project).stdout)
    text = json.dumps(shown)
    assert "lr-low" in text and "lr-high" in text and "exact_match_flexible_lo" in text
    proc = run([sys.executable, "-m", "vigsm.compare", "lr-low", "lr-high", "--json"], project)
    res = json.loads(proc.stdout)
    assert res["n"] == 12 and -1 <= res["delta_lo"] <= res["delta"] <= res["delta_hi"] <= 1
    human = run([sys.executable, "-m", "vigsm.compare", "lr-low", "HEAD"], project).stdout
    assert "B - A" in human and "McNemar" in human
    bad = run([sys.executable, "-m", "vigsm.compare", "no-such-exp", "HEAD"], project, check=False)
    assert bad.returncode == 2 and "neither a git revision nor a DVC experiment" in bad.stderr
