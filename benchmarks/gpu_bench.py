"""GPU benchmark: the project's training and generation paths against the notebook's, on one H200.

Speed does not depend on weight values, so the model is Qwen2.5-3B-shaped with random weights, built
from its config; the token lengths come from the prepared data. Each measurement runs in its own
process, so peak memory is per path. Run it through `benchmarks/run_device.sh`; it writes
benchmarks/results/<date>-h200.json and prints a table last.

    python benchmarks/gpu_bench.py all --tokenizer DIR --out FILE
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

QWEN25_3B = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                 num_attention_heads=16, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6,
                 max_position_embeddings=32768, rms_norm_eps=1e-6)
PEAK_BF16_DENSE = 989e12  # H200 SXM datasheet, dense bf16
NOTEBOOK_TRAIN_EXAMPLES, NOTEBOOK_EPOCHS, TEST_QUESTIONS = 7473, 2, 1319


def base_params(c: dict = QWEN25_3B) -> int:
    """Parameters of the frozen base (4-bit weights are packed, so they are counted from the config)."""
    h, i = c["hidden_size"], c["intermediate_size"]
    kv = c["num_key_value_heads"] * h // c["num_attention_heads"]
    attn = h * h + h + 2 * (h * kv + kv) + h * h
    layer = attn + 3 * h * i + 2 * h
    return c["vocab_size"] * h + c["num_hidden_layers"] * layer + h


def build_model(model_dir: Path, tokenizer_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    if (model_dir / "config.json").exists():
        return
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = Qwen2Config(**QWEN25_3B, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(model_dir, safe_serialization=True)
    tok.save_pretrained(model_dir)


def params_for(model_dir: Path, backend: str, padding_free: bool, grad_ckpt: bool, batch: int, accum: int):
    import yaml

    from vigsm.config import SECTIONS, parse_section

    p = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    p["model"].update(name=str(model_dir), gguf_file="")
    p["lora"]["gradient_checkpointing"] = grad_ckpt
    p["train"].update(backend=backend, padding_free=padding_free, per_device_train_batch_size=batch,
                      gradient_accumulation_steps=accum, max_steps=1000, eval_steps=100000, save_steps=100000,
                      logging_steps=1000, load_best_model_at_end=False, eval_limit=8)
    return {k: parse_section(k, p[k], SECTIONS[k]) for k in SECTIONS}


def bench_train(args) -> dict:
    """Train `steps` optimiser steps after `warmup`; count non-padding tokens/s and peak memory."""
    import torch
    from transformers import TrainerCallback

    from vigsm.io import read_jsonl
    from vigsm.training import build_trainer, label_coverage

    s = params_for(Path(args.model), args.backend, args.padding_free, args.grad_ckpt, args.batch, args.accum)
    rows = read_jsonl("data/prepared/train.jsonl")
    rows = (rows * (1 + (args.steps + args.warmup) * args.batch * args.accum // len(rows)))
    trainer, backend = build_trainer(s["model"], s["lora"], s["train"], rows, rows[:8], Path("/tmp/bench-ckpt"))
    cov = label_coverage(trainer, rows)
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            torch.cuda.synchronize()
            marks[state.global_step] = time.perf_counter()
            if state.global_step >= args.warmup + args.steps:
                control.should_training_stop = True

    trainer.add_callback(Clock())
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    per_step = args.batch * args.accum
    # with shuffling off the dataset is consumed in order: the tokens of the timed steps
    timed = lengths[args.warmup * per_step:(args.warmup + args.steps) * per_step]
    seconds = marks[args.warmup + args.steps] - marks[args.warmup]
    trainer.save_model("/tmp/bench-adapter")
    tps = sum(timed) / seconds
    n_params = base_params()
    return {"path": args.label, "backend": backend, "padding_free": args.padding_free,
            "gradient_checkpointing": args.grad_ckpt, "batch": args.batch, "accum": args.accum,
            "steps_timed": args.steps, "tokens_per_second": tps, "mean_tokens_per_example": sum(lengths) / len(lengths),
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9, "mfu_4N": tps * 4 * n_params / PEAK_BF16_DENSE,
            "trainer_grad_accum": trainer.args.gradient_accumulation_steps,
            "prompt_tokens_labelled": cov["prompt_tokens_labelled"],
            "completion_tokens_labelled": cov["completion_tokens_labelled"],
            "completion_tokens": cov["completion_tokens"], "base_params": n_params}


def bench_generate(args) -> dict:
    """New tokens/s of one generation path on real prompts from the prepared test split."""
    import dataclasses

    import torch

    from vigsm.generation import generate_texts, sort_by_length
    from vigsm.io import read_jsonl
    from vigsm.modeling import load_with_adapter

    s = params_for(Path(args.model), "peft", False, False, 1, 1)
    gp = dataclasses.replace(s["generate"], do_sample=args.sample, max_new_tokens=args.max_new_tokens,
                             batch_size=args.batch)
    model, tok = load_with_adapter(s["model"], args.adapter, merged_16bit=args.merged)
    rows = read_jsonl("data/prepared/test.jsonl")
    rows = (rows * (1 + args.questions // len(rows)))[: args.questions]
    rows = [{**r, "id": f"{r['id']}-{i}"} for i, r in enumerate(rows)]
    rows = sort_by_length(rows, tok) if args.sorted else rows
    generate_texts(model, tok, [r["prompt"] for r in rows[:2]], dataclasses.replace(gp, max_new_tokens=4), 0)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    outs, new_tokens = [], 0
    for i in range(0, len(rows), args.batch):
        texts = generate_texts(model, tok, [r["prompt"] for r in rows[i:i + args.batch]], gp, seed=i)
        outs += texts
        new_tokens += sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    Path(args.dump).write_text(json.dumps(outs)) if args.dump else None
    return {"path": args.label, "merged_16bit": args.merged, "do_sample": args.sample, "batch": args.batch,
            "questions": len(rows), "max_new_tokens": args.max_new_tokens, "seconds": seconds,
            "new_tokens": new_tokens, "new_tokens_per_second": new_tokens / seconds,
            "projected_seconds_1319": seconds * TEST_QUESTIONS / len(rows),
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9}


def sub(mode: str, **kw) -> dict:
    out = Path(f"/tmp/bench-{kw['label']}.json")
    cmd = [sys.executable, __file__, mode, "--result", str(out)]
    for k, v in kw.items():
        if isinstance(v, bool):
            cmd += [f"--{k.replace('_', '-')}"] if v else []
        elif v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    t0 = time.time()
    proc = subprocess.run(cmd, text=True, capture_output=True)
    log = Path(os.environ.get("OUT", "/tmp")) / f"bench-{kw['label']}.log"
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not out.exists():
        print(f"[bench] {kw['label']} FAILED (see {log.name}): {proc.stderr.strip().splitlines()[-1:]}", flush=True)
        return {"path": kw["label"], "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    res = json.loads(out.read_text())
    res["wall_seconds"] = round(time.time() - t0, 1)
    print(f"[bench] {json.dumps(res)}", flush=True)
    return res


def run_all(args) -> None:
    import torch
    import transformers

    model_dir = Path("/tmp/qwen25-3b-random")
    build_model(model_dir, Path(args.tokenizer))
    m = str(model_dir)
    results: dict = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name(0),
                     "versions": {"python": platform.python_version(), "torch": torch.__version__,
                                  "transformers": transformers.__version__},
               "model": "Qwen2.5-3B-shaped, random weights",
                     "peak_bf16_flops_assumed": PEAK_BF16_DENSE}
    for name in ("trl", "peft", "unsloth", "bitsandbytes"):
        try:
            results["versions"][name] = __import__(name).__version__ if name != "unsloth" else \
                subprocess.run([sys.executable, "-c", "import importlib.metadata as m;print(m.version('unsloth'))"],
                               capture_output=True, text=True).stdout.strip()
        except Exception as exc:  # noqa: BLE001
            results["versions"][name] = f"unavailable: {exc}"
    base = dict(model=m, steps=args.steps, warmup=3)
    results["train"] = [] if args.skip_train else [
        sub("train", label="baseline-peft-bnb", backend="peft", batch=6, accum=2, grad_ckpt=True, **base),
        sub("train", label="project-unsloth-paddingfree", backend="unsloth", batch=6, accum=2, padding_free=True,
            grad_ckpt=True, **base),
        sub("train", label="project-unsloth-paddingfree-b12", backend="unsloth", batch=12, accum=1,
            padding_free=True, grad_ckpt=True, **base),
    ]
    adapter = "/tmp/bench-adapter"
    if args.skip_train:  # an adapter to decode with: a few steps of the project's path
        sub("train", label="adapter-for-generation", backend="unsloth", batch=12, accum=1, padding_free=True,
            grad_ckpt=True, model=m, steps=2, warmup=1)
    results["generate"] = [
        sub("generate", label="project-merged16-greedy-sorted", model=m, adapter=adapter, batch=args.gen_batch,
            questions=TEST_QUESTIONS, max_new_tokens=768, merged=True, sorted=True),
        sub("generate", label="notebook-4bit-adapter-b20-sample", model=m, adapter=adapter, batch=20, questions=20,
            max_new_tokens=args.nb_tokens, sample=True),
    ]
    # Greedy agreement of the fast path with the plain path (4-bit base + separate adapter) on a sample.
    a = sub("generate", label="agree-plain", model=m, adapter=adapter, batch=20, questions=40, max_new_tokens=48,
            sorted=True, dump="/tmp/agree-plain.json")
    b = sub("generate", label="agree-fast", model=m, adapter=adapter, batch=40, questions=40, max_new_tokens=48,
            merged=True, sorted=True, dump="/tmp/agree-fast.json")
    if "error" not in a and "error" not in b:
        pa = json.loads(Path("/tmp/agree-plain.json").read_text())
        pb = json.loads(Path("/tmp/agree-fast.json").read_text())
        results["greedy_agreement"] = {"sample": len(pa),
                                       "rate": sum(x == y for x, y in zip(pa, pb, strict=True)) / len(pa)}
    summarize(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print_table(results)


def summarize(r: dict) -> None:
    tr = {x["path"]: x for x in r["train"] if "error" not in x}
    gen = {x["path"]: x for x in r["generate"] if "error" not in x}
    s: dict = {}
    if "baseline-peft-bnb" in tr:
        b = tr["baseline-peft-bnb"]
        best = max((x for k, x in tr.items() if k != "baseline-peft-bnb"), key=lambda x: x["tokens_per_second"],
                   default=None)
        if best:
            s["train_speedup"] = best["tokens_per_second"] / b["tokens_per_second"]
            s["train_memory_ratio"] = best["peak_memory_gb"] / b["peak_memory_gb"]
            s["train_best_path"] = best["path"]
            tokens = NOTEBOOK_TRAIN_EXAMPLES * NOTEBOOK_EPOCHS * best["mean_tokens_per_example"]
            s["projected_2epoch_minutes_best"] = tokens / best["tokens_per_second"] / 60
            s["projected_2epoch_minutes_baseline"] = tokens / b["tokens_per_second"] / 60
            s["projection_note"] = ("7473 examples x 2 epochs x the mean tokenized length of the bundled sample; "
                                    "vi_gsm8k's real lengths were not available offline")
    nb, fast = gen.get("notebook-4bit-adapter-b20-sample"), gen.get("project-merged16-greedy-sorted")
    if nb and fast:
        s["generate_speedup"] = fast["new_tokens_per_second"] / nb["new_tokens_per_second"]
        s["generate_1319_seconds_project"] = fast["projected_seconds_1319"]
        s["generate_1319_seconds_notebook"] = nb["projected_seconds_1319"] * 768 / nb["max_new_tokens"]
    r["summary"] = s
    r["targets"] = {"train_speedup>=2.5": s.get("train_speedup", 0) >= 2.5,
                    "train_memory_ratio<=0.5": s.get("train_memory_ratio", 9) <= 0.5,
                    "2epoch<=10min": s.get("projected_2epoch_minutes_best", 1e9) <= 10,
                    "generate_speedup>=20": s.get("generate_speedup", 0) >= 20,
                    "1319_questions<120s": s.get("generate_1319_seconds_project", 1e9) < 120}


def print_table(r: dict) -> None:
    print("\n== training (Qwen2.5-3B-shaped, 4-bit, LoRA r=32) ==")
    print(f"{'path':38} {'tok/s':>9} {'peak GB':>8} {'MFU':>6}")
    for x in r["train"]:
        if "error" in x:
            print(f"{x['path']:38} ERROR {x['error'][:60]}")
        else:
            print(f"{x['path']:38} {x['tokens_per_second']:9.0f} {x['peak_memory_gb']:8.1f} {100 * x['mfu_4N']:5.1f}%")
    print("\n== generation ==")
    print(f"{'path':38} {'new tok/s':>10} {'1319 q (s)':>11} {'peak GB':>8}")
    for x in r["generate"]:
        if "error" in x:
            print(f"{x['path']:38} ERROR {x['error'][:60]}")
        else:
            print(f"{x['path']:38} {x['new_tokens_per_second']:10.0f} {x['projected_seconds_1319']:11.0f} "
                  f"{x['peak_memory_gb']:8.1f}")
    print("\nsummary:", json.dumps(r.get("summary"), indent=1))
    print("greedy agreement:", r.get("greedy_agreement"))
    print("targets met:", json.dumps(r.get("targets")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("all", "train", "generate", "build"))
    ap.add_argument("--tokenizer")
    ap.add_argument("--out", default=f"benchmarks/results/{time.strftime('%Y-%m-%d')}-h200.json")
    ap.add_argument("--result")
    ap.add_argument("--label", default="x")
    ap.add_argument("--model")
    ap.add_argument("--adapter")
    ap.add_argument("--backend", default="peft")
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--padding-free", action="store_true")
    ap.add_argument("--grad-ckpt", action="store_true")
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=768)
    ap.add_argument("--nb-tokens", type=int, default=128)
    ap.add_argument("--gen-batch", type=int, default=1319)
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--merged", action="store_true")
    ap.add_argument("--sorted", action="store_true")
    ap.add_argument("--dump")
    ap.add_argument("--skip-train", action="store_true", help="only the generation measurements")
    args = ap.parse_args()
    if args.mode == "all":
        run_all(args)
        return
    if args.mode == "build":
        build_model(Path("/tmp/qwen25-3b-random"), Path(args.tokenizer))
        return
    res = bench_train(args) if args.mode == "train" else bench_generate(args)
    Path(args.result).write_text(json.dumps(res))


if __name__ == "__main__":
    main()
