"""Scoring's coverage check, the RL variant's selection and deltas, and the report's RL section, on literal
predictions, in-process (the score stage tests reach them through a subprocess)."""

from pathlib import Path

import pytest

from vigsm.config import ScoreParams
from vigsm.errors import VigsmError
from vigsm.scoring import check_coverage, compare_variants, paired_deltas, render_report, score_variant, scored_variants

SP = ScoreParams(confidence=0.95, bootstrap_samples=200, seed=0, report_examples=1)


def _rows(right: list[bool]) -> list[dict]:
    return [{"id": f"test-{i}", "raw": f"vì {i} ### {i if ok else i + 100}", "question": f"q{i}",
             "reference": f"vì {i}\n### {i}", "reference_explanation": f"vì {i}", "reference_answer": str(i)}
            for i, ok in enumerate(right)]


def test_coverage_in_any_order_passes():
    assert check_coverage(Path("p.jsonl"), ["a", "b", "c"], ["c", "a", "b"]) is None


@pytest.mark.parametrize(("ids", "counts"), [
    (["a", "b"], "2 predictions for 3 test questions: 1 missing, 0 not in the prepared test split, 0 duplicate"),
    (["a", "b", "c", "x", "y"], "5 predictions for 3 test questions: 0 missing, 2 not in the prepared test split, "
                                "0 duplicate"),
    (["a", "b", "c", "a", "a", "b"], "6 predictions for 3 test questions: 0 missing, 0 not in the prepared test "
                                     "split, 3 duplicate"),
    (["a", "a", "x"], "3 predictions for 3 test questions: 2 missing, 1 not in the prepared test split, 1 duplicate"),
])
def test_coverage_counts_what_is_wrong(ids, counts):
    with pytest.raises(VigsmError) as err:
        check_coverage(Path("out/p.jsonl"), ["a", "b", "c"], ids)
    assert str(err.value) == (f"out/p.jsonl: {counts} ids; predictions must cover the test split exactly "
                              "(rerun generate)")


def test_rl_is_scored_only_when_it_ran():
    variants = {"base": Path("b"), "finetuned": Path("f"), "rl": Path("r")}
    assert scored_variants(variants, 0) == {"base": Path("b"), "finetuned": Path("f")}
    assert scored_variants(variants, 1) == variants
    assert scored_variants({"rl": Path("r")}, 3) == {"rl": Path("r")}


def _per_q():
    return {"base": score_variant(_rows([False] * 12 + [True] * 8), SP)[1],
            "finetuned": score_variant(_rows([True] * 16 + [False] * 4), SP)[1],
            "rl": score_variant(_rows([True] * 20), SP)[1]}


def test_paired_deltas_pair_the_right_variants():
    per_q = _per_q()
    deltas = paired_deltas(per_q, SP)
    assert deltas == {"delta": compare_variants(per_q["base"], per_q["finetuned"], SP),
                      "delta_rl": compare_variants(per_q["finetuned"], per_q["rl"], SP)}
    assert deltas["delta"]["exact_match_flexible"] == pytest.approx(0.4)
    assert deltas["delta_rl"]["exact_match_flexible"] == pytest.approx(0.2)
    assert list(paired_deltas({"base": per_q["base"], "finetuned": per_q["finetuned"]}, SP)) == ["delta"]
    assert list(paired_deltas({"finetuned": per_q["finetuned"], "rl": per_q["rl"]}, SP)) == ["delta_rl"]
    assert paired_deltas({"base": per_q["base"], "rl": per_q["rl"]}, SP) == {}


def test_report_has_an_rl_section_after_the_fine_tuning_one():
    rows = {"base": _rows([False] * 12 + [True] * 8), "finetuned": _rows([True] * 16 + [False] * 4),
            "rl": _rows([True] * 20)}
    scores, per_q = {}, {}
    for v in rows:
        scores[v], per_q[v] = score_variant(rows[v], SP)
    deltas = paired_deltas(per_q, SP)
    text = render_report(scores, rows, per_q, SP, deltas["delta"], examples_of="rl", delta_rl=deltas["delta_rl"])
    d = deltas["delta_rl"]
    lo, hi = (f"{100 * d[k]:.1f}" for k in ("exact_match_flexible_lo", "exact_match_flexible_hi"))
    rl_section = ("\n## Did RL help?\n\nRL minus finetuned (SFT), flexible EM: 20.0 points "
                  f"[{lo}, {hi}] (paired bootstrap), McNemar p = {d['exact_match_flexible_mcnemar_p']:.3g}. ")
    assert rl_section in text
    assert text.index("## Did fine-tuning help?") < text.index("## Did RL help?") < text.index("## Right answers (rl)")
    without = render_report(scores, rows, per_q, SP, deltas["delta"], examples_of="rl")
    assert "RL" not in without
