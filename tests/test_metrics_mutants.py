"""Metrics: the interval arithmetic the other tests leave loose, each case on literal inputs."""

import pytest

from vigsm import metrics as M

REFS = ["Natalia đã bán 24 kẹp trong tháng 5.", "Janet bán 9 quả trứng mỗi ngày.", "Tổng cộng 72 kẹp.",
        "Mỗi giờ cô ấy kiếm được 12 đô la.", "Vậy cần thêm 5 quả táo."] * 6
HYPS = ["Natalia đã bán 24 kẹp trong tháng năm.", "Janet bán 9 quả trứng.", "Tổng 72 kẹp.",
        "Cô ấy kiếm 12 đô la mỗi giờ.", "Cần thêm 5 quả táo nữa."] * 6


def test_bleu_interval_follows_the_confidence():
    """A 95% interval holds the 50% one strictly inside it, and both hold the corpus score."""
    wide = M.bleu(REFS, HYPS, samples=300, confidence=0.95, seed=0)
    narrow = M.bleu(REFS, HYPS, samples=300, confidence=0.5, seed=0)
    assert wide["bleu"] == narrow["bleu"]
    assert wide["bleu_lo"] < narrow["bleu_lo"] <= narrow["bleu"] <= narrow["bleu_hi"] < wide["bleu_hi"]


def test_bleu_of_identical_texts_is_100_with_a_point_interval():
    res = M.bleu(REFS, REFS, samples=50)
    assert res["bleu"] == res["bleu_lo"] == res["bleu_hi"] == pytest.approx(100.0)


def test_bleu_with_no_sentences_or_no_samples_is_a_point():
    res = M.bleu(REFS, HYPS, samples=0)
    assert res["bleu_lo"] == res["bleu"] == res["bleu_hi"]


def test_two_bootstrap_samples_give_their_min_and_max():
    """The percentile bounds round outwards: with two resamples a 95% interval spans both of them
    (rounding the upper index down would give the lower value twice)."""
    res = M.bleu(REFS, HYPS, samples=2, confidence=0.95, seed=3)
    assert res["bleu_lo"] < res["bleu_hi"]
    base = [False] * 5 + [True] * 5
    tuned = [True] * 10
    pb = M.paired_bootstrap(base, tuned, samples=2, confidence=0.95, seed=3)
    assert pb["delta_lo"] < pb["delta_hi"]


def test_paired_bootstrap_percentiles_on_a_literal_case():
    """b - a: 3 gains and 1 loss in 8 questions, so every resample is a multiple of 1/8 in [-1, 1]."""
    a = [True, False, False, False, True, True, False, True]
    b = [True, True, True, True, False, True, False, True]
    res = M.paired_bootstrap(a, b, samples=400, confidence=0.9, seed=7)
    assert res["delta"] == pytest.approx(0.25)
    assert (res["only_a"], res["only_b"], res["n"]) == (1, 3, 8)
    assert res["mcnemar_p"] == pytest.approx(M.mcnemar_exact(1, 3)) == pytest.approx(0.625)
    assert -0.125 <= res["delta_lo"] < 0.25 < res["delta_hi"] <= 0.625
    assert (res["delta_lo"] * 8).is_integer() and (res["delta_hi"] * 8).is_integer()
    # the same questions the other way round: every figure mirrors
    back = M.paired_bootstrap(b, a, samples=400, confidence=0.9, seed=7)
    assert back["delta"] == -res["delta"] and (back["only_a"], back["only_b"]) == (3, 1)


def test_paired_bootstrap_with_no_questions():
    res = M.paired_bootstrap([], [], samples=100)
    assert res == {"delta": 0.0, "delta_lo": 0.0, "delta_hi": 0.0, "only_a": 0, "only_b": 0, "mcnemar_p": 1.0,
                   "n": 0}
