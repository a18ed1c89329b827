"""Assemble issue 12's results file from the device runs' outputs (and the CPU scoring of their predictions).

Inputs, each as the device wrote it (benchmarks/run_device.sh modes `defaults`, `gen3b`, `learning`):
  --defaults   h200-defaults.json (training as shipped against the notebook's baseline, interleaved)
  --gen3b      the generate stage's metrics JSON of each run on the 3B-shaped random model
  --learning   the learning call's folder: train.json, generate*.json, stats.json, and score.json written by
               stages/score.py on the calling machine from the returned predictions
  --paths      h200-genpaths.json (static batch against the slot path on the fine-tuned SmolLM2)
  --stages     h200-learning-stages.json (wall seconds of each stage command)

    python benchmarks/defaults_results.py --defaults ... --gen3b r1.json r2.json r3.json --learning DIR \\
        --paths ... --stages ... --out benchmarks/results/<date>-h200-defaults.json

Every figure comes from those files; the summary's targets are checked here, and a missing measurement is
null with the reason beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def load(path: Path | None) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path and path.exists() else None


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defaults", type=Path, required=True)
    ap.add_argument("--gen3b", type=Path, nargs="*", default=[])
    ap.add_argument("--learning", type=Path, required=True)
    ap.add_argument("--paths", type=Path)
    ap.add_argument("--stages", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    defaults = load(args.defaults)
    ds = defaults["summary"]
    gen3b = [load(p) for p in args.gen3b if p.exists()]
    train = load(args.learning / "train.json")
    gen_ft = load(args.learning / "generate.json")
    gen_base = load(args.learning / "generate-base.json")
    score = load(args.learning / "score.json")
    paths = load(args.paths)
    stages = load(args.stages)

    nb_rate = ds.get("notebook-4bit-adapter-b20-sample", {}).get("new_tokens_per_second", {})
    rate3b = spread([g["new_tokens_per_second"] for g in gen3b]) if gen3b else None
    summary = {
        "default_train_speedup": ds.get("default_train_speedup"),
        "default_train_memory_ratio": ds.get("default_train_memory_ratio"),
        "pipeline_total_seconds": None,
        "pipeline_total_seconds_note": "not measured: the 3B-shaped pipeline (2 epochs, ~11 min) did not fit this "
                                       "session's remaining device time beside the learning check",
        "real_generate_seconds": gen_ft["generate_seconds"] if gen_ft else None,
        "real_generate_waste": gen_ft.get("waste") if gen_ft else None,
        "learning_em_delta": score["delta"]["exact_match_flexible"] if score else None,
        "learning_em_mcnemar_p": score["delta"]["exact_match_flexible_mcnemar_p"] if score else None,
        "separate_adapter_rate_3b_new_tokens_per_second": rate3b,
        "notebook_generation_new_tokens_per_second": nb_rate or None,
        "separate_adapter_vs_notebook": (round(rate3b["median"] / nb_rate["median"], 1)
                                         if rate3b and nb_rate else None),
    }
    targets = {
        "default_train_speedup >= 4 at default_train_memory_ratio <= 1.0":
            None if summary["default_train_speedup"] is None else
            summary["default_train_speedup"] >= 4 and summary["default_train_memory_ratio"] <= 1.0,
        "pipeline_total_seconds <= 600": None,
        "real_generate_seconds <= 15": None if gen_ft is None else summary["real_generate_seconds"] <= 15,
        "real_generate_waste <= 0.25": None if gen_ft is None else summary["real_generate_waste"] <= 0.25,
        "separate adapter >= 100x the notebook's method": None if summary["separate_adapter_vs_notebook"] is None
        else summary["separate_adapter_vs_notebook"] >= 100,
        "learning_em_mcnemar_p < 0.01 with a positive delta": None if score is None else
            summary["learning_em_mcnemar_p"] < 0.01 and summary["learning_em_delta"] > 0,
    }
    runs = defaults["runs"]
    dflt_walls = [r["wall_seconds"] for r in runs if r.get("path") == "shipped-defaults" and "error" not in r]
    notes = {
        "default_train_speedup": (
            f"missed by {4 - summary['default_train_speedup']:.2f} (target 4): medians of "
            f"{ds['shipped-defaults']['tokens_per_second'].get('n')} shipped-defaults runs and "
            f"{ds['baseline-peft-bnb-notebook']['tokens_per_second'].get('n')} baseline runs, interleaved; the third "
            "defaults run was cut off by the call's time limit (the two took "
            f"{', '.join(f'{w:.0f}' for w in dflt_walls)} s of wall time each, loading included). Each timed "
            "window is 25 optimiser steps after 3 warm-up steps; whether recompilations at new padded lengths "
            "fall inside it was not measured this session. The earlier session timed the same configuration "
            "over 40 steps at 11,807 tokens/s (2026-11-29-h200-training.json); this session's 6,573-6,629 is "
            "what is reported. Memory met: with gradient checkpointing the shipped path peaks at 0.70x the "
            "baseline. Without checkpointing the earlier session measured 5.3x at 2.9x the memory, which "
            "misses the memory bound instead."),
        "pipeline_total_seconds": summary["pipeline_total_seconds_note"],
        "learning_check": ("one epoch instead of the notebook's two, to fit the session's device time; "
                           "scored on the CPU (stages/score.py) from the predictions the device returned"),
        "generation_paths": ("rounds written after each round; the call's time limit cut the third round, so "
                             "medians are of the rounds in the file (see genpaths.log in the raw archive for the "
                             "partial third round)"),
    }
    result = {
        "summary": summary, "targets_met": targets, "notes": notes,
        "train_defaults_vs_baseline": defaults,
        "generate_3b_separate_adapter": {"runs": gen3b, "new_tokens_per_second": rate3b},
        "learning_check": {"model": "SmolLM2-135M-Instruct (real weights, GGUF Q4_1 converted, trained in 4-bit)",
                           "data": "vigsm.sample --train 7473 --test 1319", "stage_seconds": stages,
                           "train": train, "generate_base": gen_base, "generate_finetuned": gen_ft,
                           "score": score},
        "generation_paths_finetuned_smollm2": paths,
    }
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for k, v in summary.items():
        print(f"{k}: {v}")
    for k, v in targets.items():
        print(f"target {k}: {'met' if v else 'MISSED' if v is False else 'not measured'}")


if __name__ == "__main__":
    main()
