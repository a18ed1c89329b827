"""The static generation path: one left-padded ``model.generate`` batch, as the generate stage decoded
before its slot decoder (:mod:`vigsm.decoding`), and its prompt order. The GPU test tier (tests/test_gpu.py)
and the benchmarks (gpu_bench.py, generation_paths.py, reload_precision.py) compare against it; the pipeline
does not use it. tests/ import it through pytest's ``pythonpath`` (pyproject.toml); the benchmarks put
tests/support on their path.
"""

from __future__ import annotations

from typing import Any

from vigsm.config import GenerateParams


def generation_kwargs(gen_p: GenerateParams, tok: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {"max_new_tokens": gen_p.max_new_tokens, "do_sample": gen_p.do_sample,
                          "pad_token_id": tok.pad_token_id}
    if gen_p.do_sample:
        kw.update(temperature=gen_p.temperature, top_p=gen_p.top_p)
    else:
        # Greedy: clear sampling knobs a generation_config may carry, so no warning and no surprise.
        kw.update(temperature=None, top_p=None, top_k=None)
    return kw


def generate_batch(model: Any, tok: Any, prompts: list[list[dict]], gen_p: GenerateParams,
                   seed: int) -> tuple[list[str], int]:
    """Generate one batch (left-padded); return the decoded new text of each prompt and the number of
    new tokens produced (end-of-turn tokens included, the padding after them not)."""
    import torch

    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**enc, **generation_kwargs(gen_p, tok))
    new = out[:, enc["input_ids"].shape[1]:]
    return tok.batch_decode(new, skip_special_tokens=True), int((new != tok.pad_token_id).sum())


def sort_by_length(rows: list[dict], tok: Any) -> list[dict]:
    """Rows ordered by prompt length (ties by id), so each left-padded batch holds similar lengths."""
    from vigsm.modeling import chat_prompt_ids

    return sorted(rows, key=lambda r: (len(chat_prompt_ids(tok, r["prompt"])), r["id"]))
