"""Naming a run: a git revision or a DVC experiment name, resolved to a commit. The one place that does it,
for the tools that read a run's outputs or params (``vigsm.compare``, ``vigsm.ask``)."""

from __future__ import annotations

import subprocess

from vigsm.errors import VigsmError


def resolve_rev(rev: str, repo: str = ".") -> str | None:
    """A git revision for ``rev``: itself if git knows it, else the commit of the DVC experiment so named;
    None for ``workspace``."""
    if rev == "workspace":
        return None
    ok = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo,
                        capture_output=True, text=True)
    if ok.returncode == 0:
        return ok.stdout.strip()
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"], cwd=repo,
                          capture_output=True, text=True).stdout.split("\n")
    hits = [line.split()[1] for line in refs if line and line.split()[0].rsplit("/", 1)[-1] == rev]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise VigsmError(f"experiment name {rev!r} is ambiguous ({len(hits)} experiments); use a commit")
    raise VigsmError(f"{rev!r} is neither a git revision nor a DVC experiment (see `dvc exp show`)")
