"""The score stage's logic: per-question scores, aggregate metrics with intervals, and the report.

Pure Python (no torch): it runs on any CPU from prediction files alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vigsm import metrics as M
from vigsm.answers import extract_answer, numbers_equal, split_reasoning
from vigsm.config import ScoreParams
from vigsm.errors import VigsmError
from vigsm.io import read_jsonl

PRED_FIELDS = ("id", "raw")


def load_predictions(path: Path, test_rows: list[dict]) -> list[dict]:
    """Read a predictions file and join it to the reference test split by id.

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


def score_variant(rows: list[dict], sp: ScoreParams) -> tuple[dict[str, Any], list[dict]]:
    """All metrics for one set of predictions: (flat metrics, per-question rows)."""
    reasonings, answers_seed = zip(*(split_reasoning(r["raw"]) for r in rows), strict=True)
    ref_expl = [r["reference_explanation"] for r in rows]
    strict = [extract_answer(r["raw"], strict=True) for r in rows]
    flexible = [extract_answer(r["raw"], strict=False) for r in rows]
    ok_strict = [numbers_equal(a, r["reference_answer"]) for a, r in zip(strict, rows, strict=True)]
    ok_flex = [numbers_equal(a, r["reference_answer"]) for a, r in zip(flexible, rows, strict=True)]
    # The notebook: string equality of the text after the prediction's first "###" and the reference's last.
    ok_seed = [a.strip() == r["reference"].split("###")[-1].strip() for a, r in zip(answers_seed, rows, strict=True)]

    rouge, per_rouge = M.rouge_vi(ref_expl, list(reasonings))
    rouge_seed, _ = M.rouge_seed(ref_expl, list(reasonings))
    bleu = M.bleu(ref_expl, list(reasonings), samples=sp.bootstrap_samples, confidence=sp.confidence,
                  seed=sp.seed)
    n = len(rows)
    out: dict[str, Any] = {"n": n}
    out.update(M.exact_match_summary(ok_strict, [a is None for a in strict], "exact_match_strict", sp.confidence))
    out.update(M.exact_match_summary(ok_flex, [a is None for a in flexible], "exact_match_flexible",
                                     sp.confidence))
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


def compare_variants(base: list[dict], tuned: list[dict], sp: ScoreParams) -> dict[str, float]:
    """Paired difference in flexible and strict EM (tuned - base) over the questions both answered."""
    b = {r["id"]: r for r in base}
    common = [r for r in tuned if r["id"] in b]
    out: dict[str, float] = {}
    for key in ("strict", "flexible"):
        res = M.paired_bootstrap([b[r["id"]][f"correct_{key}"] for r in common], [r[f"correct_{key}"] for r in common],
                                 samples=sp.bootstrap_samples, confidence=sp.confidence, seed=sp.seed)
        out[f"exact_match_{key}"] = res["delta"]
        out[f"exact_match_{key}_lo"] = res["delta_lo"]
        out[f"exact_match_{key}_hi"] = res["delta_hi"]
        out[f"exact_match_{key}_mcnemar_p"] = res["mcnemar_p"]
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def render_report(scores: dict[str, dict[str, Any]], rows: dict[str, list[dict]],
                  per_q: dict[str, list[dict]], sp: ScoreParams, delta: dict[str, float] | None) -> str:
    """The markdown report: headline table (corrected beside seed) and sample right and wrong answers."""
    variants = list(scores)
    conf = round(sp.confidence * 100)
    counts = ", ".join(f"{v} {scores[v]['n']}" for v in variants)
    lines = ["# Evaluation report", "",
             f"Questions scored: {counts}. Intervals are {conf}% "
             f"(Wilson for exact match, bootstrap over questions for BLEU).", "",
             "| metric | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]

    def row(label: str, fn: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(scores[v]) for v in variants) + " |")

    for key, label in (("exact_match_flexible", "EM flexible (%)"), ("exact_match_strict", "EM strict (%)")):
        row(f"**{label}**", lambda s, k=key: f"**{_pct(s[k])}** [{_pct(s[k + '_lo'])}, {_pct(s[k + '_hi'])}]")
    row("no extractable answer, strict (%)", lambda s: _pct(s["exact_match_strict_no_answer"]))
    row("EM seed: string equality after ### (%)", lambda s: _pct(s["exact_match_seed"]))
    for rt in ("rouge1", "rouge2", "rougeL"):
        row(f"{rt} F, Vietnamese syllables", lambda s, rt=rt: f"{s[rt + '_f']:.3f}")
        row(f"{rt} F seed (ASCII tokenizer + Porter)", lambda s, rt=rt: f"{s[rt + '_f_seed']:.3f}")
    row("SacreBLEU on reasoning", lambda s: f"{s['bleu']:.1f} [{s['bleu_lo']:.1f}, {s['bleu_hi']:.1f}]")
    lines += ["", f"ROUGE tokenizer: `{scores[variants[0]]['rouge_tokenizer']}`; "
              f"BLEU signature: `{scores[variants[0]]['bleu_signature']}`.", ""]
    if delta:
        lines += ["## Did fine-tuning help?", "",
                  f"Finetuned minus base, flexible EM: {_pct(delta['exact_match_flexible'])} points "
                  f"[{_pct(delta['exact_match_flexible_lo'])}, {_pct(delta['exact_match_flexible_hi'])}] "
                  f"(paired bootstrap), McNemar p = {delta['exact_match_flexible_mcnemar_p']:.3g}. "
                  + ("The interval excludes 0." if delta["exact_match_flexible_lo"] > 0 or
                     delta["exact_match_flexible_hi"] < 0 else "The interval includes 0: no evidence of a change."),
                  ""]
    main = variants[-1]
    by_id = {r["id"]: r for r in rows[main]}
    right = [q for q in per_q[main] if q["correct_flexible"]][: sp.report_examples]
    wrong = [q for q in per_q[main] if not q["correct_flexible"]][: sp.report_examples]
    for title, items in ((f"Right answers ({main})", right), (f"Wrong answers ({main})", wrong)):
        lines += [f"## {title}", ""]
        if not items:
            lines += ["(none)", ""]
        for q in items:
            r = by_id[q["id"]]
            reasoning = split_reasoning(r["raw"])[0] or "(empty)"
            lines += [f"### {q['id']}", "", f"**Question:** {r['question']}", "",
                      f"**Reference:** {r['reference_answer']}", "",
                      "**Model's reasoning:**", "", "```text", reasoning[:1500], "```", "",
                      f"**Extracted answer:** strict `{q['answer_strict']}`, flexible `{q['answer_flexible']}`", ""]
    return "\n".join(lines) + "\n"
