"""Scoring: pure functions over strings and booleans, no torch.

Two families live here:

- the notebook's ("seed") metrics, computed exactly as the notebook computed them, so old numbers stay
  comparable: rouge-score with its default ASCII tokenizer and the Porter stemmer, SacreBLEU, and exact
  match as string equality of the text after ``###``;
- the corrected metrics: numeric exact match (strict and flexible) with Wilson intervals, ROUGE on
  Vietnamese syllables, and SacreBLEU with a bootstrap interval.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class VietnameseTokenizer:
    """ROUGE tokenizer for Vietnamese: NFC, lowercase, syllables and numbers, no stemming.

    rouge-score's default tokenizer keeps only ``[a-z0-9]`` and so deletes every letter with a diacritic
    ("đã bán" becomes "b n"). Here a token is a run of letters (any script, diacritics kept, since each
    Vietnamese syllable is written as one such run) or a number with its internal separators.
    """

    name = "vi-syllable-nfc-lower-v1"
    _TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+")

    def tokenize(self, text: str) -> list[str]:
        return self._TOKEN.findall(unicodedata.normalize("NFC", text).lower())


def _rouge_mean(scorer: Any, refs: Sequence[str], hyps: Sequence[str]) -> tuple[dict[str, float], list[dict]]:
    per = [scorer.score(r, h) for r, h in zip(refs, hyps, strict=True)]
    out: dict[str, float] = {}
    n = max(len(per), 1)
    for rt in ROUGE_TYPES:
        for part, attr in (("p", "precision"), ("r", "recall"), ("f", "fmeasure")):
            out[f"{rt}_{part}"] = sum(getattr(s[rt], attr) for s in per) / n
    return out, per


def rouge_seed(refs: Sequence[str], hyps: Sequence[str]) -> tuple[dict[str, float], list[dict]]:
    """The notebook's ROUGE: rouge-score's default tokenizer with ``use_stemmer=True``, averaged."""
    from rouge_score import rouge_scorer

    return _rouge_mean(rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True), refs, hyps)


def rouge_vi(refs: Sequence[str], hyps: Sequence[str]) -> tuple[dict[str, float], list[dict]]:
    """ROUGE on Vietnamese syllables (:class:`VietnameseTokenizer`), no stemmer, averaged."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=VietnameseTokenizer())
    return _rouge_mean(scorer, refs, hyps)


def bleu(refs: Sequence[str], hyps: Sequence[str], *, samples: int = 1000, confidence: float = 0.95,
         seed: int = 0) -> dict[str, Any]:
    """Corpus SacreBLEU with its signature and a percentile bootstrap interval over sentences."""
    from sacrebleu.metrics import BLEU

    metric = BLEU()
    corpus = metric.corpus_score(list(hyps), [list(refs)])
    # Per-sentence sufficient statistics, summed over each resample: the same corpus BLEU, fast.
    stats = metric._extract_corpus_statistics(list(hyps), [list(refs)])
    rng = random.Random(seed)
    n = len(stats)
    scores = []
    for _ in range(samples if n else 0):
        idx = [rng.randrange(n) for _ in range(n)]
        total = [sum(stats[i][k] for i in idx) for k in range(len(stats[0]))]
        scores.append(metric._compute_score_from_stats(total).score)
    lo, hi = _percentiles(scores, confidence) if scores else (corpus.score, corpus.score)
    return {"bleu": corpus.score, "bleu_lo": lo, "bleu_hi": hi, "bleu_signature": str(metric.get_signature())}


def _percentiles(values: Sequence[float], confidence: float) -> tuple[float, float]:
    s = sorted(values)
    alpha = (1 - confidence) / 2
    lo_i = max(0, math.floor(alpha * (len(s) - 1)))
    hi_i = min(len(s) - 1, math.ceil((1 - alpha) * (len(s) - 1)))
    return s[lo_i], s[hi_i]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly 0 or 1; floating point would leave 1e-18 crumbs.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def paired_bootstrap(a: Sequence[bool], b: Sequence[bool], *, samples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> dict[str, float]:
    """Difference in accuracy b - a on the same questions, with a paired bootstrap interval.

    Also returns McNemar's exact two-sided p-value on the discordant pairs.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    n = len(a)
    diffs = [int(y) - int(x) for x, y in zip(a, b, strict=True)]
    delta = sum(diffs) / n if n else 0.0
    rng = random.Random(seed)
    boots = [sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples)] if n else [0.0]
    lo, hi = _percentiles(boots, confidence)
    only_a = sum(1 for d in diffs if d < 0)
    only_b = sum(1 for d in diffs if d > 0)
    return {"delta": delta, "delta_lo": lo, "delta_hi": hi, "only_a": only_a, "only_b": only_b,
            "mcnemar_p": mcnemar_exact(only_a, only_b), "n": n}


def interval_side(lo: float, hi: float) -> int:
    """Where an interval for a difference lies: 1 wholly above 0, -1 wholly below, 0 when it includes 0."""
    if lo > 0:
        return 1
    if hi < 0:
        return -1
    return 0


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for discordant counts b and c (binomial test at 1/2)."""
    m = b + c
    if m == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2**m
    return min(1.0, 2 * tail)


def exact_match_summary(correct: Sequence[bool], missing: Sequence[bool], prefix: str,
                        confidence: float = 0.95) -> dict[str, float]:
    """Accuracy with its Wilson interval and the share with no extractable answer, as flat keys."""
    n = len(correct)
    k = sum(bool(c) for c in correct)
    lo, hi = wilson_interval(k, n, confidence)
    return {
        prefix: k / n if n else 0.0,
        f"{prefix}_lo": lo,
        f"{prefix}_hi": hi,
        f"{prefix}_no_answer": (sum(bool(m) for m in missing) / n) if n else 0.0,
    }
