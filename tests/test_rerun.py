"""Which stages an edit reruns: each stage depends on exactly the code it imports (dvc.yaml, checked by
test_dvc_graph), so an answer-rule edit reruns score alone and a data-loading edit never retrains.

The project's state after a `dvc repro` is recorded with `dvc commit` over placeholder outputs: DVC decides
what reruns from dvc.lock's hashes alone, so no model needs to run for `dvc status` to answer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import make_project, run, shipped_params

DVC = [sys.executable, "-m", "dvc"]


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> Path:
    dest = make_project(tmp_path_factory.mktemp("rerun"), shipped_params())
    stages = yaml.safe_load((dest / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for spec in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for out in spec.get(kind, []):
                path = dest / (out if isinstance(out, str) else next(iter(out)))
                if path.suffix:  # a file; the others (models/adapter, metrics/per_question) are directories
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(f"placeholder {path.name}\n")
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "placeholder.txt").write_text("placeholder\n")
    run([*DVC, "commit", "-f", "-q"], dest)
    assert changed_stages(dest) == set()
    return dest


def changed_stages(project: Path) -> set[str]:
    out = run([*DVC, "status", "--json"], project).stdout
    return {name.split(":")[-1] for name in json.loads(out or "{}")}


def rerun_by_edit(project: Path, module: str) -> set[str]:
    """The stages `dvc status` finds changed after a one-line edit of ``module``; the edit is undone."""
    path = project / "src" / "vigsm" / module
    before = path.read_bytes()
    path.write_bytes(before + b"\n# an edit\n")
    try:
        return changed_stages(project)
    finally:
        path.write_bytes(before)


@pytest.mark.parametrize(("module", "stages"), [
    # the extraction rules: score, and rl, whose reward is the same exact match (vigsm.rewards)
    ("answers.py", {"score", "rl"}),
    ("data.py", {"check", "prepare"}),  # loading and cleaning: neither train nor rl imports it
    ("lengths.py", {"check", "prepare", "train", "rl"}),  # the length statistics (rl imports vigsm.training)
    # how numbers are written: the prepared answers, the answer-line stop rule, the scores and the reward
    ("notation.py", {"check", "prepare", "generate-base", "generate", "generate-rl", "score", "rl"}),
])
def test_an_edit_reruns_exactly_the_stages_that_import_it(committed, module, stages):
    assert rerun_by_edit(committed, module) == stages
