"""benchmarks/override_params.py: params.yaml as shipped plus named changes, and nothing else."""

from __future__ import annotations

import pytest
from override_params import override, parsed, shipped  # pytest puts this folder on sys.path


def test_changes_replace_existing_keys_and_leave_the_rest_as_shipped():
    base = shipped()
    p = shipped({"train": {"max_steps": 7}, "model": {"gguf_file": "x.gguf"}})
    assert p["train"]["max_steps"] == 7 and p["model"]["gguf_file"] == "x.gguf"
    assert {k: v for k, v in p["train"].items() if k != "max_steps"} == {
        k: v for k, v in base["train"].items() if k != "max_steps"}
    assert parsed(p, "train")["train"].max_steps == 7


def test_assignments_read_values_as_yaml_and_refuse_unknown_keys():
    p = override(shipped(), ["train.max_steps=12", "model.gguf_file=", "train.learning_rate=0.0002"])
    assert p["train"]["max_steps"] == 12 and p["model"]["gguf_file"] == "" and p["train"]["learning_rate"] == 0.0002
    for bad in (["train.max_stepz=1"], ["nosection.x=1"], ["train.max_steps"]):
        with pytest.raises(SystemExit):
            override(shipped(), bad)
