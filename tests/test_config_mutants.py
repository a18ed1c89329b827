"""Config's loader and messages on literal inputs, in this process (the stage tests see them through a
subprocess, which mutation testing does not reach)."""

from typing import Annotated

import pytest
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from vigsm.config import ScoreParams, load_section, parse_section, read_params
from vigsm.errors import VigsmError

SCORE = {"confidence": 0.95, "bootstrap_samples": 1000, "seed": 0, "report_examples": 3}


def _message(fn, *args, **kw):
    with pytest.raises(VigsmError) as err:
        fn(*args, **kw)
    return str(err.value)


def test_the_default_file_is_params_yaml_here(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("score:\n  confidence: 0.9\n  bootstrap_samples: 200\n  seed: 1\n"
                                          "  report_examples: 0\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert read_params() == {"score": {"confidence": 0.9, "bootstrap_samples": 200, "seed": 1, "report_examples": 0}}
    assert load_section("score") == ScoreParams(confidence=0.9, bootstrap_samples=200, seed=1, report_examples=0)


def test_read_params_messages(tmp_path):
    path = tmp_path / "params.yaml"
    assert _message(read_params, path) == f"{path}: params file not found (run from the repository root)"
    path.write_text("- score\n- data\n", encoding="utf-8")
    assert _message(read_params, path) == f"{path}: expected a mapping of sections"
    path.write_text("score:\n  seed: 1\n  confidence: [0.9\n", encoding="utf-8")
    msg = _message(read_params, str(path))
    # one line, PyYAML's own words with their runs of whitespace made single spaces
    assert msg.startswith(f"{path}: not valid YAML (while parsing a flow sequence in ") and msg.endswith(")")
    assert "\n" not in msg and "  " not in msg and "expected ',' or ']', but got" in msg


def test_params_are_utf8_whatever_the_locale(tmp_path):
    import locale

    path = tmp_path / "params.yaml"
    path.write_bytes("# Giải bài toán\nscore: {seed: 1}\n".encode())
    old = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")  # default text encoding ASCII
    try:
        assert read_params(path) == {"score": {"seed": 1}}
    finally:
        locale.setlocale(locale.LC_CTYPE, old)


def test_load_section_messages(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data: {}\n", encoding="utf-8")
    assert _message(load_section, "score", path=path) == f"params: section 'score' is missing from {path}"
    path.write_text("score: {confidence: 0.95, bootstrap_samples: 10, seed: 0, report_examples: 3}\n",
                    encoding="utf-8")
    assert _message(load_section, "score", path=path) == (
        "params: score.bootstrap_samples: must be >= 100, got 10")


def test_a_section_that_is_not_a_mapping():
    assert _message(parse_section, "score", [1], ScoreParams) == "params: section 'score' must be a mapping, got list"


def test_unknown_and_missing_keys_in_one_line():
    raw = {"confidence": 1.5, "seed": -1, "extra": 1}  # bootstrap_samples and report_examples missing
    assert _message(parse_section, "score", raw, ScoreParams) == (
        "params: score.extra: unknown key; allowed keys: confidence, bootstrap_samples, seed, report_examples; "
        "score.bootstrap_samples: missing key; score.report_examples: missing key; "
        "score.confidence: must be <= 0.999, got 1.5; score.seed: must be >= 0, got -1")


def test_a_fractional_bound_is_written_as_is():
    assert _message(parse_section, "score", {**SCORE, "confidence": 1.0}, ScoreParams) == (
        "params: score.confidence: must be <= 0.999, got 1.0")
    assert _message(parse_section, "score", {**SCORE, "confidence": 0}, ScoreParams) == (
        "params: score.confidence: must be > 0, got 0")


@dataclass(frozen=True, config=ConfigDict(strict=True, extra="forbid"))
class _Other:
    """A section with types params.yaml does not use: errors without a phrase of their own."""

    table: dict[str, int]
    either: Annotated[int, Field(ge=1)] | dict[str, int]


def test_other_errors_fall_back_to_pydantics_message():
    assert _message(parse_section, "other", {"table": [1], "either": {"a": 1}}, _Other) == (
        "params: other.table: expected Input should be a valid dictionary, got [1]")
    assert _message(parse_section, "other", {"table": {}, "either": "x"}, _Other) == (
        "params: other.either: expected an integer or Input should be a valid dictionary, got 'x'")
