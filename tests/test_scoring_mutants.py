"""Scoring: the paired difference's sign and the report's verdict, on literal predictions."""

import pytest

from vigsm.config import ScoreParams
from vigsm.scoring import compare_variants, render_report, score_variant

SP = ScoreParams(confidence=0.95, bootstrap_samples=200, seed=0, report_examples=1)


def _rows(right: list[bool]) -> list[dict]:
    """Predictions for questions q0.. whose reference answer is i; right[i] says whether the model's is."""
    return [{"id": f"test-{i}", "raw": f"vì {i} ### {i if ok else i + 100}", "question": f"q{i}",
             "reference": f"vì {i}\n### {i}", "reference_explanation": f"vì {i}", "reference_answer": str(i)}
            for i, ok in enumerate(right)]


def _per_question(right: list[bool]) -> list[dict]:
    return score_variant(_rows(right), SP)[1]


def test_compare_variants_is_tuned_minus_base():
    base = _per_question([False] * 16 + [True] * 4)
    tuned = _per_question([True] * 20)
    delta = compare_variants(base, tuned, SP)
    for key in ("strict", "flexible"):
        assert delta[f"exact_match_{key}"] == pytest.approx(0.8)
        assert 0 < delta[f"exact_match_{key}_lo"] <= 0.8 <= delta[f"exact_match_{key}_hi"] <= 1
        assert delta[f"exact_match_{key}_mcnemar_p"] == pytest.approx(2 / 2**16)
    worse = compare_variants(tuned, base, SP)
    assert worse["exact_match_flexible"] == pytest.approx(-0.8) and worse["exact_match_flexible_hi"] < 0


def test_compare_variants_pairs_by_id_over_the_common_questions():
    base = _per_question([True, False, False, True])
    tuned = list(reversed(_per_question([True, True, False])))  # another order; test-3 not answered
    delta = compare_variants(base, tuned, SP)
    assert delta["exact_match_flexible"] == pytest.approx(1 / 3)  # test-1 gained, over 3 common questions


def _report(base_right: list[bool], tuned_right: list[bool]) -> str:
    rows = {"finetuned": _rows(tuned_right), "base": _rows(base_right)}
    scores, per_q = {}, {}
    for v in rows:
        scores[v], per_q[v] = score_variant(rows[v], SP)
    delta = compare_variants(per_q["base"], per_q["finetuned"], SP)
    return render_report(scores, rows, per_q, SP, delta, examples_of="finetuned")


def test_report_says_when_the_interval_excludes_zero():
    text = _report([False] * 16 + [True] * 4, [True] * 20)
    assert "## Did fine-tuning help?" in text
    assert "Finetuned minus base, flexible EM: 80.0 points [" in text
    assert "The interval excludes 0." in text and "includes 0" not in text


def test_report_says_when_the_interval_includes_zero():
    same = [True, False] * 10
    text = _report(same, same)
    assert "Finetuned minus base, flexible EM: 0.0 points [0.0, 0.0]" in text
    assert "The interval includes 0: no evidence of a change." in text and "excludes 0" not in text
