"""The params.yaml schema, as typed dataclasses, and the strict loader that checks it.

Each section of ``params.yaml`` maps to one dataclass below. :func:`load_section` rejects unknown keys,
missing keys, wrong types and out-of-range values with a :class:`VigsmError` whose one-line message names
the key and what is allowed. Stages call it before importing anything heavy, so a typo costs seconds.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from vigsm.errors import VigsmError

T = TypeVar("T")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _knob(*, ge: float | None = None, gt: float | None = None, le: float | None = None,
          choices: tuple[Any, ...] | None = None) -> dict[str, Any]:
    """Metadata for a field: numeric bounds and allowed values."""
    return {"ge": ge, "gt": gt, "le": le, "choices": choices}


def knob(**bounds: Any) -> Any:
    """A required field (params.yaml must name every key) carrying its bounds or allowed values."""
    return field(metadata=_knob(**bounds))


PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
              "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr",
              "warmup_stable_decay")
# A process count: an integer, or "auto" for every visible CUDA device (1 on a machine without one).
Gpus = int | Literal["auto"]
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
              "adafactor", "sgd", "adamw_bnb_8bit")


@dataclass(frozen=True)
class DataParams:
    """Where the problems come from and how they become chat records."""

    source: str = knob()  # hub dataset id, a local .jsonl/.json/.parquet/.csv file, or "sample"
    revision: str = knob()  # hub revision (branch, tag or commit); ignored for files and the sample
    # the assistant reply's lines, joined by newlines (one line each keeps `dvc exp show` readable);
    # fields {explanation} and {answer}
    target_template: list[str] = knob()  # noqa: RUF009 - no default: every key is required
    # validation split carved out of train: a fraction in (0, 1) or a whole count; 0: the test split
    # doubles as validation (the notebook's protocol). The system prompt is a file (dvc.yaml names it).
    validation_size: float = knob(ge=0)
    validation_seed: int = knob(ge=0)
    train_limit: int = knob(ge=0)  # 0 keeps every training problem (after the validation split)
    test_limit: int = knob(ge=0)  # 0 keeps every test problem


@dataclass(frozen=True)
class ModelParams:
    """The base model and how it is loaded."""

    name: str = knob()  # hub id, local directory, or pkg:<python package> holding a GGUF file
    revision: str = knob()  # hub revision; ignored for local paths
    gguf_file: str = knob()  # GGUF file inside `name` to load (and convert once); "" for none
    load_in_4bit: bool = knob()
    dtype: str = knob(choices=("bfloat16", "float16", "float32"))
    max_seq_length: int = knob(ge=16)
    trust_remote_code: bool = knob()


@dataclass(frozen=True)
class LoraParams:
    """The LoRA adapter."""

    r: int = knob(ge=1)
    alpha: float = knob(gt=0)
    dropout: float = knob(ge=0, le=1)
    bias: str = knob(choices=("none", "all", "lora_only"))
    use_rslora: bool = knob()
    target_modules: list[str] = knob(choices=PROJECTIONS)  # noqa: RUF009 - no default: every key is required
    gradient_checkpointing: bool = knob()


@dataclass(frozen=True)
class TrainParams:
    """The optimisation loop (TRL SFTTrainer)."""

    backend: str = knob(choices=("auto", "unsloth", "peft"))
    per_device_train_batch_size: int = knob(ge=1)
    per_device_eval_batch_size: int = knob(ge=1)
    gradient_accumulation_steps: int = knob(ge=1)
    learning_rate: float = knob(gt=0, le=1)
    weight_decay: float = knob(ge=0)
    num_train_epochs: float = knob(gt=0)
    max_steps: int = knob(ge=-1)  # -1 trains num_train_epochs; a positive value overrides it
    lr_scheduler_type: str = knob(choices=SCHEDULERS)
    warmup_steps: int = knob(ge=0)
    logging_steps: int = knob(ge=1)
    eval_steps: int = knob(ge=1)
    save_steps: int = knob(ge=1)
    save_total_limit: int = knob(ge=1)
    load_best_model_at_end: bool = knob()
    optim: str = knob(choices=OPTIMIZERS)
    padding_free: bool = knob()  # pack sequences without padding (needs a flash-attention kernel)
    pad_to_multiple_of: int = knob(ge=0)  # padded batches: round each batch's length up; 0 = no rounding
    cuda_graphs: bool = knob()  # unsloth backend: replay its compiled layers as CUDA graphs
    eval_limit: int = knob(ge=0)  # 0 evaluates on the whole validation split
    seed: int = knob(ge=0)
    gpus: Gpus = knob(ge=1)  # noqa: RUF009 - torchrun processes (vigsm.distributed); 1: no launcher


@dataclass(frozen=True)
class GenerateParams:
    """Decoding the test split."""

    batch_size: int = knob(ge=1)  # rows decoded together (slots); a finished row's slot is refilled
    base_16bit: bool = knob()  # decode from a 16-bit copy of the dequantised base (false: the 4-bit base)
    merge_adapter: bool = knob()  # fold the adapter into the 16-bit weights (rounds small updates away)
    max_new_tokens: int = knob(ge=1)
    do_sample: bool = knob()  # false: greedy, deterministic and comparable across experiments
    temperature: float = knob(gt=0)
    top_p: float = knob(gt=0, le=1)
    limit: int = knob(ge=0)  # 0: the whole test split; 100: the notebook's protocol
    seed: int = knob(ge=0)
    stop_at_answer: bool = knob()  # end a row once its "### <number>" line is complete (vigsm.stopping)
    stop_loops: bool = knob()  # end a row whose last tokens repeat one short cycle (vigsm.stopping)
    gpus: Gpus = knob(ge=1)  # noqa: RUF009 - processes, each decoding a shard (vigsm.distributed)


@dataclass(frozen=True)
class ScoreParams:
    """Scoring and intervals."""

    confidence: float = knob(gt=0, le=0.999)
    bootstrap_samples: int = knob(ge=100)
    seed: int = knob(ge=0)
    report_examples: int = knob(ge=0)


@dataclass(frozen=True)
class RLParams:
    """GRPO on top of the SFT adapter (TRL GRPOTrainer; vigsm.rl). ``steps`` 0 turns the stage into a pass-through."""

    steps: int = knob(ge=0)  # optimiser steps; 0: no RL, nothing generated or scored for it
    learning_rate: float = knob(gt=0)
    num_generations: int = knob(ge=2)  # completions per prompt (the group the advantage is relative to)
    prompts_per_step: int = knob(ge=1)  # rows per step = prompts_per_step x num_generations
    max_completion_length: int = knob(ge=1)
    temperature: float = knob(gt=0)
    beta: float = knob(ge=0)  # KL coefficient; 0 loads no reference model
    loss_type: str = knob(choices=("dapo", "grpo", "dr_grpo", "bnpo"))
    reward: str = knob(choices=("strict", "flexible"))  # how the answer is read (vigsm.answers.extract_answer)
    format_reward: float = knob(ge=0)  # weight of the "### N" line reward; 0: off
    logging_steps: int = knob(ge=1)
    save_steps: int = knob(ge=1)  # checkpoints for resuming
    seed: int = knob(ge=0)


SECTIONS: dict[str, type] = {
    "data": DataParams,
    "model": ModelParams,
    "lora": LoraParams,
    "train": TrainParams,
    "generate": GenerateParams,
    "score": ScoreParams,
    "rl": RLParams,
}


def read_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise VigsmError(f"{path}: params file not found (run from the repository root)")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise VigsmError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(doc, dict):
        raise VigsmError(f"{path}: expected a mapping of sections")
    return doc


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(key: str, value: Any, tp: Any, meta: dict[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list) or not value:
            raise VigsmError(f"params: {key}: expected a non-empty list of {_type_name(item_tp)}, got {value!r}")
        return [_check_value(f"{key}[{i}]", v, item_tp, meta) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        # The one union in the schema: a number or a keyword (Gpus). The keyword is matched exactly; any
        # other value must pass as the number, with its bounds.
        args = typing.get_args(tp)
        words = [w for a in args if typing.get_origin(a) is Literal for w in typing.get_args(a)]
        numbers = [a for a in args if typing.get_origin(a) is not Literal]
        if len(numbers) != 1 or not words:
            raise TypeError(f"unsupported union in the schema: {tp}")
        if value in words and isinstance(value, str):
            return value
        if isinstance(value, bool) or not isinstance(value, numbers[0]):
            allowed = " or ".join(repr(w) for w in words)
            raise VigsmError(f"params: {key}: expected an integer >= {meta.get('ge')} or {allowed}, got {value!r}")
        return _check_value(key, value, numbers[0], meta)
    if tp is bool:
        if not isinstance(value, bool):
            raise VigsmError(f"params: {key}: expected true or false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise VigsmError(f"params: {key}: expected an integer, got {value!r}")
    elif tp is float:
        # PyYAML (YAML 1.1) reads 1e-5 without a dot as a string; DVC's -S writes floats that way.
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise VigsmError(f"params: {key}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise VigsmError(f"params: {key}: expected a finite number, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            raise VigsmError(f"params: {key}: expected a string, got {value!r}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise VigsmError(f"params: {key}: {value!r} is not one of {', '.join(map(str, choices))}")
    if meta.get("ge") is not None and value < meta["ge"]:
        raise VigsmError(f"params: {key}: must be >= {meta['ge']}, got {value!r}")
    if meta.get("gt") is not None and value <= meta["gt"]:
        raise VigsmError(f"params: {key}: must be > {meta['gt']}, got {value!r}")
    if meta.get("le") is not None and value > meta["le"]:
        raise VigsmError(f"params: {key}: must be <= {meta['le']}, got {value!r}")
    return value


def parse_section(name: str, raw: Any, cls: type[T]) -> T:
    """Validate one section's mapping against its dataclass and build it."""
    if not isinstance(raw, dict):
        raise VigsmError(f"params: section '{name}' must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise VigsmError(f"params: {name}.{unknown[0]}: unknown key; allowed keys: {', '.join(fields)}")
    missing = [k for k in fields if k not in raw]
    if missing:
        raise VigsmError(f"params: {name}.{missing[0]}: missing key")
    values = {k: _check_value(f"{name}.{k}", raw[k], hints[k], dict(fields[k].metadata)) for k in fields}
    return cls(**values)


def load_section(name: str, cls: type[T] | None = None, path: str | Path = "params.yaml") -> T:
    """Read ``params.yaml`` and return section ``name`` validated as its dataclass."""
    cls = cls or SECTIONS[name]
    doc = read_params(path)
    if name not in doc:
        raise VigsmError(f"params: section '{name}' is missing from {path}")
    return parse_section(name, doc[name], cls)


def as_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
