"""generate: answer the test questions with the base model, or base + adapter (resumable)."""

import argparse
import os
from pathlib import Path

from vigsm import distributed
from vigsm.config import load_section
from vigsm.errors import run_cli
from vigsm.io import read_jsonl, write_json, write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--test", type=Path, required=True, help="prepared test records")
    ap.add_argument("--adapter", type=Path, default=None, help="LoRA adapter; omit for the base model")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, default=None)
    ap.add_argument("--only-if-rl", action="store_true",
                    help="the RL variant: with rl.steps 0 write an empty predictions file and skipped metrics, "
                         "loading nothing")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
    if args.only_if_rl and load_section("rl", path=args.params).steps == 0:
        # Decided by the param (declared in dvc.yaml), never by the adapter directory's contents: score
        # reads the same param and leaves the variant out.
        write_text(args.out, "")
        if args.metrics:
            write_json(args.metrics, {"skipped": True, "questions": 0})
        print(f"[vigsm] rl.steps is 0: no RL variant to generate (wrote an empty {args.out})")
        return
    # The KV cache grows by one position per step; expandable segments let the CUDA allocator grow in
    # place instead of fragmenting (set before torch initialises CUDA).
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    model_p = load_section("model", path=args.params)
    gen_p = load_section("generate", path=args.params)
    # generate.gpus > 1: this script re-executed under torch's launcher; each process decodes its shard.
    world = distributed.planned_world_size(gen_p.gpus, "generate.gpus")
    if world > 1 and not distributed.is_worker():
        distributed.relaunch(world)
    rows = read_jsonl(args.test)
    rows = rows[: gen_p.limit] if gen_p.limit else rows
    from vigsm.generation import generate_split
    from vigsm.modeling import check_device

    check_device(model_p)
    figures = generate_split(model_p, gen_p, rows, args.adapter, args.out, world)
    if figures is None:  # not the main process
        return
    if args.metrics:
        write_json(args.metrics, figures)
    print(f"[vigsm] wrote {figures['questions']} predictions to {args.out} in {figures['generate_seconds']:.0f}s"
          + (f" ({figures['resumed_questions']} resumed)" if figures["resumed_questions"] else "")
          + (f" from {world} processes" if world > 1 else ""))


if __name__ == "__main__":
    run_cli(main)
