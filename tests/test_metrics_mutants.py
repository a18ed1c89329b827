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


def _reference_percentile_bootstrap(a, b, samples, confidence, seed):
    """The paired percentile bootstrap written out: resample question indices with random.Random(seed),
    sort the resample means, take the floor(alpha (B - 1))-th and the ceil((1 - alpha) (B - 1))-th."""
    import math
    import random

    diffs = [int(y) - int(x) for x, y in zip(a, b, strict=True)]
    n, rng = len(diffs), random.Random(seed)
    boots = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    alpha = (1 - confidence) / 2
    return boots[math.floor(alpha * (samples - 1))], boots[math.ceil((1 - alpha) * (samples - 1))], boots


# 60 paired questions: their resample means are spread enough that the extreme ones below are distinct
PAIRED_A = [c == "1" for c in "001101011000100100001000111000101001010011011010100111001000"]
PAIRED_B = [c == "1" for c in "010011111111001100000011010001011000010100101101011011010100"]


@pytest.mark.parametrize("samples", [40, 41, 200])
def test_paired_bootstrap_is_the_percentile_bootstrap(samples):
    """41 resamples at 95%: alpha (B - 1) = 1 exactly, so the bounds are the 2nd smallest and the 2nd largest
    resample means; 40: the smallest and the largest. An off-by-one in the index arithmetic moves them."""
    res = M.paired_bootstrap(PAIRED_A, PAIRED_B, samples=samples, confidence=0.95, seed=0)
    lo, hi, boots = _reference_percentile_bootstrap(PAIRED_A, PAIRED_B, samples, 0.95, 0)
    assert (res["delta_lo"], res["delta_hi"]) == (lo, hi)
    if samples in (40, 41):
        assert boots[0] < boots[1] and boots[-2] < boots[-1]  # so an index shifted by one shows
        assert (lo, hi) == ((boots[0], boots[-1]) if samples == 40 else (boots[1], boots[-2]))


def test_bootstrap_defaults_are_1000_samples_at_95_percent_seeded_0():
    a, b = PAIRED_A, PAIRED_B
    assert M.paired_bootstrap(a, b, seed=1) != M.paired_bootstrap(a, b, seed=0)
    assert M.paired_bootstrap(a, b) == M.paired_bootstrap(a, b, samples=1000, confidence=0.95, seed=0)
    assert (M.paired_bootstrap(a, b)["delta_lo"], M.paired_bootstrap(a, b)["delta_hi"]) == \
        _reference_percentile_bootstrap(a, b, 1000, 0.95, 0)[:2]
    assert M.bleu(REFS, HYPS) == M.bleu(REFS, HYPS, samples=1000, confidence=0.95, seed=0)
    assert M.bleu(REFS, HYPS, seed=5) == M.bleu(REFS, HYPS, seed=5)  # seeded, so repeatable


def test_paired_samples_of_different_lengths_are_named():
    with pytest.raises(ValueError, match=r"^paired samples differ in length: 1 vs 2$"):
        M.paired_bootstrap([True], [True, False])


def test_wilson_bounds_at_none_and_all_are_exact():
    """At 0 or n successes the bound is exactly 0 or 1 (n = 5 and 9 leave floating-point crumbs otherwise)."""
    for n in (5, 9, 10, 17):
        assert M.wilson_interval(0, n)[0] == 0.0 and M.wilson_interval(0, n)[1] < 1
        assert M.wilson_interval(n, n)[1] == 1.0 and M.wilson_interval(n, n)[0] > 0
    assert M.wilson_interval(0, 0) == (0.0, 1.0)


def test_exact_match_summary_of_nothing_and_at_another_confidence():
    assert M.exact_match_summary([], [], "em") == {"em": 0.0, "em_lo": 0.0, "em_hi": 1.0, "em_no_answer": 0.0}
    half = M.exact_match_summary([True, False] * 5, [True] + [False] * 9, "em", confidence=0.5)
    assert (half["em_lo"], half["em_hi"]) == M.wilson_interval(5, 10, 0.5)
    assert half["em_hi"] - half["em_lo"] < 0.25 and half["em_no_answer"] == 0.1


def test_rouge_means_every_part_over_the_rows():
    refs, hyps = ["một hai ba bốn", "năm sáu"], ["một hai ba bốn", "năm bảy tám chín"]
    out, per = M.rouge_vi(refs, hyps)
    assert set(out) == {f"{rt}_{p}" for rt in M.ROUGE_TYPES for p in "prf"} and len(per) == 2
    # row 1 is exact; row 2 shares 1 of its 4 words with a 2-word reference: P 1/4, R 1/2, F 1/3
    assert out["rouge1_p"] == pytest.approx((1 + 1 / 4) / 2)
    assert out["rouge1_r"] == pytest.approx((1 + 1 / 2) / 2)
    assert out["rouge1_f"] == pytest.approx((1 + 1 / 3) / 2)
    assert out["rouge2_f"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        M.rouge_vi(["một"], ["một", "hai"])
    with pytest.raises(ValueError):
        M.rouge_seed(["a", "b"], ["a"])


def test_seed_rouge_stems_english_words():
    """The notebook's ROUGE used the Porter stemmer: "running" and "runs" are one word to it."""
    seed, _ = M.rouge_seed(["the cat is running"], ["the cat runs"])
    assert seed["rouge1_r"] == pytest.approx(3 / 4) and seed["rouge1_p"] == pytest.approx(1.0)
