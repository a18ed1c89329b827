"""score: exact match, ROUGE and BLEU with intervals, per-question scores and a report (CPU only)."""

import argparse
from pathlib import Path

from vigsm.config import load_section
from vigsm.errors import VigsmError, run_cli
from vigsm.io import read_jsonl, write_json, write_jsonl, write_text
from vigsm.scoring import (
    check_coverage,
    load_predictions,
    metrics_subset,
    paired_deltas,
    render_report,
    report_variant,
    score_variant,
    scored_variants,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--predictions", nargs="+", required=True, metavar="NAME=PATH",
                    help="one or more variants, e.g. base=... finetuned=... rl=... (rl is left out when "
                         "rl.steps is 0)")
    ap.add_argument("--metrics", type=Path, required=True, help="the headline keys (DVC's metrics file)")
    ap.add_argument("--details", type=Path, required=True, help="every key")
    ap.add_argument("--per-question-dir", type=Path, required=True)
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
    score_p = load_section("score", path=args.params)
    limit = load_section("generate", path=args.params).limit  # generate predicts the first `limit` questions
    variants = {}
    for item in args.predictions:
        name, sep, path = item.partition("=")
        if not sep:
            raise VigsmError(f"--predictions: expected NAME=PATH, got {item!r}")
        variants[name] = Path(path)
    variants = scored_variants(variants, load_section("rl", path=args.params).steps)
    test_rows = read_jsonl(args.test)
    # Every input is read and checked before the first write: its outputs are persistent in dvc.yaml, so a
    # bad predictions file must leave the previous scores whole.
    rows = {name: load_predictions(path, test_rows) for name, path in variants.items()}
    expected = [r["id"] for r in (test_rows[:limit] if limit else test_rows)]
    for name, path in variants.items():
        check_coverage(path, expected, [r["id"] for r in rows[name]])
    scores, per_q = {}, {}
    for name in variants:
        scores[name], per_q[name] = score_variant(rows[name], score_p)
    deltas = paired_deltas(per_q, score_p)
    out: dict = {**scores, **deltas}
    for name in variants:
        write_jsonl(args.per_question_dir / f"{name}.jsonl", per_q[name])
    write_json(args.details, out)
    write_json(args.metrics, metrics_subset(out))
    write_text(args.report, render_report(scores, rows, per_q, score_p, deltas.get("delta"),
                                          examples_of=report_variant(list(scores)), delta_rl=deltas.get("delta_rl")))
    for name, s in scores.items():
        print(f"[vigsm] {name}: EM flexible {s['exact_match_flexible']:.3f} "
              f"[{s['exact_match_flexible_lo']:.3f}, {s['exact_match_flexible_hi']:.3f}]  strict "
              f"{s['exact_match_strict']:.3f}  ROUGE-L F {s['rougeL_f']:.3f}  BLEU {s['bleu']:.1f}  (n={s['n']})")


if __name__ == "__main__":
    run_cli(main)
