"""generate: answer the test questions with the base model, or base + adapter (resumable)."""

import argparse
import os
import time
from pathlib import Path

from vigsm.config import load_section
from vigsm.errors import run_cli
from vigsm.io import read_jsonl, write_json


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
    rows = read_jsonl(args.test)
    rows = rows[: gen_p.limit] if gen_p.limit else rows
    from vigsm.device import peak_gpu_memory_gb
    from vigsm.generation import fingerprint, run_generation
    from vigsm.modeling import check_device, load_with_adapter

    check_device(model_p)
    t0 = time.time()
    model, tok = load_with_adapter(model_p, str(args.adapter) if args.adapter else None,
                                   base_16bit=gen_p.base_16bit, merge_adapter=gen_p.merge_adapter)
    load_s = time.time() - t0
    fp = fingerprint(model_p, gen_p, rows, args.adapter)
    t1 = time.time()
    info = run_generation(model, tok, rows, gen_p, args.out, fp)
    gen_s = time.time() - t1
    if args.metrics:
        figures = {"questions": info["questions"], "resumed_questions": info["resumed"],
                   "batch_size_used": info["batch_size_used"], "load_seconds": round(load_s, 2),
                   "generate_seconds": round(gen_s, 2), "new_tokens": info["new_tokens"],
                   "new_tokens_per_second": round(info["new_tokens"] / gen_s, 1) if gen_s > 0 else None,
                   **{k: info[k] for k in ("row_steps", "waste", "cycle_tokens", "forward_steps", "prefills",
                                           "stopped_at_eos", "stopped_at_answer", "stopped_as_loop",
                                           "hit_max_new_tokens")}}
        peak = peak_gpu_memory_gb()
        if peak is not None:
            figures["peak_gpu_memory_gb"] = round(peak, 2)
        write_json(args.metrics, figures)
    print(f"[vigsm] wrote {info['questions']} predictions to {args.out} in {gen_s:.0f}s"
          + (f" ({info['resumed']} resumed)" if info["resumed"] else ""))


if __name__ == "__main__":
    run_cli(main)
