"""Ask the trained model one question, streaming its answer, then print the extracted final answer.

Usage::

    python -m vigsm.ask "Lan có 2 cây bút, hôm sau mua thêm 1 cây. Lan có bao nhiêu cây bút?"
    python -m vigsm.ask --rev my-experiment "..."      # the adapter and params of a git rev or experiment
    python -m vigsm.ask --base "..."                   # the base model, no adapter

The prompt is built exactly as the pipeline builds it: the system prompt file that prepare reads and
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
from vigsm.paths import adapter_dir as pipeline_adapter_dir
from vigsm.paths import system_prompt_file
from vigsm.revisions import resolve_rev


def params_at(rev: str | None, params_path: str = "params.yaml") -> dict[str, Any]:
    """The params file ``params_path`` in the workspace, or as of ``rev`` through DVC."""
    if rev is None:
        return read_params(params_path)
    import dvc.api

    return dvc.api.params_show(params_path, rev=resolve_rev(rev))


def system_prompt_at(rev: str | None, params: dict[str, Any]) -> str:
    """The system prompt file prepare reads, in the workspace or as of ``rev``; ``params`` is that
    revision's params (before the prompt had its own file it was ``data.system_prompt`` there)."""
    from vigsm.data import read_system_prompt

    if rev is None:
        return read_system_prompt(system_prompt_file())
    import dvc.api

    commit = resolve_rev(rev)
    try:
        path = system_prompt_file(rev=commit)
    except VigsmError:
        # A revision from before the prompt moved to its own file kept it in params.yaml.
        legacy = params.get("data", {}).get("system_prompt")
        if isinstance(legacy, str):
            return legacy
        raise
    try:
        return dvc.api.read(path, rev=commit, encoding="utf-8")
    except Exception as exc:
        raise VigsmError(f"cannot read {path} at {rev}: {type(exc).__name__}: {exc}") from exc


def fetch_adapter(rev: str, dest: Path) -> Path:
    """Copy the train stage's adapter as of ``rev`` (git revision or experiment) into ``dest`` through DVC;
    its path is the one dvc.yaml declares at that revision."""
    from dvc.api import DVCFileSystem

    commit = resolve_rev(rev)
    path = pipeline_adapter_dir(rev=commit)
    fs = DVCFileSystem(".", rev=commit)
    try:
        fs.get(path, str(dest), recursive=True)
    except Exception as exc:
        raise VigsmError(f"cannot fetch {path} at {rev}: {type(exc).__name__}: {exc}; try `dvc pull`") from exc
    return dest


def ask(question: str, *, rev: str | None = None, base: bool = False, max_new_tokens: int | None = None,
        adapter: str | None = None, stream: bool = True, params: str = "params.yaml") -> tuple[str, str | None]:
    """Generate a greedy answer; return (text, extracted answer). Streams to stdout when asked.

    ``max_new_tokens`` defaults to the run's ``generate.max_new_tokens`` (the cap its answers were scored
    with), or 512 where its params have none."""
    doc = params_at(rev, params)
    if max_new_tokens is None:
        max_new_tokens = int((doc.get("generate") or {}).get("max_new_tokens") or 512)
    system_prompt = system_prompt_at(rev, doc)
    model_p = parse_section("model", doc["model"], SECTIONS["model"])
    from vigsm.modeling import check_device, load_with_adapter

    check_device(model_p)
    with tempfile.TemporaryDirectory() as tmp:
        if base:
            adapter_dir = None
        elif rev is not None:
            adapter_dir = str(fetch_adapter(rev, Path(tmp) / "adapter"))
        else:
            adapter_dir = adapter or pipeline_adapter_dir()
        model, tok = load_with_adapter(model_p, adapter_dir)
    import torch
    from transformers import TextStreamer

    from vigsm.decoding import Decoding, decode
    from vigsm.modeling import chat_prompt_ids

    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]
    streamer = TextStreamer(tok, skip_special_tokens=True) if stream else None
    got: list[int] = []

    def on_token(_: int, token: int) -> None:
        if streamer is not None:
            streamer.put(torch.tensor([token]))

    def on_finish(_: int, tokens: list[int], reason: str) -> None:
        got.extend(tokens)
        if streamer is not None:
            streamer.end()

    # The generate stage's decoding, one slot, greedy, until the end of turn or max_new_tokens.
    decode(model, tok, [chat_prompt_ids(tok, messages)], Decoding(max_new_tokens=max_new_tokens), slots=1,
           on_finish=on_finish, on_token=on_token)
    answer_text = tok.decode(got, skip_special_tokens=True)
    return answer_text, extract_answer(answer_text, strict=False)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m vigsm.ask", description=__doc__.splitlines()[0])
    ap.add_argument("question")
    ap.add_argument("--rev", help="git revision or DVC experiment to take the adapter and params from")
    ap.add_argument("--adapter", help="adapter directory in the workspace (default: the train stage's, from dvc.yaml)")
    ap.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    ap.add_argument("--base", action="store_true", help="ask the base model, without the adapter")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="length cap (default: the run's generate.max_new_tokens)")
    args = ap.parse_args()
    _, answer = ask(args.question, rev=args.rev, base=args.base, adapter=args.adapter,
                    max_new_tokens=args.max_new_tokens, params=args.params)
    print(f"\n=> final answer: {answer if answer is not None else '(none found)'}")


if __name__ == "__main__":
    run_cli(main)
