"""Loading the problems and turning them into chat records for SFT.

Sources: a hub dataset id (``hllj/vi_gsm8k``), a local directory holding ``train`` and ``test`` files
(.jsonl, .json, .parquet or .csv), a path with a ``{split}`` placeholder, or ``sample`` (the bundled
sample). Every row needs the fields ``index``, ``question``, ``explanation`` and ``answer``.

Bad rows are never dropped silently: a row with an empty question or no number in its answer is
skipped and counted in the stats; structural problems (missing fields, duplicate ids) are errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import quantiles
from typing import Any

from vigsm.answers import canonical_number
from vigsm.config import DataParams
from vigsm.errors import VigsmError
from vigsm.hub import names_local_path

FIELDS = ("index", "question", "explanation", "answer")
SPLITS = ("train", "test")
FORMATS = (".jsonl", ".json", ".parquet", ".csv")


def _read_table(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        from vigsm.io import read_jsonl

        return read_jsonl(path)
    if suffix == ".json":
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VigsmError(f"{path}: not valid UTF-8 JSON ({exc})") from exc
        if isinstance(doc, dict) and "data" in doc:
            doc = doc["data"]
        if not isinstance(doc, list):
            raise VigsmError(f"{path}: expected a JSON list of records")
        return doc
    if suffix in (".parquet", ".csv"):
        import pandas as pd

        try:
            frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path, dtype=str,
                                                                                  keep_default_na=False)
        except Exception as exc:
            raise VigsmError(f"{path}: cannot read {suffix[1:]} ({exc})") from exc
        return frame.to_dict(orient="records")
    raise VigsmError(f"{path}: unknown data format '{suffix}'; use one of {', '.join(FORMATS)}")


def _local_split_path(source: str, split: str) -> Path:
    if "{split}" in source:
        path = Path(source.format(split=split))
        if not path.is_file():
            raise VigsmError(f"data.source: {path} not found")
        return path
    root = Path(source)
    if root.is_dir():
        found = [root / f"{split}{ext}" for ext in FORMATS if (root / f"{split}{ext}").is_file()]
        if not found:
            raise VigsmError(f"data.source: {root} has no {split} file ({split}.jsonl/.json/.parquet/.csv)")
        return found[0]
    if root.is_file():
        raise VigsmError(f"data.source: {root} is one file; give a directory with train and test files "
                         f"or a path with a {{split}} placeholder")
    raise VigsmError(f"data.source: {root} not found")


def looks_local(source: str) -> bool:
    return "{split}" in source or names_local_path(source)


def load_rows(params: DataParams, sample_dir: Path) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Return the raw rows of each split and provenance metadata (source, resolved revision)."""
    if params.source == "sample":
        return {s: _read_table(_local_split_path(str(sample_dir), s)) for s in SPLITS}, {
            "source": "sample", "path": str(sample_dir), "resolved_revision": None}
    if looks_local(params.source):
        rows = {s: _read_table(_local_split_path(params.source, s)) for s in SPLITS}
        return rows, {"source": params.source, "resolved_revision": None}
    return _load_hub(params.source, params.revision)


def _load_hub(repo_id: str, revision: str) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    from vigsm.hub import cached_snapshot, require_hub

    if cached_snapshot(repo_id, revision, repo_type="dataset") is None:
        require_hub("dataset", repo_id, revision)
    import datasets
    from huggingface_hub import HfApi

    try:
        sha = HfApi().dataset_info(repo_id, revision=revision).sha
        ds = datasets.load_dataset(repo_id, revision=sha)
    except Exception as exc:
        raise VigsmError(f"cannot load dataset '{repo_id}' (revision {revision}) from the hub: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    missing = [s for s in SPLITS if s not in ds]
    if missing:
        raise VigsmError(f"dataset '{repo_id}' has no '{missing[0]}' split (has {', '.join(ds)})")
    return {s: ds[s].to_list() for s in SPLITS}, {"source": repo_id, "revision": revision,
                                                  "resolved_revision": sha}


def clean_split(rows: list[dict], split: str) -> tuple[list[dict], dict[str, int]]:
    """Check fields and ids, normalise answers; return kept rows and counts of skipped ones."""
    skipped = {"empty_question": 0, "answer_without_number": 0}
    kept, seen = [], set()
    for i, row in enumerate(rows):
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise VigsmError(f"{split} row {i}: missing field '{missing[0]}' (need {', '.join(FIELDS)})")
        ident = str(row["index"])
        if ident in seen:
            raise VigsmError(f"{split} row {i}: duplicate index {ident!r}")
        seen.add(ident)
        question = str(row["question"] or "").strip()
        if not question:
            skipped["empty_question"] += 1
            continue
        answer = canonical_number(str(row["answer"] if row["answer"] is not None else ""))
        if answer is None:
            skipped["answer_without_number"] += 1
            continue
        kept.append({"id": f"{split}-{ident}", "index": row["index"], "question": question,
                     "explanation": str(row["explanation"] or "").strip(), "answer": answer})
    return kept, skipped


def drop_overlap(train: list[dict], test: list[dict]) -> tuple[list[dict], int]:
    """Remove training problems whose question also appears in the test split (contamination)."""
    test_questions = {" ".join(r["question"].lower().split()) for r in test}
    kept = [r for r in train if " ".join(r["question"].lower().split()) not in test_questions]
    return kept, len(train) - len(kept)


def to_record(row: dict, params: DataParams) -> dict[str, Any]:
    """A conversational prompt/completion record (system + user -> assistant) for TRL's SFTTrainer."""
    try:
        target = params.target_template.format(explanation=row["explanation"], answer=row["answer"])
    except (KeyError, IndexError) as exc:
        raise VigsmError(f"params: data.target_template: unknown field {exc}; use {{explanation}} and "
                         f"{{answer}}") from exc
    return {
        **row,
        "prompt": [{"role": "system", "content": params.system_prompt},
                   {"role": "user", "content": row["question"]}],
        "completion": [{"role": "assistant", "content": target}],
    }


def token_length_stats(lengths: list[int], prefix: str) -> dict[str, float]:
    """Percentiles (50/90/99) and maximum of a list of lengths, as flat keys."""
    if not lengths:
        return {}
    s = sorted(lengths)
    p = quantiles(s, n=100, method="inclusive") if len(s) > 1 else [s[0]] * 99
    return {f"{prefix}_p50": p[49], f"{prefix}_p90": p[89], f"{prefix}_p99": p[98], f"{prefix}_max": s[-1]}


def length_stats(texts: list[str], prefix: str) -> dict[str, float]:
    """Percentiles of whitespace-token lengths (prepare has no model tokenizer; train logs token counts)."""
    return token_length_stats([len(t.split()) for t in texts], prefix)


def prepare(params: DataParams, sample_dir: Path) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Load, check, clean and format both splits; return the records and the stats/metadata."""
    raw, meta = load_rows(params, sample_dir)
    cleaned, skipped = {}, {}
    for split in SPLITS:
        cleaned[split], skipped[split] = clean_split(raw[split], split)
    cleaned["train"], overlap = drop_overlap(cleaned["train"], cleaned["test"])
    limits = {"train": params.train_limit, "test": params.test_limit}
    records = {s: [to_record(r, params) for r in (cleaned[s][: limits[s]] if limits[s] else cleaned[s])]
               for s in SPLITS}
    for split in SPLITS:
        if not records[split]:
            raise VigsmError(f"the {split} split is empty after cleaning ({skipped[split]})")
    stats: dict[str, Any] = {**meta}
    for split in SPLITS:
        stats[f"{split}_rows_read"] = len(raw[split])
        stats[f"{split}_count"] = len(records[split])
        for reason, n in skipped[split].items():
            stats[f"{split}_skipped_{reason}"] = n
        stats.update(length_stats([r["question"] for r in records[split]], f"{split}_question_words"))
        stats.update(length_stats([r["completion"][0]["content"] for r in records[split]],
                                  f"{split}_target_words"))
    stats["train_skipped_overlap_with_test"] = overlap
    return records, stats
