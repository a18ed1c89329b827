"""GRPO on the verifiable answer, with TRL's GRPOTrainer, starting from the SFT adapter.

The SFT adapter is loaded trainable onto the base and trained further: each optimiser step samples
``rl.num_generations`` completions for each of ``rl.prompts_per_step`` training prompts (TRL's rollouts,
decoded by ``rl.rollout``'s engine: :class:`Rollouts`), rewards them with :mod:`vigsm.rewards` (the
score's exact match, plus an optional ``### N`` format reward), and takes one policy-gradient step on the
group-relative advantages. ``rl.steps`` 0 writes a marker instead of an adapter and loads nothing
(:func:`pass_through`).

Resuming works as :mod:`vigsm.training`'s does, with its helpers: checkpoints go to a directory outside
DVC's outputs fingerprinted by everything that shapes the run (the model keys read, ``rl``, the gradient
checkpointing switch, the training prompts and the SFT adapter's bytes).
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from vigsm.config import LoraParams, ModelParams, RLParams, as_dict
from vigsm.device import cuda_available, peak_gpu_memory_gb
from vigsm.digest import fingerprint
from vigsm.errors import VigsmError
from vigsm.io import atomic_dir, read_jsonl, usual_permissions, write_json, write_text
from vigsm.memory import Choice

# Before anything heavy: vigsm.modeling quiets bitsandbytes' import-time warning, and run_rl imports
# transformers (which may import bitsandbytes) before it loads the policy.
from vigsm.modeling import chat_prompt_ids, check_device, load_model, load_tokenizer, prepare_kbit_base
from vigsm.rewards import reward_functions

# The file that stands in for the adapter when rl.steps is 0: generate-rl and score read rl.steps
# themselves and skip the RL variant; the marker only says so to a person looking at the directory.
SKIP_MARKER = "RL-SKIPPED.txt"
SKIP_TEXT = ("rl.steps is 0: no RL was run and this directory holds no adapter. The rl variant is neither "
             "generated nor scored. Run RL with: dvc exp run -S rl.steps=200\n")
# The DVCLive curves that dvc.yaml's top-level plots name (file under plots/metrics, column).
EMPTY_CURVES = (("reward.tsv", "reward"), ("reward_std.tsv", "reward_std"), ("rewards/correct/mean.tsv", "mean"),
                ("groups_any_correct.tsv", "groups_any_correct"), ("completions/mean_length.tsv", "mean_length"))
# The model keys RL reads (loading and dtype): not max_seq_length, which only SFT uses.
MODEL_KEYS = ("name", "revision", "gguf_file", "load_in_4bit", "dtype", "trust_remote_code")


def rl_fingerprint(model_p: ModelParams, lora_p: LoraParams, rl_p: RLParams, train_file: Path,
                   sft_adapter: Path) -> str:
    """A digest of what decides the RL trajectory: the model keys read, ``rl``, gradient checkpointing,
    the training prompts and every file of the SFT adapter."""
    model = {k: v for k, v in as_dict(model_p).items() if k in MODEL_KEYS}
    files = sorted(p for p in Path(sft_adapter).rglob("*") if p.is_file())
    return fingerprint([model, as_dict(rl_p), {"gradient_checkpointing": lora_p.gradient_checkpointing}],
                       Path(train_file), *(part for f in files for part in (f.name, f)))


def pass_through(adapter_out: Path, metrics_path: Path, live_dir: Path | None) -> dict[str, Any]:
    """``rl.steps`` 0: the marker directory, skipped metrics and an empty plots directory, in milliseconds."""
    with atomic_dir(adapter_out) as tmp:
        write_text(tmp / SKIP_MARKER, SKIP_TEXT)
        usual_permissions(tmp)
    if live_dir is not None:
        # The curves dvc.yaml plots, empty (a header, no step): `dvc plots show` finds every file it names.
        shutil.rmtree(live_dir, ignore_errors=True)
        for name, column in EMPTY_CURVES:
            write_text(live_dir / "plots" / "metrics" / name, f"step\t{column}\n")
    metrics = {"steps": 0, "skipped": True}
    write_json(metrics_path, metrics)
    return metrics


def to_rl_dataset(rows: list[dict], seed: int) -> Any:
    """The prompts (conversational, system + user) and reference answers, in a seeded order."""
    from datasets import Dataset

    if not rows:
        raise VigsmError("data/prepared/train.jsonl is empty: RL has no prompts")
    return Dataset.from_list([{"prompt": r["prompt"], "answer": str(r["answer"])} for r in rows]).shuffle(seed=seed)


def grpo_config(rl_p: RLParams, model_p: ModelParams, gradient_checkpointing: bool, output_dir: Path) -> Any:
    """GRPOConfig from the params. One generation batch per optimiser step: the batch is the whole
    step's rows (prompts_per_step x num_generations), so TRL's divisibility rules hold for any valid
    params and every step is on-policy."""
    from trl import GRPOConfig

    on_gpu = cuda_available()
    rows = rl_p.prompts_per_step * rl_p.num_generations
    return GRPOConfig(
        output_dir=str(output_dir),
        max_steps=rl_p.steps,
        learning_rate=rl_p.learning_rate,
        lr_scheduler_type="constant",  # a few hundred steps: no schedule to tune
        warmup_steps=0,
        per_device_train_batch_size=rows,
        gradient_accumulation_steps=1,
        num_generations=rl_p.num_generations,
        max_completion_length=rl_p.max_completion_length,
        temperature=rl_p.temperature,
        top_p=1.0,
        top_k=0,
        beta=rl_p.beta,
        loss_type=rl_p.loss_type,
        num_iterations=1,
        logging_steps=rl_p.logging_steps,
        save_strategy="steps",
        save_steps=rl_p.save_steps,
        save_total_limit=1,
        seed=rl_p.seed,
        data_seed=rl_p.seed,
        gradient_checkpointing=gradient_checkpointing,
        bf16=on_gpu and model_p.dtype == "bfloat16",
        fp16=on_gpu and model_p.dtype == "float16",
        use_vllm=False,
        report_to=[],  # DVCLive is attached as a callback (vigsm.training.dvclive_callback)
        dataloader_pin_memory=on_gpu,  # pinned host memory only helps a copy to a GPU; torch warns on a CPU
        disable_tqdm=False,
        save_only_model=False,
    )


class Rollouts:
    """Stands in for the policy's ``generate``, which TRL's rollouts call once per step, and times it.

    ``engine`` (``rl.rollout``) picks who decodes: ``trl`` calls the model's own ``generate``; ``vigsm`` and
    ``vigsm_graphs`` decode with :func:`vigsm.decoding.decode` (its eager slot decoder, or, on a GPU, its static
    cache replayed as CUDA graphs; the slots on a CPU), in eval mode so the KV cache is used even where gradient
    checkpointing is on. Either way the completions follow the ``generation_config`` TRL passes (length cap,
    temperature, top-k/top-p) and come back as ``generate``'s tensor: the left-padded prompts, then each
    completion up to and including its end-of-turn token, padded. The vigsm engines sample with per-row seeds
    drawn from ``rl.seed``, the optimiser step (set by :func:`step_timer_callback`) and the row, so a resumed
    run draws what the uninterrupted one drew. Recorded per call: seconds, and completion tokens (up to and
    including the end-of-turn token, as TRL counts them)."""

    def __init__(self, model: Any, tok: Any, engine: str, seed: int) -> None:
        self.seconds: list[float] = []
        self.tokens: list[int] = []
        self.step = 0
        self._model, self._tok, self._engine, self._seed = model, tok, engine, seed
        self._inner = model.generate
        model.generate = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if self._engine == "trl":
            input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
            out = self._inner(*args, **kwargs)
            self.tokens.append(self._count(out[:, input_ids.shape[1]:]))
        else:
            out = self._decode(kwargs["input_ids"], kwargs["attention_mask"], kwargs["generation_config"])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - t0)
        return out

    def _count(self, new: Any) -> int:
        import torch

        eos = self._tok.eos_token_id
        if eos is None:
            pad = self._tok.pad_token_id
            return int((new != pad).sum()) if pad is not None else new.numel()
        is_eos = new == eos
        return int(torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, new.shape[1]).sum())

    def _decode(self, input_ids: Any, attention_mask: Any, gc: Any) -> Any:
        import torch

        from vigsm.decoding import Decoding, decode

        prompts = [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask, strict=True)]
        n = len(prompts)
        dec = Decoding(max_new_tokens=int(gc.max_new_tokens), do_sample=bool(gc.do_sample),
                       temperature=float(gc.temperature or 1.0), top_p=float(gc.top_p or 1.0))
        seeds = [((self._seed << 32) + self.step * n + i) & ((1 << 63) - 1) for i in range(n)]
        done: dict[int, list[int]] = {}
        # decode() reads the processors (top-k, repetition penalty) and end-of-turn ids from the model's
        # generation_config: let it read TRL's, as generate would.
        inner = self._model.get_base_model() if hasattr(self._model, "get_base_model") else self._model
        saved, inner.generation_config = inner.generation_config, gc
        was_training = self._model.training
        self._model.eval()
        try:
            # The static cache pays only where its steps replay as CUDA graphs; on a CPU it would compute
            # finished rows for nothing, so vigsm_graphs decodes with the slots there.
            static = self._engine == "vigsm_graphs" and input_ids.is_cuda
            decode(self._model, self._tok, prompts, dec, slots=n, seeds=seeds, static=static,
                   on_finish=lambda i, tokens, reason: done.__setitem__(i, tokens))
        finally:
            inner.generation_config = saved
            if was_training:
                self._model.train()
        pad = self._tok.pad_token_id if self._tok.pad_token_id is not None else self._tok.eos_token_id
        width = max((len(t) for t in done.values()), default=0)
        new = torch.full((n, width), pad, dtype=input_ids.dtype, device=input_ids.device)
        for i, tokens in done.items():
            if tokens:
                new[i, :len(tokens)] = torch.tensor(tokens, dtype=input_ids.dtype)
        self.tokens.append(sum(len(t) for t in done.values()))
        return torch.cat([input_ids, new], dim=1)


def step_timer_callback(rollouts: Rollouts | None = None) -> Any:
    """A callback recording each optimiser step's wall time (rollouts, rewards, forward and backward), and
    telling ``rollouts`` which step it samples for (its seeds)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._t0 = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if rollouts is not None:
                rollouts.step = int(state.global_step)
            self._t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.seconds.append(time.perf_counter() - self._t0)

    return StepTimer()


def load_policy(model_p: ModelParams, lora_p: LoraParams, rl_p: RLParams, sft_adapter: Path,
                rows: list[dict]) -> tuple[Any, Any, Choice]:
    """The base (as SFT trained it: 4-bit NF4 where load_in_4bit) with the SFT adapter loaded trainable,
    a left-padding tokenizer (TRL pads prompts on the left for generation), and gradient checkpointing
    resolved for a step's rows: prompts_per_step x num_generations sequences of the longest prompt plus
    max_completion_length (:func:`vigsm.memory.choose_batch`; the policy is a PEFT model)."""
    from peft import PeftModel

    from vigsm.memory import choose_batch
    from vigsm.weights import resolve_model

    check_device(model_p)
    if not (Path(sft_adapter) / "adapter_config.json").is_file():
        raise VigsmError(f"{sft_adapter} has no adapter_config.json; run the train stage first (dvc repro train)")
    source = resolve_model(model_p)
    tok = load_tokenizer(model_p, source, padding_side="left")
    longest_prompt = max((len(chat_prompt_ids(tok, r["prompt"])) for r in rows), default=0)
    choice = choose_batch(model_p, lora_p, rows=rl_p.prompts_per_step * rl_p.num_generations,
                          seq_len=longest_prompt + rl_p.max_completion_length, backend="peft", source=source)
    model = prepare_kbit_base(load_model(model_p, source), model_p, gradient_checkpointing=choice.enabled)
    model = PeftModel.from_pretrained(model, str(sft_adapter), is_trainable=True)
    return model, tok, choice


def summarise(history: list[dict], steps: list[float], rollout_s: list[float], rollout_tokens: list[int]) -> dict:
    """The run's figures from TRL's log history and the timers: first and last logged reward, the
    groups-with-a-correct-completion share, completion length, KL, step and rollout timing."""
    logs = [h for h in history if "reward" in h]

    def series(key: str) -> list[float]:
        return [float(h[key]) for h in logs if h.get(key) is not None]

    out: dict[str, Any] = {}
    for key, name in (("reward", "reward"), ("rewards/correct/mean", "correct"),
                      ("groups_any_correct", "groups_any_correct"), ("completions/mean_length", "completion_length"),
                      ("kl", "kl"), ("reward_std", "reward_std")):
        values = series(key)
        if values:
            out[f"{name}_first"], out[f"{name}_last"] = values[0], values[-1]
            out[f"{name}_mean"] = sum(values) / len(values)
    # The first step pays for warm-up (allocations, kernels): the median is the steady figure.
    out["step_seconds_median"] = statistics.median(steps) if steps else 0.0
    out["rollout_seconds_median"] = statistics.median(rollout_s) if rollout_s else 0.0
    out["rollout_tokens"] = sum(rollout_tokens)
    out["rollout_tokens_per_second"] = sum(rollout_tokens) / sum(rollout_s) if sum(rollout_s) > 0 else 0.0
    return out


def run_rl(model_p: ModelParams, lora_p: LoraParams, rl_p: RLParams, train_file: Path, sft_adapter: Path,
           adapter_out: Path, ckpt_dir: Path, metrics_path: Path, *, live_dir: Path | None = None) -> dict[str, Any]:
    """GRPO from the SFT adapter (resuming a matching killed run), save the RL adapter, write metrics."""
    if rl_p.steps == 0:
        return pass_through(adapter_out, metrics_path, live_dir)
    from transformers import set_seed

    from vigsm.attention import configure_attention
    from vigsm.training import checkpoint_step, drop_pickles, dvclive_callback, resume_checkpoint, train_or_finish

    rows = read_jsonl(train_file)
    run_fp = rl_fingerprint(model_p, lora_p, rl_p, train_file, sft_adapter)
    resume = resume_checkpoint(ckpt_dir, run_fp)
    set_seed(rl_p.seed)
    model, tok, ckpt = load_policy(model_p, lora_p, rl_p, sft_adapter, rows)
    timer = Rollouts(model, tok, rl_p.rollout, rl_p.seed)
    steps = step_timer_callback(timer)
    callbacks = [steps] + ([dvclive_callback(live_dir, resume is not None)] if live_dir else [])
    funcs, weights = reward_functions(rl_p.reward, rl_p.format_reward, rl_p.num_generations)
    args = grpo_config(rl_p, model_p, ckpt.enabled, ckpt_dir)
    args.reward_weights = weights
    print(f"[vigsm] GRPO: {rl_p.steps} steps of {rl_p.prompts_per_step} prompts x {rl_p.num_generations} completions "
          f"(<= {rl_p.max_completion_length} tokens, temperature {rl_p.temperature}), loss {rl_p.loss_type}, beta "
          f"{rl_p.beta}, reward {rl_p.reward} + {rl_p.format_reward} x format, rollouts {rl_p.rollout}; device "
          f"{'cuda' if cuda_available() else 'cpu'}, attention {configure_attention()}", flush=True)
    from trl import GRPOTrainer

    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=to_rl_dataset(rows, rl_p.seed),
                          processing_class=tok, callbacks=callbacks)
    if resume:
        print(f"[vigsm] resuming from {resume}", flush=True)
    t0 = time.time()
    train_or_finish(trainer, resume, rl_p.steps)
    wall = time.time() - t0
    with atomic_dir(adapter_out) as tmp:
        # Only the trained adapter: with beta > 0 TRL adds a frozen "ref" copy, which is no output.
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(str(tmp), selected_adapters=["default"])
        tok.save_pretrained(str(tmp))
        drop_pickles(tmp)
        usual_permissions(tmp)
    metrics: dict[str, Any] = {
        "steps": int(trainer.state.global_step),
        "skipped": False,
        "resumed_from_step": checkpoint_step(resume) if resume else 0,
        "rows_per_step": rl_p.prompts_per_step * rl_p.num_generations,
        "device": "cuda" if cuda_available() else "cpu",
        "rl_wall_seconds": wall,
        **ckpt.metrics(),
        **summarise(trainer.state.log_history, steps.seconds, timer.seconds, timer.tokens),
    }
    peak = peak_gpu_memory_gb()
    if peak is not None:
        metrics["peak_gpu_memory_gb"] = peak
    write_json(metrics_path, metrics)
    # Complete: a forced rerun must train again rather than "resume" at the last step.
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    print(f"[vigsm] wrote {adapter_out} and {metrics_path}", flush=True)
    return metrics

