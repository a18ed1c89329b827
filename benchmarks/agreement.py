"""Greedy agreement of two prediction files of the generate stage (same questions, greedy decoding).

Used for the merged 16-bit decoding path against the notebook's 4-bit base + separate adapter, on
SmolLM2's real weights (predictions brought back from the device). It reports identical texts, the
same strictly extracted answer, and how many leading tokens the two texts share.

    python benchmarks/agreement.py FAST.jsonl PLAIN.jsonl --tokenizer DIR [--prefix 64] [--out FILE]
"""

from __future__ import annotations

import argparse
import json

from vigsm.answers import extract_answer
from vigsm.io import read_jsonl, write_json


def common_prefix(a: list[int], b: list[int]) -> int:
    """Number of leading items two sequences share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def compare(fast: dict[str, str], plain: dict[str, str], encode, prefix: int) -> dict:
    """Agreement figures over the questions both files answered."""
    ids = sorted(fast.keys() & plain.keys())
    toks = {q: (encode(fast[q]), encode(plain[q])) for q in ids}
    shared = [common_prefix(a, b) for a, b in toks.values()]
    return {
        "questions": len(ids),
        "identical_texts": sum(fast[q] == plain[q] for q in ids),
        "identical_first_tokens": sum(s >= min(prefix, len(a), len(b)) for s, (a, b) in zip(shared, toks.values(),
                                                                                               strict=True)),
        "first_tokens": prefix,
        "same_strict_answer": sum(extract_answer(fast[q]) == extract_answer(plain[q]) for q in ids),
        "mean_shared_leading_tokens": sum(shared) / max(len(ids), 1),
        "mean_tokens_fast": sum(len(a) for a, _ in toks.values()) / max(len(ids), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fast")
    ap.add_argument("plain")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--prefix", type=int, default=64)
    ap.add_argument("--out")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    fast, plain = ({r["id"]: r["raw"] for r in read_jsonl(f) if "raw" in r} for f in (args.fast, args.plain))
    res = compare(fast, plain, lambda t: tok(t, add_special_tokens=False)["input_ids"], args.prefix)
    print(json.dumps(res, indent=1))
    if args.out:
        write_json(args.out, res)


if __name__ == "__main__":
    main()
