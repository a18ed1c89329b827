"""generate: answer the test questions with the base model, or base + adapter (resumable)."""

import argparse
import os
import time
from datetime import timedelta
from pathlib import Path

from vigsm import distributed
from vigsm.config import load_section
from vigsm.errors import run_cli
from vigsm.io import read_jsonl, write_json, write_jsonl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--test", type=Path, required=True, help="prepared test records")
    ap.add_argument("--adapter", type=Path, default=None, help="LoRA adapter; omit for the base model")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, default=None)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
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
    from vigsm.device import peak_gpu_memory_gb
    from vigsm.generation import fingerprint, run_generation
    from vigsm.modeling import check_device, load_with_adapter

    check_device(model_p)
    # gloo for coordination only (no tensors cross devices); the shards may finish far apart in time.
    with distributed.process_group(backend="gloo", timeout=timedelta(days=7)):
        rank = distributed.rank()
        mine = distributed.shard(rows, rank, world)
        fp = fingerprint(model_p, gen_p, mine, args.adapter)
        out = args.out if world == 1 else distributed.shard_path(args.out, fp, rank, world)
        t0 = time.time()
        if world > 1 and out.is_file():  # this shard finished before a kill: nothing to load or decode
            info = {"questions": len(mine), "resumed": len(mine), "batch_size_used": None,
                    **dict.fromkeys(COUNTS, 0)}
            load_s = gen_s = 0.0
        else:
            model, tok = load_with_adapter(model_p, str(args.adapter) if args.adapter else None,
                                           base_16bit=gen_p.base_16bit, merge_adapter=gen_p.merge_adapter)
            load_s = time.time() - t0
            t1 = time.time()
            info = run_generation(model, tok, mine, gen_p, out, fp)
            gen_s = time.time() - t1
        peak = peak_gpu_memory_gb()
        parts = distributed.gather({**info, "load_s": load_s, "gen_s": gen_s, "peak": peak, "out": str(out)})
        if distributed.is_main():
            if world > 1:
                shards = [read_jsonl(p["out"]) for p in parts]
                write_jsonl(args.out, distributed.merge_shards([r["id"] for r in rows], shards))
                for p in parts:
                    Path(p["out"]).unlink()
            report(args, parts, world)
        distributed.barrier()


# Counters of run_generation that add up over the processes' shards.
COUNTS = ("new_tokens", "row_steps", "cycle_tokens", "prefills", "stopped_at_eos", "stopped_at_answer",
          "stopped_as_loop", "hit_max_new_tokens")


def report(args: argparse.Namespace, parts: list[dict], world: int) -> None:
    """Write the metrics (summed over the processes; times are the slowest one's) and say what was done."""
    questions, resumed = sum(p["questions"] for p in parts), sum(p["resumed"] for p in parts)
    counts = {k: sum(p[k] for p in parts) for k in COUNTS}
    new_tokens, row_steps = counts["new_tokens"], counts["row_steps"]
    load_s, gen_s = max(p["load_s"] for p in parts), max(p["gen_s"] for p in parts)
    used = [p["batch_size_used"] for p in parts if p["batch_size_used"] is not None]
    if args.metrics:
        figures = {"questions": questions, "resumed_questions": resumed,
                   "batch_size_used": min(used) if used else None, "load_seconds": round(load_s, 2),
                   "generate_seconds": round(gen_s, 2), "new_tokens": new_tokens,
                   "new_tokens_per_second": round(new_tokens / gen_s, 1) if gen_s > 0 else None,
                   # decoding work: every row-step the model ran, and the share of it that made no new token
                   "waste": round(1 - new_tokens / row_steps, 4) if row_steps else 0.0,
                   "forward_steps": max(p.get("forward_steps", 0) for p in parts), **counts, "processes": world}
        peaks = [p["peak"] for p in parts if p["peak"] is not None]
        if peaks:
            figures["peak_gpu_memory_gb"] = round(max(peaks), 2)
        write_json(args.metrics, figures)
    print(f"[vigsm] wrote {questions} predictions to {args.out} in {gen_s:.0f}s"
          + (f" ({resumed} resumed)" if resumed else "") + (f" from {world} processes" if world > 1 else ""))


if __name__ == "__main__":
    run_cli(main)
