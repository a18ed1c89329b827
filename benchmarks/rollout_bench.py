"""Issue 22's rollout engines, measured as GRPO uses them: one step's rollouts (rl.prompts_per_step prompts x
rl.num_generations completions, sampled at rl.temperature, up to rl.max_completion_length tokens) from the
SFT adapter loaded as the rl stage loads it (vigsm.rl.load_policy: trainable, in training mode, gradient
checkpointing as resolved), through vigsm.rl.Rollouts for each rl.rollout engine. One untimed call per engine
first (CUDA and kernel start-up), then --rounds rounds, the engines' order rotated each round. Each call is
a fresh draw (another step's seeds, or torch's RNG for trl), as in a run.

    python benchmarks/rollout_bench.py --params params.yaml --train data/prepared/train.jsonl \
        --adapter models/adapter --out rollouts.json [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ENGINES = ("trl", "vigsm", "vigsm_graphs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--adapter", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engines", default=",".join(ENGINES))
    a = ap.parse_args()

    import torch
    from transformers import GenerationConfig

    from vigsm.config import load_section
    from vigsm.io import read_jsonl
    from vigsm.modeling import chat_prompt_ids
    from vigsm.rl import Rollouts, load_policy

    model_p, lora_p, rl_p = (load_section(s, path=a.params) for s in ("model", "lora", "rl"))
    rows = read_jsonl(a.train)
    t0 = time.perf_counter()
    model, tok, choice = load_policy(model_p, lora_p, rl_p, a.adapter, rows)
    if torch.cuda.is_available():
        model.to("cuda")
    load_s = time.perf_counter() - t0
    device = next(model.parameters()).device
    prompts = [chat_prompt_ids(tok, r["prompt"]) for r in rows[:rl_p.prompts_per_step]]
    ids = [p for p in prompts for _ in range(rl_p.num_generations)]
    enc = tok.pad({"input_ids": ids}, return_tensors="pt")  # left padding (load_policy's tokenizer)
    enc = {k: v.to(device) for k, v in enc.items()}
    # TRL's rollout GenerationConfig (GRPOTrainer with use_vllm=False), as vigsm.rl.grpo_config sets it up.
    gc = GenerationConfig(max_new_tokens=rl_p.max_completion_length, do_sample=True, temperature=rl_p.temperature,
                          top_p=1.0, top_k=0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                          bos_token_id=tok.bos_token_id)
    model.train()
    engines = a.engines.split(",")
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    failed: dict[str, str] = {}
    inner = model.generate

    def call(engine: str, step: int) -> dict:
        timer = Rollouts(model, tok, engine, rl_p.seed)
        timer.step = step
        try:
            with torch.no_grad():
                out = model.generate(**enc, generation_config=gc)
        finally:
            model.generate = inner
        width = out.shape[1] - enc["input_ids"].shape[1]
        return {"seconds": timer.seconds[0], "tokens": timer.tokens[0], "longest": width,
                "tokens_per_second": timer.tokens[0] / timer.seconds[0]}

    for e in engines:  # warm-up
        try:
            print(e, "warm-up", call(e, 10_000), flush=True)
        except Exception as exc:  # noqa: BLE001 - an engine that fails here is reported, and the others still measured
            failed[e] = f"{type(exc).__name__}: {exc}"[:500]
            print(e, "FAILED", failed[e], flush=True)
    live = [e for e in engines if e not in failed]
    for r in range(a.rounds):
        for e in live[r % len(live):] + live[:r % len(live)]:
            runs[e].append({"round": r, **call(e, r)})
            print(e, runs[e][-1], flush=True)
    summary = {}
    for e in live:
        tps = [x["tokens_per_second"] for x in runs[e]]
        secs = [x["seconds"] for x in runs[e]]
        summary[e] = {"seconds_median": statistics.median(secs), "seconds_min": min(secs), "seconds_max": max(secs),
                      "tokens_per_second_median": statistics.median(tps), "tokens_per_second_min": min(tps),
                      "tokens_per_second_max": max(tps), "n": len(runs[e])}
    fastest = min(summary, key=lambda e: summary[e]["seconds_median"]) if summary else None
    doc = {"rows": len(ids), "prompts": rl_p.prompts_per_step, "num_generations": rl_p.num_generations,
           "max_completion_length": rl_p.max_completion_length, "temperature": rl_p.temperature,
           "gradient_checkpointing": choice.enabled, "load_seconds": load_s,
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
           "summary": summary, "fastest": fastest, "failed": failed, "runs": runs}
    a.out.write_text(json.dumps(doc, indent=1))
    print(f"{'engine':14} {'s median [min, max]':>24} {'tokens/s median':>16}")
    for e, s in summary.items():
        print(f"{e:14} {s['seconds_median']:8.2f} [{s['seconds_min']:.2f}, {s['seconds_max']:.2f}]"
              f" {s['tokens_per_second_median']:16.0f}")
    print("fastest:", fastest)


if __name__ == "__main__":
    main()
