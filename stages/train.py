"""train: LoRA fine-tuning with TRL's SFTTrainer; saves the adapter and eval metrics."""

import argparse
from pathlib import Path

from vigsm import distributed
from vigsm.config import load_section
from vigsm.errors import run_cli


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--adapter-dir", type=Path, required=True)
    ap.add_argument("--checkpoint-dir", type=Path, required=True, help="kept across runs, for resuming")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--live-dir", type=Path, default=None, help="DVCLive logs (per-step TSVs)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
    # Every section is validated before torch is imported.
    model_p = load_section("model", path=args.params)
    lora_p = load_section("lora", path=args.params)
    train_p = load_section("train", path=args.params)
    # train.gpus > 1: the same rows per step, shared by the processes (checked before anything starts),
    # and this script re-executed under torch's launcher, one worker per GPU.
    world = distributed.planned_world_size(train_p.gpus, "train.gpus")
    train_p = distributed.per_process_train(train_p, world)
    if world > 1 and not distributed.is_worker():
        distributed.relaunch(world)
    from vigsm.training import train

    with distributed.process_group():
        metrics = train(model_p, lora_p, train_p, args.data_dir, args.adapter_dir, args.checkpoint_dir,
                        args.metrics, live_dir=args.live_dir)
    if not distributed.is_main():
        return
    print(f"[vigsm] eval_loss {metrics['eval_loss']:.4f}  perplexity {metrics['perplexity']:.3f}  "
          f"({metrics['global_step']} steps, {metrics['train_tokens_per_second']:.0f} tokens/s)")


if __name__ == "__main__":
    run_cli(main)
