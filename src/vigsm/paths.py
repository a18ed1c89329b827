"""The pipeline's paths, read from dvc.yaml through DVC's API, so that dvc.yaml is the only place that
names them: renaming an output there is one edit, and the tools that read outputs (ask, compare,
export) follow it.

A path is found by the stage-script option that receives it in the stage's ``cmd`` (``train``'s
``--adapter-dir``), and must be one of the stage's declared outputs.
"""

from __future__ import annotations

import shlex
from typing import Literal

from vigsm.errors import VigsmError


def stage_path(stage: str, option: str, *, repo: str = ".", rev: str | None = None,
               among: Literal["outs", "deps"] = "outs") -> str:
    """The path that ``stage``'s command passes as ``option``, which must be one of the stage's declared
    outputs (``among="outs"``) or dependencies (``among="deps"``), as dvc.yaml declares it at ``rev`` (a git
    commit; None for the workspace), relative to the repository root."""
    from dvc.repo import Repo

    try:
        with Repo(repo, rev=rev) as dvc_repo:
            (found,) = dvc_repo.stage.collect(stage)
            cmd, outs = found.cmd, [o.def_path for o in (found.outs if among == "outs" else found.deps)]
    except Exception as exc:
        raise VigsmError(f"cannot read stage '{stage}' from dvc.yaml in {repo}"
                         f"{f' at {rev}' if rev else ''}: {type(exc).__name__}: {exc}") from exc
    words = shlex.split(" ".join(cmd) if isinstance(cmd, list) else cmd)
    if option not in words or words.index(option) + 1 >= len(words):
        raise VigsmError(f"dvc.yaml: stage '{stage}' does not pass {option} in its cmd")
    path = words[words.index(option) + 1]
    if path not in outs:
        raise VigsmError(f"dvc.yaml: stage '{stage}' passes {option} {path}, which is not one of its {among}")
    return path


def adapter_dir(*, repo: str = ".", rev: str | None = None) -> str:
    """Where the train stage writes the LoRA adapter."""
    return stage_path("train", "--adapter-dir", repo=repo, rev=rev)


def per_question_file(variant: str, *, repo: str = ".", rev: str | None = None) -> str:
    """The score stage's per-question scores of one variant (stages/score.py names them <variant>.jsonl)."""
    return f"{stage_path('score', '--per-question-dir', repo=repo, rev=rev)}/{variant}.jsonl"


def system_prompt_file(*, repo: str = ".", rev: str | None = None) -> str:
    """The system prompt file that the prepare stage reads (one of its deps)."""
    return stage_path("prepare", "--system-prompt", repo=repo, rev=rev, among="deps")
