"""Assemble issue 15's results file from `run_device.sh x2` output (nvidia-h200-x2).

The x2 folder holds, for each round r and GPU count g: train-g{g}-r{r}.json (the train stage's metrics),
its log (the progress bar, whose per-step timestamps give the steady rate after the first, compiling step),
gen-g{g}-r{r}.json (the generate-base stage's metrics) and, where they came back, the predictions
base-g{g}-r{r}.jsonl (compared byte for byte and by extracted answer).

    python benchmarks/x2_results.py X2_DIR --out benchmarks/results/<date>-h200x2.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from defaults_results import spread, train_log_times  # a sibling script, not a package


def steady_seconds_per_step(log: str, total: int) -> float | None:
    """Seconds per step from step 1 to the last of the training bar (``total`` steps, 1 s resolution)."""
    times = train_log_times(log, total)
    return times["seconds_per_step"] if times else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("x2_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", action="append", default=[], help="a sentence on how the runs were made")
    args = ap.parse_args()
    d = args.x2_dir
    runs: dict[str, list[dict]] = {"train": [], "generate": []}
    for f in sorted(d.glob("train-g*-r*.json")):
        g, r = re.match(r"train-g(\d+)-r(\d+)", f.stem).groups()
        m = json.loads(f.read_text())
        log = (d / f"{f.stem}.log").read_text(errors="replace") if (d / f"{f.stem}.log").exists() else ""
        sps = steady_seconds_per_step(log, m["global_step"])
        runs["train"].append({"gpus": int(g), "round": int(r), "tokens_per_second": m["train_tokens_per_second"],
                              "train_wall_seconds": m["train_wall_seconds"], "steps": m["global_step"],
                              "rows_per_step": m["rows_per_step"], "processes": m["processes"],
                              "peak_gpu_memory_gb": m["peak_gpu_memory_gb"], "steady_seconds_per_step": sps})
    for f in sorted(d.glob("gen-g*-r*.json")):
        g, r = re.match(r"gen-g(\d+)-r(\d+)", f.stem).groups()
        m = json.loads(f.read_text())
        runs["generate"].append({"gpus": int(g), "round": int(r), "questions": m["questions"],
                                 "generate_seconds": m["generate_seconds"], "load_seconds": m["load_seconds"],
                                 "new_tokens_per_second": m["new_tokens_per_second"], "processes": m["processes"],
                                 "forward_steps": m["forward_steps"],
                                 "peak_gpu_memory_gb": m["peak_gpu_memory_gb"]})

    def med(kind: str, g: int, key: str) -> dict | None:
        return spread([x[key] for x in runs[kind] if x["gpus"] == g and x[key] is not None])

    t1, t2 = med("train", 1, "tokens_per_second"), med("train", 2, "tokens_per_second")
    s1, s2 = med("train", 1, "steady_seconds_per_step"), med("train", 2, "steady_seconds_per_step")
    g1, g2 = med("generate", 1, "generate_seconds"), med("generate", 2, "generate_seconds")
    same = []
    for p1 in sorted(d.glob("base-g1-r*.jsonl")):
        p2 = d / p1.name.replace("-g1-", "-g2-")
        if p2.exists():
            a, b = p1.read_bytes(), p2.read_bytes()
            same.append({"round": p1.stem.split("-r")[-1], "byte_identical": a == b,
                         "sha256_1gpu": hashlib.sha256(a).hexdigest(), "sha256_2gpu": hashlib.sha256(b).hexdigest()})
    summary = {
        # the train stage's own tokens/s (every step, the first compiling one included)
        "ddp_train_scaling": round(t2["median"] / t1["median"], 3) if t1 and t2 else None,
        # the same steps after the first: one optimiser step of 12 rows on 1 GPU against 6 + 6 on 2
        "ddp_train_scaling_steady": round(s1["median"] / s2["median"], 3) if s1 and s2 else None,
        "ddp_generate_scaling": round(g1["median"] / g2["median"], 3) if g1 and g2 else None,
        "rounds": min(len([x for x in runs["train"] if x["gpus"] == 2]),
                      len([x for x in runs["generate"] if x["gpus"] == 2])),
        "train_tokens_per_second": {"1": t1, "2": t2},
        "train_steady_seconds_per_step": {"1": s1, "2": s2},
        "generate_seconds": {"1": g1, "2": g2},
        "predictions_2gpu_vs_1gpu": same,
    }
    targets = {f"{k} >= 1.8": None if summary[k] is None else summary[k] >= 1.8
               for k in ("ddp_train_scaling", "ddp_generate_scaling")}
    notes = list(args.note)
    if summary["rounds"] < 3:
        notes.append(f"{summary['rounds']} round(s), not the median of 3 the issue asks for: single runs, no spread.")
    if s1 and s2:
        notes.append(
            f"Training: after the first (compiling) step, one optimiser step of 12 rows took "
            f"{s1['median']:.2f} s on 1 GPU and {s2['median']:.2f} s as 6 + 6 rows on 2, so halving the rows "
            "per GPU did not shorten the step; the stage's own tokens/s also counts the first step, which took "
            "longer under 2 processes. Why the step does not shrink with its rows (fixed per-layer costs of the "
            "4-bit base and checkpointing, or the gradient all-reduce) was not profiled.")
    if g1 and g2:
        gen = [x for x in runs["generate"] if x["gpus"] == 1]
        steps = gen[0]["forward_steps"]  # decode steps of the 1-GPU run; both decode every row to the cap
        notes.append(
            f"Generation: {g1['median']:.1f} s on 1 GPU against {g2['median']:.1f} s on 2 (each decoding half the "
            f"questions); at {steps} decode steps that is {1000 * g1['median'] / steps:.0f} ms a step for "
            f"{gen[0]['questions']} rows and {1000 * g2['median'] / steps:.0f} ms for half of them: a decode "
            "step's time is far from proportional to its rows at these sizes. Loading (not counted) is the same "
            "on both.")
    result = {"summary": summary, "targets_met": targets, "notes": notes, "runs": runs,
              "command": "RUNS=1 bash benchmarks/run_device.sh x2 (kind nvidia-h200-x2; see its header)",
              "model": "Qwen2.5-3B-shaped, random weights (gpu_bench.QWEN25_3B), params.yaml as shipped but for "
                       "model.name, data.source (vigsm.sample 7473 / 1319), train.max_steps 40, train.eval_limit 48 "
                       "and the gpus keys"}
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
