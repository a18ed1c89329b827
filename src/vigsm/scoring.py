"""The score stage's logic: per-question scores, aggregate metrics with intervals, and the report.

Pure Python (no torch): it runs on any CPU from prediction files alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigsm import metrics as M
from vigsm.answers import extract_answer, numbers_equal, split_reasoning
from vigsm.config import ScoreParams
from vigsm.errors import VigsmError
from vigsm.io import read_jsonl
from vigsm.notation import NOTEBOOK_MARKER

PRED_FIELDS = ("id", "raw")


def load_predictions(path: Path, test_rows: list[dict]) -> list[dict]:
    """Read a predictions file and join it to the reference test split by id.

    A prediction holds what generate knows (``id``, ``raw``, and ``stop`` and ``new_tokens``, which score
    does not read); score derives the rest: the question and references here, the reasoning and the
    answers in :func:`score_variant`.

    Rejects files whose ids are not in the test split (a file from another split), duplicates, and
    rows without the required fields. Missing ``raw`` text is an error; an empty one is scored wrong.
    """
    preds = read_jsonl(path)
    if not preds:
        raise VigsmError(f"{path}: no predictions")
    refs = {r["id"]: r for r in test_rows}
    seen: set[str] = set()
    joined = []
    for i, p in enumerate(preds, 1):
        missing = [f for f in PRED_FIELDS if f not in p]
        if missing:
            raise VigsmError(f"{path}:{i}: missing field '{missing[0]}'")
        if p["id"] not in refs:
            raise VigsmError(f"{path}:{i}: id {p['id']!r} is not in the prepared test split; these predictions "
                             f"come from other data (rerun generate)")
        if p["id"] in seen:
            raise VigsmError(f"{path}:{i}: duplicate id {p['id']!r}")
        if not isinstance(p["raw"], str):
            raise VigsmError(f"{path}:{i}: field 'raw' must be a string")
        seen.add(p["id"])
        ref = refs[p["id"]]
        joined.append({"id": p["id"], "raw": p["raw"], "question": ref["question"],
                       "reference": ref["completion"][0]["content"], "reference_explanation": ref["explanation"],
                       "reference_answer": ref["answer"]})
    return joined


def check_coverage(path: Path, expected_ids: Sequence[str], ids: Sequence[str]) -> None:
    """Stop unless ``ids`` (one predictions file's, in file order) are exactly ``expected_ids``: none
    missing, none extra, none twice. A short file (a cut, a killed copy) would otherwise be scored at a
    smaller n than the other variants; a partial test split is stated in params (``generate.limit``), never
    inferred from the file."""
    expected, counts = set(expected_ids), Counter(ids)
    missing = len(expected - counts.keys())
    extra = sum(1 for i in counts if i not in expected)
    repeated = sum(n - 1 for n in counts.values() if n > 1)
    if missing or extra or repeated:
        raise VigsmError(f"{path}: {len(ids)} predictions for {len(expected)} test questions: {missing} missing, "
                         f"{extra} not in the prepared test split, {repeated} duplicate ids; predictions must "
                         f"cover the test split exactly (rerun generate)")


# The keys of each model's block that metrics/score.json keeps. DVC makes every key of a declared metrics
# file a column of `dvc exp show` and a row of `dvc metrics diff`; these are the ones runs are compared on.
# Every key (ROUGE's P/R, the notebook's `_seed` variants, the no-answer shares, the tokenizer and BLEU
# signature) is in metrics/score-details.json beside it.
HEADLINE_KEYS = ("n", "exact_match_strict", "exact_match_strict_lo", "exact_match_strict_hi",
                 "exact_match_flexible", "exact_match_flexible_lo", "exact_match_flexible_hi",
                 "rougeL_f", "bleu", "bleu_lo", "bleu_hi")


# The variant the rl stage's adapter answers as; it exists only when rl.steps > 0 (see scored_variants).
RL_VARIANT = "rl"


def scored_variants(variants: dict[str, Path], rl_steps: int) -> dict[str, Path]:
    """The variants to score: all of them, less :data:`RL_VARIANT` when ``rl.steps`` is 0. The skip is the
    param's decision (generate-rl wrote an empty file on purpose); with steps > 0 the RL predictions are
    required and checked like any other."""
    return {name: path for name, path in variants.items() if name != RL_VARIANT or rl_steps > 0}


# The paired comparisons in score.json: finetuned - base, and rl - finetuned where RL ran.
DELTAS = {"delta": ("base", "finetuned"), "delta_rl": ("finetuned", RL_VARIANT)}


def metrics_subset(scores: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``scores`` (one block per model, and the :data:`DELTAS` blocks) with each model's block cut to
    :data:`HEADLINE_KEYS`; a delta block (paired differences with their intervals and McNemar's p) is kept
    whole."""
    return {name: dict(block) if name in DELTAS else {k: block[k] for k in HEADLINE_KEYS}
            for name, block in scores.items()}


def paired_deltas(per_q: dict[str, list[dict]], score_p: ScoreParams) -> dict[str, dict[str, float]]:
    """Each :data:`DELTAS` comparison whose two variants were both scored."""
    return {name: compare_variants(per_q[a], per_q[b], score_p) for name, (a, b) in DELTAS.items()
            if a in per_q and b in per_q}


def score_variant(rows: list[dict], score_p: ScoreParams) -> tuple[dict[str, Any], list[dict]]:
    """All metrics for one set of predictions: (flat metrics, per-question rows)."""
    reasonings, answers_seed = zip(*(split_reasoning(r["raw"]) for r in rows), strict=True)
    ref_expl = [r["reference_explanation"] for r in rows]
    strict = [extract_answer(r["raw"], strict=True) for r in rows]
    flexible = [extract_answer(r["raw"], strict=False) for r in rows]
    ok_strict = [numbers_equal(a, r["reference_answer"]) for a, r in zip(strict, rows, strict=True)]
    ok_flex = [numbers_equal(a, r["reference_answer"]) for a, r in zip(flexible, rows, strict=True)]
    # The notebook: string equality of the text after the prediction's first "###" and the reference's last.
    ok_seed = [a.strip() == r["reference"].split(NOTEBOOK_MARKER)[-1].strip()
               for a, r in zip(answers_seed, rows, strict=True)]

    rouge, per_rouge = M.rouge_vi(ref_expl, list(reasonings))
    rouge_seed, _ = M.rouge_seed(ref_expl, list(reasonings))
    bleu = M.bleu(ref_expl, list(reasonings), samples=score_p.bootstrap_samples, confidence=score_p.confidence,
                  seed=score_p.seed)
    n = len(rows)
    out: dict[str, Any] = {"n": n}
    out.update(M.exact_match_summary(ok_strict, [a is None for a in strict], "exact_match_strict", score_p.confidence))
    out.update(M.exact_match_summary(ok_flex, [a is None for a in flexible], "exact_match_flexible",
                                     score_p.confidence))
    out.update(rouge)
    out.update({"bleu": bleu["bleu"], "bleu_lo": bleu["bleu_lo"], "bleu_hi": bleu["bleu_hi"]})
    out["exact_match_seed"] = sum(ok_seed) / n
    out.update({f"{k}_seed": v for k, v in rouge_seed.items()})
    out["bleu_seed"] = bleu["bleu"]  # the notebook's corpus BLEU on the reasoning: the same computation
    out["rouge_tokenizer"] = M.VietnameseTokenizer.name
    out["bleu_signature"] = bleu["bleu_signature"]
    per_question = [
        {"id": r["id"], "reference_answer": r["reference_answer"], "answer_strict": s, "answer_flexible": f,
         "correct_strict": cs, "correct_flexible": cf, "rougeL_f": round(pr["rougeL"].fmeasure, 4)}
        for r, s, f, cs, cf, pr in zip(rows, strict, flexible, ok_strict, ok_flex, per_rouge, strict=True)
    ]
    return out, per_question


def compare_variants(base: list[dict], tuned: list[dict], score_p: ScoreParams) -> dict[str, float]:
    """Paired difference in flexible and strict EM (tuned - base) over the questions both answered."""
    b = {r["id"]: r for r in base}
    common = [r for r in tuned if r["id"] in b]
    out: dict[str, float] = {}
    for key in ("strict", "flexible"):
        res = M.paired_bootstrap([b[r["id"]][f"correct_{key}"] for r in common], [r[f"correct_{key}"] for r in common],
                                 samples=score_p.bootstrap_samples, confidence=score_p.confidence, seed=score_p.seed)
        out[f"exact_match_{key}"] = res["delta"]
        out[f"exact_match_{key}_lo"] = res["delta_lo"]
        out[f"exact_match_{key}_hi"] = res["delta_hi"]
        out[f"exact_match_{key}_mcnemar_p"] = res["mcnemar_p"]
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


@dataclass(frozen=True)
class ReportRow:
    """One row of the report's headline table: its label, the score key it shows, and how.

    ``style``: ``headline`` a bold percentage with its interval; ``percent``; ``score`` three decimals;
    ``bleu`` one decimal with its interval.
    """

    label: str
    key: str
    style: str


HEADLINE_ROWS: tuple[ReportRow, ...] = (
    ReportRow("**EM flexible (%)**", "exact_match_flexible", "headline"),
    ReportRow("**EM strict (%)**", "exact_match_strict", "headline"),
    ReportRow("no extractable answer, strict (%)", "exact_match_strict_no_answer", "percent"),
    ReportRow("EM seed: string equality after ### (%)", "exact_match_seed", "percent"),
    *(row for rt in M.ROUGE_TYPES for row in (
        ReportRow(f"{rt} F, Vietnamese syllables", f"{rt}_f", "score"),
        ReportRow(f"{rt} F seed (ASCII tokenizer + Porter)", f"{rt}_f_seed", "score"))),
    ReportRow("SacreBLEU on reasoning", "bleu", "bleu"),
)


def _cell(scores: dict[str, Any], row: ReportRow) -> str:
    value, lo, hi = scores[row.key], scores.get(f"{row.key}_lo"), scores.get(f"{row.key}_hi")
    if row.style == "headline":
        return f"**{_pct(value)}** [{_pct(lo)}, {_pct(hi)}]"
    if row.style == "percent":
        return _pct(value)
    if row.style == "score":
        return f"{value:.3f}"
    return f"{value:.1f} [{lo:.1f}, {hi:.1f}]"


def report_variant(variants: list[str]) -> str:
    """The variant whose sample answers the report shows: the fine-tuned model where it was scored, else
    the last one given."""
    return "finetuned" if "finetuned" in variants else variants[-1]


def _report_table(scores: dict[str, dict[str, Any]], score_p: ScoreParams) -> list[str]:
    variants = list(scores)
    counts = ", ".join(f"{v} {scores[v]['n']}" for v in variants)
    first = scores[variants[0]]
    return ["# Evaluation report", "",
            f"Questions scored: {counts}. Intervals are {round(score_p.confidence * 100)}% "
            f"(Wilson for exact match, bootstrap over questions for BLEU).", "",
            "| metric | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants),
            *(f"| {row.label} | " + " | ".join(_cell(scores[v], row) for v in variants) + " |"
              for row in HEADLINE_ROWS),
            "", f"ROUGE tokenizer: `{first['rouge_tokenizer']}`; BLEU signature: `{first['bleu_signature']}`.", ""]


def _did_it_help(delta: dict[str, float], title: str = "Did fine-tuning help?",
                 what: str = "Finetuned minus base") -> list[str]:
    lo, hi = delta["exact_match_flexible_lo"], delta["exact_match_flexible_hi"]
    finding = ("The interval excludes 0." if M.interval_side(lo, hi)
               else "The interval includes 0: no evidence of a change.")
    return [f"## {title}", "",
            f"{what}, flexible EM: {_pct(delta['exact_match_flexible'])} points "
            f"[{_pct(lo)}, {_pct(hi)}] (paired bootstrap), McNemar p = "
            f"{delta['exact_match_flexible_mcnemar_p']:.3g}. {finding}", ""]


def _example(q: dict, r: dict) -> list[str]:
    reasoning = split_reasoning(r["raw"])[0] or "(empty)"
    return [f"### {q['id']}", "", f"**Question:** {r['question']}", "",
            f"**Reference:** {r['reference_answer']}", "",
            "**Model's reasoning:**", "", "```text", reasoning[:1500], "```", "",
            f"**Extracted answer:** strict `{q['answer_strict']}`, flexible `{q['answer_flexible']}`", ""]


def _examples(title: str, items: list[dict], by_id: dict[str, dict]) -> list[str]:
    body = [line for q in items for line in _example(q, by_id[q["id"]])]
    return [f"## {title}", "", *(body or ["(none)", ""])]


def render_report(scores: dict[str, dict[str, Any]], rows: dict[str, list[dict]],
                  per_q: dict[str, list[dict]], score_p: ScoreParams, delta: dict[str, float] | None, *,
                  examples_of: str, delta_rl: dict[str, float] | None = None) -> str:
    """The markdown report: headline table (corrected beside seed), the paired differences where there are
    some (finetuned - base; rl - finetuned), and up to ``score_p.report_examples`` right and wrong answers of the
    variant ``examples_of``."""
    by_id = {r["id"]: r for r in rows[examples_of]}
    right = [q for q in per_q[examples_of] if q["correct_flexible"]][: score_p.report_examples]
    wrong = [q for q in per_q[examples_of] if not q["correct_flexible"]][: score_p.report_examples]
    lines = [*_report_table(scores, score_p), *(_did_it_help(delta) if delta else []),
             *(_did_it_help(delta_rl, "Did RL help?", "RL minus finetuned (SFT)") if delta_rl else []),
             *_examples(f"Right answers ({examples_of})", right, by_id),
             *_examples(f"Wrong answers ({examples_of})", wrong, by_id)]
    return "\n".join(lines) + "\n"
