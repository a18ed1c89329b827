"""Whether a training run needs gradient checkpointing: an estimate of its peak GPU memory without it.

``lora.gradient_checkpointing: auto`` turns checkpointing off where the run fits the free GPU memory with
headroom, because recomputing every layer in the backward pass costs time (11,807 against 13,769 tokens/s
for the 3B-shaped model, benchmarks/results/2026-11-29-h200-training.json), and keeps it on where it does
not (a 16 GB card with the 3B model). :func:`decide` is the rule, a pure function of the figures (no torch);
:func:`choose` reads the figures (the model's config, ``torch.cuda.mem_get_info``) and calls it.

The estimate, in GB (1e9 bytes), of a step without checkpointing::

    weights   4-bit: the quantised parameters at 0.516 bytes (NF4 plus double-quantised scales) and the
              embeddings / head at 2 bytes (4 under the PEFT backend, whose kbit preparation casts them to
              float32); otherwise every parameter at the dtype's size
    adapter   LoRA parameters (rank x (in + out) for each target projection of each layer) x 16 bytes:
              a float32 weight, its gradient and two float32 Adam moments (8-bit optimisers need less)
    per token (rows per step per process x the padded sequence length)
              LAYER_BYTES x layers x (hidden + intermediate)    what the layers keep for the backward
              + LOGIT_BYTES x vocab                             bf16 logits and the float32 copy the loss takes
              x PEFT_FACTOR under the PEFT backend (transformers' eager layers keep more than unsloth's)

Calibration, against the measured peaks (``torch.cuda.max_memory_allocated``) in benchmarks/results/:

- the Qwen2.5-3B-shaped model, 4-bit, LoRA r=32 on the seven projections, unsloth, batch 12 padded to a
  multiple of 64 on the bundled sample (longest row 368 tokens, so 12 x 384 tokens at the peak),
  checkpointing off: 14.50 GB, and 15.09 GB with CUDA graphs (2026-11-29-h200-training.json; 2.9x the
  notebook baseline's 4.99 GB); padding-free, checkpointing off: 13.82 GB (2026-11-29-h200.json). The
  estimate gives 15.87 GB (5% above the highest). LAYER_BYTES = 4 is the 3.64 bytes these peaks need once
  weights, adapter and logits are counted, rounded up.
- with checkpointing on, the same model peaked at 3.48 GB (3.53 GB over the 3B pipeline's 1,196 steps,
  2026-11-29-h200-defaults.json) and SmolLM2-135M at 0.42-0.49 GB (2026-11-29-h200.json, the defaults
  file's learning check): below the checkpointing-off estimates for the same batches (15.87 and 2.79 GB),
  as they must be.
- PEFT_FACTOR = 3 is not measured (no PEFT run without checkpointing was recorded); it comes from counting
  the tensors transformers' Qwen2 layer with bitsandbytes and PEFT keeps per token (about 150 KB a layer
  for the 3B against the 47 KB unsloth's measured peak implies), and errs towards keeping checkpointing.

Headroom: checkpointing goes off only when ``HEADROOM x estimate + RESERVE_GB <= free``: 25% over the
estimate for the caching allocator's reserved-but-unused blocks (free memory counts them as taken) and
1 GB for what ``max_memory_allocated`` does not count (cuBLAS and Triton workspaces, CUDA-graph pools,
NCCL buffers). The length first sized is ``model.max_seq_length`` (the longest a collated row can be);
where that does not fit, the data's longest tokenized row (:func:`choose`). What this gives for the shipped
params.yaml (batch 12, max_seq_length 1536) is in ``tests/test_memory.py``: the 3B at 12 x 1536 tokens
(estimate 54.5 GB, 69.1 with headroom) turns checkpointing off on an H200 (139 GiB free) and does not fit
a 16 or a 24 GB card; on rows as long as the bundled sample's (368 tokens, padded to 384: estimate 15.9 GB,
20.8 with headroom) a 24 GB card turns it off and a 16 GB card keeps it. SmolLM2-135M turns it off on all
three (10.4 GB at 1536).

On a machine without CUDA ``auto`` means off: checkpointing exists to save accelerator memory; on the
CPU the activations live in host memory (the offline run's SmolLM2 at batch 4 x 512 tokens needs well
under 1 GB of them), free host memory is no bound the process can rely on (swap, other processes), and
recomputing every layer would only make the CPU run slower.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vigsm.config import LoraParams, ModelParams, TrainParams

GB = 1e9
NF4_BYTES = 0.516  # 4 bits + an 8-bit absmax per 64 weights + a float32 per 256 absmax (double quantisation)
ADAPTER_BYTES = 16  # per LoRA parameter: float32 weight, gradient and two Adam moments
LAYER_BYTES = 4.0  # per token, layer and unit of (hidden + intermediate): fitted to the 3B peaks above
LOGIT_BYTES = 6.0  # per token and vocabulary entry: bf16 logits and their float32 copy in the loss
PEFT_FACTOR = 3.0  # per-token cost of the PEFT backend's eager layers against unsloth's (counted, not measured)
HEADROOM = 1.25  # the estimate must fit 1.25 times over ...
RESERVE_GB = 1.0  # ... with 1 GB to spare besides
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class ModelShape:
    """The figures of a decoder-only transformer the estimate needs (from its config)."""

    parameters: int  # every parameter of the base, embeddings (and an untied head) included
    hidden: int
    intermediate: int  # the MLP's inner width
    layers: int
    vocab: int
    kv_dim: int  # key/value heads x head size (hidden for plain multi-head attention)
    tied: bool  # the output head shares the input embeddings


@dataclass(frozen=True)
class Choice:
    """Gradient checkpointing for one run: on or off, why, and the figures the rule used."""

    enabled: bool
    reason: str
    estimate_gb: float | None = None  # the peak estimated with checkpointing off
    free_gb: float | None = None  # free GPU memory before the model was loaded
    tokens: int | None = None  # rows x padded length the estimate assumed

    def metrics(self) -> dict[str, Any]:
        """The keys metrics/train.json records (the figures only where the rule computed them)."""
        out: dict[str, Any] = {"gradient_checkpointing": self.enabled, "gradient_checkpointing_reason": self.reason}
        if self.estimate_gb is not None:
            out["memory_estimate_gb"] = round(self.estimate_gb, 2)
        if self.free_gb is not None:
            out["free_gb"] = round(self.free_gb, 2)
        return out


def padded_length(max_seq_length: int, pad_to_multiple_of: int) -> int:
    """The longest a training row can be once collated: truncated to ``max_seq_length``, then rounded up."""
    if pad_to_multiple_of <= 0:
        return max_seq_length
    return math.ceil(max_seq_length / pad_to_multiple_of) * pad_to_multiple_of


def lora_parameters(shape: ModelShape, rank: int, targets: list[str] | tuple[str, ...]) -> int:
    """LoRA parameters: rank x (in + out features) for each target projection of each layer."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_dim
    sizes = {"q_proj": h + h, "k_proj": h + kv, "v_proj": h + kv, "o_proj": h + h,
             "gate_proj": h + i, "up_proj": h + i, "down_proj": i + h}
    return rank * shape.layers * sum(sizes[t] for t in targets)


def estimate_gb(shape: ModelShape, *, load_in_4bit: bool, dtype: str, rows: int, seq_len: int, rank: int,
                targets: list[str] | tuple[str, ...], backend: str) -> float:
    """Peak GPU memory (GB) of a training step without gradient checkpointing (module docstring)."""
    embeddings = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    if load_in_4bit:
        weights = (shape.parameters - embeddings) * NF4_BYTES + embeddings * (2 if backend == "unsloth" else 4)
    else:
        weights = shape.parameters * DTYPE_BYTES[dtype]
    adapter = lora_parameters(shape, rank, targets) * ADAPTER_BYTES
    per_token = LAYER_BYTES * shape.layers * (shape.hidden + shape.intermediate) + LOGIT_BYTES * shape.vocab
    if backend != "unsloth":
        per_token *= PEFT_FACTOR
    return (weights + adapter + per_token * rows * seq_len) / GB


def decide(shape: ModelShape, *, load_in_4bit: bool, dtype: str, rows: int, seq_len: int, rank: int,
           targets: list[str] | tuple[str, ...], backend: str, free_gb: float) -> Choice:
    """The ``auto`` rule: off when ``HEADROOM x estimate + RESERVE_GB <= free_gb``, else on."""
    est = estimate_gb(shape, load_in_4bit=load_in_4bit, dtype=dtype, rows=rows, seq_len=seq_len, rank=rank,
                      targets=targets, backend=backend)
    need = HEADROOM * est + RESERVE_GB
    fits = need <= free_gb
    reason = (f"auto: {rows} x {seq_len} tokens need about {est:.1f} GB without checkpointing, "
              f"{need:.1f} GB with headroom; {free_gb:.1f} GB free: {'off' if fits else 'on'}")
    return Choice(enabled=not fits, reason=reason, estimate_gb=est, free_gb=free_gb, tokens=rows * seq_len)


def shape_from_config(config: Any) -> ModelShape | None:
    """The figures of a transformers config of a llama-like model (Qwen2, Llama, Mistral, SmolLM2), or
    None where it lacks one of them."""
    try:
        h, i = int(config.hidden_size), int(config.intermediate_size)
        layers, vocab = int(config.num_hidden_layers), int(config.vocab_size)
        heads = int(config.num_attention_heads)
    except (AttributeError, TypeError):
        return None
    head_dim = int(getattr(config, "head_dim", None) or h // heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads) * head_dim
    tied = bool(getattr(config, "tie_word_embeddings", True))
    # per layer: q, k, v (with biases, as Qwen2 has), o, the three MLP projections, two norms
    layer = h * heads * head_dim + 2 * h * kv + heads * head_dim + 2 * kv + heads * head_dim * h + 3 * h * i + 2 * h
    params = vocab * h * (1 if tied else 2) + layers * layer + h
    return ModelShape(parameters=params, hidden=h, intermediate=i, layers=layers, vocab=vocab, kv_dim=kv,
                      tied=tied)


def free_gpu_gb() -> float:
    """Free memory on this process's current CUDA device, in GB."""
    import torch

    free, _total = torch.cuda.mem_get_info(torch.cuda.current_device())
    return free / GB


def choose_batch(model_p: ModelParams, lora_p: LoraParams, *, rows: int, seq_len: int, backend: str, source: str,
                 shorter: Callable[[], tuple[int, str]] | None = None) -> Choice:
    """Resolve ``lora.gradient_checkpointing`` for steps of ``rows`` sequences of at most ``seq_len`` tokens.

    ``shorter``, where given, is called only when ``seq_len`` does not fit, for the padded length of the
    data's longest row and a phrase saying so (tokenizing every row costs seconds that a fitting run need
    not spend); the rule is then applied again at that length, if it is shorter.
    """
    from vigsm.device import cuda_available

    if lora_p.gradient_checkpointing != "auto":
        return Choice(enabled=bool(lora_p.gradient_checkpointing), reason="set in params.yaml")
    if not cuda_available():
        return Choice(enabled=False, reason="auto: no CUDA device (on the CPU checkpointing only costs time)")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, revision=model_p.revision, trust_remote_code=model_p.trust_remote_code)
    shape = shape_from_config(getattr(config, "text_config", None) or config)
    if shape is None:
        return Choice(enabled=True, reason=f"auto: cannot size a {type(config).__name__}; kept on")
    figures = dict(load_in_4bit=model_p.load_in_4bit, dtype=model_p.dtype, rows=rows, rank=lora_p.r,
                   targets=lora_p.target_modules,
                   backend=backend, free_gb=free_gpu_gb())
    choice = decide(shape, seq_len=seq_len, **figures)
    if choice.enabled and shorter is not None:
        length, why = shorter()
        if length < seq_len:
            choice = decide(shape, seq_len=length, **figures)
            choice = dataclasses.replace(choice, reason=f"{choice.reason} ({why})")
    return choice


def choose(model_p: ModelParams, lora_p: LoraParams, train_p: TrainParams, *, backend: str, source: str,
           longest: Callable[[], int] | None = None) -> Choice:
    """Resolve ``lora.gradient_checkpointing`` for a training run (``train_p`` holds this process's batch).

    ``auto`` first sizes rows of ``model.max_seq_length`` (padded up to ``train.pad_to_multiple_of``), the
    longest a collated batch can be. Where that does not fit and ``longest`` is given, it is called for
    the tokenized length of the data's longest row, and the rule is applied again at that length (rounded
    up likewise).
    """
    shorter = None
    if longest is not None:
        def shorter() -> tuple[int, str]:  # longer rows are truncated to max_seq_length
            rows_max = min(longest(), model_p.max_seq_length)
            return (padded_length(rows_max, train_p.pad_to_multiple_of),
                    f"the longest row has {rows_max} tokens; max_seq_length {model_p.max_seq_length}")

    return choose_batch(model_p, lora_p, rows=train_p.per_device_train_batch_size,
                        seq_len=padded_length(model_p.max_seq_length, train_p.pad_to_multiple_of), backend=backend,
                        source=source, shorter=shorter)


def most_cautious(choices: list[Choice]) -> Choice:
    """One choice for every process of a run: on if any process needs it, with the least free memory's
    figures (the processes' GPUs may differ in what is free)."""
    on = [c for c in choices if c.enabled]
    pool = on or choices
    return min(pool, key=lambda c: c.free_gb if c.free_gb is not None else math.inf)
