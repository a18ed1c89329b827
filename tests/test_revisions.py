"""vigsm.revisions: a git revision or a DVC experiment name, resolved to a commit (compare and ask use it)."""

from __future__ import annotations

import pytest

from conftest import run
from vigsm.errors import VigsmError
from vigsm.revisions import resolve_rev


def _commit(repo, name: str) -> str:
    (repo / "f.txt").write_text(name)
    run(["git", "add", "f.txt"], repo)
    run(["git", "commit", "-q", "-m", name], repo)
    return run(["git", "rev-parse", "HEAD"], repo).stdout.strip()


def test_revisions_and_experiment_names_resolve_to_commits(tmp_path):
    run(["git", "init", "-q"], tmp_path)
    run(["git", "config", "user.email", "t@vigsm.local"], tmp_path)
    run(["git", "config", "user.name", "t"], tmp_path)
    first, second = _commit(tmp_path, "one"), _commit(tmp_path, "two")
    # DVC keeps an experiment as refs/exps/<baseline prefix>/<baseline rest>/<name>.
    run(["git", "update-ref", "refs/exps/ab/cdef/lucky-exp", first], tmp_path)
    assert resolve_rev("workspace", str(tmp_path)) is None
    assert resolve_rev("HEAD", str(tmp_path)) == second
    assert resolve_rev("HEAD~1", str(tmp_path)) == first
    assert resolve_rev("lucky-exp", str(tmp_path)) == first
    with pytest.raises(VigsmError, match="neither a git revision nor a DVC experiment"):
        resolve_rev("no-such-exp", str(tmp_path))
    run(["git", "update-ref", "refs/exps/12/3456/lucky-exp", second], tmp_path)
    with pytest.raises(VigsmError, match="ambiguous"):
        resolve_rev("lucky-exp", str(tmp_path))


def test_one_home_for_resolving():
    """ask and compare use the same function, not copies."""
    from vigsm import ask, compare, revisions

    assert ask.resolve_rev is compare.resolve_rev is revisions.resolve_rev
