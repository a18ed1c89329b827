"""The tests read the shipped params.yaml (conftest.SHIPPED_PARAMS, the committed file), never the workspace's:
`make offline`, the README's first command, leaves its `dvc exp run -S` overrides in the workspace's copy, and
`make test` comes second."""

from __future__ import annotations

import re

import yaml

from conftest import ROOT, SHIPPED_PARAMS, committed_text, shipped_params

# `ROOT / "params.yaml"` or `ROOT.joinpath("params.yaml")`, however it is then read
WORKSPACE_PARAMS = re.compile(r"""ROOT\s*(/|\.joinpath\()\s*["']params\.yaml["']""")


def test_no_test_reads_the_workspace_params():
    skip = ("conftest.py", "test_shipped_params.py")
    readers = [f"{path.name}:{n}" for path in sorted((ROOT / "tests").glob("*.py")) if path.name not in skip
               for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               if WORKSPACE_PARAMS.search(line)]
    assert not readers, f"use conftest.SHIPPED_PARAMS / shipped_params(): {readers}"
    assert WORKSPACE_PARAMS.search('yaml.safe_load((ROOT / "params.yaml").read_text())')  # the pattern bites


def test_shipped_params_are_the_committed_file():
    assert SHIPPED_PARAMS.read_text(encoding="utf-8") == committed_text("params.yaml")
    assert shipped_params() == yaml.safe_load(committed_text("params.yaml"))
    assert shipped_params() is not shipped_params()  # a fresh dict each time: a test may change its copy
