"""Batched generation over the test split, resumable and deterministic under greedy decoding.

Prompts are sorted by length so that each left-padded batch wastes little, and every finished batch is
appended and flushed to a partial file beside the output. A killed stage restarts where it stopped
(the partial file is keyed by a fingerprint of the model, adapter, params and questions); the final
file is written atomically, in the test split's order, once every question is answered.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from vigsm.answers import extract_answer, split_reasoning
from vigsm.config import GenerateParams, ModelParams, as_dict
from vigsm.io import write_jsonl


def _dir_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# The model keys that generating reads (loading, dtype, 4-bit): every key but max_seq_length, which only
# training uses. dvc.yaml declares exactly these for the generate stages, and the fingerprint hashes only
# these, so a new max_seq_length neither reruns generate nor discards its partial file.
MODEL_KEYS = ("name", "revision", "gguf_file", "load_in_4bit", "dtype", "trust_remote_code")


def fingerprint(mp: ModelParams, gp: GenerateParams, rows: list[dict], adapter_dir: Path | None) -> str:
    """A digest of what shapes the predictions: the model keys read, the generate section, the prompts
    and the adapter's files."""
    model = {k: v for k, v in as_dict(mp).items() if k in MODEL_KEYS}
    h = hashlib.sha256(json.dumps([model, as_dict(gp)], sort_keys=True).encode())
    h.update(json.dumps([[r["id"], r["prompt"]] for r in rows], ensure_ascii=False).encode())
    h.update((_dir_digest(adapter_dir) if adapter_dir else "no-adapter").encode())
    return h.hexdigest()[:16]


def read_partial(partial: Path, fp: str) -> dict[str, dict]:
    """Rows already generated under the same fingerprint; a torn last line is ignored."""
    if not partial.is_file():
        return {}
    done: dict[str, dict] = {}
    with open(partial, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    if not lines or not lines[0].strip():
        return {}
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        return {}
    if header.get("fingerprint") != fp:
        return {}
    for line in lines[1:-1]:  # the text after the last newline is either empty or torn
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        done[row["id"]] = row
    return done


def make_row(rec: dict, raw: str) -> dict[str, Any]:
    reasoning, answer_text = split_reasoning(raw)
    return {
        "id": rec["id"],
        "question": rec["question"],
        "reference": rec["completion"][0]["content"],
        "reference_explanation": rec["explanation"],
        "reference_answer": rec["answer"],
        "raw": raw,
        "reasoning": reasoning,
        "answer_text": answer_text,
        "answer": extract_answer(raw),
    }


def generation_kwargs(gp: GenerateParams, tok: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {"max_new_tokens": gp.max_new_tokens, "do_sample": gp.do_sample,
                          "pad_token_id": tok.pad_token_id}
    if gp.do_sample:
        kw.update(temperature=gp.temperature, top_p=gp.top_p)
    else:
        # Greedy: clear sampling knobs a generation_config may carry, so no warning and no surprise.
        kw.update(temperature=None, top_p=None, top_k=None)
    return kw


def generate_batch(model: Any, tok: Any, prompts: list[list[dict]], gp: GenerateParams,
                   seed: int) -> tuple[list[str], int]:
    """Generate one batch (left-padded); return the decoded new text of each prompt and the number of
    new tokens produced (end-of-turn tokens included, the padding after them not)."""
    import torch

    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**enc, **generation_kwargs(gp, tok))
    new = out[:, enc["input_ids"].shape[1]:]
    return tok.batch_decode(new, skip_special_tokens=True), int((new != tok.pad_token_id).sum())


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an accelerator out-of-memory error (torch raises ``torch.OutOfMemoryError``)."""
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


def _release_cuda_cache() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sort_by_length(rows: list[dict], tok: Any) -> list[dict]:
    """Rows ordered by prompt length (ties by id), so each left-padded batch holds similar lengths."""

    from vigsm.modeling import chat_prompt_ids

    return sorted(rows, key=lambda r: (len(chat_prompt_ids(tok, r["prompt"])), r["id"]))


def run_generation(model: Any, tok: Any, rows: list[dict], gp: GenerateParams, out_path: Path,
                   fp: str) -> dict[str, Any]:
    """Generate for every row (resuming from the partial file), then write ``out_path`` atomically.

    Returns the question count, how many were resumed, the batch size that fitted, and the number of
    new tokens generated by this call (resumed questions excluded).
    """
    from tqdm.auto import tqdm

    partial = out_path.with_name(out_path.name + ".partial")
    done = read_partial(partial, fp)
    resumed = len(done)
    todo = sort_by_length([r for r in rows if r["id"] not in done], tok)
    partial.parent.mkdir(parents=True, exist_ok=True)
    mode = "a" if done else "w"
    with open(partial, mode, encoding="utf-8") as fh:
        if not done:
            fh.write(json.dumps({"fingerprint": fp}) + "\n")
        bar = tqdm(total=len(rows), initial=resumed, desc=f"generate {out_path.stem}", unit="q")
        size, start, new_tokens = gp.batch_size, 0, 0
        while start < len(todo):
            batch = todo[start:start + size]
            # The seed depends on the batch's first id, not its position, so a resumed run samples alike.
            seed = gp.seed + int(hashlib.sha256(batch[0]["id"].encode()).hexdigest()[:8], 16)
            try:
                outs, n_new = generate_batch(model, tok, [r["prompt"] for r in batch], gp, seed)
            except Exception as exc:
                if not is_out_of_memory(exc) or size == 1:
                    raise
                size = max(1, size // 2)
                print(f"[vigsm] out of GPU memory at batch {len(batch)}; retrying at {size}", flush=True)
                _release_cuda_cache()
                continue
            for rec, raw in zip(batch, outs, strict=True):
                row = make_row(rec, raw)
                done[rec["id"]] = row
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(batch))
            start += len(batch)
            new_tokens += n_new
        bar.close()
    write_jsonl(out_path, (done[r["id"]] for r in rows))
    partial.unlink()
    return {"questions": len(rows), "resumed": resumed, "batch_size_used": size if todo else None,
            "new_tokens": new_tokens}
