"""The real pipeline under DVC on a tiny random-weight model: repro, selective re-runs, experiments,
comparison between experiments, determinism, and no secrets in the outputs."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import stat
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from conftest import ROOT, make_project, run, tiny_params, write_params

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


def test_repro_writes_every_output(project, tiny_model_dir):
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
    # Trained, not just written: the steps params ask for, a finite loss, and an adapter that moved. LoRA
    # starts with B = 0 (no effect); after the optimiser steps every B must be nonzero.
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    assert train["global_step"] == 4 and math.isfinite(train["eval_loss"]) and train["eval_loss"] > 0
    lora_b = {k: v for k, v in load_file(p / "models/adapter/adapter_model.safetensors").items() if "lora_B" in k}
    assert lora_b and all(v.abs().max().item() > 0 for v in lora_b.values()), sorted(lora_b)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    # The loss mask, counted independently: each of the first 8 training examples labels exactly its
    # completion, i.e. its chat tokens minus its prompt-with-generation-prompt tokens.
    rows = [json.loads(x) for x in (p / "data/prepared/train.jsonl").read_text().splitlines()[:8]]
    chat_len = lambda msgs, **kw: len(tok(tok.apply_chat_template(msgs, tokenize=False, **kw),  # noqa: E731
                                          add_special_tokens=False)["input_ids"])
    completion = sum(chat_len(r["prompt"] + r["completion"]) - chat_len(r["prompt"], add_generation_prompt=True)
                     for r in rows)
    assert abs(train["completion_tokens_labelled"] - completion) <= len(rows), (train, completion)
    assert train["eval_split"] == "validation[:8]"
    # the adapter that `dvc push` publishes holds no pickle; outputs get the umask's permissions
    adapter = sorted(f.name for f in (p / "models/adapter").iterdir())
    assert not [n for n in adapter if n.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))], adapter
    umask = os.umask(0)
    os.umask(umask)
    for path in ("metrics/score.json", "metrics/score-details.json", "metrics/report.md", "data/prepared/stats.json",
                 "metrics/train.json"):
        assert stat.S_IMODE((p / path).stat().st_mode) == 0o666 & ~umask, path
    score = json.loads((p / "metrics/score.json").read_text())
    details = json.loads((p / "metrics/score-details.json").read_text())
    for variant in ("base", "finetuned"):
        s, d = score[variant], details[variant]
        assert s["n"] == 12
        for key in ("exact_match_strict", "exact_match_flexible"):
            assert 0 <= s[f"{key}_lo"] <= s[key] <= s[f"{key}_hi"] <= 1
        # the declared metrics file holds the headline keys only (columns of `dvc exp show`), each equal to
        # its value among every key in the details file
        assert sorted(s) == sorted(["n", "exact_match_strict", "exact_match_strict_lo", "exact_match_strict_hi",
                                    "exact_match_flexible", "exact_match_flexible_lo", "exact_match_flexible_hi",
                                    "rougeL_f", "bleu", "bleu_lo", "bleu_hi"])
        assert all(d[k] == v for k, v in s.items())
        for key in ("rouge1_f", "rouge2_f", "rougeL_f", "rouge1_f_seed", "bleu", "bleu_lo", "exact_match_seed",
                    "exact_match_strict_no_answer", "rouge_tokenizer", "bleu_signature"):
            assert key in d
    assert score["delta"] == details["delta"] and "exact_match_flexible_mcnemar_p" in score["delta"]
    preds = [json.loads(x) for x in (p / "data/predictions/finetuned.jsonl").read_text().splitlines()]
    assert [set(r) for r in preds] == [{"id", "raw", "stop", "new_tokens"}] * len(preds)  # score derives the rest
    report = (p / "metrics/report.md").read_text()
    assert "EM flexible" in report and "seed" in report and "**Question:**" in report
    assert (p / "dvclive/plots/metrics/train/loss.tsv").is_file()
    status = run([*DVC, "status"], p)
    assert "up to date" in status.stdout
    # transformers ignores clean_up_tokenization_spaces for BPE tokenizers and said so on every run
    assert "clean_up_tokenization_spaces" not in (p / "repro.log").read_text()


def test_metrics_params_and_plots_show(project):
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
    # DVC 3 has no `dvc params show`; `params diff --all` lists every param, changed or not.
    diff = json.loads(run([*DVC, "params", "diff", "--all", "--json"], project).stdout)["params.yaml"]
    written = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    # (it prints a list as its Python repr)
    flat = {f"{section}.{key}": str(value) if isinstance(value, list) else value
            for section, keys in written.items() for key, value in keys.items()}
    assert {k: v["new"] for k, v in diff.items()} == flat
    assert diff["lora.r"]["new"] == 4 and diff["model.max_seq_length"]["new"] == 512


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
    # stats are kept in git, not in the cache, and check's and score's outputs are persistent, which the
    # run cache skips, so those cheap stages run again.)
    ran_again = set(re.findall(r"Running stage '([^']+)'", restored))
    assert ran_again <= {"check", "prepare", "score"}, restored
    return set(re.findall(r"Running stage '([^']+)'", out))


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        # check reruns on every params change; its unchanged output reruns nothing by itself.
        ("score", "bootstrap_samples", 300, {"check", "score"}),
        # generate does not read max_seq_length; training does (300 truncates about half the examples,
        # whose chats run 281-362 tokens, so the adapter and then its predictions change)
        # (rl: a new SFT adapter reruns it; at rl.steps 0 it rewrites the same marker, so generate-rl stays)
        ("model", "max_seq_length", 300, {"check", "train", "rl", "generate", "score"}),
        ("generate", "max_new_tokens", 8, {"check", "generate-base", "generate", "generate-rl", "score"}),
        ("lora", "r", 8, {"check", "train", "rl", "generate", "score"}),
        ("train", "learning_rate", 1e-1, {"check", "train", "rl", "generate", "score"}),
        # the test split is not the training run's business: train and its adapter stay cached
        ("data", "test_limit", 10, {"check", "prepare", "generate-base", "generate", "generate-rl", "score"}),
        ("data", "validation_seed", 1, {"check", "prepare", "train", "rl", "generate", "score"}),
        ("rl", "learning_rate", 1e-4, {"check", "rl"}),
    ],
)
def test_selective_reruns(project, section, key, value, expected):
    assert stages_rerun_after(project, section, key, value) == expected


class _FakeHub(BaseHTTPRequestHandler):
    """Answers every request as the hub does for a missing repo, and records the Authorization header."""

    seen: ClassVar[list[str]] = []

    def do_GET(self):
        _FakeHub.seen.append(self.headers.get("Authorization", ""))
        self.send_response(404)
        self.send_header("X-Error-Code", "RepositoryNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_no_secret_in_outputs(project, tmp_path):
    """HF_TOKEN is planted where it is read: a hub-shaped model name against a local stand-in for the hub,
    which must receive the token (so the hub code path really ran) and answer "not found". The token must
    then appear nowhere: not in the output of the failed run, nor in any file of the project, .git and
    .dvc included."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"HF_TOKEN": PLANTED_TOKEN, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
           "HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5"}
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    name = params["model"]["name"]
    params["model"]["name"] = "no-such-owner/no-such-model"
    write_params(project / "params.yaml", params)
    try:
        failed = run([*DVC, "repro"], project, check=False, env=env, timeout=300)
    finally:
        server.shutdown()
        params["model"]["name"] = name
        write_params(project / "params.yaml", params)
        run([*DVC, "repro"], project)  # the trained adapter comes back from the run cache
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "no-such-owner/no-such-model" in output, output[-3000:]
    assert f"Bearer {PLANTED_TOKEN}" in _FakeHub.seen, _FakeHub.seen
    assert PLANTED_TOKEN not in output
    searched = 0
    for path in project.rglob("*"):
        if path.is_file() and not path.is_symlink():
            searched += 1
            assert PLANTED_TOKEN.encode() not in path.read_bytes(), path
    assert searched > 50 and (project / ".dvc" / "cache").is_dir()


# What `dvc repro` writes, every file of which must be byte-identical between two runs of the same params on
# the CPU, except the timings below.
REPRO_OUTPUTS = ("data/checked.txt", "data/prepared", "models/adapter", "dvclive/plots", "data/predictions",
                 "metrics", "dvc.lock")
# The exceptions: the figures that measure time, which changes with the machine's load from one run to the
# next. They sit in metrics files that no stage reads (leaves of the graph), so their changed bytes rerun
# nothing; dvc.lock differs from one run to the next only by those files' hashes (and by dvclive/plots's, of
# which only the trainer's timing series differ: runtime, samples and steps per second).
TIMING_PLOTS = re.compile(r"(^|/)(runtime|samples_per_second|steps_per_second)\.tsv$")
TIMINGS = {"metrics/train.json": ("train_wall_seconds", "train_tokens_per_second"),
           "metrics/generate.json": ("load_seconds", "generate_seconds", "new_tokens_per_second"),
           "metrics/generate-base.json": ("load_seconds", "generate_seconds", "new_tokens_per_second")}


def repro_outputs(project: Path) -> dict[str, bytes | dict | list]:
    """Every output file of :data:`REPRO_OUTPUTS`: its bytes, or for the exceptions what is left without the
    timings (JSON without the timing keys, a placeholder for a timing series, dvc.lock without the hashes of
    the files that hold timings)."""
    files: dict[str, bytes | dict | list] = {}
    for name in REPRO_OUTPUTS:
        root = project / name
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(project).as_posix()
            if rel in TIMINGS:
                doc = json.loads(path.read_text(encoding="utf-8"))
                assert set(TIMINGS[rel]) <= set(doc), rel  # an exception that no longer exists is dropped here
                files[rel] = {k: v for k, v in doc.items() if k not in TIMINGS[rel]}
            elif TIMING_PLOTS.search(rel):
                files[rel] = b"timings"
            elif rel == "dvc.lock":
                lock = yaml.safe_load(path.read_text(encoding="utf-8"))
                for stage in lock["stages"].values():
                    for out in stage.get("outs", []):
                        if out["path"] in TIMINGS or out["path"] == "dvclive/plots":
                            out.pop("md5"), out.pop("size"), out.pop("nfiles", None)
                files[rel] = lock
            else:
                files[rel] = path.read_bytes()
    return files


def test_determinism_every_output_byte_identical(project, tmp_path, tiny_model_dir):
    """A second, independent run of the whole pipeline with the same params writes the same bytes on the
    CPU: adapter files (adapter_config.json's module list included), predictions, metrics, report, DVC's
    lock; the only exceptions are the timings (TIMINGS). A file that differs would make DVC see a changed
    output, and rerun what depends on it, where nothing changed."""
    other = make_project(tmp_path / "again", yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8")))
    run([*DVC, "repro"], other)
    a, b = repro_outputs(project), repro_outputs(other)
    assert "models/adapter/adapter_config.json" in a and "metrics/report.md" in a and len(a) > 20, sorted(a)
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    differ = [name for name in a if a[name] != b[name]]
    assert not differ, differ
    modules = json.loads(a["models/adapter/adapter_config.json"])["target_modules"]
    assert modules == sorted(modules) and len(modules) == 7  # PEFT saves a set, in the hash seed's order


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
    # `make show` (the Makefile's SHOW, run here as make runs it): every headline column and both runs are
    # printed, none hidden behind DVC's "…" for want of terminal width (its output here is not a terminal).
    line = next(x for x in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines() if x.startswith("SHOW :="))
    table = run(["bash", "-c", line.split(":=", 1)[1].replace("$$", "$")], project).stdout
    header = table.splitlines()[0]
    for column in ("lora.r", "train.learning_rate", "rl.steps", "base.exact_match_flexible",
                   "finetuned.exact_match_flexible", "delta.exact_match_flexible_mcnemar_p", "perplexity"):
        assert f" {column} " in header, header
    assert "lr-low" in table and "lr-high" in table and "…" not in table
