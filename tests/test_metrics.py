"""Metrics as pure functions, on literal inputs."""

import math

import pytest

from vigsm import metrics as M


def test_seed_rouge_tokenizer_deletes_vietnamese_letters():
    """rouge-score's default tokenizer reduces "đã bán" and "để bạn" to the same tokens."""
    from rouge_score import tokenize

    assert tokenize.tokenize("Natalia đã bán 24 kẹp", None) == ["natalia", "b", "n", "24", "k", "p"]
    seed, _ = M.rouge_seed(["đã bán"], ["để bạn"])
    fixed, _ = M.rouge_vi(["đã bán"], ["để bạn"])
    assert seed["rouge1_f"] == pytest.approx(1.0)  # the seed calls different words identical
    assert fixed["rouge1_f"] == pytest.approx(0.0)  # the corrected tokenizer does not


def test_vietnamese_tokenizer():
    tok = M.VietnameseTokenizer()
    assert tok.tokenize("Natalia đã bán 24 kẹp") == ["natalia", "đã", "bán", "24", "kẹp"]
    # NFD input (combining marks) is normalised to NFC first
    import unicodedata

    assert tok.tokenize(unicodedata.normalize("NFD", "Đã BÁN")) == ["đã", "bán"]
    assert tok.tokenize("giá 1.000 đồng, 2,5 kg") == ["giá", "1.000", "đồng", "2,5", "kg"]


def test_rouge_vi_identical_and_partial():
    same, _ = M.rouge_vi(["Lan có 3 cây bút"], ["Lan có 3 cây bút"])
    assert same["rouge1_f"] == pytest.approx(1.0) and same["rougeL_f"] == pytest.approx(1.0)
    part, _ = M.rouge_vi(["Lan có 3 cây bút"], ["Lan có 4 cây bút"])
    assert part["rouge1_p"] == pytest.approx(4 / 5)
    assert part["rouge2_f"] == pytest.approx(2 / 4)


def test_wilson_interval():
    lo, hi = M.wilson_interval(47, 100)
    assert lo == pytest.approx(0.3751, abs=1e-3) and hi == pytest.approx(0.5671, abs=1e-3)
    assert hi - lo > 0.18  # about +-10 points on 100 questions
    assert M.wilson_interval(0, 0) == (0.0, 1.0)
    # At 0 or n successes the far bound is z^2 / (n + z^2) from the edge: 3.8415 / 53.8415 for n = 50.
    lo, hi = M.wilson_interval(0, 50)
    assert lo == 0.0 and hi == pytest.approx(0.07135, abs=1e-4)
    lo, hi = M.wilson_interval(50, 50)
    assert hi == 1.0 and lo == pytest.approx(0.92865, abs=1e-4)
    # 1 of 4: [0.0456, 0.6994] at 95% (Newcombe 1998); at 90% z = 1.6449 gives [0.0579, 0.6438] by hand.
    assert M.wilson_interval(1, 4) == pytest.approx((0.04559, 0.69936), abs=1e-4)
    assert M.wilson_interval(1, 4, confidence=0.90) == pytest.approx((0.05791, 0.64383), abs=1e-4)


def test_mcnemar_exact():
    assert M.mcnemar_exact(0, 0) == 1.0
    assert M.mcnemar_exact(5, 5) == 1.0
    # all 10 discordant pairs favour one side: 2 * 0.5**10
    assert M.mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert M.mcnemar_exact(3, 12) == pytest.approx(2 * sum(math.comb(15, i) for i in range(4)) / 2**15)


def test_paired_bootstrap_sees_a_real_gain_and_no_gain():
    base = [False] * 60 + [True] * 40
    tuned = [True] * 30 + [False] * 30 + [True] * 40  # +30 points
    res = M.paired_bootstrap(base, tuned, samples=500, seed=1)
    assert res["delta"] == pytest.approx(0.30)
    assert res["delta_lo"] > 0.15 and res["delta_hi"] < 0.45
    assert res["mcnemar_p"] < 1e-6
    noise = M.paired_bootstrap(base, base[::-1], samples=500, seed=1)
    assert noise["delta_lo"] <= 0 <= noise["delta_hi"]
    with pytest.raises(ValueError):
        M.paired_bootstrap([True], [True, False])


def test_bleu_has_signature_and_interval():
    refs = ["Natalia đã bán 24 kẹp trong tháng 5.", "Janet bán 9 quả trứng mỗi ngày.", "Tổng cộng 72 kẹp."] * 10
    hyps = ["Natalia đã bán 24 kẹp trong tháng năm.", "Janet bán 9 quả trứng.", "Tổng 72 kẹp."] * 10
    res = M.bleu(refs, hyps, samples=200, seed=0)
    assert 0 < res["bleu"] < 100
    assert res["bleu_lo"] <= res["bleu"] <= res["bleu_hi"]
    assert res["bleu_signature"].startswith("nrefs:1|case:mixed")
    import sacrebleu

    assert res["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)


def test_exact_match_summary_flat_keys():
    out = M.exact_match_summary([True, False, True, False], [False, True, False, False], "em")
    assert out["em"] == 0.5 and out["em_no_answer"] == 0.25
    # The Wilson interval for 2 of 4 at 95%, a literal: a (0, 1) or Wald interval cannot match it.
    assert (out["em_lo"], out["em_hi"]) == pytest.approx((0.15004, 0.84996), abs=1e-4)
    assert set(out) == {"em", "em_lo", "em_hi", "em_no_answer"}
    three = M.exact_match_summary([True, True, True, False], [False] * 4, "x", confidence=0.95)
    assert (three["x"], three["x_lo"], three["x_hi"]) == pytest.approx((0.75, 0.30064, 0.95442), abs=1e-4)
