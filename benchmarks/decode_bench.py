"""Decoding on ragged answers (issue 21): the decoding paths of :data:`PATHS` (the eager slot decoder, the
static decoder replayed as CUDA graphs with and without lookahead, the adapter in float32, in the model's
dtype or merged), interleaved, on random-weight models in SmolLM2-135M's and Qwen2.5-3B's shapes with a
separate LoRA adapter (r=32, the seven projections), 1,319 prompts from vigsm.sample, the shipped decoding
(greedy, stop rules, 768 tokens, 1,319 slots). Answer lengths are forced (tests/support/ragged.py): half end
within 50 tokens, a tenth run past 400, 6% run to the cap. Each path records its step-time curve (ms per
step against rows alive).

    python benchmarks/decode_bench.py build --tokenizer DIR --work DIR    # SmolLM2-shaped base + adapter
    python benchmarks/decode_bench.py load --work DIR --out FILE          # the generate stage's loading, by phase
    python benchmarks/decode_bench.py ragged --work DIR --out FILE        # rounds, profile, text equality
    python benchmarks/decode_bench.py cap3b --tokenizer DIR --out FILE    # 3B-shaped, every row to the cap

``--smoke`` shrinks everything for a CPU run (slow on a busy 2-core machine). benchmarks/run_device.sh
``decode`` runs the four on the H200; `benchmarks/assemble.py decode` assembles the results file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

T_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_bench import QWEN25_3B  # noqa: E402  (the 3B shape, one definition; a sibling script)

SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True, rope_theta=100000.0,
               max_position_embeddings=8192, rms_norm_eps=1e-5)
TINY = dict(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=2048)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def log(msg: str) -> None:
    print(f"[decode] {time.perf_counter() - T_START:7.1f}s {msg}", flush=True)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def model_params(model_dir: Path, dtype: str):
    from override_params import parsed, shipped

    changes = {"model": dict(name=str(model_dir), gguf_file="", load_in_4bit=False, dtype=dtype)}
    return parsed(shipped(changes), "model")["model"]


def shipped_decoding(smoke: bool):
    from override_params import parsed, shipped

    from vigsm.generation import decoding_of

    gen_p = parsed(shipped(), "generate")["generate"]
    dec = decoding_of(gen_p)
    if smoke:
        dec = type(dec)(**{**dec.__dict__, "max_new_tokens": 420})
    return gen_p, dec


def prompts_for(tok, n: int) -> list[list[int]]:
    """n distinct problems from vigsm.sample under the chat template with the project's system prompt, in the
    generate stage's order (by prompt length)."""
    from vigsm.modeling import chat_prompt_ids
    from vigsm.sample import make_problems

    system = (ROOT / "data" / "system_prompt.txt").read_text(encoding="utf-8")
    _, test = make_problems(0, n, seed=1234)
    ids = [chat_prompt_ids(tok, [{"role": "system", "content": system}, {"role": "user", "content": r["question"]}])
           for r in test]
    return sorted(ids, key=len)


def build(args) -> None:
    """A random base in SmolLM2's shape, saved in float32 as vigsm.weights' GGUF conversion caches it, and a
    random r=32 adapter (B nonzero, so it changes the outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    work = Path(args.work)
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    cfg = LlamaConfig(**(TINY if args.smoke else SMOLLM2), eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(work / "base", safe_serialization=True)
    tok.save_pretrained(work / "base")
    torch.manual_seed(1)
    peft_model = get_peft_model(model, LoraConfig(r=32, lora_alpha=32, use_rslora=True, target_modules=TARGETS))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.02)
    peft_model.save_pretrained(work / "adapter")
    log(f"built {work}")


def load(args) -> None:
    """The generate stage's loading (vigsm.modeling.load_with_adapter), phase by phase, in a fresh process."""
    phases: dict[str, float] = {}
    t = time.perf_counter()
    phases["python_start_to_main"] = t - T_START

    def mark(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        phases[name] = round(now - t, 3)
        t = now

    import torch

    mark("import_torch")
    import peft  # noqa: F401
    import transformers  # noqa: F401

    mark("import_transformers_peft")
    from vigsm import modeling
    from vigsm.attention import use_decode_attention
    from vigsm.weights import resolve_model

    mark("import_vigsm")
    work = Path(args.work)
    model_p = model_params(work / "base", "bfloat16")
    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")
    mark("cuda_init")
    source = resolve_model(model_p)
    mark("resolve_model")
    tok = modeling.load_tokenizer(model_p, source, padding_side="left")
    mark("load_tokenizer")
    model = modeling.load_model(model_p, source)
    sync()
    mark("from_pretrained")
    model = use_decode_attention(model)
    mark("decode_attention")
    model = modeling.attach_adapter(model, str(work / "adapter"), model_p).eval()
    sync()
    mark("attach_adapter")
    from vigsm.decoding import _token_classes

    _token_classes(tok)
    mark("token_classes_first_decode")
    prompts_for(tok, 64 if args.smoke else 1319)
    mark("chat_template_1319_prompts")
    res = {"phases": phases, "load_with_adapter_seconds": round(sum(v for k, v in phases.items()
                                                                      if k not in ("python_start_to_main",
                                                                                   "token_classes_first_decode",
                                                                                   "chat_template_1319_prompts")), 3),
           "weights_file_mb": round(sum(f.stat().st_size for f in (work / "base").glob("*.safetensors")) / 1e6, 1)}
    Path(args.out).write_text(json.dumps(res))
    log(f"load {json.dumps(res)}")


class Clock:
    """on_token hook: the time each step's first token arrives and how many rows it gave a token. With one
    prefill for every prompt, a row's token index is the step's index."""

    def __init__(self, n: int, profile: tuple[int, int] | None = None) -> None:
        self.count, self.times, self.alive = [0] * n, [], []
        self.profile, self.prof = profile, None

    def __call__(self, i: int, t: int) -> None:
        k = self.count[i]
        self.count[i] += 1
        if k == len(self.times):
            if self.profile and k in self.profile:
                self._profile(k == self.profile[0])
            self.times.append(time.perf_counter())
            self.alive.append(0)
        self.alive[k] += 1

    def _profile(self, start: bool) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile

        sync()
        if start:
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self.prof = profile(activities=acts)
            self.prof.start()
            self.prof_t0 = time.perf_counter()
        else:
            self.prof.stop()
            self.prof_wall = time.perf_counter() - self.prof_t0

    def curve(self) -> list[list[float]]:
        """[step, rows alive, ms] for every step but the last."""
        return [[k, self.alive[k], round(1000 * (self.times[k + 1] - self.times[k]), 3)]
                for k in range(len(self.times) - 1)]


def run_decode(model, tok, prompts, dec, *, static: bool, slots: int, clock: Clock | None = None) -> dict:
    from vigsm.decoding import DecodeStats, decode

    got: dict[int, tuple[tuple[int, ...], str]] = {}
    stats = DecodeStats()
    sync()
    t0 = time.perf_counter()
    decode(model, tok, prompts, dec, slots=slots, static=static, stats=stats, on_token=clock,
           on_finish=lambda i, tokens, reason: got.__setitem__(i, (tuple(tokens), reason)))
    sync()
    return {"seconds": time.perf_counter() - t0, "stats": stats.as_dict(), "got": got}


def profile_summary(clock: Clock, steps: int) -> dict:
    """Per profiled step: kernels launched, GPU kernel time against wall time, top host ops."""
    events = clock.prof.key_averages()
    kernels = [e for e in events if e.self_device_time_total > 0]
    gpu_ms = sum(e.self_device_time_total for e in kernels) / 1000 / steps
    wall_ms = 1000 * clock.prof_wall / steps
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC",
                                                        "cuLaunchKernelEx", "cudaGraphLaunch"))
    top_cpu = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    top_gpu = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:8]
    return {"steps": steps, "wall_ms_per_step": round(wall_ms, 2), "gpu_kernel_ms_per_step": round(gpu_ms, 3),
            "gpu_busy_share": round(gpu_ms / wall_ms, 3) if wall_ms else None,
            "kernels_per_step": sum(e.count for e in kernels) // steps, "launch_calls_per_step": launches // steps,
            "top_host_ops_self_ms_per_step": {e.key[:70]: round(e.self_cpu_time_total / 1000 / steps, 3)
                                              for e in top_cpu},
            "top_kernels_ms_per_step": {e.key[:70]: round(e.self_device_time_total / 1000 / steps, 3)
                                        for e in top_gpu}}


class HostTimer:
    """Time spent in the stop rules (vigsm.decoding's loop_period and answer_end) and the tokenizer's decode."""

    def __init__(self, tok) -> None:
        import vigsm.decoding as d

        self.d, self.tok, self.seconds, self.calls = d, tok, {}, {}
        self.saved = {n: getattr(d, n) for n in ("loop_period", "answer_end")}
        for n, f in self.saved.items():
            setattr(d, n, self._wrap(n, f))
        self.tok_decode = tok.decode
        tok.decode = self._wrap("tokenizer_decode", tok.decode)

    def _wrap(self, name, f):
        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return f(*a, **kw)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
                self.calls[name] = self.calls.get(name, 0) + 1
        return timed

    def close(self) -> dict:
        for n, f in self.saved.items():
            setattr(self.d, n, f)
        self.tok.decode = self.tok_decode
        return {"seconds": {k: round(v, 4) for k, v in self.seconds.items()}, "calls": self.calls}


def equal_rows(a: dict, b: dict) -> dict:
    same = sum(a[i] == b[i] for i in a)
    same_reason = sum(a[i][1] == b[i][1] for i in a)
    return {"rows": len(a), "equal_tokens_and_reason": same, "equal_reason": same_reason}


# Paths the ragged and 3B rounds can time: the decoder (eager slots or static), lookahead, how the adapter is
# held (PEFT's float32, the model's dtype, merged) and whether the static batch shrinks.
PATHS = {
    "slots-eager": dict(static=False),
    "static-graphs": dict(static=True, ahead=False),  # the static decoder before lookahead
    "static-ahead": dict(static=True, ahead=True),  # params.yaml as shipped
    "ahead-adapter-compute": dict(static=True, ahead=True, adapter="compute"),  # generate.adapter_dtype: compute
    "ahead-merged": dict(static=True, ahead=True, adapter="merged"),  # generate.merge_adapter: true
    "static-batch-graphs": dict(static=True, ahead=False, shrink=10**9),
}
SHIPPED_PATH = "static-ahead"


def timed_path(model_for, tok, prompts, dec, name: str, slots: int, clock=None) -> dict:
    """One decode of ``prompts`` on path ``name`` (:data:`PATHS`), the module's knobs restored after."""
    import vigsm.decoding as d

    kw = PATHS[name]
    saved = d.SHRINK_AT, d.LOOKAHEAD
    d.SHRINK_AT, d.LOOKAHEAD = kw.get("shrink", d.SHRINK_AT), kw.get("ahead")
    try:
        return run_decode(model_for(kw.get("adapter", "float32")), tok, prompts, dec, static=kw["static"],
                          slots=slots, clock=clock)
    finally:
        d.SHRINK_AT, d.LOOKAHEAD = saved


def ragged(args) -> None:
    import torch
    from ragged import ForcedLengths, ragged_lengths

    from vigsm.modeling import load_with_adapter

    work, out = Path(args.work), Path(args.out)
    names = args.paths.split(",")
    res: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                 "torch": torch.__version__, "transformers": __import__("transformers").__version__,
                 "paths": {k: PATHS[k] for k in names}, "shipped_path": SHIPPED_PATH}

    def save() -> None:
        out.write_text(json.dumps(res))

    gen_p, dec = shipped_decoding(args.smoke)
    n = 8 if args.smoke else 1319
    model_p = model_params(work / "base", "float32" if args.smoke else "bfloat16")
    models = {}
    for variant in sorted({PATHS[k].get("adapter", "float32") for k in names} | {"float32"}):
        t0 = time.perf_counter()
        models[variant], tok = load_with_adapter(model_p, str(work / "adapter"), merge_adapter=variant == "merged",
                                                 adapter_dtype="compute" if variant == "compute" else "float32")
        res.setdefault("load_with_adapter_seconds_in_process", {})[variant] = round(time.perf_counter() - t0, 2)
    prompts = prompts_for(tok, n)
    lengths = ragged_lengths(n, dec.max_new_tokens, seed=0)
    forced = {v: ForcedLengths(m, tok, prompts, lengths, dec.max_new_tokens) for v, m in models.items()}
    res["schedule"] = {"rows": n, "max_new_tokens": dec.max_new_tokens, "slots": gen_p.batch_size,
                       "within_50": sum(x <= 50 for x in lengths), "past_400": sum(x > 400 for x in lengths),
                       "to_cap": sum(x > dec.max_new_tokens for x in lengths),
                       "prompt_tokens_min_max": [len(prompts[0]), len(prompts[-1])]}
    log(f"schedule {res['schedule']}")
    slots = max(gen_p.batch_size, n)
    short = type(dec)(**{**dec.__dict__, "max_new_tokens": 420})
    for name in names:  # warm-up: CUDA context, cuBLAS handles, the first graphs' pools
        timed_path(forced.get, tok, prompts[:8], short, name, slots)
    runs: dict[str, list] = {k: [] for k in names}
    got: dict[str, dict] = {}
    for r in range(args.rounds):
        for name in names:
            if name == "slots-eager" and r > 0 and time.perf_counter() - T_START > args.eager_budget:
                log(f"round {r + 1}: {name} skipped (past --eager-budget)")
                continue
            clock = Clock(n)
            timer = HostTimer(tok)
            try:
                one = timed_path(forced.get, tok, prompts, dec, name, slots, clock=clock)
            finally:
                host = timer.close()
            got.setdefault(name, one["got"])
            rec = {"round": r + 1, "seconds": round(one["seconds"], 3), "stats": one["stats"], "host": host,
                   "steps": len(clock.times), "curve": clock.curve()}
            runs[name].append(rec)
            log(f"round {r + 1} {name}: {rec['seconds']:.2f}s, {rec['steps']} steps, {one['stats']}")
            res["runs"] = runs
            save()
    ref = names[0]
    res["forced_texts_equal"] = {"reference": ref, **{k: equal_rows(got[ref], v) for k, v in got.items() if k != ref}}
    res["reasons"] = {k: {reason: sum(1 for _, x in v.values() if x == reason)
                          for reason in ("eos", "max_new_tokens", "answer", "loop")} for k, v in got.items()}
    save()
    # greedy, unforced: the random model's own texts (stop rules live) on each path against the first
    m = min(n, args.equality_rows)
    eq_dec = type(dec)(**{**dec.__dict__, "max_new_tokens": 128 if not args.smoke else 40})
    texts = {name: timed_path(models.get, tok, prompts[:m], eq_dec, name, slots) for name in names}
    res["greedy_unforced_equality"] = {"reference": ref, "max_new_tokens": eq_dec.max_new_tokens,
                                       **{k: {**equal_rows(texts[ref]["got"], v["got"]), "stats": v["stats"]}
                                          for k, v in texts.items() if k != ref}}
    log(f"greedy unforced equality: {json.dumps(res['greedy_unforced_equality'])[:400]}")
    save()
    # profiles: a window of steps with every row alive (each path), and one late with few rows (shipped)
    res["profile"] = {}
    few = prompts[: max(8, n // 16)]
    prof_dec = type(dec)(**{**dec.__dict__, "max_new_tokens": 40})
    cap_forced = {v: ForcedLengths(mo, tok, prompts, [dec.max_new_tokens + 1] * n, dec.max_new_tokens)
                  for v, mo in models.items()}
    plan = [("all_rows", prompts, k) for k in names if k != "slots-eager"] + [("few_rows", few, SHIPPED_PATH)]
    for label, rows, name in plan:
        if name not in names:
            continue
        clock = Clock(len(rows), profile=(20, 30))
        timed_path(cap_forced.get, tok, rows, prof_dec, name, slots, clock=clock)
        summary = res["profile"][f"{name}/{label}/{len(rows)}"] = profile_summary(clock, 10)
        log(f"profile {name} {label} ({len(rows)} rows): "
            f"{json.dumps({k: v for k, v in summary.items() if 'top' not in k})}")
        save()
    if torch.cuda.is_available():
        res["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    save()


def cap3b(args) -> None:
    """The 3B shape, every row to the cap, on each of ``--cap-paths`` (static paths of :data:`PATHS`; the
    adapter in float32 or in the model's dtype), rounds interleaved, saved after each."""
    import torch
    from peft import LoraConfig, get_peft_model
    from ragged import ForcedLengths
    from transformers import AutoTokenizer, LlamaConfig, Qwen2Config, Qwen2ForCausalLM

    from vigsm.attention import configure_attention, use_decode_attention
    from vigsm.modeling import adapter_to_dtype

    out = Path(args.out)
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    tok.padding_side = "left"
    shape = dict(TINY) if args.smoke else dict(QWEN25_3B)
    cfg = (LlamaConfig if args.smoke else Qwen2Config)(**shape, eos_token_id=tok.eos_token_id,
                                                       pad_token_id=tok.pad_token_id)
    configure_attention()
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(dev):
        base = Qwen2ForCausalLM(cfg) if not args.smoke else __import__("transformers").LlamaForCausalLM(cfg)
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    base = base.to(dtype)
    base.generation_config.eos_token_id = tok.eos_token_id
    base = use_decode_attention(base)
    model = get_peft_model(base, LoraConfig(r=32, lora_alpha=32, use_rslora=True, target_modules=TARGETS)).eval()
    lora32 = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}

    def model_for(adapter: str):
        """The one model with its adapter in float32 (as PEFT loads it) or in the model's dtype."""
        adapter_to_dtype(model, torch.float32 if adapter == "float32" else dtype)
        if adapter == "float32":
            model.load_state_dict(lora32, strict=False)
        return forced

    _, dec = shipped_decoding(args.smoke)
    n = 8 if args.smoke else 1319
    if args.smoke:
        dec = type(dec)(**{**dec.__dict__, "max_new_tokens": 24})
    prompts = prompts_for(tok, n)
    forced = ForcedLengths(model, tok, prompts, [dec.max_new_tokens + 1] * n, dec.max_new_tokens)
    short = type(dec)(**{**dec.__dict__, "max_new_tokens": 8})
    names = args.cap_paths.split(",")
    res: dict = {"rows": n, "max_new_tokens": dec.max_new_tokens, "paths": {k: PATHS[k] for k in names},
                 "shipped_path": SHIPPED_PATH,
                 "prompt_tokens_min_max": [len(prompts[0]), len(prompts[-1])], "runs": {k: [] for k in names}}
    for name in names:  # warm-up
        timed_path(model_for, tok, prompts[:8], short, name, n)
    for r in range(args.rounds):
        for name in names:
            clock = Clock(n)
            one = timed_path(model_for, tok, prompts, dec, name, n, clock=clock)
            res["runs"][name].append({"round": r + 1, "seconds": round(one["seconds"], 3), "stats": one["stats"],
                                      "curve": clock.curve()})
            log(f"3b round {r + 1} {name}: {one['seconds']:.2f}s {one['stats']}")
            if torch.cuda.is_available():
                res["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
            out.write_text(json.dumps(res))


def table(paths: list[str]) -> None:
    """The last lines of a device call: medians [min, max] of what the result files hold."""
    def mm(xs):
        return f"{statistics.median(xs):.2f} [{min(xs):.2f}, {max(xs):.2f}] n={len(xs)}" if xs else "-"

    for p in paths:
        f = Path(p)
        if not f.is_file():
            print(f"{f.name}: missing")
            continue
        r = json.loads(f.read_text())
        if "phases" in r:
            print(f"{f.name}: load {r['load_with_adapter_seconds']}s {r['phases']}")
        for name, runs in (r.get("runs") or {}).items():
            print(f"{f.name}: {name:22} {mm([x['seconds'] for x in runs])} s")
        for k, v in (r.get("profile") or {}).items():
            print(f"{f.name}: profile {k}: {v['wall_ms_per_step']} ms wall, {v['gpu_kernel_ms_per_step']} ms GPU, "
                  f"{v['kernels_per_step']} kernels/step")
        for k in ("forced_texts_equal", "greedy_unforced_equality"):
            if k in r:
                print(f"{f.name}: {k}: {json.dumps(r[k])[:300]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("build", "load", "ragged", "cap3b", "table"))
    ap.add_argument("--tokenizer")
    ap.add_argument("--work", default="/tmp/decode-bench")
    ap.add_argument("--out")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--eager-budget", type=float, default=1e9, help="seconds after which no more eager rounds start")
    ap.add_argument("--paths", default="static-graphs,static-ahead,ahead-adapter-compute,ahead-merged",
                    help="ragged: the paths of PATHS to time, interleaved (the first is the texts' reference)")
    ap.add_argument("--cap-paths", default="static-ahead,ahead-adapter-compute,static-graphs",
                    help="cap3b: the static paths to time, interleaved")
    ap.add_argument("--equality-rows", type=int, default=1319, help="ragged: rows of the unforced greedy comparison")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes for a CPU run")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    {"build": build, "load": load, "ragged": ragged, "cap3b": cap3b}.get(args.mode, lambda a: table(a.files))(args)


if __name__ == "__main__":
    main()
