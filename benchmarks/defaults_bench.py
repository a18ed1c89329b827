"""What `dvc repro` trains with by default, against the notebook's plain baseline, on one GPU.

The "defaults" path is params.yaml's `lora` and `train` sections exactly as shipped (only the model is
swapped for a Qwen2.5-3B-shaped random one: speed does not depend on weight values); the baseline is the
notebook's plain transformers + PEFT + bitsandbytes path (batch 6 x 2, gradient checkpointing, torch's
default attention). The runs are interleaved (baseline, defaults, baseline, defaults, ...) so that each
pair saw the same machine, and every headline figure is the median of the runs with its min and max.
Each run is its own process (`gpu_bench.py train`), so peak memory is per run.

    python benchmarks/defaults_bench.py --tokenizer DIR --out FILE [--runs 3]

Results accumulate in FILE after every run, so a call cut off by its time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_bench as gb  # sibling scripts, not a package
from assemble import spread as _spread
from override_params import shipped as shipped_params

DEFAULTS = "shipped-defaults"


def shipped_train_kwargs() -> dict:
    """gpu_bench's training flags for the path that params.yaml selects as shipped."""
    p = shipped_params()
    t, lo = p["train"], p["lora"]
    return dict(backend=t["backend"], batch=t["per_device_train_batch_size"], accum=t["gradient_accumulation_steps"],
                pad_multiple=t["pad_to_multiple_of"], cuda_graphs=t["cuda_graphs"], padding_free=t["padding_free"],
                grad_ckpt=lo["gradient_checkpointing"])


def spread(values: list[float]) -> dict:
    """Median with min and max, rounded for reading; empty when nothing was measured."""
    return _spread(values, 4) or {}


def summarize(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    base = [r for r in ok if r["path"] == gb.BASELINE]
    dflt = [r for r in ok if r["path"] == DEFAULTS]
    gen = [r for r in ok if r["path"] == gb.NOTEBOOK_GEN]
    out: dict = {}
    if gen:
        out[gb.NOTEBOOK_GEN] = {"new_tokens_per_second": spread([r["new_tokens_per_second"] for r in gen])}
    for name, rs in ((gb.BASELINE, base), (DEFAULTS, dflt)):
        out[name] = {"tokens_per_second": spread([r["tokens_per_second"] for r in rs]),
                     "peak_memory_gb": spread([r["peak_memory_gb"] for r in rs]),
                     "mfu_4N": spread([r["mfu_4N"] for r in rs]),
                     # the window's tokens over its median step: the rate with first-seen shapes' recompilations
                     # (outlier steps) left out; an older run without per-step times has none
                     "tokens_per_second_median_step": spread([
                         r["tokens_timed"] / (r["steps_timed"] * r["step_seconds_median"])
                         for r in rs if r.get("step_seconds_median")])}
    if base and dflt:
        tb, td = out[gb.BASELINE]["tokens_per_second"], out[DEFAULTS]["tokens_per_second"]
        mb, md = out[gb.BASELINE]["peak_memory_gb"], out[DEFAULTS]["peak_memory_gb"]
        out["default_train_speedup"] = round(td["median"] / tb["median"], 3)
        out["default_train_memory_ratio"] = round(md["median"] / mb["median"], 3)
        sb, sd = out[gb.BASELINE]["tokens_per_second_median_step"], out[DEFAULTS]["tokens_per_second_median_step"]
        if sb and sd:
            out["speedup_median_step"] = round(sd["median"] / sb["median"], 3)
        # each adjacent (baseline, defaults) pair ran back to back: the spread of their ratios
        pairs = list(zip(base, dflt, strict=False))
        out["pairwise_speedup"] = spread([d["tokens_per_second"] / b["tokens_per_second"] for b, d in pairs])
        out["projected_2_epoch_minutes_defaults"] = round(
            gb.NOTEBOOK_TRAIN_EXAMPLES * gb.NOTEBOOK_EPOCHS * dflt[0]["mean_tokens_per_example"]
            / td["median"] / 60, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="Qwen-compatible tokenizer dir (SmolLM2's is used)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=25, help="timed optimiser steps of the defaults path")
    ap.add_argument("--baseline-steps", type=int, default=10, help="timed optimiser steps of the baseline")
    ap.add_argument("--notebook-gen", action="store_true", help="also time the notebook's decoding each round")
    args = ap.parse_args()

    model_dir = Path("/tmp/qwen25-3b-random")
    gb.build_model(model_dir, Path(args.tokenizer))
    shipped = shipped_train_kwargs()
    base = dict(model=str(model_dir), warmup=3, profile_steps=0, timeout=200)
    plan = []
    for _ in range(args.runs):
        plan.append(({"VIGSM_SDPA_CUDNN": "1"}, dict(label=gb.BASELINE, backend="peft", batch=6, accum=2,
                                                      grad_ckpt=True, steps=args.baseline_steps, **base)))
        plan.append((None, dict(label=DEFAULTS, steps=args.steps, **shipped, **base)))
        if args.notebook_gen:  # the notebook's decoding (4-bit + adapter, sampling, batch 20), for the x-fold
            plan.append(({"VIGSM_SDPA_CUDNN": "1"}, dict(label=gb.NOTEBOOK_GEN, mode="generate", model=str(model_dir),
                                                          adapter=gb.ADAPTER, batch=20, questions=20,
                                                          max_new_tokens=128, sample=True, timeout=200)))
    results: dict = {"date": time.strftime("%Y-%m-%d"), "versions": gb.versions(),
                     "command": "bash benchmarks/run_device.sh defaults (see its header)",
                     "model": "Qwen2.5-3B-shaped, random weights (gpu_bench.QWEN25_3B); data: the prepared sample",
                     "shipped_train_flags": shipped, "runs": [], "summary": {}}
    for env, kw in plan:
        res = gb.sub(kw.pop("mode", "train"), env=env, **kw)
        res["run"] = len(results["runs"])
        results["runs"].append(res)
        results["summary"] = summarize(results["runs"])
        args.out.write_text(json.dumps(results, indent=2))
    s = results["summary"]
    print("\npath | tokens/s median [min, max] | peak GB median [min, max]")
    for name in (gb.BASELINE, DEFAULTS):
        t, m = s[name]["tokens_per_second"], s[name]["peak_memory_gb"]
        if t:
            print(f"{name} | {t['median']:.0f} [{t['min']:.0f}, {t['max']:.0f}] (n={t['n']}) | "
                  f"{m['median']:.2f} [{m['min']:.2f}, {m['max']:.2f}]")
    print(f"default_train_speedup {s.get('default_train_speedup')}  "
          f"default_train_memory_ratio {s.get('default_train_memory_ratio')}  pairwise {s.get('pairwise_speedup')}")


if __name__ == "__main__":
    main()
