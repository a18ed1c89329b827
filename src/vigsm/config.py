"""The params.yaml schema, as pydantic dataclasses, and the strict loader that checks it.

Each section of ``params.yaml`` maps to one frozen dataclass below, validated by pydantic in strict mode:
unknown and missing keys, wrong types (``true`` is not an integer, ``"32"`` is not a number), values out of
the ``Field`` bounds, choices outside their ``Literal``, empty lists and non-finite floats are errors.
:func:`parse_section` reports every problem of a section in one line (``params: lora.r: must be >= 1, got
0; lora.alpha: ...``) as a :class:`VigsmError`. Stages call it before importing anything heavy, so a typo
costs seconds. They are standard dataclasses too: ``dataclasses.replace`` (validated again) and
:func:`as_dict` work on them.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from vigsm.errors import VigsmError

T = TypeVar("T")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _yaml11_float(value: Any) -> Any:
    # PyYAML (YAML 1.1) reads 1e-5 without a dot as a string; DVC's -S writes floats that way.
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


# strict: no coercion (true is not 1, "32" is not 32), except an integer where a float is expected (YAML's
# `alpha: 32`), which becomes a float. allow_inf_nan=False: .nan and .inf are errors wherever a float is read.
_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
_section = dataclass(frozen=True, kw_only=True, config=_STRICT)  # kw_only: bounded and plain fields in any order

Real = Annotated[float, BeforeValidator(_yaml11_float)]
Projection = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay"]
Optimizer = Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
                    "adafactor", "sgd", "adamw_bnb_8bit"]
# A process count: an integer, or "auto" for every visible CUDA device (1 on a machine without one).
Gpus = Annotated[int, Field(ge=1)] | Literal["auto"]


@_section
class DataParams:
    """Where the problems come from and how they become chat records."""

    source: str  # hub dataset id, a local .jsonl/.json/.parquet/.csv file, or "sample"
    revision: str  # hub revision (branch, tag or commit); ignored for files and the sample
    # the assistant reply's lines, joined by newlines (one line each keeps `dvc exp show` readable);
    # fields {explanation} and {answer}
    target_template: list[str] = Field(min_length=1)
    # validation split carved out of train: a fraction in (0, 1) or a whole count; 0: the test split
    # doubles as validation (the notebook's protocol). The system prompt is a file (dvc.yaml names it).
    validation_size: Real = Field(ge=0)
    validation_seed: int = Field(ge=0)
    train_limit: int = Field(ge=0)  # 0 keeps every training problem (after the validation split)
    test_limit: int = Field(ge=0)  # 0 keeps every test problem


@_section
class ModelParams:
    """The base model and how it is loaded."""

    name: str  # hub id, local directory, or pkg:<python package> holding a GGUF file
    revision: str  # hub revision; ignored for local paths
    gguf_file: str  # GGUF file inside `name` to load (and convert once); "" for none
    load_in_4bit: bool
    dtype: Literal["bfloat16", "float16", "float32"]
    max_seq_length: int = Field(ge=16)
    trust_remote_code: bool


@_section
class LoraParams:
    """The LoRA adapter."""

    r: int = Field(ge=1)
    alpha: Real = Field(gt=0)
    dropout: Real = Field(ge=0, le=1)
    bias: Literal["none", "all", "lora_only"]
    use_rslora: bool
    target_modules: list[Projection] = Field(min_length=1)
    gradient_checkpointing: bool | Literal["auto"]  # "auto": the training code decides from the memory


@_section
class TrainParams:
    """The optimisation loop (TRL SFTTrainer)."""

    backend: Literal["auto", "unsloth", "peft"]
    per_device_train_batch_size: int = Field(ge=1)
    per_device_eval_batch_size: int = Field(ge=1)
    gradient_accumulation_steps: int = Field(ge=1)
    learning_rate: Real = Field(gt=0, le=1)
    weight_decay: Real = Field(ge=0)
    num_train_epochs: Real = Field(gt=0)
    max_steps: int = Field(ge=-1)  # -1 trains num_train_epochs; a positive value overrides it
    lr_scheduler_type: Scheduler
    warmup_steps: int = Field(ge=0)
    logging_steps: int = Field(ge=1)
    eval_steps: int = Field(ge=1)
    save_steps: int = Field(ge=1)
    save_total_limit: int = Field(ge=1)
    load_best_model_at_end: bool
    optim: Optimizer
    padding_free: bool  # pack sequences without padding (needs a flash-attention kernel)
    pad_to_multiple_of: int = Field(ge=0)  # padded batches: round each batch's length up; 0 = no rounding
    cuda_graphs: bool  # unsloth backend: replay its compiled layers as CUDA graphs
    eval_limit: int = Field(ge=0)  # 0 evaluates on the whole validation split
    seed: int = Field(ge=0)
    gpus: Gpus  # torchrun processes (vigsm.distributed); 1: no launcher


@_section
class GenerateParams:
    """Decoding the test split."""

    batch_size: int = Field(ge=1)  # rows decoded together (slots); a finished row's slot is refilled
    base_16bit: bool  # decode from a 16-bit copy of the dequantised base (false: the 4-bit base)
    merge_adapter: bool  # fold the adapter into the 16-bit weights (rounds small updates away)
    adapter_dtype: Literal["float32", "compute"]  # the separate adapter's weights: as PEFT loads them, or dtype
    max_new_tokens: int = Field(ge=1)
    do_sample: bool  # false: greedy, deterministic and comparable across experiments
    temperature: Real = Field(gt=0)
    top_p: Real = Field(gt=0, le=1)
    limit: int = Field(ge=0)  # 0: the whole test split; 100: the notebook's protocol
    seed: int = Field(ge=0)
    stop_at_answer: bool  # end a row once its "### <number>" line is complete (vigsm.stopping)
    stop_loops: bool  # end a row whose last tokens repeat one short cycle (vigsm.stopping)
    cuda_graphs: bool  # on a GPU: a preallocated cache, each step a CUDA graph (vigsm.decoding)
    gpus: Gpus  # processes, each decoding a shard (vigsm.distributed)


@_section
class ScoreParams:
    """Scoring and intervals."""

    confidence: Real = Field(gt=0, le=0.999)
    bootstrap_samples: int = Field(ge=100)
    seed: int = Field(ge=0)
    report_examples: int = Field(ge=0)


@_section
class RLParams:
    """GRPO on top of the SFT adapter (TRL GRPOTrainer); ``steps: 0`` turns it off."""

    steps: int = Field(ge=0)  # optimiser steps; 0: the rl stage passes the SFT adapter through
    learning_rate: Real = Field(gt=0, le=1)
    num_generations: int = Field(ge=2)  # completions per prompt (the group)
    prompts_per_step: int = Field(ge=1)  # rows per step = prompts_per_step x num_generations
    max_completion_length: int = Field(ge=1)
    temperature: Real = Field(gt=0)
    beta: Real = Field(ge=0)  # KL coefficient; 0: no reference model
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"]
    reward: Literal["strict", "flexible"]  # which extracted answer earns the correctness reward
    format_reward: Real = Field(ge=0)  # weight of the "### N" format reward; 0: off
    rollout: Literal["trl", "vigsm", "vigsm_graphs"]  # who decodes the rollouts (vigsm.rl.Rollouts)
    logging_steps: int = Field(ge=1)
    save_steps: int = Field(ge=1)
    seed: int = Field(ge=0)


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


# What a value of each type must be, for the errors pydantic reports by type.
_EXPECTED = {"int_type": "an integer", "bool_type": "true or false", "float_type": "a number",
             "finite_number": "a finite number", "string_type": "a string", "list_type": "a non-empty list",
             "too_short": "a non-empty list"}
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<=")}


def _bound(err: dict[str, Any]) -> tuple[str, Any]:
    key, op = _BOUNDS[err["type"]]
    value = err["ctx"][key]
    return op, int(value) if isinstance(value, float) and value.is_integer() else value  # "> 0", not "> 0.0"


def _choices(err: dict[str, Any]) -> list[str]:
    return re.findall(r"'([^']*)'", err["ctx"]["expected"])


def _problem(errs: list[dict[str, Any]]) -> str:
    """One field's errors as one phrase; several errors of one field are the members of a union."""
    err, got = errs[0], f"got {errs[0]['input']!r}"
    if len(errs) > 1:  # a union (gpus: an integer or "auto"): what each member wanted
        wanted = []
        for e in errs:
            if e["type"] == "literal_error":
                wanted.extend(repr(c) for c in _choices(e))
            elif e["type"] in _BOUNDS:
                wanted.append("an integer {} {}".format(*_bound(e)))
            else:
                wanted.append(_EXPECTED.get(e["type"], e["msg"]))
        return f"expected {' or '.join(wanted)}, {got}"
    if err["type"] == "literal_error":
        return f"{err['input']!r} is not one of {', '.join(_choices(err))}"
    if err["type"] in _BOUNDS:
        return "must be {} {}, {}".format(*_bound(err), got)
    return f"expected {_EXPECTED.get(err['type'], err['msg'])}, {got}"


def parse_section(name: str, raw: Any, cls: type[T]) -> T:
    """Validate one section's mapping against its dataclass and build it; every problem of the section is
    reported at once, in one line, each naming its key."""
    if not isinstance(raw, dict):
        raise VigsmError(f"params: section '{name}' must be a mapping, got {type(raw).__name__}")
    fields = [f.name for f in dataclasses.fields(cls)]
    problems = [f"{name}.{k}: unknown key; allowed keys: {', '.join(fields)}" for k in raw if k not in fields]
    problems += [f"{name}.{k}: missing key" for k in fields if k not in raw]
    try:
        built = cls(**{k: v for k, v in raw.items() if k in fields})
    except ValidationError as exc:
        by_key: dict[str, list[dict[str, Any]]] = {}
        for err in exc.errors():
            if err["type"] in ("missing", "missing_argument"):
                continue  # reported above
            field_name, *rest = err["loc"]
            index = "".join(f"[{i}]" for i in rest if isinstance(i, int))  # a list item; strings: union members
            by_key.setdefault(f"{name}.{field_name}{index}", []).append(err)
        problems += [f"{key}: {_problem(errs)}" for key, errs in by_key.items()]
    if problems:
        raise VigsmError("params: " + "; ".join(problems))
    return built


def load_section(name: str, cls: type[T] | None = None, path: str | Path = "params.yaml") -> T:
    """Read ``params.yaml`` and return section ``name`` validated as its dataclass."""
    cls = cls or SECTIONS[name]
    doc = read_params(path)
    if name not in doc:
        raise VigsmError(f"params: section '{name}' is missing from {path}")
    return parse_section(name, doc[name], cls)


def as_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
