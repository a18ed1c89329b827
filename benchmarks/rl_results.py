"""Assemble issue 22's learning check (benchmarks/run_device_rl.sh) into benchmarks/results/<date>-h200-rl.json.

The device returns the chain's folder (predictions, stage metrics, logs); this script scores the SFT and RL
predictions here with stages/score.py (the device lacks rouge_score), reads the GRPO curve from the rl
stage's log (TRL prints one dict per logging step), and writes the summary keys the issue asks for.

    python benchmarks/rl_results.py --chain DIR --out benchmarks/results/2026-12-02-h200-rl.json
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_LOG_DICT = re.compile(r"\{'loss'[^{}]*\}")
CURVE_KEYS = ("reward", "reward_std", "rewards/correct/mean", "rewards/format_reward/mean", "groups_any_correct",
              "completions/mean_length", "completions/clipped_ratio", "kl", "entropy", "step_time", "grad_norm")


def reward_curve(log_text: str) -> list[dict]:
    """One row per logged GRPO step from the rl stage's console log (tqdm's carriage returns included):
    the dicts TRL's trainer prints, their values as floats."""
    rows = []
    for m in _LOG_DICT.finditer(log_text):
        try:
            d = ast.literal_eval(m.group(0))
        except (ValueError, SyntaxError):
            continue
        if "reward" not in d:
            continue
        row = {}
        for k in CURVE_KEYS:
            if k in d:
                try:
                    value = float(d[k])
                except (TypeError, ValueError):
                    continue
                if math.isfinite(value):  # the results file stays strict JSON
                    row[k] = value
        rows.append(row)
    for i, r in enumerate(rows, 1):
        r["step"] = i
    return rows


def score(chain: Path, work: Path) -> dict:
    """stages/score.py on the returned predictions (finetuned, rl, and base where it was generated)."""
    preds = [f"{name}={chain / f'{name}.jsonl'}" for name in ("base", "finetuned", "rl")
             if (chain / f"{name}.jsonl").is_file() and (chain / f"{name}.jsonl").stat().st_size]
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(ROOT / "stages/score.py"), "--test", str(chain / "test.jsonl"),
                    "--predictions", *preds, "--metrics", str(work / "score.json"), "--details",
                    str(work / "score-details.json"), "--per-question-dir", str(work / "per_question"),
                    "--report", str(work / "report.md"), "--params", str(chain / "params.yaml")], check=True)
    return json.loads((work / "score.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chain", type=Path, required=True, help="the chain's returned out/ folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/rl-score"))
    ap.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    args = ap.parse_args()
    c = args.chain
    scores = score(c, args.work)
    rl = json.loads((c / "rl.json").read_text()) if (c / "rl.json").is_file() else {}
    train = json.loads((c / "train.json").read_text())
    stages = json.loads((c / "stages.json").read_text())
    rl_stage = json.loads((c / "rl-stage.json").read_text())
    fallback = json.loads((c / "rl-fallback.json").read_text()) if (c / "rl-fallback.json").is_file() else None
    curve = reward_curve((c / "rl.log").read_text(encoding="utf-8", errors="replace"))
    params = json.loads(json.dumps(__import__("yaml").safe_load((c / "params.yaml").read_text())))
    d = scores["delta_rl"]
    steps = [r["step_time"] for r in curve if "step_time" in r]
    rows = params["rl"]["prompts_per_step"] * params["rl"]["num_generations"]
    # Without the stage's own metrics (stopped at the budget), the rollout rate's lower bound: completion
    # tokens over the whole step time (rollouts, rewards, forward and backward).
    timed = [r for r in curve if "step_time" in r and "completions/mean_length" in r]
    bound = (sum(r["completions/mean_length"] * rows for r in timed) / sum(r["step_time"] for r in timed)
             if timed else None)
    summary = {
        "rl_em_delta_vs_sft": {"delta": d["exact_match_flexible"], "lo": d["exact_match_flexible_lo"],
                               "hi": d["exact_match_flexible_hi"]},
        "rl_em_mcnemar_p": d["exact_match_flexible_mcnemar_p"],
        "rl_step_seconds": rl.get("step_seconds_median", statistics.median(steps) if steps else None),
        "rl_rollout_tokens_per_second": rl.get("rollout_tokens_per_second", bound),
        "rl_rollout_tokens_per_second_is": "measured in generate (metrics/rl.json)" if "rollout_tokens_per_second" in rl
        else "a lower bound: completion tokens over whole step times (the stage stopped before writing its metrics)",
        "rl_total_seconds": rl_stage["seconds"],
        "sft_em_flexible": scores["finetuned"]["exact_match_flexible"],
        "rl_em_flexible": scores["rl"]["exact_match_flexible"],
        "rl_steps_done": rl.get("steps", len(curve)),
        "rl_steps_in_scored_adapter": rl.get("steps") or (int(fallback["checkpoint"].rsplit("-", 1)[1]) if fallback
                                                           else len(curve)),
    }
    result = {
        "issue": 22,
        "what": "SmolLM2-135M-Instruct (real weights, bfloat16) on vigsm.sample 7473/1319: SFT, then GRPO (TRL "
                "GRPOTrainer, the rl stage as dvc.yaml runs it), both adapters generating the test split greedily",
        "summary": summary,
        "target_met": {"rl beats sft with p < 0.05": d["exact_match_flexible"] > 0
                       and d["exact_match_flexible_mcnemar_p"] < 0.05},
        "params": {k: params[k] for k in ("model", "lora", "train", "rl", "generate")},
        "notes": args.note,
        "stopped_at_budget": fallback,
        "stages": stages,
        "rl_stage": rl_stage,
        "train": train,
        "rl": rl,
        "score": scores,
        "reward_curve": curve,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
