"""The old static generation path against the slot-based one, on the same model and prompts, interleaved.

Loads the model once as the generate stage does (``model`` and ``generate`` sections of the params file,
an optional adapter), takes the first ``--limit`` questions of a prepared test split, and times, in
``--repeats`` interleaved rounds:

- ``static``: the old path: one left-padded batch of every prompt sorted by length, ``model.generate``,
  greedy, no stop rules;
- ``slots``: the generate stage's path (:func:`vigsm.decoding.decode`) with the params' slots and stop
  rules;
- ``slots-no-stop``: the same with both stop rules off (its texts must be the static path's).

Decoding is greedy whatever the params say (the comparisons need it). Writes JSON: per path the seconds
per run (median, min, max), new tokens, row-steps and waste; the share of identical texts and identical
extracted answers (strict, flexible) between static and each slot path; and what the stop rules change:
answers and EM verdicts, strict and flexible separately. Runs on the CPU too (tiny model, small limit).

    python benchmarks/generation_paths.py --params params.yaml --test data/prepared/test.jsonl \\
        [--adapter models/adapter] --limit 1319 --out benchmarks/results/<date>-generation-paths.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests" / "support"))  # static_generation


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_static(model: Any, tok: Any, rows: list[dict], gen_p: Any) -> tuple[dict[str, str], dict[str, int]]:
    """One sorted left-padded batch of all prompts through model.generate: texts and work figures."""
    import torch
    from static_generation import generation_kwargs

    from vigsm.modeling import chat_prompt_ids

    ids = [chat_prompt_ids(tok, r["prompt"]) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: (len(ids[i]), rows[i]["id"]))
    enc = tok.pad({"input_ids": [ids[i] for i in order]}, return_tensors="pt").to(model.device)
    with torch.inference_mode():
        out = model.generate(**enc, **generation_kwargs(gen_p, tok))
    new = out[:, enc["input_ids"].shape[1]:]
    texts = tok.batch_decode(new, skip_special_tokens=True)
    new_tokens = int((new != tok.pad_token_id).sum())
    return ({rows[i]["id"]: t for i, t in zip(order, texts, strict=True)},
            {"new_tokens": new_tokens, "row_steps": int(new.shape[0] * new.shape[1])})


def run_slots(model: Any, tok: Any, rows: list[dict], gen_p: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """The generate stage's decoding (sorted by length, gen_p.batch_size slots, gen_p's stop rules)."""
    from vigsm.decoding import DecodeStats, decode
    from vigsm.generation import decoding_of
    from vigsm.modeling import chat_prompt_ids

    ids = {r["id"]: chat_prompt_ids(tok, r["prompt"]) for r in rows}
    todo = sorted(rows, key=lambda r: (len(ids[r["id"]]), r["id"]))
    texts: dict[str, str] = {}

    def finish(i: int, tokens: list[int], reason: str) -> None:
        texts[todo[i]["id"]] = tok.decode(tokens, skip_special_tokens=True)

    stats = decode(model, tok, [ids[r["id"]] for r in todo], decoding_of(gen_p), slots=gen_p.batch_size,
                   on_finish=finish, stats=DecodeStats())
    return texts, stats.as_dict()


def compare(a: dict[str, str], b: dict[str, str], refs: dict[str, str]) -> dict[str, Any]:
    """Identical texts and answers between two runs, and how many EM verdicts differ (strict, flexible)."""
    from vigsm.answers import extract_answer, numbers_equal

    n = len(a)
    out: dict[str, Any] = {"questions": n, "identical_texts": sum(a[k] == b[k] for k in a) / n}
    for mode, strict in (("strict", True), ("flexible", False)):
        ans_a = {k: extract_answer(v, strict=strict) for k, v in a.items()}
        ans_b = {k: extract_answer(v, strict=strict) for k, v in b.items()}
        em_a = {k: numbers_equal(ans_a[k], refs[k]) for k in a}
        em_b = {k: numbers_equal(ans_b[k], refs[k]) for k in a}
        out[f"identical_answers_{mode}"] = sum(ans_a[k] == ans_b[k] for k in a) / n
        out[f"answers_changed_{mode}"] = sum(ans_a[k] != ans_b[k] for k in a)
        out[f"em_verdicts_changed_{mode}"] = sum(em_a[k] != em_b[k] for k in a)
        out[f"em_{mode}"] = [sum(em_a.values()) / n, sum(em_b.values()) / n]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--test", type=Path, required=True, help="prepared test split (.jsonl)")
    ap.add_argument("--adapter", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=0, help="first N questions; 0 = all")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from vigsm.config import load_section
    from vigsm.io import read_jsonl
    from vigsm.modeling import check_device, load_with_adapter

    model_p = load_section("model", path=args.params)
    gen_p = dataclasses.replace(load_section("generate", path=args.params), do_sample=False)
    rows = read_jsonl(args.test)
    rows = rows[: args.limit] if args.limit else rows
    check_device(model_p)
    t0 = time.perf_counter()
    model, tok = load_with_adapter(model_p, str(args.adapter) if args.adapter else None,
                                   base_16bit=gen_p.base_16bit, merge_adapter=gen_p.merge_adapter)
    load_seconds = time.perf_counter() - t0
    paths = {"static": (run_static, gen_p),
             "slots": (run_slots, gen_p),
             "slots-no-stop": (run_slots, dataclasses.replace(gen_p, stop_at_answer=False, stop_loops=False))}
    warm = dataclasses.replace(gen_p, max_new_tokens=4)
    for fn, _ in paths.values():
        fn(model, tok, rows[:2], warm)
    seconds: dict[str, list[float]] = {k: [] for k in paths}
    texts: dict[str, dict[str, str]] = {}
    work: dict[str, dict[str, Any]] = {}
    refs = {row["id"]: row["answer"] for row in rows}

    def summarize() -> dict[str, Any]:
        result: dict[str, Any] = {
            "questions": len(rows), "repeats": args.repeats, "slots": gen_p.batch_size,
            "max_new_tokens": gen_p.max_new_tokens, "stop_at_answer": gen_p.stop_at_answer,
            "stop_loops": gen_p.stop_loops, "model": model_p.name,
            "adapter": str(args.adapter) if args.adapter else None,
            "base_16bit": gen_p.base_16bit, "merge_adapter": gen_p.merge_adapter,
            "load_seconds": round(load_seconds, 2),
            "device": _device(),
            "paths": {name: {"seconds_median": statistics.median(s), "seconds_min": min(s), "seconds_max": max(s),
                             "seconds": s, **{k: v for k, v in work[name].items() if v is not None},
                             "waste": 1 - work[name]["new_tokens"] / work[name]["row_steps"]}
                      for name, s in seconds.items()},
            "static_vs_slots_no_stop": compare(texts["static"], texts["slots-no-stop"], refs),
            "static_vs_slots": compare(texts["static"], texts["slots"], refs),
            "stop_rules_off_vs_on": compare(texts["slots-no-stop"], texts["slots"], refs),
        }
        result["speedup_static_over_slots"] = (result["paths"]["static"]["seconds_median"]
                                               / result["paths"]["slots"]["seconds_median"])
        return result

    for r in range(args.repeats):
        for name, (fn, p) in paths.items():
            _sync()
            t = time.perf_counter()
            out, figures = fn(model, tok, rows, p)
            _sync()
            seconds[name].append(time.perf_counter() - t)
            if r == 0:
                texts[name], work[name] = out, figures
            print(f"[bench] round {r + 1}/{args.repeats} {name}: {seconds[name][-1]:.2f}s", flush=True)
        # after every round, so a run cut off by a time limit keeps the rounds it finished
        result = summarize()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, p in result["paths"].items():
        print(f"{name:14s} median {p['seconds_median']:.2f}s  new {p['new_tokens']}  row-steps {p['row_steps']}  "
              f"waste {p['waste']:.3f}")
    for key in ("static_vs_slots_no_stop", "static_vs_slots", "stop_rules_off_vs_on"):
        c = result[key]
        print(f"{key}: identical texts {c['identical_texts']:.3f}, answers strict {c['identical_answers_strict']:.3f} "
              f"flexible {c['identical_answers_flexible']:.3f}, EM verdicts changed strict "
              f"{c['em_verdicts_changed_strict']} flexible {c['em_verdicts_changed_flexible']}")


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    main()
