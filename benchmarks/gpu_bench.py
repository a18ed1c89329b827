"""GPU benchmark: the project's training and generation paths against the notebook's, on one H200.

Speed does not depend on weight values, so the model is Qwen2.5-3B-shaped with random weights, built
from its config; the token lengths come from the prepared data. Each measurement runs in its own
process, so peak memory is per path. Run it through `benchmarks/run_device.sh`; it writes
benchmarks/results/<date>-h200.json and prints a table last.

    python benchmarks/gpu_bench.py all --tokenizer DIR --out FILE
    python benchmarks/gpu_bench.py adapter --tokenizer DIR --model DIR --adapter DIR   # 3B base + fresh adapter
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))  # static_generation

QWEN25_3B = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                 num_attention_heads=16, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6,
                 max_position_embeddings=32768, rms_norm_eps=1e-6)
PEAK_BF16_DENSE = 989e12  # H200 SXM datasheet, dense bf16
NOTEBOOK_TRAIN_EXAMPLES, NOTEBOOK_EPOCHS, TEST_QUESTIONS = 7473, 2, 1319
BASELINE = "baseline-peft-bnb-notebook"  # plain transformers + peft + bnb, the notebook's batch 6 x 2, torch defaults
# the generate stage's default (16-bit base, separate adapter), the adapter merged, and the notebook's way
FAST_GEN, MERGED_GEN = "project-16bit-adapter-greedy-sorted", "project-merged16-greedy-sorted"
NOTEBOOK_GEN = "notebook-4bit-adapter-b20-sample"
ADAPTER = "/tmp/bench-adapter"  # saved by every training run; generation decodes with the last one
# In a measurement's environment, "1" times torch's default SDPA dispatch (cuDNN attention allowed), as the
# notebook ran; vigsm turns cuDNN attention off whenever it loads a model (vigsm.attention).
TORCH_DEFAULT_SDPA = "VIGSM_SDPA_CUDNN"


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


def params_for(model_dir: Path, backend: str, padding_free: bool, grad_ckpt: bool, batch: int, accum: int,
               pad_multiple: int = 0, cuda_graphs: bool = False):
    from override_params import parsed, shipped

    return parsed(shipped({
        "model": dict(name=str(model_dir), gguf_file=""), "lora": dict(gradient_checkpointing=grad_ckpt),
        "train": dict(backend=backend, padding_free=padding_free, pad_to_multiple_of=pad_multiple,
                      cuda_graphs=cuda_graphs, per_device_train_batch_size=batch,
                      gradient_accumulation_steps=accum, max_steps=1000, eval_steps=100000, save_steps=100000,
                      logging_steps=1000, load_best_model_at_end=False, eval_limit=8)}))


def random_adapter(model_dir: Path, tokenizer_dir: Path, adapter_dir: Path) -> None:
    """The 3B-shaped random base (build_model) and PEFT's fresh adapter shaped by params.yaml's `lora`
    section (its B matrices are zero), saved where the generate stage reads an adapter: decoding speed does
    not depend on weight values, so the generate stage is timed at the real model's shapes."""
    import torch
    from override_params import shipped
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    build_model(model_dir, tokenizer_dir)
    lora = shipped()["lora"]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    cfg = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], bias=lora["bias"],
                     use_rslora=lora["use_rslora"], target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM")
    get_peft_model(model, cfg).save_pretrained(adapter_dir)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(adapter_dir)
    print(f"[adapter] r={lora['r']} on {', '.join(lora['target_modules'])} -> {adapter_dir}")


def sdpa_as_asked() -> None:
    """After vigsm has loaded a model: torch's default SDPA dispatch back where TORCH_DEFAULT_SDPA asks."""
    import torch

    if os.environ.get(TORCH_DEFAULT_SDPA) == "1":
        torch.backends.cuda.enable_cudnn_sdp(True)  # torch's default, as sdpa_probe leaves it too


def load_notebook_model(model_p, adapter: str | None):
    """The notebook's inference model: the 4-bit base, the adapter on top, transformers' own SDPA attention
    (no dequantised copy, no grouped-query decoding), with vigsm's left-padding tokenizer."""
    from vigsm.modeling import attach_adapter, load_model, load_tokenizer
    from vigsm.weights import resolve_model

    source = resolve_model(model_p)
    model = load_model(model_p, source)
    if adapter:
        model = attach_adapter(model, adapter, model_p)
    return model.eval(), load_tokenizer(model_p, source, padding_side="left")


def bench_train(args) -> dict:
    """Train `steps` optimiser steps after `warmup`; count non-padding tokens/s and peak memory."""
    import torch
    from transformers import TrainerCallback

    from vigsm.io import read_jsonl
    from vigsm.training import build_trainer, label_coverage

    s = params_for(Path(args.model), args.backend, args.padding_free, args.grad_ckpt, args.batch, args.accum,
                   args.pad_multiple, args.cuda_graphs)
    rows = read_jsonl("data/prepared/train.jsonl")
    rows = (rows * (1 + (args.steps + args.warmup) * args.batch * args.accum // len(rows)))
    trainer, backend = build_trainer(s["model"], s["lora"], s["train"], rows, rows[:8], Path("/tmp/bench-ckpt"))
    sdpa_as_asked()
    cov = label_coverage(trainer, rows)
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    marks: dict[int, tuple[float, int]] = {}
    trainer.args.include_num_input_tokens_seen = "non_padding"  # the trainer counts the tokens it feeds

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            torch.cuda.synchronize()
            marks[state.global_step] = (time.perf_counter(), state.num_input_tokens_seen)
            last = args.warmup + args.steps
            if state.global_step == last and args.profile_steps:  # after the timed steps: no overhead in them
                prof.start()
            if state.global_step >= last + args.profile_steps:
                if args.profile_steps:
                    prof.stop()
                control.should_training_stop = True

    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=bool(args.trace))
    trainer.add_callback(Clock())
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    (t_start, seen_start), (t_end, seen_end) = marks[args.warmup], marks[args.warmup + args.steps]
    seconds = t_end - t_start
    counted = seen_end - seen_start
    # Fallback if a backend's training loop does not update the counter: the mean length x examples.
    tokens = counted if counted > 0 else sum(lengths) / len(lengths) * args.batch * args.accum * args.steps
    trainer.save_model(ADAPTER)
    tps = tokens / seconds
    n_params = base_params()
    # Each timed step's wall time: a first-seen padded length (a recompilation of unsloth's compiled layers)
    # shows as an outlier, so the median step and the window's mean can be told apart.
    step_s = [marks[i][0] - marks[i - 1][0] for i in range(args.warmup + 1, args.warmup + args.steps + 1)]
    profile_summary = step_profile(prof, marks, args) if args.profile_steps else None
    return {"profile": profile_summary, "path": args.label, "backend": backend, "padding_free": args.padding_free,
            "pad_to_multiple_of": args.pad_multiple, "cuda_graphs": args.cuda_graphs, "warmup_steps": args.warmup,
            "gradient_checkpointing": args.grad_ckpt, "batch": args.batch, "accum": args.accum,
            "steps_timed": args.steps, "seconds_per_step": seconds / args.steps, "tokens_timed": tokens,
            "tokens_counted_by": "trainer (non-padding)" if counted > 0 else "estimate (mean length)",
            "tokens_per_second": tps, "mean_tokens_per_example": sum(lengths) / len(lengths),
            "step_seconds": [round(x, 4) for x in step_s], "step_seconds_median": statistics.median(step_s),
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9, "mfu_4N": tps * 4 * n_params / PEAK_BF16_DENSE,
            "trainer_grad_accum": trainer.args.gradient_accumulation_steps,
            "prompt_tokens_labelled": cov["prompt_tokens_labelled"],
            "completion_tokens_labelled": cov["completion_tokens_labelled"],
            "completion_tokens": cov["completion_tokens"], "base_params": n_params}


def step_profile(prof, marks: dict, args) -> dict:
    """Where the profiled steps' time went: GPU kernel time against wall time, and the top kernels."""
    last = args.warmup + args.steps
    wall = marks[last + args.profile_steps][0] - marks[last][0]
    events = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    gpu_us = sum(e.self_device_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:15]
    cpu = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    n = args.profile_steps
    gaps = None
    if args.trace:  # the whole timeline, to find where the GPU waits (gaps between kernels)
        prof.export_chrome_trace(args.trace)
        gaps = trace_gaps(args.trace, n)
    return {"gpu_idle": gaps, "steps": n, "wall_ms_per_step": 1000 * wall / n,
            "gpu_kernel_ms_per_step": gpu_us / 1000 / n,
            "top_kernels_ms_per_step": {e.key[:90]: round(e.self_device_time_total / 1000 / n, 2) for e in top},
            "top_cpu_ops_self_ms_per_step": {e.key[:90]: round(e.self_cpu_time_total / 1000 / n, 2) for e in cpu},
            "kernel_launches_per_step": sum(e.count for e in events) // n}


def trace_gaps(path: str, steps: int, top: int = 12) -> dict:
    """GPU idle time in a Chrome trace: the union of kernel intervals against the span they cover, and
    the longest gaps between kernels with the innermost CPU ops and Python frames running meanwhile."""
    events = json.loads(Path(path).read_text())["traceEvents"]
    kernels = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"))
    host = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "python_function")]
    if not kernels:
        return {"error": "no kernels in the trace"}
    busy, gaps, (start, end) = 0.0, [], kernels[0]
    for a, b in kernels[1:]:
        if a > end:
            busy += end - start
            gaps.append((a - end, end))
            start, end = a, b
        else:
            end = max(end, b)
    busy += end - start
    span = kernels[-1][1] - kernels[0][0]

    def running(t: float) -> list[str]:
        live = sorted((e for e in host if e["ts"] <= t <= e["ts"] + e["dur"]), key=lambda e: e["dur"])
        return [e["name"][:80] for e in live[:4]]

    gaps.sort(reverse=True)
    return {"span_ms_per_step": span / 1000 / steps, "kernel_busy_ms_per_step": busy / 1000 / steps,
            "idle_ms_per_step": (span - busy) / 1000 / steps,
            "idle_in_gaps_over_1ms_per_step": sum(g for g, _ in gaps if g > 1000) / 1000 / steps,
            "longest_gaps": [{"ms": round(g / 1000, 2), "host": running(t + g / 2)} for g, t in gaps[:top]]}


def bench_generate(args) -> dict:
    """New tokens/s of one generation path on real prompts from the prepared test split.

    With ``--agree-sample N`` it also decodes the first N questions greedily (64 new tokens, batch 20)
    for the agreement check; ``--dump`` writes {question id: text}.
    """
    import dataclasses

    import torch
    from static_generation import generate_batch, sort_by_length

    from vigsm.io import read_jsonl
    from vigsm.modeling import load_with_adapter

    s = params_for(Path(args.model), "peft", False, False, 1, 1)
    gen_p = dataclasses.replace(s["generate"], do_sample=args.sample, max_new_tokens=args.max_new_tokens,
                             batch_size=args.batch)
    t0 = time.perf_counter()
    # the project's path is the generate stage's; the notebook's is plain transformers
    model, tok = (load_with_adapter(s["model"], args.adapter, merge_adapter=args.merge) if args.base16
                  else load_notebook_model(s["model"], args.adapter))
    sdpa_as_asked()
    load_seconds = time.perf_counter() - t0
    test = read_jsonl("data/prepared/test.jsonl")
    repeated = (test * (1 + TEST_QUESTIONS // len(test)))[:TEST_QUESTIONS]  # the sample's 100, to 1319
    pool = [{**r, "id": f"{r['id']}-{i}"} for i, r in enumerate(repeated)]
    rows = pool[: args.questions]
    rows = sort_by_length(rows, tok) if args.sorted else rows
    generate_batch(model, tok, [r["prompt"] for r in rows[:2]], dataclasses.replace(gen_p, max_new_tokens=4), 0)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    outs, new_tokens = {}, 0
    for i in range(0, len(rows), args.batch):
        batch = rows[i:i + args.batch]
        texts, n = generate_batch(model, tok, [r["prompt"] for r in batch], gen_p, seed=i)
        outs.update({r["id"]: t for r, t in zip(batch, texts, strict=True)})
        new_tokens += n
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    res = {"path": args.label, "base_16bit": args.base16, "merge_adapter": args.merge, "do_sample": args.sample,
           "batch": args.batch,
           "questions": len(rows), "max_new_tokens": args.max_new_tokens, "load_seconds": load_seconds,
           "seconds": seconds, "new_tokens": new_tokens, "new_tokens_per_second": new_tokens / seconds,
           "projected_seconds_1319": seconds * TEST_QUESTIONS / len(rows),
           "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9}
    if args.agree_sample:
        greedy = dataclasses.replace(gen_p, do_sample=False, max_new_tokens=64, batch_size=20)
        outs = {}
        sample = pool[: args.agree_sample]
        for i in range(0, len(sample), 20):
            batch = sample[i:i + 20]
            outs.update(zip([r["id"] for r in batch], generate_batch(model, tok, [r["prompt"] for r in batch],
                                                                     greedy, seed=0)[0], strict=True))
    if args.dump:
        Path(args.dump).write_text(json.dumps(outs, ensure_ascii=False))
    return res


def sdpa_probe() -> dict:
    """Which SDPA kernel torch picks for this project's shapes, and what a new shape costs with and
    without cuDNN attention: decoding (the key length grows by one each step, padding mask) and a
    training forward+backward (causal, the packed length changes each step)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend

    dev, dt, res = "cuda", torch.bfloat16, {}
    kmax = torch.randn(128, 16, 320, 128, device=dev, dtype=dt)
    q1 = torch.randn(128, 16, 1, 128, device=dev, dtype=dt)
    for cudnn in (True, False):
        torch.backends.cuda.enable_cudnn_sdp(cudnn)
        key = "cudnn_on" if cudnn else "cudnn_off"
        mask = torch.ones(128, 1, 1, 300, dtype=torch.bool, device=dev)
        pick = torch._fused_sdp_choice(q1, kmax[:, :, :300], kmax[:, :, :300], mask, 0.0, False)
        F.scaled_dot_product_attention(q1, kmax[:, :, :199], kmax[:, :, :199],
                                       attn_mask=mask[..., :199])  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for length in range(200, 300):  # 100 decoding steps, each a new key length
            F.scaled_dot_product_attention(q1, kmax[:, :, :length], kmax[:, :, :length], attn_mask=mask[..., :length])
        torch.cuda.synchronize()
        decode_ms = (time.perf_counter() - t0) * 10
        lengths = list(range(3000, 3800, 80))  # 10 training steps of packed rows, each a new length
        qkv = torch.randn(3, 1, 16, 3800, 128, device=dev, dtype=dt)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for length in lengths:
            q, k, v = (x[..., :length, :].detach().requires_grad_() for x in qkv)
            F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
        torch.cuda.synchronize()
        train_ms = (time.perf_counter() - t0) * 1000 / len(lengths)
        tpick = torch._fused_sdp_choice(qkv[0][..., :3000, :], qkv[1][..., :3000, :], qkv[2][..., :3000, :],
                                        None, 0.0, True)
        res[key] = {"decode_kernel": SDPBackend(pick).name, "decode_ms_per_new_length_b128": round(decode_ms, 3),
                    "train_kernel": SDPBackend(tpick).name, "train_fwd_bwd_ms_per_new_length": round(train_ms, 2)}
    torch.backends.cuda.enable_cudnn_sdp(True)
    print(f"[bench] sdpa {json.dumps(res)}", flush=True)
    return res


def sub(mode: str, env: dict | None = None, timeout: int = 240, **kw) -> dict:
    """One measurement in its own process (own peak memory, own SDPA policy)."""
    out = Path(f"/tmp/bench-{kw['label']}.json")
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, mode, "--result", str(out)]
    for k, v in kw.items():
        if isinstance(v, bool):
            cmd += [f"--{k.replace('_', '-')}"] if v else []
        elif v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    t0 = time.time()
    log = Path(os.environ.get("OUT", "/tmp")) / f"bench-{kw['label']}.log"
    try:
        proc = subprocess.run(cmd, text=True, capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        text, rc = f"{exc.stdout or ''}{exc.stderr or ''}\nTIMEOUT after {timeout}s", -1
    log.write_text(text if isinstance(text, str) else str(text))
    if rc != 0 or not out.exists():
        last = (text.strip().splitlines() or ["?"])[-1] if isinstance(text, str) else "?"
        print(f"[bench] {kw['label']} FAILED (see {log.name}): {last}", flush=True)
        return {"path": kw["label"], "error": last}
    res = json.loads(out.read_text())
    res["wall_seconds"] = round(time.time() - t0, 1)
    res["sdpa_policy"] = "torch default (cuDNN attention allowed)" if (env or {}).get(TORCH_DEFAULT_SDPA) == "1" \
        else "cuDNN attention off"
    print(f"[bench] {json.dumps(res)}", flush=True)
    return res


def versions() -> dict:
    import importlib.metadata as md

    import torch

    v = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("transformers", "trl", "peft", "unsloth", "unsloth_zoo", "bitsandbytes", "datasets", "accelerate"):
        try:
            v[name] = md.version(name)
        except md.PackageNotFoundError:
            v[name] = "not installed"
    return v


def run_all(args) -> None:
    import torch

    model_dir = Path("/tmp/qwen25-3b-random")
    build_model(model_dir, Path(args.tokenizer))
    m = str(model_dir)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    props = torch.cuda.get_device_properties(0)
    results: dict = {"date": time.strftime("%Y-%m-%d"), "device": f"{props.name}, {props.total_memory / 2**30:.0f} GiB",
                     "versions": versions(), "command": "bash benchmarks/run_device.sh bench (see its header)",
                     "model": "Qwen2.5-3B-shaped, random weights (config in gpu_bench.QWEN25_3B), 4-bit NF4, "
                              "LoRA r=32 alpha 32 rsLoRA on the 7 projections; data: the bundled sample's "
                              "prompt/completion records",
                     "mfu_definition": f"non-padding tokens/s x 4 x {base_params()} base parameters / "
                                       f"{PEAK_BF16_DENSE / 1e12:g}e12 (H200 dense bf16 datasheet)",
                     "train": [], "generate": []}

    def save() -> None:  # after every measurement, so a cut-off run still leaves its figures
        summarize(results)
        out.write_text(json.dumps(results, indent=2))

    default_sdpa = {TORCH_DEFAULT_SDPA: "1"}
    base = dict(model=m, steps=args.steps, warmup=3, timeout=200)
    if args.plan in ("train", "padded"):
        results["command"] = f"bash benchmarks/run_device.sh {args.plan} (see its header)"
        plan = train_plan if args.plan == "train" else padded_plan
        run_plan(plan(m, base, default_sdpa), results, save)
        print_table(results)
        return
    if args.plan == "full":
        results["sdpa"] = sdpa_probe()
        save()
    gen_env = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}  # as the generate stage sets it
    gen = dict(model=m, adapter=ADAPTER, batch=args.gen_batch, questions=TEST_QUESTIONS, max_new_tokens=768,
               base16=True, sorted=True, timeout=240)
    plan = padded_plan(m, base, default_sdpa) if args.plan == "full" else [
        ("train", None, dict(label="adapter-for-generation", backend="unsloth", batch=12, accum=1, pad_multiple=64,
                             profile_steps=0, **{**base, "steps": 5}))]
    plan += [
        ("generate", gen_env, dict(label=FAST_GEN, dump="/tmp/fast.json", **gen)),
        ("generate", gen_env, dict(label=MERGED_GEN, merge=True, dump="/tmp/merged.json", **gen)),
        ("generate", default_sdpa, dict(label=NOTEBOOK_GEN, model=m, adapter=ADAPTER, batch=20, questions=20,
                                        max_new_tokens=args.nb_tokens, sample=True, agree_sample=40,
                                        dump="/tmp/plain.json", timeout=200)),
    ]
    run_plan(plan, results, save)
    plain = Path("/tmp/plain.json")
    for label, dump in ((FAST_GEN, "/tmp/fast.json"), (MERGED_GEN, "/tmp/merged.json")):
        if plain.exists() and Path(dump).exists():
            results.setdefault("greedy_agreement", {})[label] = agreement(json.loads(plain.read_text()),
                                                                          json.loads(Path(dump).read_text()))
    save()
    print_table(results)


def run_plan(plan: list, results: dict, save) -> None:
    for mode, env, kw in plan:
        res = sub(mode, env=env, **kw)
        res["env"] = env or {}
        results["train" if mode == "train" else "generate"].append(res)
        save()


def train_plan(m: str, base: dict, default_sdpa: dict) -> list:
    """Training paths only, each with its steps profiled: where a step's fixed cost goes.

    The unsloth variants isolate its per-decoder-layer torch.compile regions (UNSLOTH_BLOCK_COMPILE=0),
    padding-free against padded batches, and its gradient checkpointing."""
    b12 = dict(backend="unsloth", batch=12, accum=1, **base)
    return [
        ("train", default_sdpa, dict(label=BASELINE, backend="peft", batch=6, accum=2, grad_ckpt=True, **base)),
        ("train", None, dict(label="project-unsloth-paddingfree-b12", padding_free=True,
                             trace="/tmp/trace-unsloth-pf-b12.json", profile_steps=1, **b12)),
        ("train", {"UNSLOTH_BLOCK_COMPILE": "0"}, dict(label="project-unsloth-paddingfree-b12-nocompile",
                                                       padding_free=True, **b12)),
        ("train", None, dict(label="project-unsloth-padded-b12", **b12)),
        ("train", None, dict(label="project-unsloth-paddingfree-b12-ckpt", padding_free=True, grad_ckpt=True,
                             **b12)),
        ("train", None, dict(label="baseline-peft-bnb-b12-cudnn-off", backend="peft", batch=12, accum=1,
                             grad_ckpt=True, **base)),
    ]


def padded_plan(m: str, base: dict, default_sdpa: dict) -> list:
    """unsloth compiles each decoder layer, but only for padded batches (varlen batches run eager and
    launch ~30k kernels a step from Python, which bounds a step by the host, not the GPU). Rounding each
    batch's length to a multiple of 64 bounds the lengths it compiles for. The timed window is long and
    starts right after the first steps, so recompiles at new lengths are inside it."""
    b12 = dict(backend="unsloth", batch=12, accum=1, pad_multiple=64, **{**base, "steps": 40, "timeout": 170})
    return [
        ("train", default_sdpa, dict(label=BASELINE, backend="peft", batch=6, accum=2, grad_ckpt=True,
                                     **{**base, "steps": 12})),
        ("train", None, dict(label="project-unsloth-padded64-b12", **b12)),
        ("train", None, dict(label="project-unsloth-padded64-b12-ckpt", grad_ckpt=True, **b12)),
        # measured on 2026-11-29 with UNSLOTH_BLOCK_CUDAGRAPHS=1 set directly, which train.cuda_graphs now sets
        ("train", None, dict(label="project-unsloth-padded64-b12-cudagraphs", cuda_graphs=True, **b12)),
    ]


def agreement(plain: dict, fast: dict) -> dict:
    """Share of sampled questions whose plain-path greedy text (first N tokens) starts the fast path's text."""
    same = [q for q, text in plain.items() if fast.get(q, "").startswith(text)]
    return {"sample": len(plain), "agree": len(same), "rate": len(same) / max(len(plain), 1),
            "how": "greedy, first 64 new tokens of the plain path (4-bit base + separate adapter, batch 20) "
                   "compared with the project's path (16-bit base, batch 1319, 768 tokens)"}


def summarize(r: dict) -> None:
    tr = {x["path"]: x for x in r["train"] if "error" not in x}
    gen = {x["path"]: x for x in r["generate"] if "error" not in x}
    s: dict = {}
    projects = [x for k, x in tr.items() if k.startswith("project")]
    if BASELINE in tr and projects:
        b = tr[BASELINE]
        best = max(projects, key=lambda x: x["tokens_per_second"])
        s["train_best_path"] = best["path"]
        s["train_speedup"] = best["tokens_per_second"] / b["tokens_per_second"]
        s["train_memory_ratio"] = best["peak_memory_gb"] / b["peak_memory_gb"]
        low = min(projects, key=lambda x: x["peak_memory_gb"])
        s["train_lowest_memory_path"] = low["path"]
        s["train_lowest_memory_speedup"] = low["tokens_per_second"] / b["tokens_per_second"]
        s["train_lowest_memory_ratio"] = low["peak_memory_gb"] / b["peak_memory_gb"]
        tokens = NOTEBOOK_TRAIN_EXAMPLES * NOTEBOOK_EPOCHS * best["mean_tokens_per_example"]
        s["projected_2epoch_minutes_best"] = tokens / best["tokens_per_second"] / 60
        s["projected_2epoch_minutes_baseline"] = tokens / b["tokens_per_second"] / 60
        s["projection_note"] = ("7473 examples x 2 epochs x the mean tokenized length of the bundled sample; "
                                "vi_gsm8k's own lengths were not available offline")
        off = tr.get("baseline-peft-bnb-notebook-cudnn-off")
        if off:
            s["baseline_speedup_from_cudnn_off_alone"] = off["tokens_per_second"] / b["tokens_per_second"]
    nb, fast = gen.get(NOTEBOOK_GEN), gen.get(FAST_GEN)
    if nb and fast:
        s["generate_speedup"] = fast["new_tokens_per_second"] / nb["new_tokens_per_second"]
        s["generate_1319_seconds_project"] = fast["projected_seconds_1319"]
        s["generate_1319_seconds_notebook_projected"] = TEST_QUESTIONS * 768 / nb["new_tokens_per_second"]
    if nb and gen.get(MERGED_GEN):
        s["generate_speedup_merged_adapter"] = gen[MERGED_GEN]["new_tokens_per_second"] / nb["new_tokens_per_second"]
    r["summary"] = s
    def met(key: str, ok) -> bool | None:  # None: not measured in this run
        return None if key not in s else bool(ok(s[key]))

    r["targets"] = {"train_speedup>=2.5": met("train_speedup", lambda v: v >= 2.5),
                    "train_memory_ratio<=0.5": met("train_memory_ratio", lambda v: v <= 0.5),
                    "2epoch<=10min": met("projected_2epoch_minutes_best", lambda v: v <= 10),
                    "generate_speedup>=20": met("generate_speedup", lambda v: v >= 20),
                    "1319_questions<120s": met("generate_1319_seconds_project", lambda v: v < 120)}


def print_table(r: dict) -> None:
    print("\n== SDPA kernels ==")
    for k, v in r.get("sdpa", {}).items():
        print(f"{k:10} {json.dumps(v)}")
    print("\n== training (Qwen2.5-3B-shaped, 4-bit, LoRA r=32) ==")
    print(f"{'path':42} {'tok/s':>8} {'peak GB':>8} {'MFU':>6}")
    for x in r["train"]:
        if "error" in x:
            print(f"{x['path']:42} ERROR {x['error'][:60]}")
        else:
            print(f"{x['path']:42} {x['tokens_per_second']:8.0f} {x['peak_memory_gb']:8.1f} {100 * x['mfu_4N']:5.1f}%")
            if x.get("profile"):  # profiled steps run under the profiler: compare the two figures, not the wall
                print(f"{'':4}profiled step: GPU kernels {x['profile']['gpu_kernel_ms_per_step']:.0f} ms of "
                      f"{x['profile']['wall_ms_per_step']:.0f} ms wall")
    print("\n== generation ==")
    print(f"{'path':42} {'new tok/s':>10} {'1319 q (s)':>11} {'peak GB':>8}")
    for x in r["generate"]:
        if "error" in x:
            print(f"{x['path']:42} ERROR {x['error'][:60]}")
        else:
            print(f"{x['path']:42} {x['new_tokens_per_second']:10.0f} {x['projected_seconds_1319']:11.0f} "
                  f"{x['peak_memory_gb']:8.1f}")
    print("\nsummary:", json.dumps(r.get("summary"), indent=1))
    print("greedy agreement:", r.get("greedy_agreement"))
    print("targets met:", json.dumps(r.get("targets")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("all", "train", "generate", "build", "adapter"),
                    help="build: the 3B-shaped random model in /tmp/qwen25-3b-random; adapter: that model (or "
                         "--model) and a fresh adapter shaped by params.yaml's lora section in --adapter")
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
    ap.add_argument("--pad-multiple", type=int, default=0, help="train.pad_to_multiple_of")
    ap.add_argument("--cuda-graphs", action="store_true", help="train.cuda_graphs")
    ap.add_argument("--grad-ckpt", action="store_true")
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=768)
    ap.add_argument("--nb-tokens", type=int, default=128)
    ap.add_argument("--gen-batch", type=int, default=1319)
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--base16", action="store_true", help="generate.base_16bit (the project's path)")
    ap.add_argument("--merge", action="store_true", help="generate.merge_adapter")
    ap.add_argument("--sorted", action="store_true")
    ap.add_argument("--dump")
    ap.add_argument("--agree-sample", type=int, default=0)
    ap.add_argument("--profile-steps", type=int, default=2, help="training steps profiled after the timed ones")
    ap.add_argument("--trace", help="write the profiled steps' Chrome trace here")
    ap.add_argument("--plan", choices=("full", "train", "padded", "generate"), default="full",
                    help="full: every measurement; train: the training paths only, each profiled; "
                         "padded: unsloth's compiled layers on padded, length-rounded batches; "
                         "generate: the generation paths only (after a short training run for the adapter)")
    args = ap.parse_args()
    if args.mode == "all":
        run_all(args)
        return
    if args.mode == "build":
        build_model(Path("/tmp/qwen25-3b-random"), Path(args.tokenizer))
        return
    if args.mode == "adapter":
        random_adapter(Path(args.model or "/tmp/qwen25-3b-random"), Path(args.tokenizer), Path(args.adapter))
        return
    res = bench_train(args) if args.mode == "train" else bench_generate(args)
    Path(args.result).write_text(json.dumps(res))


if __name__ == "__main__":
    main()
