"""A failed `dvc repro` / `dvc exp run` keeps every previous result byte-identical (issue 13, item 2).

The pipeline runs once on the tiny model; then each fault is applied, the command must fail with the
stage's one-line `error: ...`, every output (and dvc.lock) must be unchanged, and the fault is undone.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import reproduced_project, run, tiny_params, write_params

pytestmark = pytest.mark.slow
DVC = [sys.executable, "-m", "dvc"]
OUTPUTS = ("data/prepared", "models/adapter", "metrics", "dvclive", "data/predictions", "data/checked.txt",
           "dvc.lock")


def snapshot(project: Path) -> dict[str, bytes]:
    """Every output file's bytes, by path relative to the project."""
    files: dict[str, bytes] = {}
    for name in OUTPUTS:
        root = project / name
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            files[str(path.relative_to(project))] = path.read_bytes()
    return files


def restore(project: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_bytes(data)
    run(["git", "checkout", "--", "params.yaml"], project)


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir) -> Path:
    dest = reproduced_project(tmp_path_factory.mktemp("failing"), tiny_params(tiny_model_dir), "baseline run")
    # A local data source, without the answer field in its train file.
    own = dest / "own"
    own.mkdir()
    shutil.copy(dest / "data/sample/test.jsonl", own / "test.jsonl")
    rows = [json.loads(line) for line in (dest / "data/sample/train.jsonl").read_text(encoding="utf-8").splitlines()]
    (own / "train.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "answer"},
                                                        ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    run(["git", "add", "own"], dest)
    run(["git", "commit", "-qm", "a data source without answers"], dest)
    return dest


def edit_params(project: Path, change: Callable[[dict], None]) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    change(params)
    write_params(project / "params.yaml", params)


def typo(p: dict) -> None:
    p["train"]["learnin_rate"] = p["train"].pop("learning_rate")


def cut_predictions(project: Path) -> None:
    path = project / "data/predictions/finetuned.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2], encoding="utf-8")  # line 6 cut mid-line


PARAM_FAULTS = {
    "typo": (typo, "error: params: train.learnin_rate: unknown key"),
    "model-nowhere": (lambda p: p["model"].update(name="/nonexistent/vigsm-model"),
                      "error: model.name: local path /nonexistent/vigsm-model does not exist"),
    "train-without-answer": (lambda p: p["data"].update(source="own"), "missing field 'answer'"),
    "bad-source": (lambda p: p["data"].update(source="./no/such/dir"), "error: data.source: no/such/dir not found"),
    "gpus-split": (lambda p: p["train"].update(per_device_train_batch_size=3, gradient_accumulation_steps=1, gpus=2),
                   "rows per step cannot be shared by 2 processes"),
}


def assert_failed_and_kept(proc, message: str, before: dict[str, bytes], project: Path) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], out
    after = snapshot(project)
    assert after.keys() == before.keys(), out
    changed = [name for name in before if after[name] != before[name]]
    assert not changed, (changed, out)


@pytest.mark.parametrize("fault", list(PARAM_FAULTS))
@pytest.mark.parametrize("command", [["repro"], ["exp", "run"]])
def test_bad_param_or_input_keeps_every_output(project, fault, command):
    change, message = PARAM_FAULTS[fault]
    before = snapshot(project)
    edit_params(project, change)
    try:
        proc = run([*DVC, *command], project, check=False)
        assert_failed_and_kept(proc, message, before, project)
        assert "Running stage 'check'" in proc.stdout
        ran = set(re.findall(r"Running stage '([^']+)'", proc.stdout))
        assert ran == {"check"}, proc.stdout
    finally:
        restore(project, before)


@pytest.mark.parametrize("command", [["repro", "-s", "score"], ["repro", "--single-item", "score"]])
def test_cut_predictions_reaching_score_keep_every_output(project, command):
    """`dvc repro -s score` runs score alone on the cut file (check is upstream, not run): score's persistent
    outputs stay because score reads every input before it writes."""
    before = snapshot(project)
    cut_predictions(project)
    cut = (project / "data/predictions/finetuned.jsonl").read_bytes()
    try:
        proc = run([*DVC, *command], project, check=False)
        before_cut = {**before, "data/predictions/finetuned.jsonl": cut}
        assert_failed_and_kept(proc, "error: data/predictions/finetuned.jsonl:6: not valid JSON", before_cut, project)
    finally:
        restore(project, before)


def short_predictions(project: Path) -> None:
    """finetuned.jsonl cut at a line boundary: every row left is valid JSON, 5 of the 12 test questions."""
    path = project / "data/predictions/finetuned.jsonl"
    path.write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:5]), encoding="utf-8")


def repeated_prediction(project: Path) -> None:
    """finetuned.jsonl with its last row replaced by a copy of its first: 12 rows, 11 questions."""
    path = project / "data/predictions/finetuned.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join([*lines[:-1], lines[0]]), encoding="utf-8")


@pytest.mark.parametrize(("fault", "message"), [
    (short_predictions, "error: data/predictions/finetuned.jsonl: 5 predictions for 12 test questions: 7 missing, "
                        "0 not in the prepared test split, 0 duplicate ids"),
    (repeated_prediction, "error: data/predictions/finetuned.jsonl:12: duplicate id"),
], ids=["short", "repeated"])
def test_predictions_not_covering_the_test_split_keep_every_output(project, fault, message):
    """A predictions file that parses but does not cover the test split exactly is refused by score under
    `dvc repro -s score` (which skips check): one line with the file and the counts, nothing written."""
    before = snapshot(project)
    fault(project)
    changed = (project / "data/predictions/finetuned.jsonl").read_bytes()
    try:
        proc = run([*DVC, "repro", "-s", "score"], project, check=False)
        assert proc.returncode == 255, proc.stdout + proc.stderr  # dvc's own code for a failed stage
        assert "ERROR: failed to reproduce 'score'" in proc.stdout + proc.stderr, proc.stderr
        assert_failed_and_kept(proc, message, {**before, "data/predictions/finetuned.jsonl": changed}, project)
    finally:
        restore(project, before)


def test_check_coverage_counts_missing_extra_and_repeated_ids():
    from vigsm.errors import VigsmError
    from vigsm.scoring import check_coverage

    check_coverage(Path("p.jsonl"), ["a", "b", "c"], ["c", "a", "b"])  # any order
    for ids, counts in ((["a", "b"], "2 predictions for 3 test questions: 1 missing, 0 not in the prepared test "
                                     "split, 0 duplicate ids"),
                        (["a", "b", "c", "z"], "4 predictions for 3 test questions: 0 missing, 1 not in"),
                        (["a", "b", "c", "a", "a"], "5 predictions for 3 test questions: 0 missing, 0 not in the "
                                                    "prepared test split, 2 duplicate ids"),
                        ([], "0 predictions for 3 test questions: 3 missing")):
        with pytest.raises(VigsmError) as err:
            check_coverage(Path("p.jsonl"), ["a", "b", "c"], ids)
        assert str(err.value).startswith(f"p.jsonl: {counts}") and "\n" not in str(err.value)


@pytest.mark.parametrize("command", [["repro"], ["repro", "score"], ["exp", "run"], ["exp", "run", "-s", "score"]])
def test_cut_predictions_in_a_full_repro_are_restored(project, command):
    """Other commands never reach score with the cut file. `dvc repro` sees generate's output changed and
    checks the recorded one out of the cache ("Stage 'generate' is cached"; without a cache it would rerun
    generate); `dvc exp run`, even with -s score, checks every cached output recorded in dvc.lock out
    before it reproduces anything. Nothing changes, and the cut file is repaired."""
    before = snapshot(project)
    cut_predictions(project)
    try:
        proc = run([*DVC, *command], project, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        after = snapshot(project)
        assert after == before, [k for k in before if after.get(k) != before[k]]
    finally:
        restore(project, before)


def test_check_reruns_nothing_downstream(project):
    """A generate param change reruns check, whose output stays the same: then only the two generate
    stages are still changed (score follows once their predictions change), never prepare or train.
    (test_pipeline's test_selective_reruns runs the whole `dvc repro` for each section.)"""
    before = snapshot(project)
    edit_params(project, lambda p: p["generate"].update(max_new_tokens=8))
    try:
        status = run([*DVC, "status", "--json"], project).stdout
        assert set(json.loads(status)) == {"check", "generate-base", "generate", "generate-rl"}, status
        out = run([*DVC, "repro", "-s", "check"], project).stdout
        assert "Running stage 'check'" in out
        assert (project / "data/checked.txt").read_bytes() == before["data/checked.txt"]
        status = run([*DVC, "status", "--json"], project).stdout
        assert set(json.loads(status)) == {"generate-base", "generate", "generate-rl"}, status
    finally:
        restore(project, before)
