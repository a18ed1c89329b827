"""Building models for training and inference: the quantisation and LoRA configs, the backend choice,
the transformers and unsloth loaders, the tokenizer, dequantisation of a 4-bit base, and adapters.

Where the weights come from is :mod:`vigsm.weights`; which attention kernels they run is
:mod:`vigsm.attention`.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from vigsm.attention import configure_attention, use_decode_attention
from vigsm.config import LoraParams, ModelParams
from vigsm.device import cuda_available
from vigsm.errors import VigsmError
from vigsm.hub import OFFLINE_HINT
from vigsm.weights import resolve_model

# bitsandbytes (>= 0.49), on a CPU with AVX512-BF16, warns when it is imported (by peft or transformers, after
# this module) that the optional `kernels` package is missing for its CPU 4-bit matmul. vigsm never runs
# 4-bit on a CPU (check_device refuses it), so the line is noise in every stage's log, and a second line
# before a stage's one-line error. Its logger keeps errors only.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def quantization_config(p: ModelParams) -> Any | None:
    """The bitsandbytes 4-bit NF4 config (double quantisation, compute in model.dtype), or None."""
    if not p.load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch_dtype(p.dtype))


def lora_config(lora_p: LoraParams) -> Any:
    """The PEFT LoRA config for a causal LM."""
    from peft import LoraConfig

    return LoraConfig(r=lora_p.r, lora_alpha=lora_p.alpha, lora_dropout=lora_p.dropout, bias=lora_p.bias,
                      use_rslora=lora_p.use_rslora, target_modules=list(lora_p.target_modules), task_type="CAUSAL_LM")


def check_device(p: ModelParams) -> None:
    """Refuse 4-bit without CUDA before anything is loaded."""
    if p.load_in_4bit and not cuda_available():
        raise VigsmError("model.load_in_4bit: 4-bit loading needs a CUDA GPU and bitsandbytes; on a CPU "
                         "set -S model.load_in_4bit=false (the offline default does)")


def choose_backend(requested: str) -> str:
    """Resolve train.backend: auto picks unsloth where CUDA and unsloth are present, else peft."""
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if requested == "unsloth":
        if not cuda_available():
            raise VigsmError("train.backend: unsloth needs a CUDA GPU; use -S train.backend=peft (or auto)")
        if not has_unsloth:
            raise VigsmError("train.backend: unsloth is not installed; pip install -e '.[gpu]' or use peft")
        return "unsloth"
    if requested == "auto":
        return "unsloth" if has_unsloth and cuda_available() else "peft"
    return "peft"


def _load_error(p: ModelParams, source: str, exc: Exception) -> VigsmError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return VigsmError(f"could not load model '{source}' (model.name={p.name}, revision {p.revision}): "
                      f"{type(exc).__name__}: {first}; {OFFLINE_HINT}")


def chat_prompt_ids(tok: Any, messages: list[dict]) -> list[int]:
    """Token ids of ``messages`` under the chat template, ending with the assistant header."""
    ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)  # some versions return a BatchEncoding


def load_tokenizer(p: ModelParams, source: str, padding_side: str = "right") -> Any:
    """The tokenizer, with a pad token that is not the end-of-turn token where one exists."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source, revision=p.revision, trust_remote_code=p.trust_remote_code)
    except Exception as exc:
        raise _load_error(p, source, exc) from exc
    if tok.pad_token is None:
        # Padding with the end-of-turn token would be masked out of the labels wherever it pads; a
        # distinct pad token keeps the real "<|im_end|>" a learned target.
        pad = "<|endoftext|>" if "<|endoftext|>" in tok.get_vocab() else tok.eos_token
        tok.pad_token = pad
    tok.padding_side = padding_side
    backend = getattr(tok, "backend_tokenizer", None)
    if getattr(tok, "clean_up_tokenization_spaces", False) and type(getattr(backend, "model", None)).__name__ == "BPE":
        # transformers skips this clean-up for BPE tokenizers (Qwen's, SmolLM2's): it would strip the spaces
        # before punctuation. Off, the decoded text is the same and it stops warning on every decode.
        tok.clean_up_tokenization_spaces = False
    return tok


def load_model(p: ModelParams, source: str, *, device_map: Any = None) -> Any:
    """The base causal LM with transformers (+ bitsandbytes 4-bit where asked), SDPA attention."""
    from transformers import AutoModelForCausalLM

    check_device(p)
    configure_attention()
    kwargs: dict[str, Any] = {"revision": p.revision, "dtype": torch_dtype(p.dtype),
                              "trust_remote_code": p.trust_remote_code, "attn_implementation": "sdpa",
                              "use_safetensors": True}
    qc = quantization_config(p)
    if qc is not None:
        kwargs["quantization_config"] = qc
    if cuda_available():
        import torch

        # The current device: 0, or this process's own under several (vigsm.distributed sets it).
        kwargs["device_map"] = device_map or {"": torch.cuda.current_device()}
    try:
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except VigsmError:
        raise
    except Exception as exc:
        raise _load_error(p, source, exc) from exc


def load_unsloth(p: ModelParams, source: str) -> tuple[Any, Any]:
    """Base model and tokenizer through unsloth's FastLanguageModel (imported only here: needs a GPU)."""
    from unsloth import FastLanguageModel

    configure_attention()
    try:
        model, tok = FastLanguageModel.from_pretrained(
            model_name=source, max_seq_length=p.max_seq_length, dtype=torch_dtype(p.dtype),
            load_in_4bit=p.load_in_4bit, revision=p.revision, trust_remote_code=p.trust_remote_code)
    except Exception as exc:
        raise _load_error(p, source, exc) from exc
    return model, tok


def dequantize_to_16bit(model: Any, dtype: Any) -> Any:
    """Replace every bitsandbytes 4-bit linear layer by a plain 16-bit one holding its dequantised weights.

    The weights are exactly the ones the adapter was trained against (the NF4 base, dequantised), so the
    adapter on top gives the trained function without the per-step dequantisation cost.
    """
    import bitsandbytes as bnb
    import torch

    for _, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, bnb.nn.Linear4bit):
                weight = bnb.functional.dequantize_4bit(child.weight.data, child.weight.quant_state).to(dtype)
                linear = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                         device=weight.device, dtype=dtype)
                linear.weight.data.copy_(weight)
                if child.bias is not None:
                    linear.bias.data.copy_(child.bias.data.to(dtype))
                setattr(module, child_name, linear)
    for attr in ("is_loaded_in_4bit", "is_quantized"):
        if hasattr(model, attr):
            setattr(model, attr, False)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def prepare_kbit_base(model: Any, p: ModelParams, *, gradient_checkpointing: bool) -> Any:
    """A base as the PEFT backend trains on it: a 4-bit one goes through PEFT's
    ``prepare_model_for_kbit_training`` (norms, embeddings and head upcast to float32); others are as loaded."""
    if not p.load_in_4bit:
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)


def load_with_adapter(p: ModelParams, adapter_dir: str | None, *, base_16bit: bool = True,
                      merge_adapter: bool = False, adapter_dtype: str = "float32") -> tuple[Any, Any]:
    """Base model (and adapter, if given) for inference, with a left-padding tokenizer.

    ``base_16bit`` (the default) decodes from a 16-bit copy of a 4-bit base, dequantised once: the same
    weights the adapter was trained against, without dequantising them at every step. ``False`` keeps the
    notebook's 4-bit base. ``merge_adapter`` folds the adapter into 16-bit weights; in bfloat16 that
    rounds away updates smaller than half a unit in the last place, so by default the adapter stays
    separate. PEFT loads it in float32 (``adapter_dtype="float32"``), so each adapted projection casts its
    input up, multiplies in float32 and casts back; ``"compute"`` casts the adapter's weights to the
    model's dtype instead (:func:`adapter_to_dtype`), computing it in bfloat16 as training's autocast and
    unsloth's kernels did, in fewer kernels. A base that is not 4-bit has no dequantisation to do.
    Decoding steps run :func:`vigsm.attention.gqa_decode_attention` (the same function, no repeated K/V
    heads).
    """
    source = resolve_model(p)
    tok = load_tokenizer(p, source, padding_side="left")
    model = use_decode_attention(load_model(p, source))
    if p.load_in_4bit and base_16bit:
        model = dequantize_to_16bit(model, torch_dtype(p.dtype))
    if adapter_dir:
        model = attach_adapter(model, adapter_dir, p)
        if merge_adapter and (base_16bit or not p.load_in_4bit):  # a 4-bit base cannot take a merge
            model = model.merge_and_unload()
        elif adapter_dtype == "compute":
            adapter_to_dtype(model, torch_dtype(p.dtype))
    model.eval()
    return model, tok


def adapter_to_dtype(model: Any, dtype: Any) -> None:
    """Cast every LoRA tensor of ``model`` (PEFT's ``lora_*`` parameters: A and B, embedding and DoRA ones
    alike) to ``dtype``, in place. PEFT then feeds each adapter its input uncast (it casts the input to the
    adapter's dtype, which is now the model's)."""
    for name, param in model.named_parameters():
        if "lora_" in name and param.dtype != dtype:
            param.data = param.data.to(dtype)


def attach_adapter(model: Any, adapter_dir: str, p: ModelParams) -> Any:
    """Load a saved LoRA adapter onto ``model``; a mismatch with the base is a clear error."""
    from peft import PeftModel

    adapter = Path(adapter_dir)
    if not (adapter / "adapter_config.json").is_file():
        raise VigsmError(f"adapter {adapter} has no adapter_config.json; run the train stage (dvc repro train) "
                         f"or dvc pull it")
    try:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise VigsmError(f"adapter {adapter} does not match base model '{p.name}': {first}; retrain it or "
                         f"set model.name to the base it was trained on") from exc
