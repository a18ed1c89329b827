"""Supervised fine-tuning with TRL's SFTTrainer, loss on the assistant reply only.

The data are conversational prompt/completion records, so TRL builds a completion mask and the collator
labels prompt tokens -100 (``completion_only_loss=True``, set explicitly rather than left to a default).
Checkpoints go to a directory outside DVC's outputs, fingerprinted by the settings that shape the run, so
a killed run resumes from its last complete checkpoint and a changed run starts afresh.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from vigsm.attention import configure_attention
from vigsm.config import LoraParams, ModelParams, TrainParams, as_dict
from vigsm.device import cuda_available, peak_gpu_memory_gb
from vigsm.digest import fingerprint
from vigsm.distributed import barrier, from_main, gather, is_main, rank, world_size
from vigsm.errors import VigsmError
from vigsm.io import atomic_dir, read_jsonl, usual_permissions, write_json
from vigsm.lengths import token_length_stats
from vigsm.memory import Choice, choose, most_cautious
from vigsm.modeling import (
    chat_prompt_ids,
    check_device,
    choose_backend,
    load_model,
    load_tokenizer,
    load_unsloth,
    lora_config,
    prepare_kbit_base,
)
from vigsm.weights import resolve_model

LOSS_TOKENS = "assistant completion only: system and user prompt tokens are labelled -100"
CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
# The figures of metrics/train.json that describe only this process's part of the run (from the checkpoint
# it resumed from, if any, to the end) and its machine: the wall time and throughput of that part, where it
# started, and the GPU memory it used. Every other figure describes the whole run, resumed or not.
THIS_RUN_KEYS = ("resumed_from_step", "train_wall_seconds", "train_tokens_this_run", "train_tokens_per_second",
                 "peak_gpu_memory_gb")


def run_fingerprint(model_p: ModelParams, lora_p: LoraParams, train_p: TrainParams, data_files: list[Path]) -> str:
    """A digest of everything that decides the training trajectory: params and the data bytes."""
    return fingerprint([as_dict(model_p), as_dict(lora_p), as_dict(train_p)], *(Path(f) for f in data_files))


def checkpoint_step(path: str | Path) -> int:
    """The optimiser step a Trainer checkpoint directory (``checkpoint-<step>``) was saved at."""
    return int(Path(path).name.split("-")[-1])


def checkpoint_complete(path: Path, world: int = 1) -> bool:
    """A checkpoint is complete when its weights, optimizer, scheduler and trainer state are all there,
    and, from ``world`` > 1 processes, every process's RNG state (each writes its own, unsynchronised)."""
    if not all((path / f).is_file() for f in CHECKPOINT_FILES):
        return False
    if world > 1 and not all((path / f"rng_state_{r}.pth").is_file() for r in range(world)):
        return False
    if not (any(path.glob("adapter_model.safetensors")) or any(path.glob("model*.safetensors"))):
        return False
    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return True


def resume_checkpoint(ckpt_dir: Path, fingerprint: str, world: int = 1) -> Path | None:
    """Prepare ``ckpt_dir`` for this run; return the last complete checkpoint to resume from, if any.

    A directory made by other settings is wiped. Incomplete checkpoints (a kill during saving) are
    removed and reported, so the trainer never tries to load one.
    """
    stamp = ckpt_dir / "vigsm-fingerprint.txt"
    if ckpt_dir.exists() and (not stamp.is_file() or stamp.read_text().strip() != fingerprint):
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)
    found = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=checkpoint_step)
    latest = None
    for p in found:
        if checkpoint_complete(p, world):
            latest = p
        else:
            print(f"[vigsm] skipping incomplete checkpoint {p} (removed)", flush=True)
            shutil.rmtree(p)
    return latest


def to_dataset(rows: list[dict]) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])


def sft_config(train_p: TrainParams, lora_p: LoraParams, model_p: ModelParams, output_dir: Path, *, backend: str,
               gradient_checkpointing: bool | None = None) -> Any:
    """SFTConfig from the params; every batch knob is set explicitly (unsloth reports its own otherwise).
    ``gradient_checkpointing`` is the resolved choice (:func:`checkpointing`); None takes an explicit
    true/false from ``lora_p`` (``auto`` must be resolved first)."""
    from trl import SFTConfig

    on_gpu = cuda_available()
    if gradient_checkpointing is None:
        if not isinstance(lora_p.gradient_checkpointing, bool):
            raise ValueError("lora.gradient_checkpointing=auto: pass the resolved choice (vigsm.memory.choose)")
        gradient_checkpointing = lora_p.gradient_checkpointing
    return SFTConfig(
        output_dir=str(output_dir),
        # TRL refuses max_length with padding-free batches unless it packs (it cannot truncate a flattened
        # row); build_trainer checks the lengths itself instead. unsloth's patched trainer takes it as is.
        max_length=None if train_p.padding_free and backend != "unsloth" else model_p.max_seq_length,
        completion_only_loss=True,
        padding_free=train_p.padding_free,
        # Compiled layers (unsloth) specialise on the sequence length: rounding bounds how many lengths
        # a run compiles for. Pad tokens carry no label, so the loss is unchanged.
        pad_to_multiple_of=train_p.pad_to_multiple_of or None,
        per_device_train_batch_size=train_p.per_device_train_batch_size,
        per_device_eval_batch_size=train_p.per_device_eval_batch_size,
        gradient_accumulation_steps=train_p.gradient_accumulation_steps,
        learning_rate=train_p.learning_rate,
        weight_decay=train_p.weight_decay,
        num_train_epochs=train_p.num_train_epochs,
        max_steps=train_p.max_steps,
        lr_scheduler_type=train_p.lr_scheduler_type,
        warmup_steps=train_p.warmup_steps,
        eval_strategy="steps",
        save_strategy="steps",
        logging_strategy="steps",
        logging_steps=train_p.logging_steps,
        eval_steps=train_p.eval_steps,
        save_steps=train_p.save_steps,
        save_total_limit=train_p.save_total_limit,
        load_best_model_at_end=train_p.load_best_model_at_end,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        optim=train_p.optim,
        seed=train_p.seed,
        data_seed=train_p.seed,
        # unsloth applies its own gradient checkpointing through get_peft_model.
        gradient_checkpointing=gradient_checkpointing and backend != "unsloth",
        bf16=on_gpu and model_p.dtype == "bfloat16",
        fp16=on_gpu and model_p.dtype == "float16",
        report_to=[],  # DVCLive is attached by train() as a callback it configures itself
        dataloader_pin_memory=on_gpu,  # pinned host memory only helps a copy to a GPU; torch warns on a CPU
        # Several processes (vigsm.distributed): every LoRA weight gets a gradient at every step, so DDP
        # need not search the graph for unused ones (an extra traversal per step).
        ddp_find_unused_parameters=False,
        # Without CUDA, accelerate shards the data over gloo processes only when told it runs on the CPU.
        use_cpu=not on_gpu and world_size() > 1,
        dataset_num_proc=None,
        save_only_model=False,
        disable_tqdm=False,
    )


def first_batch(trainer: Any, n: int) -> tuple[list[dict], dict[str, Any]]:
    """The first ``n`` tokenized training examples and the batch the trainer's collator makes of them."""
    ds = trainer.train_dataset
    features = [ds[i] for i in range(min(n, len(ds)))]
    return features, trainer.data_collator(features)


def label_coverage(trainer: Any, rows: list[dict], n: int = 8) -> dict[str, Any]:
    """Collate the first ``n`` training examples as the trainer does and count which tokens carry loss.

    The prompt boundary is found independently of TRL: the chat template applied to the system and user
    turns with the generation prompt gives the prompt tokens, which must prefix each example. Returns the
    prompt tokens that carry a label (must be 0), the completion tokens that do (must be all of them),
    and the decoded labelled span of the first example.
    """
    tok = trainer.processing_class
    features, batch = first_batch(trainer, n)
    lengths = [len(f["input_ids"]) for f in features]
    labels = batch["labels"]
    if labels.shape[0] == 1 and len(features) > 1:  # padding-free: one flattened row
        flat, per, start = labels[0].tolist(), [], 0
        for length in lengths:
            per.append(flat[start:start + length])
            start += length
    else:
        per = [labels[i, : lengths[i]].tolist() for i in range(len(features))]
    prompt_labelled = completion_labelled = completion_total = 0
    first_text = ""
    for i, (f, lab) in enumerate(zip(features, per, strict=True)):
        prompt_ids = chat_prompt_ids(tok, rows[i]["prompt"])
        n_prompt = len(prompt_ids)
        if list(f["input_ids"][:n_prompt]) != prompt_ids:
            raise VigsmError(f"training example {i} does not start with its chat prompt; the template changed?")
        prompt_labelled += sum(1 for x in lab[:n_prompt] if x != -100)
        completion_labelled += sum(1 for x in lab[n_prompt:] if x != -100)
        completion_total += len(lab) - n_prompt
        if i == 0:
            first_text = tok.decode([x for x in lab if x != -100])
    return {"prompt_tokens_labelled": prompt_labelled, "completion_tokens_labelled": completion_labelled,
            "completion_tokens": completion_total, "first_labelled_text": first_text}


def unsloth_environment(train_p: TrainParams) -> dict[str, str]:
    """The environment unsloth reads at import time for the train params (it has no other switch)."""
    return {"UNSLOTH_BLOCK_CUDAGRAPHS": "1" if train_p.cuda_graphs else "0"}


def apply_unsloth_environment(train_p: TrainParams) -> None:
    """Set :func:`unsloth_environment` before unsloth is first imported; params.yaml, not the shell,
    decides, so that DVC tracks it. Too late once unsloth is loaded in this process: then it says so."""
    for key, value in unsloth_environment(train_p).items():
        if "unsloth" in sys.modules and os.environ.get(key, "0") != value:
            print(f"[vigsm] unsloth is already imported in this process: {key}={value} (train.cuda_graphs) "
                  f"takes effect in a new process", flush=True)
        os.environ[key] = value


# Tokens a row may have beyond its chat template's rendering once the trainer tokenizes it (an end-of-text
# token appended by some TRL versions); the rounding to pad_to_multiple_of comes on top.
ROW_MARGIN = 8


def longest_row(model_p: ModelParams, source: str, rows: list[dict]) -> int:
    """Tokens in the longest of ``rows`` (prompt and completion under the chat template), plus ROW_MARGIN."""
    tok = load_tokenizer(model_p, source)
    texts = [tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in rows]
    return max(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]) + ROW_MARGIN


def checkpointing(model_p: ModelParams, lora_p: LoraParams, train_p: TrainParams,
                  rows: list[dict] | None = None) -> Choice:
    """Resolve ``lora.gradient_checkpointing`` (true, false or auto) for this run, the same for every
    process: on if any process's GPU needs it (:func:`vigsm.memory.most_cautious`). ``rows``: the training
    rows, tokenized only where rows of max_seq_length would not fit (:func:`vigsm.memory.choose`)."""
    check_device(model_p)
    source = resolve_model(model_p)
    longest = (lambda: longest_row(model_p, source, rows)) if rows else None
    return most_cautious(gather(choose(model_p, lora_p, train_p, backend=choose_backend(train_p.backend), source=source,
                                       longest=longest)))


def build_trainer(model_p: ModelParams, lora_p: LoraParams, train_p: TrainParams, train_rows: list[dict],
                  eval_rows: list[dict], ckpt_dir: Path, *, callbacks: list[Any] | None = None,
                  ckpt: Choice | None = None) -> tuple[Any, str]:
    """Load the base model for the chosen backend and return (SFTTrainer, backend). ``ckpt`` is the
    gradient-checkpointing choice; None resolves it here (:func:`checkpointing`)."""
    check_device(model_p)
    backend = choose_backend(train_p.backend)
    source = resolve_model(model_p)
    ckpt = ckpt or checkpointing(model_p, lora_p, train_p)
    from transformers import set_seed

    set_seed(train_p.seed)  # LoRA weights are initialised before the Trainer seeds anything
    if backend == "unsloth":
        apply_unsloth_environment(train_p)
        from unsloth import FastLanguageModel

        model, tokenizer = load_unsloth(model_p, source)
        model = FastLanguageModel.get_peft_model(
            model, r=lora_p.r, target_modules=list(lora_p.target_modules), lora_alpha=lora_p.alpha,
            lora_dropout=lora_p.dropout, bias=lora_p.bias, use_rslora=lora_p.use_rslora, random_state=train_p.seed,
            use_gradient_checkpointing="unsloth" if ckpt.enabled else False)
        tokenizer = load_tokenizer(model_p, source)  # same files; our pad-token rule applies
        peft_config = None
    else:
        model = load_model(model_p, source)
        tokenizer = load_tokenizer(model_p, source)
        peft_config = lora_config(lora_p)
        model = prepare_kbit_base(model, model_p, gradient_checkpointing=ckpt.enabled)
    precision = "4-bit NF4 base" if model_p.load_in_4bit else f"{model_p.dtype} base, full precision (no quantisation)"
    device = "cuda" if cuda_available() else "cpu"
    print(f"[vigsm] backend={backend} device={device} precision={precision} attention={configure_attention()} "
          f"gradient_checkpointing={ckpt.enabled} ({ckpt.reason}) padding_free={train_p.padding_free}", flush=True)
    from trl import SFTTrainer

    args = sft_config(train_p, lora_p, model_p, ckpt_dir, backend=backend, gradient_checkpointing=ckpt.enabled)
    trainer = SFTTrainer(model=model, args=args, train_dataset=to_dataset(train_rows),
                         eval_dataset=to_dataset(eval_rows), processing_class=tokenizer,
                         peft_config=peft_config, callbacks=callbacks)
    if train_p.padding_free:
        too_long = sum(1 for ids in trainer.train_dataset["input_ids"] if len(ids) > model_p.max_seq_length)
        if too_long:
            raise VigsmError(f"train.padding_free: {too_long} training examples are longer than "
                             f"model.max_seq_length={model_p.max_seq_length} and padding-free batches are not "
                             f"truncated; raise model.max_seq_length or set train.padding_free=false")
    return trainer, backend


def final_eval_loss(trainer: Any) -> float:
    """The eval_loss of the weights about to be saved, re-evaluating only when no evaluation gave it.

    With ``load_best_model_at_end`` the trainer has loaded the best checkpoint, evaluated at its step;
    otherwise the weights are the last step's, evaluated there when the last step was an eval step.
    """
    state = trainer.state
    step = state.global_step
    if trainer.args.load_best_model_at_end and state.best_model_checkpoint:
        step = checkpoint_step(state.best_model_checkpoint)
    logged = {h["step"]: float(h["eval_loss"]) for h in state.log_history if "eval_loss" in h}
    if step in logged:
        return logged[step]
    return float(trainer.evaluate()["eval_loss"])


def sort_adapter_config(adapter_dir: Path) -> None:
    """Write ``adapter_config.json`` with its module lists sorted. PEFT keeps ``target_modules`` as a set
    and saves it in the set's iteration order, which follows the process's string hash seed: two runs of
    the same params would otherwise give different bytes, and DVC a changed output. (PEFT reads it back as
    a set: the order means nothing.) Same layout as PEFT's own file."""
    path = adapter_dir / "adapter_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in ("target_modules", "exclude_modules"):
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def train_or_finish(trainer: Any, resume: Path | None, max_steps: int) -> float:
    """``trainer.train``, resuming from ``resume``; its ``training_loss`` (0.0 where nothing was trained).

    A checkpoint at ``max_steps`` is a run that trained to the end and was killed before it wrote its
    outputs. transformers' Trainer, resumed there, trains one step past ``max_steps`` (it checks the step
    count only after a step), so such a run is finished instead: the checkpoint's weights and trainer state
    are loaded (then the best checkpoint's weights, with ``load_best_model_at_end``), and nothing is trained.
    """
    if resume is None or max_steps <= 0 or checkpoint_step(resume) < max_steps:
        return float(trainer.train(resume_from_checkpoint=str(resume) if resume else None).training_loss)
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(resume))
    trainer.state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
    best = trainer.state.best_model_checkpoint
    if trainer.args.load_best_model_at_end and best and Path(best).is_dir():
        trainer._load_best_model()
    print(f"[vigsm] {resume} is the run's last step: finishing from it without training", flush=True)
    return 0.0


def whole_run_train_loss(log_history: list[dict[str, Any]], this_run_loss: float, resumed_from: int,
                         global_step: int) -> tuple[float, int]:
    """The mean training loss per optimiser step over the whole run, and the number of steps it averages.

    The trainer's own ``training_loss`` sums the losses of the steps this process trained (since the
    checkpoint it resumed from) but divides by every step: after a resume it understates the loss. The
    steps before the checkpoint come from the logged history (restored with the checkpoint): each logged
    ``loss`` is the mean over the steps since the previous log. Steps between the last log before the
    checkpoint and the checkpoint itself were never logged (a checkpoint step that is not a multiple of
    ``train.logging_steps``): they are left out, and the count says so (``global_step`` when nothing is).
    """
    this_run_steps = global_step - resumed_from
    total, steps, last = this_run_loss * global_step, this_run_steps, 0
    for entry in log_history:
        if "loss" in entry and entry["step"] <= resumed_from:
            total += float(entry["loss"]) * (entry["step"] - last)
            steps += entry["step"] - last
            last = entry["step"]
    return (total / steps if steps else float("nan")), steps


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle")


def drop_pickles(adapter_dir: Path) -> None:
    """Remove the Trainer's pickled arguments (``training_args.bin``) from a directory that is published
    (``dvc push``), and refuse any other pickle in it: whoever pulls an adapter gets safetensors and JSON."""
    (adapter_dir / "training_args.bin").unlink(missing_ok=True)
    left = sorted(p.name for p in adapter_dir.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if left:
        raise VigsmError(f"{adapter_dir}: pickle files {', '.join(left)} would be published with the adapter")


def dvclive_callback(live_dir: Path, resume: bool) -> Any:
    """Transformers' DVCLive integration, logging per-step TSVs under ``live_dir``.

    The Live object is built here rather than by ``report_to="dvclive"`` so that it never edits dvc.yaml
    (the pipeline declares its plots) and appends to the old logs when a killed run resumes.
    """
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    return DVCLiveCallback(live=Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, resume=resume))


def train(model_p: ModelParams, lora_p: LoraParams, train_p: TrainParams, data_dir: Path, adapter_dir: Path,
          ckpt_dir: Path, metrics_path: Path, *, live_dir: Path | None = None) -> dict[str, Any]:
    """Train (resuming if a matching checkpoint exists), save the adapter, write metrics; return them."""
    # Model selection reads the validation split only; the test split is generate's and score's.
    train_file, val_file = data_dir / "train.jsonl", data_dir / "validation.jsonl"
    train_rows, val_rows = read_jsonl(train_file), read_jsonl(val_file)
    if not val_rows:
        raise VigsmError(f"{val_file}: the validation split is empty; rerun prepare")
    eval_rows = val_rows[: train_p.eval_limit] if train_p.eval_limit else val_rows
    run_fp = run_fingerprint(model_p, lora_p, train_p, [train_file, val_file])
    # Several processes: the main one cleans the checkpoint directory; all resume from what it found.
    resume = from_main(lambda: resume_checkpoint(ckpt_dir, run_fp, world_size()))
    callbacks = [dvclive_callback(live_dir, resume is not None)] if live_dir and is_main() else None
    # Decided before the model loads (free memory is read then), and recorded with the figures it used.
    ckpt = checkpointing(model_p, lora_p, train_p, train_rows)
    trainer, backend = build_trainer(model_p, lora_p, train_p, train_rows, eval_rows, ckpt_dir, callbacks=callbacks,
                                     ckpt=ckpt)
    coverage = label_coverage(trainer, train_rows)
    if coverage["prompt_tokens_labelled"] or coverage["completion_tokens_labelled"] != coverage["completion_tokens"]:
        raise VigsmError(f"loss mask is wrong: {coverage['prompt_tokens_labelled']} prompt tokens carry labels "
                         f"and {coverage['completion_tokens_labelled']} completion tokens do")
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    # Read before training: the checkpoint rotation may delete the checkpoint resumed from.
    epochs_before = float(json.loads((resume / "trainer_state.json").read_text()).get("epoch") or 0.0) if resume \
        else 0.0
    if resume:
        print(f"[vigsm] resuming from {resume}", flush=True)
    t0 = time.time()
    this_run_loss = train_or_finish(trainer, resume, train_p.max_steps)
    wall = time.time() - t0
    # Every process takes part when it must evaluate again (they share the log history, so they agree).
    eval_loss = final_eval_loss(trainer)

    if is_main():
        with atomic_dir(adapter_dir) as tmp:
            trainer.save_model(str(tmp))
            sort_adapter_config(tmp)
            trainer.processing_class.save_pretrained(str(tmp))
            drop_pickles(tmp)
            usual_permissions(tmp)

    epochs_done = float(trainer.state.epoch or 0.0)
    # Throughput of this run (every process's tokens over this process's wall time): only the epochs trained
    # since the checkpoint it resumed from (all epochs' tokens over a resumed run's time would overstate it).
    tokens_this_run = sum(lengths) * (epochs_done - epochs_before)
    resumed_from = checkpoint_step(resume) if resume else 0
    train_loss, train_loss_steps = whole_run_train_loss(trainer.state.log_history, this_run_loss,
                                                        resumed_from, int(trainer.state.global_step))
    # Every figure describes the whole run, resumed or not, except THIS_RUN_KEYS.
    metrics = {
        "eval_loss": eval_loss,
        "perplexity": math.exp(eval_loss),
        "loss_tokens": LOSS_TOKENS,
        "eval_split": "validation" if not train_p.eval_limit else f"validation[:{train_p.eval_limit}]",
        "eval_examples": len(eval_rows),
        "train_loss": train_loss,
        "train_loss_steps": train_loss_steps,
        "global_step": int(trainer.state.global_step),
        "epochs": epochs_done,
        "resumed_from_step": resumed_from,
        "backend": backend,
        "processes": world_size(),
        "rows_per_step": train_p.per_device_train_batch_size * train_p.gradient_accumulation_steps * world_size(),
        **ckpt.metrics(),
        "device": "cuda" if cuda_available() else "cpu",
        "train_wall_seconds": wall,
        "train_tokens_this_run": round(tokens_this_run),
        "train_tokens_per_second": tokens_this_run / wall if wall > 0 else 0.0,
        "train_tokens_truncated": sum(1 for n in lengths if n >= model_p.max_seq_length),
        **token_length_stats(lengths, "train_tokens"),
        "prompt_tokens_labelled": coverage["prompt_tokens_labelled"],
        "completion_tokens_labelled": coverage["completion_tokens_labelled"],
    }
    peak = peak_gpu_memory_gb()
    if peak is not None:
        metrics["peak_gpu_memory_gb"] = peak
    if is_main():
        write_json(metrics_path, metrics)
        # The run is complete and its adapter saved: its checkpoints have served their purpose, and a later
        # forced rerun must train again rather than "resume" at the last step.
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        print(f"[vigsm] process {rank()} of {world_size()} wrote {adapter_dir} and {metrics_path}", flush=True)
    barrier()  # the others leave once the outputs are in place
    return metrics
