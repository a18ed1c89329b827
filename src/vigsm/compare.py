"""Compare two runs question by question: is the difference in exact match real or noise?

Usage::

    python -m vigsm.compare REV_A REV_B [--variant finetuned] [--variant-b rl] [--metric flexible]

REV_A and REV_B are git revisions (``HEAD``, ``main``, a commit) or DVC experiment names, or
``workspace``. Each run's per-question scores (``<variant>.jsonl`` in the score stage's
``--per-question-dir``, as that run's dvc.yaml declares it; kept in git) are read through ``dvc.api``,
joined on the question id, and the difference B - A in exact match is printed with a paired bootstrap
interval and McNemar's exact p-value. ``--variant-b`` reads B's scores of another variant: ``workspace
workspace --variant finetuned --variant-b rl`` is RL against SFT on one run's questions (variants: base,
finetuned, and rl where the run had ``rl.steps`` > 0).
"""

from __future__ import annotations

import argparse
import json

from vigsm import metrics as M
from vigsm.errors import VigsmError, run_cli
from vigsm.paths import per_question_file
from vigsm.revisions import resolve_rev


def read_per_question(rev: str, variant: str, repo: str = ".") -> dict[str, dict]:
    import dvc.api

    commit = resolve_rev(rev, repo)
    path = per_question_file(variant, repo=repo, rev=commit)
    try:
        text = dvc.api.read(path, repo=repo, rev=commit, encoding="utf-8")
    except VigsmError:
        raise
    except Exception as exc:
        raise VigsmError(f"cannot read {path} at {rev}: {type(exc).__name__}: {exc}") from exc
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {r["id"]: r for r in rows}


def compare(rev_a: str, rev_b: str, variant: str = "finetuned", metric: str = "flexible", *, repo: str = ".",
            samples: int = 2000, confidence: float = 0.95, seed: int = 0, variant_b: str | None = None) -> dict:
    """B - A in exact match over the shared questions: A is ``variant`` at ``rev_a``, B is ``variant_b``
    (default: the same variant) at ``rev_b``."""
    a, b = read_per_question(rev_a, variant, repo), read_per_question(rev_b, variant_b or variant, repo)
    common = sorted(set(a) & set(b))
    if not common:
        raise VigsmError(f"{rev_a} and {rev_b} share no question ids; they were scored on different data")
    key = f"correct_{metric}"
    res = M.paired_bootstrap([a[i][key] for i in common], [b[i][key] for i in common], samples=samples,
                             confidence=confidence, seed=seed)
    res.update(acc_a=sum(a[i][key] for i in common) / len(common), acc_b=sum(b[i][key] for i in common) / len(common),
               only_in_a=len(set(a) - set(b)), only_in_b=len(set(b) - set(a)))
    return res


VERDICTS = {1: "B is better than A: the interval excludes 0",
            -1: "B is worse than A: the interval excludes 0",
            0: "no evidence of a difference: the interval includes 0 (noise at this sample size)"}


def verdict(res: dict) -> str:
    return VERDICTS[M.interval_side(res["delta_lo"], res["delta_hi"])]


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m vigsm.compare", description=__doc__.splitlines()[0])
    ap.add_argument("rev_a")
    ap.add_argument("rev_b")
    ap.add_argument("--variant", default="finetuned", help="base, finetuned (default) or rl")
    ap.add_argument("--variant-b", default=None, help="B's variant, if not --variant (e.g. rl against finetuned)")
    ap.add_argument("--metric", default="flexible", choices=("flexible", "strict"))
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = ap.parse_args()
    res = compare(args.rev_a, args.rev_b, args.variant, args.metric, samples=args.samples, variant_b=args.variant_b)
    if args.json:
        print(json.dumps(res))
        return
    b_variant = args.variant_b or args.variant
    label = args.variant if b_variant == args.variant else f"{b_variant} against {args.variant}"
    print(f"{label}, exact match ({args.metric}), {res['n']} shared questions")
    print(f"  A {args.rev_a}{'' if b_variant == args.variant else f' {args.variant}'}: {100 * res['acc_a']:.1f}%")
    print(f"  B {args.rev_b}{'' if b_variant == args.variant else f' {b_variant}'}: {100 * res['acc_b']:.1f}%")
    print(f"  B - A: {100 * res['delta']:+.1f} points, 95% paired bootstrap [{100 * res['delta_lo']:+.1f}, "
          f"{100 * res['delta_hi']:+.1f}]; McNemar p = {res['mcnemar_p']:.3g} "
          f"({res['only_a']} right only in A, {res['only_b']} only in B)")
    print(f"  {verdict(res)}")


if __name__ == "__main__":
    run_cli(main)
