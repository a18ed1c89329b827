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
    assert "Finetuned minus base, flexible EM: 0.0 points [0.0, 0.0] (paired bootstrap), McNemar p = 1. " \
        "The interval includes 0: no evidence of a change." in text.split("\n")
    assert "excludes 0" not in text


def test_compare_variants_uses_the_score_params():
    from vigsm import metrics as M

    score_p = ScoreParams(confidence=0.8, bootstrap_samples=100, seed=4, report_examples=1)
    # 60 questions, so the interval moves with the number of resamples, the confidence and the seed
    base_right = [c == "1" for c in "001101011000100100001000111000101001010011011010011100100000"]
    tuned_right = [c == "1" for c in "010011111111001100000011010001011000010100101101011011010100"]
    delta = compare_variants(_per_question(base_right), _per_question(tuned_right), score_p)
    ref = M.paired_bootstrap(base_right, tuned_right, samples=100, confidence=0.8, seed=4)
    assert (delta["exact_match_flexible_lo"], delta["exact_match_flexible_hi"]) == (ref["delta_lo"], ref["delta_hi"])
    assert delta["exact_match_flexible_mcnemar_p"] == ref["mcnemar_p"]
    assert (delta["exact_match_strict_lo"], delta["exact_match_strict_hi"]) == (ref["delta_lo"], ref["delta_hi"])
    for other in (dict(samples=1000, confidence=0.8, seed=4), dict(samples=100, confidence=0.95, seed=4),
                  dict(samples=100, confidence=0.8, seed=0)):
        moved = M.paired_bootstrap(base_right, tuned_right, **other)
        assert (moved["delta_lo"], moved["delta_hi"]) != (ref["delta_lo"], ref["delta_hi"]), other


def test_score_variant_bleu_interval_uses_the_score_params():
    from vigsm import metrics as M

    refs = ["Natalia đã bán 24 kẹp trong tháng 5.", "Janet bán 9 quả trứng mỗi ngày.", "Tổng cộng 72 kẹp.",
            "Mỗi giờ cô ấy kiếm được 12 đô la.", "Vậy cần thêm 5 quả táo."] * 6
    hyps = ["Natalia đã bán 24 kẹp trong tháng năm.", "Janet bán 9 quả trứng.", "Tổng 72 kẹp.",
            "Cô ấy kiếm 12 đô la mỗi giờ.", "Cần thêm 5 quả táo nữa."] * 6
    rows = [{"id": f"test-{i}", "raw": f"{h}\n### {i}", "question": "q", "reference": f"{r}\n### {i}",
             "reference_explanation": r, "reference_answer": str(i)}
            for i, (r, h) in enumerate(zip(refs, hyps, strict=True))]
    score_p = ScoreParams(confidence=0.8, bootstrap_samples=150, seed=3, report_examples=1)
    out, _ = score_variant(rows, score_p)
    ref = M.bleu(refs, hyps, samples=150, confidence=0.8, seed=3)
    assert (out["bleu_lo"], out["bleu_hi"]) == (ref["bleu_lo"], ref["bleu_hi"])
    for other in (dict(samples=1000, confidence=0.8, seed=3), dict(samples=150, confidence=0.95, seed=3),
                  dict(samples=150, confidence=0.8, seed=0)):
        moved = M.bleu(refs, hyps, **other)
        assert (moved["bleu_lo"], moved["bleu_hi"]) != (ref["bleu_lo"], ref["bleu_hi"]), other


# Three predictions: right with a unit after the marker, right only by the flexible rule (no marker), and
# right with a reference that holds two markers (the notebook compares with the text after its last one).
SCORED_ROWS = [
    {"id": "test-0", "raw": "Lan có 2 bút, mua 1 nữa.\n### 3 bút", "question": "q0",
     "reference": "Lan có 2 bút, mua 1.\n### 3 bút", "reference_explanation": "Lan có 2 bút, mua 1.",
     "reference_answer": "3"},
    {"id": "test-1", "raw": "Tính 4 cộng 5 bằng 9", "question": "q1", "reference": "4 + 5 = 9\n### 9",
     "reference_explanation": "4 + 5 = 9", "reference_answer": "9"},
    {"id": "test-2", "raw": "nháp ### 8", "question": "q2", "reference": "ý ### 7 ### 8",
     "reference_explanation": "ý", "reference_answer": "8"},
]


def test_score_variant_on_literal_predictions():
    from vigsm import metrics as M

    score_p = ScoreParams(confidence=0.8, bootstrap_samples=150, seed=3, report_examples=1)
    out, per_q = score_variant(SCORED_ROWS, score_p)
    assert per_q == [
        {"id": "test-0", "reference_answer": "3", "answer_strict": "3", "answer_flexible": "3",
         "correct_strict": True, "correct_flexible": True, "rougeL_f": 0.9231},  # LCS 6 of 7 and 6 words: 12/13
        {"id": "test-1", "reference_answer": "9", "answer_strict": None, "answer_flexible": "9",
         "correct_strict": False, "correct_flexible": True, "rougeL_f": 0.6667},  # 4 5 9 in 6 words: 2/3
        {"id": "test-2", "reference_answer": "8", "answer_strict": "8", "answer_flexible": "8",
         "correct_strict": True, "correct_flexible": True, "rougeL_f": 0.0},
    ]
    assert out["n"] == 3
    assert (out["exact_match_strict"], out["exact_match_flexible"], out["exact_match_seed"]) == \
        pytest.approx((2 / 3, 1.0, 2 / 3))
    assert (out["exact_match_strict_no_answer"], out["exact_match_flexible_no_answer"]) == pytest.approx((1 / 3, 0))
    assert (out["exact_match_strict_lo"], out["exact_match_strict_hi"]) == M.wilson_interval(2, 3, 0.8)
    assert (out["exact_match_flexible_lo"], out["exact_match_flexible_hi"]) == M.wilson_interval(3, 3, 0.8)
    reasonings = ["Lan có 2 bút, mua 1 nữa.", "Tính 4 cộng 5 bằng 9", "nháp"]
    refs = [r["reference_explanation"] for r in SCORED_ROWS]
    bleu = M.bleu(refs, reasonings, samples=150, confidence=0.8, seed=3)
    assert (out["bleu"], out["bleu_lo"], out["bleu_hi"]) == (bleu["bleu"], bleu["bleu_lo"], bleu["bleu_hi"])
    assert out["bleu_seed"] == bleu["bleu"] and out["bleu_signature"] == bleu["bleu_signature"]
    assert out["rouge_tokenizer"] == "vi-syllable-nfc-lower-v1"
    assert out["rougeL_f"] == pytest.approx((12 / 13 + 2 / 3 + 0) / 3)
    assert out["rouge1_f_seed"] == M.rouge_seed(refs, reasonings)[0]["rouge1_f"]


def test_headline_cuts_each_block_and_keeps_the_delta_whole():
    from vigsm.scoring import HEADLINE_KEYS, metrics_subset

    out, _ = score_variant(SCORED_ROWS, SP)
    delta = {"exact_match_flexible": 0.1, "exact_match_flexible_mcnemar_p": 0.03}
    cut = metrics_subset({"base": out, "finetuned": out, "delta": delta})
    assert list(cut) == ["base", "finetuned", "delta"] and cut["delta"] == delta and cut["delta"] is not delta
    assert cut["base"] == {k: out[k] for k in HEADLINE_KEYS}
    assert "exact_match_seed" not in cut["finetuned"] and "rouge1_p" not in cut["finetuned"]


def _test_split():
    return [{"id": f"test-{i}", "question": f"q{i}", "explanation": f"vì {i}", "answer": str(i),
             "completion": [{"role": "assistant", "content": f"vì {i}\n### {i}"}]} for i in range(3)]


def test_load_predictions_joins_the_references(tmp_path):
    from vigsm.io import write_jsonl
    from vigsm.scoring import load_predictions

    preds = tmp_path / "p.jsonl"
    write_jsonl(preds, [{"id": "test-2", "raw": "### 2", "extra": 1}, {"id": "test-0", "raw": ""}])
    assert load_predictions(preds, _test_split()) == [
        {"id": "test-2", "raw": "### 2", "question": "q2", "reference": "vì 2\n### 2", "reference_explanation": "vì 2",
         "reference_answer": "2"},
        {"id": "test-0", "raw": "", "question": "q0", "reference": "vì 0\n### 0", "reference_explanation": "vì 0",
         "reference_answer": "0"}]


@pytest.mark.parametrize(("rows", "message"), [
    ([], "{p}: no predictions"),
    ([{"raw": "1"}], "{p}:1: missing field 'id'"),
    ([{"id": "test-0", "raw": "1"}, {"id": "test-1"}], "{p}:2: missing field 'raw'"),
    ([{"id": "test-1", "raw": "1"}, {"id": "train-0", "raw": "1"}],
     "{p}:2: id 'train-0' is not in the prepared test split; these predictions come from other data (rerun generate)"),
    ([{"id": "test-0", "raw": "1"}, {"id": "test-1", "raw": "1"}, {"id": "test-0", "raw": "2"}],
     "{p}:3: duplicate id 'test-0'"),
    ([{"id": "test-0", "raw": None}], "{p}:1: field 'raw' must be a string"),
])
def test_load_predictions_rejects(tmp_path, rows, message):
    from vigsm.errors import VigsmError
    from vigsm.io import write_jsonl
    from vigsm.scoring import load_predictions

    preds = tmp_path / "p.jsonl"
    write_jsonl(preds, rows)
    with pytest.raises(VigsmError) as err:
        load_predictions(preds, _test_split())
    assert str(err.value) == message.format(p=preds)


def test_report_text_outside_the_table():
    """The report's every line but the table's rows, for a fine-tuned and a base variant with a difference;
    a long reasoning is cut at 1,500 characters and an empty one is shown as "(empty)"."""
    score_p = ScoreParams(confidence=0.9, bootstrap_samples=100, seed=0, report_examples=2)
    long = "x" * 1600
    rows = {"finetuned": [{**SCORED_ROWS[0], "raw": long + "\n### 3"}, {**SCORED_ROWS[1], "raw": "### 4"},
                          SCORED_ROWS[2]],
            "base": [{**r, "raw": "không biết"} for r in SCORED_ROWS]}
    scores, per_q = {}, {}
    for v in rows:
        scores[v], per_q[v] = score_variant(rows[v], score_p)
    delta = compare_variants(per_q["base"], per_q["finetuned"], score_p)
    text = render_report(scores, rows, per_q, score_p, delta, examples_of="finetuned")
    assert text.endswith("\n") and not text.endswith("\n\n\n")
    lines = text.split("\n")
    table = [i for i, line in enumerate(lines) if line.startswith("| ") and not line.startswith("| metric")]
    assert len(table) == 11 and table == list(range(table[0], table[0] + 11))
    signature = scores["finetuned"]["bleu_signature"]
    p = f"{delta['exact_match_flexible_mcnemar_p']:.3g}"
    lo, hi = (f"{100 * delta[k]:.1f}" for k in ("exact_match_flexible_lo", "exact_match_flexible_hi"))
    assert [line for i, line in enumerate(lines) if i not in table] == [
        "# Evaluation report", "",
        "Questions scored: finetuned 3, base 3. Intervals are 90% (Wilson for exact match, bootstrap over "
        "questions for BLEU).", "",
        "| metric | finetuned | base |", "|---|---|---|",
        "", f"ROUGE tokenizer: `vi-syllable-nfc-lower-v1`; BLEU signature: `{signature}`.", "",
        "## Did fine-tuning help?", "",
        f"Finetuned minus base, flexible EM: 66.7 points [{lo}, {hi}] (paired bootstrap), McNemar p = {p}. "
        + ("The interval excludes 0." if float(lo) > 0 else "The interval includes 0: no evidence of a change."), "",
        "## Right answers (finetuned)", "",
        "### test-0", "", "**Question:** q0", "", "**Reference:** 3", "", "**Model's reasoning:**", "",
        "```text", "x" * 1500, "```", "", "**Extracted answer:** strict `3`, flexible `3`", "",
        "### test-2", "", "**Question:** q2", "", "**Reference:** 8", "", "**Model's reasoning:**", "",
        "```text", "nháp", "```", "", "**Extracted answer:** strict `8`, flexible `8`", "",
        "## Wrong answers (finetuned)", "",
        "### test-1", "", "**Question:** q1", "", "**Reference:** 9", "", "**Model's reasoning:**", "",
        "```text", "(empty)", "```", "", "**Extracted answer:** strict `4`, flexible `4`", "", ""]


def test_report_of_one_variant_with_no_wrong_answer():
    rows = {"base": _rows([True, True])}
    scores, per_q = {}, {}
    scores["base"], per_q["base"] = score_variant(rows["base"], SP)
    text = render_report(scores, rows, per_q, SP, None, examples_of="base")
    assert text.startswith("# Evaluation report\n\nQuestions scored: base 2. Intervals are 95% ")
    assert "\n| metric | base |\n|---|---|\n" in text
    assert text.endswith("\n## Wrong answers (base)\n\n(none)\n\n")
