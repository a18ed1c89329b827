"""rl: GRPO (TRL's GRPOTrainer) from the SFT adapter; rl.steps 0 passes through without loading anything."""

import argparse
from pathlib import Path

from vigsm.config import load_section
from vigsm.errors import run_cli


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", type=Path, required=True, help="prepared training records (the prompts)")
    ap.add_argument("--sft-adapter", type=Path, required=True, help="the train stage's adapter")
    ap.add_argument("--adapter-dir", type=Path, required=True, help="the RL adapter (a marker when rl.steps is 0)")
    ap.add_argument("--checkpoint-dir", type=Path, required=True, help="kept across runs, for resuming")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--live-dir", type=Path, default=None, help="DVCLive logs (per-step TSVs)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
    # Every section read is validated before torch is imported.
    model_p = load_section("model", path=args.params)
    lora_p = load_section("lora", path=args.params)
    rl_p = load_section("rl", path=args.params)
    from vigsm.rl import run_rl

    metrics = run_rl(model_p, lora_p, rl_p, args.train, args.sft_adapter, args.adapter_dir, args.checkpoint_dir,
                     args.metrics, live_dir=args.live_dir)
    if metrics["skipped"]:
        print(f"[vigsm] rl.steps is 0: no RL (wrote the marker {args.adapter_dir})")
        return
    print(f"[vigsm] GRPO {metrics['steps']} steps: reward {metrics.get('reward_first', 0):.3f} -> "
          f"{metrics.get('reward_last', 0):.3f}, median step {metrics['step_seconds_median']:.1f}s, rollouts "
          f"{metrics['rollout_tokens_per_second']:.0f} tokens/s")


if __name__ == "__main__":
    run_cli(main)
