"""Ask the trained model one question, streaming its answer, then print the extracted final answer.

Usage::

    python -m vigsm.ask "Lan có 2 cây bút, hôm sau mua thêm 1 cây. Lan có bao nhiêu cây bút?"
    python -m vigsm.ask --rev my-experiment "..."      # the adapter and params of a git rev or experiment
    python -m vigsm.ask --base "..."                   # the base model, no adapter

The prompt is built exactly as the pipeline builds it: the system prompt of ``data/system_prompt.txt`` and
the model's chat template. With ``--rev``, the adapter, ``params.yaml`` and the system prompt are read at
that revision through DVC
(from the local cache, or the remote after ``dvc pull``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from vigsm.answers import extract_answer
from vigsm.config import SECTIONS, parse_section, read_params
from vigsm.errors import VigsmError, run_cli

ADAPTER = "models/adapter"
SYSTEM_PROMPT = "data/system_prompt.txt"  # prepare's dependency in dvc.yaml


def params_at(rev: str | None, params_path: str = "params.yaml") -> dict[str, Any]:
    if rev is None:
        return read_params(params_path)
    import dvc.api

    from vigsm.compare import resolve_rev

    return dvc.api.params_show("params.yaml", rev=resolve_rev(rev))


def system_prompt_at(rev: str | None) -> str:
    from vigsm.data import read_system_prompt

    if rev is None:
        return read_system_prompt(SYSTEM_PROMPT)
    import dvc.api

    from vigsm.compare import resolve_rev

    try:
        return dvc.api.read(SYSTEM_PROMPT, rev=resolve_rev(rev), encoding="utf-8")
    except Exception as exc:
        raise VigsmError(f"cannot read {SYSTEM_PROMPT} at {rev}: {type(exc).__name__}: {exc}") from exc


def fetch_adapter(rev: str, dest: Path) -> Path:
    """Copy models/adapter as of ``rev`` (git revision or experiment) into ``dest`` through DVC."""
    from dvc.api import DVCFileSystem

    from vigsm.compare import resolve_rev

    fs = DVCFileSystem(".", rev=resolve_rev(rev))
    try:
        fs.get(ADAPTER, str(dest), recursive=True)
    except Exception as exc:
        raise VigsmError(f"cannot fetch {ADAPTER} at {rev}: {type(exc).__name__}: {exc}; try `dvc pull`") from exc
    return dest


def ask(question: str, *, rev: str | None = None, base: bool = False, max_new_tokens: int = 512,
        adapter: str | None = None, stream: bool = True) -> tuple[str, str | None]:
    """Generate a greedy answer; return (text, extracted answer). Streams to stdout when asked."""
    doc = params_at(rev)
    system_prompt = system_prompt_at(rev)
    model_p = parse_section("model", doc["model"], SECTIONS["model"])
    from vigsm.modeling import check_device, load_with_adapter

    check_device(model_p)
    with tempfile.TemporaryDirectory() as tmp:
        if base:
            adapter_dir = None
        elif rev is not None:
            adapter_dir = str(fetch_adapter(rev, Path(tmp) / "adapter"))
        else:
            adapter_dir = adapter or ADAPTER
        model, tok = load_with_adapter(model_p, adapter_dir)
    import torch
    from transformers import TextStreamer

    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = tok(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    streamer = TextStreamer(tok, skip_prompt=True, skip_special_tokens=True) if stream else None
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                             top_k=None, pad_token_id=tok.pad_token_id, streamer=streamer)
    answer_text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return answer_text, extract_answer(answer_text, strict=False)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m vigsm.ask", description=__doc__.splitlines()[0])
    ap.add_argument("question")
    ap.add_argument("--rev", help="git revision or DVC experiment to take the adapter and params from")
    ap.add_argument("--adapter", help=f"adapter directory in the workspace (default {ADAPTER})")
    ap.add_argument("--base", action="store_true", help="ask the base model, without the adapter")
    ap.add_argument("--max-new-tokens", type=int, default=512)
    args = ap.parse_args()
    _, answer = ask(args.question, rev=args.rev, base=args.base, adapter=args.adapter,
                    max_new_tokens=args.max_new_tokens)
    print(f"\n=> final answer: {answer if answer is not None else '(none found)'}")


if __name__ == "__main__":
    run_cli(main)
