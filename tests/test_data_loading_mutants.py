"""Data loading on small literal files: each local format, the {split} paths, their error messages, the hub
path with `datasets.load_dataset` replaced by a stand-in, the system prompt file, and prepare's stats keys."""

import json
from types import SimpleNamespace

import pytest

from vigsm import data
from vigsm.config import DataParams
from vigsm.errors import VigsmError

ROW = {"index": 0, "question": "Lan có 2 bút?", "explanation": "2 = 2", "answer": "2"}


def _params(**kw) -> DataParams:
    base = {"source": "sample", "revision": "main", "target_template": ["{explanation}", "#### {answer}"],
            "validation_size": 0, "validation_seed": 0, "train_limit": 0, "test_limit": 0}
    return DataParams(**{**base, **kw})


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _message(fn, *args):
    with pytest.raises(VigsmError) as err:
        fn(*args)
    return str(err.value)


# --- the readers, one format at a time


def test_jsonl_records_are_located_by_their_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n" + json.dumps({"a": 1}) + "\n\n  \n" + json.dumps({"a": 2}) + "\n", encoding="utf-8")
    rows, locate = data._read_table(path)
    assert rows == [{"a": 1}, {"a": 2}]
    assert (locate(0), locate(1)) == (f"{path}:2", f"{path}:5")


def test_the_suffix_is_read_without_case(tmp_path):
    rows, locate = data._read_table(_jsonl(tmp_path / "TRAIN.JSONL", [{"a": 1}]))
    assert rows == [{"a": 1}] and locate(0) == f"{tmp_path / 'TRAIN.JSONL'}:1"
    path = tmp_path / "train.JSON"
    path.write_text('[{"a": 1}]', encoding="utf-8")
    rows, locate = data._read_table(path)
    assert rows == [{"a": 1}] and locate(0) == f"{path}: record 1"


def test_json_list_or_data_key(tmp_path):
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([{"a": "một"}, {"a": 2}], ensure_ascii=False), encoding="utf-8")
    rows, locate = data._read_table(plain)
    assert rows == [{"a": "một"}, {"a": 2}]
    assert (locate(0), locate(1)) == (f"{plain}: record 1", f"{plain}: record 2")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [{"a": 3}], "version": 1}), encoding="utf-8")
    assert data._read_records(wrapped, ".json") == [{"a": 3}]


@pytest.mark.parametrize("doc", [{"rows": [{"a": 1}]}, {"a": 1}, "text", 3, {"data": {"a": 1}}])
def test_json_that_is_not_a_list_of_records(tmp_path, doc):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert _message(data._read_records, path, ".json") == f"{path}: expected a JSON list of records"


def test_json_not_json_or_not_utf8(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[{", encoding="utf-8")
    msg = _message(data._read_records, path, ".json")
    assert msg.startswith(f"{path}: not valid UTF-8 JSON (Expecting property name") and msg.endswith(")")
    path.write_bytes(b'["\xff"]')
    msg = _message(data._read_records, path, ".json")
    assert msg.startswith(f"{path}: not valid UTF-8 JSON ('utf-8' codec can't decode byte 0xff")


def test_csv_keeps_every_field_as_written(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("index,question,explanation,answer\n007,Q,,NA\n8,R,x,1.50\n", encoding="utf-8")
    rows, locate = data._read_table(path)
    # strings, not numbers: "007" keeps its zeros, "1.50" its form; "NA" and "" are not NaN
    assert rows == [{"index": "007", "question": "Q", "explanation": "", "answer": "NA"},
                    {"index": "8", "question": "R", "explanation": "x", "answer": "1.50"}]
    assert locate(1) == f"{path}: record 2"


def test_parquet(tmp_path):
    import pandas as pd

    path = tmp_path / "test.parquet"
    pd.DataFrame([{"index": 1, "question": "Q"}, {"index": 2, "question": "R"}]).to_parquet(path)
    rows, locate = data._read_table(path)
    assert rows == [{"index": 1, "question": "Q"}, {"index": 2, "question": "R"}]
    assert locate(0) == f"{path}: record 1"


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_unreadable_table(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(b"\xff\xfe\x00not a table\xff" if suffix == ".csv" else b"not parquet")
    msg = _message(data._read_records, path, suffix)
    assert msg.startswith(f"{path}: cannot read {suffix[1:]} (") and msg.endswith(")")


def test_unknown_format(tmp_path):
    path = tmp_path / "x.xlsx"
    path.write_text("x")
    assert _message(data._read_table, path) == (
        f"{path}: unknown data format '.xlsx'; use one of .jsonl, .json, .parquet, .csv")


# --- where each split's file is


def test_split_placeholder_path(tmp_path):
    _jsonl(tmp_path / "d-train.jsonl", [ROW])
    source = str(tmp_path / "d-{split}.jsonl")
    assert data._local_split_path(source, "train") == tmp_path / "d-train.jsonl"
    assert _message(data._local_split_path, source, "test") == f"data.source: {tmp_path / 'd-test.jsonl'} not found"
    (tmp_path / "d-test.jsonl").mkdir()  # a directory is not the file
    assert _message(data._local_split_path, source, "test") == f"data.source: {tmp_path / 'd-test.jsonl'} not found"


def test_directory_takes_the_first_format_found(tmp_path):
    for name in ("test.csv", "test.parquet", "train.csv", "train.json"):
        (tmp_path / name).write_text("x")
    assert data._local_split_path(str(tmp_path), "train") == tmp_path / "train.json"
    assert data._local_split_path(str(tmp_path), "test") == tmp_path / "test.parquet"
    (tmp_path / "test.jsonl").mkdir()  # not a file: skipped
    assert data._local_split_path(str(tmp_path), "test") == tmp_path / "test.parquet"


def test_directory_without_the_split(tmp_path):
    (tmp_path / "train.jsonl").write_text("x")
    assert _message(data._local_split_path, str(tmp_path), "test") == (
        f"data.source: {tmp_path} has no test file (test.jsonl/.json/.parquet/.csv)")


def test_a_file_or_nothing_is_not_a_source(tmp_path):
    one = _jsonl(tmp_path / "all.jsonl", [ROW])
    assert _message(data._local_split_path, str(one), "train") == (
        f"data.source: {one} is one file; give a directory with train and test files "
        "or a path with a {split} placeholder")
    nope = tmp_path / "nope"
    assert _message(data._local_split_path, str(nope), "train") == f"data.source: {nope} not found"


def test_looks_local():
    assert data.looks_local("d-{split}.jsonl")  # a placeholder is a path even when nothing by that name exists
    assert data.looks_local("./somewhere") and data.looks_local("/abs/path")
    assert not data.looks_local("hllj/vi_gsm8k")


def test_load_located_sample_and_local_meta(tmp_path):
    for split in data.SPLITS:
        _jsonl(tmp_path / f"{split}.jsonl", [{**ROW, "question": f"{split} Q"}])
    rows, meta, locate = data._load_located(_params(source="sample"), tmp_path)
    assert meta == {"source": "sample", "path": str(tmp_path), "resolved_revision": None}
    assert rows == {"train": [{**ROW, "question": "train Q"}], "test": [{**ROW, "question": "test Q"}]}
    assert locate["test"](0) == f"{tmp_path / 'test.jsonl'}:1"
    rows, meta, locate = data._load_located(_params(source=str(tmp_path)), tmp_path / "unused")
    assert meta == {"source": str(tmp_path), "resolved_revision": None}
    assert rows["train"][0]["question"] == "train Q" and locate["train"](0) == f"{tmp_path / 'train.jsonl'}:1"


# --- the hub, with its libraries replaced by stand-ins


class _Split:
    def __init__(self, rows):
        self.rows = rows

    def to_list(self):
        return list(self.rows)


class _Hub:
    """Stand-ins for the hub cache probe, the reachability check, HfApi and datasets.load_dataset."""

    def __init__(self, monkeypatch, splits=None, cached=True, fail=None):
        import datasets
        import huggingface_hub

        from vigsm import hub

        self.calls = []
        self.splits = {"train": [ROW], "test": [{**ROW, "index": 1}]} if splits is None else splits
        self.fail = fail
        outer = self

        class Api:
            def dataset_info(self, repo_id, revision=None):
                outer.calls.append(("info", repo_id, revision))
                return SimpleNamespace(sha="c0ffee")

        monkeypatch.setattr(hub, "cached_snapshot",
                            lambda *a, **k: self.calls.append(("cached", a, k)) or ("/cache" if cached else None))
        monkeypatch.setattr(hub, "require_hub", lambda *a: self.calls.append(("require", *a)))
        monkeypatch.setattr(huggingface_hub, "HfApi", Api)
        monkeypatch.setattr(datasets, "load_dataset", self.load_dataset)

    def load_dataset(self, repo_id, revision=None):
        self.calls.append(("load", repo_id, revision))
        if self.fail:
            raise self.fail
        return {s: _Split(r) for s, r in self.splits.items()}


def test_hub_dataset_at_its_resolved_revision(monkeypatch):
    hub = _Hub(monkeypatch, splits={"train": [ROW], "validation": [], "test": [{**ROW, "index": 1}]})
    rows, meta = data._load_hub("owner/set", "v1")
    assert rows == {"train": [ROW], "test": [{**ROW, "index": 1}]}
    assert meta == {"source": "owner/set", "revision": "v1", "resolved_revision": "c0ffee"}
    assert hub.calls == [("cached", ("owner/set", "v1"), {"repo_type": "dataset"}), ("info", "owner/set", "v1"),
                         ("load", "owner/set", "c0ffee")]


def test_hub_dataset_not_cached_asks_for_the_hub(monkeypatch):
    hub = _Hub(monkeypatch, cached=False)
    data._load_hub("owner/set", "v1")
    assert hub.calls[1] == ("require", "dataset", "owner/set", "v1")


def test_hub_through_load_located_locates_records(monkeypatch):
    _Hub(monkeypatch)
    rows, meta, locate = data._load_located(_params(source="owner/set", revision="main"), None)
    assert rows["test"] == [{**ROW, "index": 1}] and meta["resolved_revision"] == "c0ffee"
    assert (locate["train"](0), locate["test"](2)) == ("owner/set train record 1", "owner/set test record 3")


def test_hub_failure_is_one_line(monkeypatch):
    _Hub(monkeypatch, fail=RuntimeError("no such revision\nTraceback details"))
    assert _message(data._load_hub, "owner/set", "v9") == (
        "cannot load dataset 'owner/set' (revision v9) from the hub: RuntimeError: no such revision")


def test_hub_dataset_without_a_split(monkeypatch):
    _Hub(monkeypatch, splits={"train": [ROW], "validation": []})
    assert _message(data._load_hub, "owner/set", "v1") == (
        "dataset 'owner/set' has no 'test' split (has train, validation)")
    _Hub(monkeypatch, splits={"test": [ROW]})
    assert _message(data._load_hub, "owner/set", "v1") == "dataset 'owner/set' has no 'train' split (has test)"


# --- the system prompt file, in this process


def test_read_system_prompt_verbatim(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("  Giải bài toán.\n\n", encoding="utf-8")
    assert data.read_system_prompt(str(path)) == "  Giải bài toán.\n\n"
    assert data.read_system_prompt(path) == "  Giải bài toán.\n\n"


def test_read_system_prompt_errors(tmp_path):
    path = tmp_path / "p.txt"
    assert _message(data.read_system_prompt, str(path)) == f"{path}: system prompt file not found"
    path.write_bytes(b"Gi\xff")
    assert _message(data.read_system_prompt, path) == f"{path}: not valid UTF-8 (invalid start byte)"
    path.write_text(" \n\t\n", encoding="utf-8")
    assert _message(data.read_system_prompt, path) == f"{path}: the system prompt is empty"


# --- why a split is empty


def test_empty_split_messages():
    err = data._empty_split_error("test", 3, {"empty_question": 1, "answer_without_number": 2}, "d/x")
    assert str(err) == ("the test split is empty after cleaning: 3 rows read, dropped 1 with an empty question, "
                        "2 without a number in the answer; check the test file of data.source (d/x): each row "
                        "needs a question and a numeric answer")
    err = data._empty_split_error("train", 4, {"overlap_with_test": 0, "validation": 4}, "s")
    assert str(err) == ("the train split is empty after cleaning: 4 rows read, dropped 0 also in the test split "
                        "(same question), 4 moved to the validation split (data.validation_size); "
                        "use a smaller data.validation_size")
    err = data._empty_split_error("train", 2, {"overlap_with_test": 2, "validation": 1}, "s")
    assert str(err).endswith("; the train and test files share their questions: point data.source at a train "
                             "split that is not the test split")


# --- prepare's stats


def test_prepare_stats_keys(tmp_path):
    train = [{**ROW, "index": i, "question": f"Câu số {i} ?", "answer": str(i)} for i in range(6)]
    train += [{**ROW, "index": 6, "question": " "}, {**ROW, "index": 7, "question": "câu SỐ 0 ?"},
              {**ROW, "index": 8, "question": "Q8", "answer": "?"}]
    _jsonl(tmp_path / "train.jsonl", train)
    _jsonl(tmp_path / "test.jsonl", [{**ROW, "question": "câu số 0 ?"}, {**ROW, "index": 1, "question": "Hai từ"},
                                     {**ROW, "index": 2, "question": "Ba từ ở", "answer": "x"}])
    records, stats = data.prepare(_params(source=str(tmp_path), validation_size=2, validation_seed=4,
                                          train_limit=2, test_limit=1), tmp_path, "SP")
    assert {s: len(r) for s, r in records.items()} == {"train": 2, "validation": 2, "test": 1}
    words = {}
    for split, n_question, n_target in (("train", 4, 5), ("validation", 4, 5), ("test", 4, 5)):
        words.update({f"{split}_question_words_{k}": n_question for k in ("p50", "p90", "p99", "max")})
        words.update({f"{split}_target_words_{k}": n_target for k in ("p50", "p90", "p99", "max")})
    assert stats == {"source": str(tmp_path), "resolved_revision": None,
                     "train_rows_read": 9, "test_rows_read": 3,
                     "train_count": 2, "train_skipped_empty_question": 1, "train_skipped_answer_without_number": 1,
                     "validation_count": 2,
                     "test_count": 1, "test_skipped_empty_question": 0, "test_skipped_answer_without_number": 1,
                     **words,
                     "train_skipped_overlap_with_test": 2, "validation_from": "train", "validation_seed": 4}
    # the key order is the file's order too (stats.json is written as it comes)
    assert list(stats)[:4] == ["source", "resolved_revision", "train_rows_read", "test_rows_read"]
    assert records["validation"][0]["prompt"][0] == {"role": "system", "content": "SP"}


def test_prepare_without_validation_uses_test(tmp_path):
    _jsonl(tmp_path / "train.jsonl", [ROW, {**ROW, "index": 1, "question": "Khác"}])
    _jsonl(tmp_path / "test.jsonl", [{**ROW, "question": "T"}, {**ROW, "index": 1, "question": "U"}])
    records, stats = data.prepare(_params(source=str(tmp_path), test_limit=1), tmp_path, "SP")
    assert records["validation"] == records["test"] and len(records["test"]) == 1
    assert (stats["validation_from"], stats["validation_count"], stats["train_count"]) == ("test", 1, 2)
    assert stats["validation_seed"] == 0


# --- survivors of the first run with the tests above


def test_jsonl_lines_are_counted_in_bytes_as_written(tmp_path):
    # a bare carriage return is JSON whitespace, not a line end: the record still sits on line 1
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'\r{"a": 1}\n{"a": 2}\n')
    rows, locate = data._read_table(path)
    assert rows == [{"a": 1}, {"a": 2}] and (locate(0), locate(1)) == (f"{path}:1", f"{path}:2")


@pytest.fixture
def ascii_locale():
    """The C locale, whose default text encoding is ASCII: files must still be read as UTF-8."""
    import locale

    old = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, old)


def test_utf8_whatever_the_locale(tmp_path, ascii_locale):
    prompt = tmp_path / "p.txt"
    prompt.write_bytes("Giải bài toán.\n".encode())
    assert data.read_system_prompt(prompt) == "Giải bài toán.\n"
    doc = tmp_path / "x.json"
    doc.write_bytes(json.dumps([{"q": "Giải"}], ensure_ascii=False).encode())
    assert data._read_records(doc, ".json") == [{"q": "Giải"}]


def test_hub_revision_is_passed_on(monkeypatch):
    hub = _Hub(monkeypatch)
    _, meta, _ = data._load_located(_params(source="owner/set", revision="v2"), None)
    assert meta["revision"] == "v2" and ("info", "owner/set", "v2") in hub.calls


def test_prepare_empty_test_split_message(tmp_path):
    _jsonl(tmp_path / "train.jsonl", [ROW])
    _jsonl(tmp_path / "test.jsonl", [{**ROW, "answer": "?"}, {**ROW, "index": 1, "question": ""}])
    assert _message(data.prepare, _params(source=str(tmp_path)), tmp_path, "SP") == (
        "the test split is empty after cleaning: 2 rows read, dropped 1 with an empty question, 1 without a number "
        f"in the answer; check the test file of data.source ({tmp_path}): each row needs a question and a numeric "
        "answer")


def test_prepare_empty_train_split_message(tmp_path):
    _jsonl(tmp_path / "train.jsonl", [{**ROW, "answer": "?"}])
    _jsonl(tmp_path / "test.jsonl", [ROW])
    assert _message(data.prepare, _params(source=str(tmp_path)), tmp_path, "SP") == (
        "the train split is empty after cleaning: 1 rows read, dropped 0 with an empty question, 1 without a number "
        "in the answer, 0 also in the test split (same question); check the train file of data.source "
        f"({tmp_path}): each row needs a question and a numeric answer")
