"""Loading the problems and turning them into chat records for SFT.

Sources: a hub dataset id (``hllj/vi_gsm8k``), a local directory holding ``train`` and ``test`` files
(.jsonl, .json, .parquet or .csv), a path with a ``{split}`` placeholder, or ``sample`` (the bundled
sample). Every row needs the fields ``index``, ``question``, ``explanation`` and ``answer``.

Bad rows are never dropped silently: a row with an empty question or no number in its answer is
skipped and counted in the stats; structural problems (missing fields, duplicate ids) are errors.

Model selection never sees the test split: a seeded validation split (``data.validation_size``) is carved
out of the cleaned training problems, whole questions at a time, so no question is in two splits.
``validation_size: 0`` is the notebook's protocol: the test split doubles as the validation split.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vigsm.config import DataParams
from vigsm.errors import VigsmError
from vigsm.hub import names_local_path
from vigsm.lengths import token_length_stats
from vigsm.notation import canonical_number

FIELDS = ("index", "question", "explanation", "answer")
SPLITS = ("train", "test")
OUTPUT_SPLITS = ("train", "validation", "test")
FORMATS = (".jsonl", ".json", ".parquet", ".csv")


Locate = Callable[[int], str]


def _read_table(path: Path) -> tuple[list[dict[str, Any]], Locate]:
    """The records of one file, and where record ``i`` is (``file:line`` for JSON Lines, 1-based)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        from vigsm.io import read_jsonl

        rows = read_jsonl(path)
        with open(path, "rb") as fh:  # read_jsonl skips blank lines: map records back to their lines
            lines = [n for n, raw in enumerate(fh, 1) if raw.strip()]
        return rows, lambda i: f"{path}:{lines[i]}"
    rows = _read_records(path, suffix)
    return rows, lambda i: f"{path}: record {i + 1}"


def _read_records(path: Path, suffix: str) -> list[dict[str, Any]]:
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


def _load_located(params: DataParams, sample_dir: Path
                  ) -> tuple[dict[str, list[dict]], dict[str, Any], dict[str, Locate]]:
    if params.source == "sample" or looks_local(params.source):
        root = str(sample_dir) if params.source == "sample" else params.source
        tables = {s: _read_table(_local_split_path(root, s)) for s in SPLITS}
        meta = ({"source": "sample", "path": str(sample_dir)} if params.source == "sample"
                else {"source": params.source})
        return ({s: t[0] for s, t in tables.items()}, {**meta, "resolved_revision": None},
                {s: t[1] for s, t in tables.items()})
    rows, meta = _load_hub(params.source, params.revision)
    return rows, meta, {s: (lambda i, s=s: f"{params.source} {s} record {i + 1}") for s in SPLITS}


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


def clean_split(rows: list[dict], split: str, locate: Locate | None = None) -> tuple[list[dict], dict[str, int]]:
    """Check fields and ids, normalise answers; return kept rows and counts of skipped ones.

    Errors name the record as ``locate(i)`` gives it (default ``<split> record <i+1>``): 1-based.
    """
    locate = locate or (lambda i: f"{split} record {i + 1}")
    skipped = {"empty_question": 0, "answer_without_number": 0}
    kept, seen = [], set()
    for i, row in enumerate(rows):
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise VigsmError(f"{locate(i)}: {split} record missing field '{missing[0]}' "
                             f"(need {', '.join(FIELDS)})")
        ident = str(row["index"])
        if ident in seen:
            raise VigsmError(f"{locate(i)}: {split} record with duplicate index {ident!r}")
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


def question_key(question: str) -> str:
    """Questions are the same when they match ignoring case and runs of whitespace."""
    return " ".join(question.lower().split())


def drop_overlap(train: list[dict], test: list[dict]) -> tuple[list[dict], int]:
    """Remove training problems whose question also appears in the test split (contamination)."""
    test_questions = {question_key(r["question"]) for r in test}
    kept = [r for r in train if question_key(r["question"]) not in test_questions]
    return kept, len(train) - len(kept)


def validation_count(size: float, n_train: int) -> int:
    """How many training problems ``data.validation_size`` asks for: a fraction in (0, 1) of ``n_train``
    (at least 1), a whole count >= 1, or 0 (none). Checked before any data are read."""
    if size < 0 or (size >= 1 and size != int(size)):
        raise VigsmError(f"params: data.validation_size: {size!r} is neither 0, a fraction in (0, 1) nor a "
                         f"whole count >= 1")
    if size == 0:
        return 0
    return max(1, round(size * n_train)) if size < 1 else int(size)


def split_validation(train: list[dict], size: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Carve a seeded validation split out of ``train``; return (train, validation), each in file order.

    Whole questions move together (duplicates of a question stay on one side), so no question is in both.
    """
    n = validation_count(size, len(train))
    if n == 0:
        return train, []
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(train):
        groups.setdefault(question_key(r["question"]), []).append(i)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    chosen: set[int] = set()
    for k in keys:
        if len(chosen) >= n:
            break
        chosen.update(groups[k])
    if len(chosen) >= len(train):
        raise VigsmError(f"params: data.validation_size: {size:g} takes {len(chosen)} of the {len(train)} "
                         f"training problems and leaves none to train on; use a smaller fraction or count")
    return ([r for i, r in enumerate(train) if i not in chosen], [r for i, r in enumerate(train) if i in chosen])


def to_record(row: dict, params: DataParams, system_prompt: str) -> dict[str, Any]:
    """A conversational prompt/completion record (system + user -> assistant) for TRL's SFTTrainer."""
    try:
        target = "\n".join(params.target_template).format(explanation=row["explanation"], answer=row["answer"])
    except (KeyError, IndexError) as exc:
        raise VigsmError(f"params: data.target_template: unknown field {exc}; use {{explanation}} and "
                         f"{{answer}}") from exc
    return {
        **row,
        "prompt": [{"role": "system", "content": system_prompt},
                   {"role": "user", "content": row["question"]}],
        "completion": [{"role": "assistant", "content": target}],
    }


def length_stats(texts: list[str], prefix: str) -> dict[str, float]:
    """Percentiles of whitespace-token lengths (prepare has no model tokenizer; train logs token counts)."""
    return token_length_stats([len(t.split()) for t in texts], prefix)


def read_system_prompt(path: str | Path) -> str:
    """The system prompt, verbatim (UTF-8, trailing newline kept), from its file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise VigsmError(f"{path}: system prompt file not found") from exc
    except UnicodeDecodeError as exc:
        raise VigsmError(f"{path}: not valid UTF-8 ({exc.reason})") from exc
    if not text.strip():
        raise VigsmError(f"{path}: the system prompt is empty")
    return text


def _empty_split_error(split: str, n_read: int, reasons: dict[str, int], source: str) -> VigsmError:
    """Why a split ended up empty: every reason with its count, and what to do."""
    words = {"empty_question": "with an empty question", "answer_without_number": "without a number in the answer",
             "overlap_with_test": "also in the test split (same question)",
             "validation": "moved to the validation split (data.validation_size)"}
    dropped = ", ".join(f"{n} {words[r]}" for r, n in reasons.items())
    if reasons.get("overlap_with_test"):
        advice = ("the train and test files share their questions: point data.source at a train split "
                  "that is not the test split")
    elif reasons.get("validation"):
        advice = "use a smaller data.validation_size"
    else:
        advice = f"check the {split} file of data.source ({source}): each row needs a question and a numeric answer"
    return VigsmError(f"the {split} split is empty after cleaning: {n_read} rows read, dropped {dropped}; {advice}")


def prepare(params: DataParams, sample_dir: Path, system_prompt: str
            ) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Load, check, clean and format the splits; return the records (train, validation, test) and the stats.

    The validation split comes from the cleaned training problems before ``train_limit`` applies, so it
    does not change with ``train_limit``; with ``validation_size: 0`` it is the test split (the notebook).
    """
    validation_count(params.validation_size, 1)  # a bad size fails before any data are read
    raw, meta, locate = _load_located(params, sample_dir)
    cleaned, skipped = {}, {}
    for split in SPLITS:
        cleaned[split], skipped[split] = clean_split(raw[split], split, locate[split])
    if not cleaned["test"]:
        raise _empty_split_error("test", len(raw["test"]), skipped["test"], meta["source"])
    cleaned["train"], overlap = drop_overlap(cleaned["train"], cleaned["test"])
    if not cleaned["train"]:
        raise _empty_split_error("train", len(raw["train"]), {**skipped["train"], "overlap_with_test": overlap},
                                 meta["source"])
    train, validation = split_validation(cleaned["train"], params.validation_size, params.validation_seed)
    limits = {"train": params.train_limit, "test": params.test_limit}
    rows = {"train": train[: limits["train"]] if limits["train"] else train,
            "test": cleaned["test"][: limits["test"]] if limits["test"] else cleaned["test"]}
    rows["validation"] = validation if params.validation_size else rows["test"]
    records = {s: [to_record(r, params, system_prompt) for r in rows[s]] for s in OUTPUT_SPLITS}
    stats: dict[str, Any] = {**meta}
    for split in SPLITS:
        stats[f"{split}_rows_read"] = len(raw[split])
    for split in OUTPUT_SPLITS:
        stats[f"{split}_count"] = len(records[split])
        for reason, n in skipped.get(split, {}).items():
            stats[f"{split}_skipped_{reason}"] = n
        stats.update(length_stats([r["question"] for r in records[split]], f"{split}_question_words"))
        stats.update(length_stats([r["completion"][0]["content"] for r in records[split]],
                                  f"{split}_target_words"))
    stats["train_skipped_overlap_with_test"] = overlap
    stats["validation_from"] = "train" if params.validation_size else "test"
    stats["validation_seed"] = params.validation_seed
    return records, stats
