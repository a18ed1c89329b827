"""Generation over the test split: resumable per question, deterministic under greedy decoding.

Prompts are sorted by length and decoded by :func:`vigsm.decoding.decode` in ``generate.batch_size``
slots: a row leaves the batch as soon as it ends (end of turn, ``max_new_tokens``, or a stop rule of
:mod:`vigsm.stopping`) and waiting prompts take the free slots. Each answer is appended to a partial file
beside the output, flushed and fsynced, in the step it ends, and the progress bar moves per question. A
killed stage restarts where it stopped: the partial file is keyed by a fingerprint of the model, adapter,
params and questions, and only the answers still in flight are decoded again. Sampling draws from a
random stream seeded by each question's id, so a resumed run samples alike. The final file is written
atomically, in the test split's order, once every question is answered.

The static path (one left-padded ``model.generate`` batch), which the GPU tier tests and the benchmarks
compare against, lives in ``tests/support/static_generation.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vigsm.config import GenerateParams, ModelParams, as_dict
from vigsm.digest import fingerprint as digest_fingerprint
from vigsm.digest import sha256_hex
from vigsm.io import read_jsonl, write_jsonl


def _dir_digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return sha256_hex(*(part for f in files for part in (f.name, f)))


# The model keys that generating reads (loading, dtype, 4-bit): every key but max_seq_length, which only
# training uses. dvc.yaml declares exactly these for the generate stages, and the fingerprint hashes only
# these, so a new max_seq_length neither reruns generate nor discards its partial file.
MODEL_KEYS = ("name", "revision", "gguf_file", "load_in_4bit", "dtype", "trust_remote_code")


# A prediction's fields (make_row): hashed into the fingerprint, so a partial file written with other
# fields (an older version) is not resumed into this one.
ROW_FIELDS = ("id", "raw", "stop", "new_tokens")


def fingerprint(model_p: ModelParams, gen_p: GenerateParams, rows: list[dict], adapter_dir: Path | None) -> str:
    """A digest of what shapes the predictions: the model keys read, the generate section, the prompts
    and the adapter's files."""
    model = {k: v for k, v in as_dict(model_p).items() if k in MODEL_KEYS}
    questions = json.dumps([[r["id"], r["prompt"]] for r in rows], ensure_ascii=False)
    adapter = _dir_digest(adapter_dir) if adapter_dir else "no-adapter"
    return digest_fingerprint([model, as_dict(gen_p), ROW_FIELDS], questions, adapter)


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


def make_row(rec: dict, raw: str, stop: str, new_tokens: int) -> dict[str, Any]:
    """One prediction, holding only what generate knows: the question's id, the decoded text, why decoding
    stopped (``eos``, ``max_new_tokens``, ``answer`` or ``loop``) and the new token count. Score joins the
    references by id and extracts the answers itself, so an answer-rule edit reruns score alone."""
    return {"id": rec["id"], "raw": raw, "stop": stop, "new_tokens": new_tokens}


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an accelerator out-of-memory error (torch raises ``torch.OutOfMemoryError``)."""
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


def _release_cuda_cache() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def question_seed(gen_p: GenerateParams, question_id: str) -> int:
    """The sampling seed of one question: ``generate.seed`` plus a hash of its id (never its position)."""
    return gen_p.seed + int(sha256_hex(question_id)[:8], 16)


def decoding_of(gen_p: GenerateParams) -> Any:
    from vigsm.decoding import Decoding

    return Decoding(max_new_tokens=gen_p.max_new_tokens, do_sample=gen_p.do_sample, temperature=gen_p.temperature,
                    top_p=gen_p.top_p, stop_at_answer=gen_p.stop_at_answer, stop_loops=gen_p.stop_loops)


def run_generation(model: Any, tok: Any, rows: list[dict], gen_p: GenerateParams, out_path: Path,
                   fp: str) -> dict[str, Any]:
    """Generate for every row (resuming from the partial file), then write ``out_path`` atomically.

    Returns the question count, how many were resumed, the slot count that fitted (``batch_size_used``),
    and the decoding figures of this call (resumed questions excluded): ``row_steps``, ``new_tokens``,
    ``waste`` and the stop counts of :class:`vigsm.decoding.DecodeStats`.
    """
    from tqdm.auto import tqdm

    from vigsm.decoding import DecodeStats, decode
    from vigsm.modeling import chat_prompt_ids

    partial = out_path.with_name(out_path.name + ".partial")
    done = read_partial(partial, fp)
    resumed = len(done)
    todo = [r for r in rows if r["id"] not in done]
    ids = {r["id"]: chat_prompt_ids(tok, r["prompt"]) for r in todo}
    todo.sort(key=lambda r: (len(ids[r["id"]]), r["id"]))
    partial.parent.mkdir(parents=True, exist_ok=True)
    mode = "a" if done else "w"
    stats = DecodeStats()
    dec = decoding_of(gen_p)
    static = gen_p.cuda_graphs and getattr(model.device, "type", "cpu") == "cuda"  # the CPU keeps the slot decoder
    with open(partial, mode, encoding="utf-8") as fh:
        if not done:
            fh.write(json.dumps({"fingerprint": fp}) + "\n")
            fh.flush()
        bar = tqdm(total=len(rows), initial=resumed, desc=f"generate {out_path.stem}", unit="q")
        size = gen_p.batch_size
        while True:
            left = [r for r in todo if r["id"] not in done]
            if not left:
                break

            def finish(i: int, tokens: list[int], reason: str, left: list[dict] = left) -> None:
                rec = left[i]
                row = make_row(rec, tok.decode(tokens, skip_special_tokens=True), reason, len(tokens))
                done[rec["id"]] = row
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())  # a kill, or a crash of the machine, loses only the rows in flight
                bar.update(1)

            try:
                decode(model, tok, [ids[r["id"]] for r in left], dec, slots=size, on_finish=finish,
                       seeds=[question_seed(gen_p, r["id"]) for r in left], stats=stats, static=static)
            except Exception as exc:
                if not is_out_of_memory(exc) or size == 1:
                    raise
                size = max(1, size // 2)
                print(f"[vigsm] out of GPU memory at {size * 2} slots; retrying the unfinished questions at "
                      f"{size}", flush=True)
            else:
                continue
            _release_cuda_cache()  # outside the except block: its traceback holds the failed batch's tensors
        bar.close()
    write_jsonl(out_path, (done[r["id"]] for r in rows))
    partial.unlink()
    return {"questions": len(rows), "resumed": resumed, "batch_size_used": size if todo else None,
            **stats.as_dict()}


# Counters of run_generation that add up over the processes' shards.
COUNTS = ("new_tokens", "row_steps", "cycle_tokens", "prefills", "stopped_at_eos", "stopped_at_answer",
          "stopped_as_loop", "hit_max_new_tokens")


def generate_split(model_p: ModelParams, gen_p: GenerateParams, rows: list[dict], adapter: Path | None, out: Path,
                   world: int) -> dict[str, Any] | None:
    """The generate stage's work in this process: load the model, answer this process's shard of ``rows``
    (all of them when ``world`` is 1) with :func:`run_generation`, and on the main process merge the shards
    into ``out`` in the test split's order. Returns the stage's metrics on the main process, else None.

    Each shard has its own resumable file; one that finished before a kill is not loaded or decoded again.
    """
    import time
    from datetime import timedelta

    from vigsm import distributed
    from vigsm.device import peak_gpu_memory_gb
    from vigsm.modeling import load_with_adapter

    # gloo for coordination only (no tensors cross devices); the shards may finish far apart in time.
    with distributed.process_group(backend="gloo", timeout=timedelta(days=7)):
        rank = distributed.rank()
        mine = distributed.shard(rows, rank, world)
        fp = fingerprint(model_p, gen_p, mine, adapter)
        mine_out = out if world == 1 else distributed.shard_path(out, fp, rank, world)
        t0 = time.time()
        if world > 1 and mine_out.is_file():  # this shard finished before a kill: nothing to load or decode
            info = {"questions": len(mine), "resumed": len(mine), "batch_size_used": None,
                    **dict.fromkeys(COUNTS, 0)}
            load_s = gen_s = 0.0
        else:
            model, tok = load_with_adapter(model_p, str(adapter) if adapter else None, base_16bit=gen_p.base_16bit,
                                           merge_adapter=gen_p.merge_adapter,
                                           adapter_dtype=gen_p.adapter_dtype)
            load_s = time.time() - t0
            t1 = time.time()
            info = run_generation(model, tok, mine, gen_p, mine_out, fp)
            gen_s = time.time() - t1
        parts = distributed.gather({**info, "load_s": load_s, "gen_s": gen_s, "peak": peak_gpu_memory_gb(),
                                    "out": str(mine_out)})
        figures = None
        if distributed.is_main():
            if world > 1:
                shards = [read_jsonl(p["out"]) for p in parts]
                write_jsonl(out, distributed.merge_shards([r["id"] for r in rows], shards))
                for p in parts:
                    Path(p["out"]).unlink()
            figures = stage_metrics(parts, world)
        distributed.barrier()
    return figures


def stage_metrics(parts: list[dict], world: int) -> dict[str, Any]:
    """The stage's metrics from each process's figures: counts summed, times the slowest process's."""
    counts = {k: sum(p[k] for p in parts) for k in COUNTS}
    new_tokens, row_steps = counts["new_tokens"], counts["row_steps"]
    load_s, gen_s = max(p["load_s"] for p in parts), max(p["gen_s"] for p in parts)
    used = [p["batch_size_used"] for p in parts if p["batch_size_used"] is not None]
    figures = {"questions": sum(p["questions"] for p in parts),
               "resumed_questions": sum(p["resumed"] for p in parts),
               "batch_size_used": min(used) if used else None, "load_seconds": round(load_s, 2),
               "generate_seconds": round(gen_s, 2), "new_tokens": new_tokens,
               "new_tokens_per_second": round(new_tokens / gen_s, 1) if gen_s > 0 else None,
               # decoding work: every row-step the model ran, and the share of it that made no new token
               "waste": round(1 - new_tokens / row_steps, 4) if row_steps else 0.0,
               "forward_steps": max(p.get("forward_steps", 0) for p in parts), **counts, "processes": world}
    peaks = [p["peak"] for p in parts if p["peak"] is not None]
    if peaks:
        figures["peak_gpu_memory_gb"] = round(max(peaks), 2)
    return figures
