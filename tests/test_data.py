"""prepare: sources, normalisation, chat records, and bad data (clear error or counted skip)."""

import json
import re
import subprocess
import sys
from fractions import Fraction

import pytest

from conftest import ROOT, SHIPPED_PARAMS, SYSTEM_PROMPT, shipped_params, write_params
from vigsm.config import DataParams, load_section
from vigsm.data import prepare as _prepare
from vigsm.errors import VigsmError
from vigsm.io import read_jsonl
from vigsm.sample import make_problems

SAMPLE = ROOT / "data" / "sample"


def prepare(params: DataParams, sample_dir=SAMPLE):
    return _prepare(params, sample_dir, SYSTEM_PROMPT)


def data_params(**kw) -> DataParams:
    import dataclasses

    base = load_section("data", path=SHIPPED_PARAMS)
    # validation_size 0 unless asked: the small hand-made splits below keep every train row
    return dataclasses.replace(base, **{"source": "sample", "train_limit": 0, "test_limit": 0, "validation_size": 0,
                                        **kw})


def test_bundled_sample_is_reproducible_and_correct():
    train, test = make_problems()
    assert read_jsonl(SAMPLE / "train.jsonl") == train
    assert read_jsonl(SAMPLE / "test.jsonl") == test
    assert len(train) >= 300 and len(test) >= 100
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    text = json.dumps(train + test, ensure_ascii=False)
    assert "đồng" in text and "$" in text and "," in "".join(r["answer"] for r in train)  # real-data quirks
    assert any("\n" in r["explanation"] for r in train)  # multi-step


# One operand as the sample writes it: optional sign and $, digits with "." or "," separators, optional %.
_OPERAND = r"-?\$?\d[\d.,]*%?"
_EQUATION = re.compile(rf"(?P<lhs>{_OPERAND}(?: [-+*/] {_OPERAND})*) = (?P<rhs>{_OPERAND})")


def _value(operand: str) -> Fraction:
    from vigsm.answers import canonical_number

    percent = operand.endswith("%")
    value = Fraction(canonical_number(operand.rstrip("%").replace("$", "")))
    return value / 100 if percent else value


def _evaluate(lhs: str) -> Fraction:
    """Evaluate "a op b op c" with the usual precedence, on exact fractions."""
    parts = lhs.split(" ")
    terms = [[_value(parts[0])]]  # sums of products
    signs = [1]
    for op, operand in zip(parts[1::2], parts[2::2], strict=True):
        if op in "*/":
            terms[-1].append(_value(operand) if op == "*" else 1 / _value(operand))
        else:
            terms.append([_value(operand)])
            signs.append(1 if op == "+" else -1)
    total = Fraction(0)
    for sign, factors in zip(signs, terms, strict=True):
        product = Fraction(1)
        for f in factors:
            product *= f
        total += sign * product
    return total


def test_sample_answers_are_right_by_construction():
    """Every equation in every explanation holds, and the last one's result is the answer."""
    from vigsm.answers import canonical_number

    for row in read_jsonl(SAMPLE / "train.jsonl") + read_jsonl(SAMPLE / "test.jsonl"):
        equations = list(_EQUATION.finditer(row["explanation"]))
        # Every "=" belongs to an equation the pattern parsed: none is skipped unchecked.
        assert len(equations) == row["explanation"].count("=") >= 1, row
        for eq in equations:
            assert _evaluate(eq["lhs"]) == _value(eq["rhs"]), (eq[0], row)
        assert _value(equations[-1]["rhs"]) == Fraction(canonical_number(row["answer"])), row


def test_equation_check_sees_a_wrong_result():
    eq = _EQUATION.search("Phúc đã bán 120 / 2 = 67 bông hoa")
    assert eq["lhs"] == "120 / 2" and _evaluate(eq["lhs"]) == 60 != _value(eq["rhs"])
    assert _evaluate("$15 * 30%") == Fraction(9, 2) and _evaluate("25.000 * 3") == 75000
    assert _evaluate("-5 - 3 + 2 * 4") == 0


def test_prepare_sample_records():
    shipped = load_section("data", path=SHIPPED_PARAMS)
    records, stats = prepare(data_params(validation_size=shipped.validation_size), SAMPLE)
    rec = records["train"][0]
    assert [m["role"] for m in rec["prompt"]] == ["system", "user"]
    assert rec["completion"][0]["role"] == "assistant"
    assert rec["completion"][0]["content"] == f"{rec['explanation']}\n### {rec['answer']}"
    assert rec["prompt"][0]["content"].startswith("Bạn là một trợ lý toán học.")
    # 4% of the 320 training problems (13) form the validation split
    assert stats["train_count"] == 307 and stats["validation_count"] == 13 and stats["test_count"] == 100
    assert stats["validation_from"] == "train"
    assert stats["train_skipped_overlap_with_test"] == 0
    assert "test_target_words_p90" in stats
    # answers are canonical: thousands commas removed, nothing else lost
    assert all("," not in r["answer"] for r in records["train"])


def write_split(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def row(i, q="Lan có 2 cây bút, mua thêm 1. Có bao nhiêu?", e="2 + 1 = 3", a="3"):
    return {"index": i, "question": q, "explanation": e, "answer": a}


def test_local_jsonl_normalises_answers_and_counts_skips(tmp_path):
    write_split(tmp_path / "train.jsonl", [row(0, q="Q1", a="1,000"), row(1, q="Q2", a="-5"), row(2, q="Q3", a="2.5"),
                                           row(3, q="   ", a="4"), row(4, q="Q5", a="không biết")])
    write_split(tmp_path / "test.jsonl", [row(0, q="T1", a="$18")])
    records, stats = prepare(data_params(source=str(tmp_path)), SAMPLE)
    assert [r["answer"] for r in records["train"]] == ["1000", "-5", "2.5"]
    assert records["test"][0]["answer"] == "18"
    assert stats["train_skipped_empty_question"] == 1
    assert stats["train_skipped_answer_without_number"] == 1
    assert stats["train_rows_read"] == 5 and stats["train_count"] == 3


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_other_local_formats(tmp_path, fmt):
    import pandas as pd

    for split, rows in (("train", [row(0, q="Q1"), row(1, q="Q2")]), ("test", [row(0, q="T1")])):
        frame = pd.DataFrame(rows)
        path = tmp_path / f"{split}.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        elif fmt == "parquet":
            frame.to_parquet(path)
        else:
            path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    records, _ = prepare(data_params(source=str(tmp_path)), SAMPLE)
    assert len(records["train"]) == 2 and records["test"][0]["question"] == "T1"


def test_split_placeholder_and_overlap_is_removed_from_train(tmp_path):
    write_split(tmp_path / "d-train.jsonl", [row(0, q="Same question?"), row(1, q="Other")])
    write_split(tmp_path / "d-test.jsonl", [row(0, q="same   QUESTION?")])
    records, stats = prepare(data_params(source=str(tmp_path / "d-{split}.jsonl")), SAMPLE)
    assert [r["question"] for r in records["train"]] == ["Other"]
    assert stats["train_skipped_overlap_with_test"] == 1


BAD_DATA = [
    ("missing file", lambda d: None, "has no train file"),
    ("unknown format", lambda d: (d / "train.xlsx").write_text("x") or (d / "test.xlsx").write_text("x"),
     "has no train file"),
    ("missing field", lambda d: write_split(d / "train.jsonl", [{"index": 0, "question": "Q"}]),
     r"train.jsonl:1: train record missing field 'explanation'"),
    ("duplicate ids", lambda d: write_split(d / "train.jsonl", [row(0, q="A"), row(0, q="B")]),
     r"train.jsonl:2: train record with duplicate index '0'"),
    ("bad json", lambda d: (d / "train.jsonl").write_text('{"index": 0,\n'), "not valid JSON"),
    ("bad utf-8", lambda d: (d / "train.jsonl").write_bytes(b'{"index": 0, "question": "\xff"}\n'),
     "not valid UTF-8"),
    ("all skipped", lambda d: write_split(d / "train.jsonl", [row(0, a="none")]),
     r"train split is empty after cleaning: 1 rows read, dropped 0 with an empty question, 1 without a number"),
]


@pytest.mark.parametrize(("name", "make", "fragment"), BAD_DATA, ids=[b[0] for b in BAD_DATA])
def test_bad_data_is_a_clear_error(tmp_path, name, make, fragment):
    if name != "missing file":
        write_split(tmp_path / "test.jsonl", [row(0, q="T")])
    make(tmp_path)
    with pytest.raises(VigsmError, match=fragment):
        prepare(data_params(source=str(tmp_path)), SAMPLE)


def test_bad_data_through_the_stage_is_one_line(tmp_path):
    write_split(tmp_path / "train.jsonl", [row(0, q="A"), row(0, q="B")])
    write_split(tmp_path / "test.jsonl", [row(0, q="T")])
    params = shipped_params()
    params["data"]["source"] = str(tmp_path)
    write_params(tmp_path / "params.yaml", params)
    proc = subprocess.run([sys.executable, "stages/prepare.py", "--sample-dir", "data/sample", "--system-prompt",
                           "data/system_prompt.txt", "--out-dir",
                           str(tmp_path / "out"), "--params", str(tmp_path / "params.yaml")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "duplicate index '0'" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_unreachable_hub_dataset_fails_fast_with_advice(monkeypatch):
    import time

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-vigsm-cache")
    t0 = time.time()
    with pytest.raises(VigsmError, match=r"cannot reach the Hugging Face hub.*hllj/vi_gsm8k.*offline"):
        prepare(data_params(source="hllj/vi_gsm8k"), SAMPLE)
    assert time.time() - t0 < 15


def questions(rows):
    return {" ".join(r["question"].lower().split()) for r in rows}


def test_validation_split_is_seeded_and_disjoint(tmp_path):
    # every question twice (different case and spacing): both copies must stay on one side of the split
    train = [row(i, q=f"Câu hỏi {i}?") for i in range(21)] + [row(21 + i, q=f"CÂU HỎI   {i}?") for i in range(21)]
    write_split(tmp_path / "train.jsonl", train)
    write_split(tmp_path / "test.jsonl", [row(0, q="T1"), row(1, q="T2")])
    split = {}
    for seed in (1, 1, 2):
        records, stats = prepare(data_params(source=str(tmp_path), validation_size=0.25, validation_seed=seed))
        split.setdefault(seed, []).append([r["id"] for r in records["validation"]])
        tr, va, te = (questions(records[s]) for s in ("train", "validation", "test"))
        assert not tr & va and not tr & te and not va & te
        assert len(records["train"]) + len(records["validation"]) == 42
        assert stats["validation_count"] == len(records["validation"]) >= round(0.25 * 42)
    assert split[1][0] == split[1][1] and split[1][0] != split[2][0]  # seeded
    # a count, and train_limit trims train only: the validation split does not move
    records, _ = prepare(data_params(source=str(tmp_path), validation_size=5, validation_seed=3))
    limited, _ = prepare(data_params(source=str(tmp_path), validation_size=5, validation_seed=3, train_limit=4))
    assert len(records["validation"]) >= 5 and limited["validation"] == records["validation"]
    assert len(limited["train"]) == 4


def test_validation_size_zero_is_the_notebooks_protocol():
    records, stats = prepare(data_params(validation_size=0))
    assert records["validation"] == records["test"] and stats["validation_from"] == "test"
    assert stats["train_count"] == 320


@pytest.mark.parametrize(("size", "fragment"), [(1.5, "neither 0, a fraction"),
                                                (320, "leaves none to train on")])
def test_bad_validation_size(size, fragment):
    with pytest.raises(VigsmError, match=f"data.validation_size: .*{fragment}"):
        prepare(data_params(validation_size=size))


def test_train_equal_to_test_names_the_overlap_and_what_to_do(tmp_path):
    rows = [row(i, q=f"Bài {i}?") for i in range(12)]
    write_split(tmp_path / "train.jsonl", rows)
    write_split(tmp_path / "test.jsonl", rows)
    with pytest.raises(VigsmError) as exc:
        prepare(data_params(source=str(tmp_path)))
    msg = str(exc.value)
    assert ("the train split is empty after cleaning: 12 rows read, dropped 0 with an empty question, "
            "0 without a number in the answer, 12 also in the test split (same question)") in msg
    assert "point data.source at a train split that is not the test split" in msg


def test_errors_count_lines_from_one(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps(row(0, q="A")) + "\n\n" + json.dumps({"index": 1}) + "\n")
    write_split(tmp_path / "test.jsonl", [row(0, q="T")])
    with pytest.raises(VigsmError, match=r"train.jsonl:3: train record missing field 'question'"):
        prepare(data_params(source=str(tmp_path)))
    import pandas as pd

    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    pd.DataFrame([row(0, q="A"), row(0, q="B")]).to_csv(csv_dir / "train.csv", index=False)
    write_split(csv_dir / "test.jsonl", [row(0, q="T")])
    with pytest.raises(VigsmError, match=r"train.csv: record 2: train record with duplicate index '0'"):
        prepare(data_params(source=str(csv_dir)))


def test_stage_writes_three_splits_and_reads_the_prompt_file(tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Giải bài toán.\n", encoding="utf-8")
    params = shipped_params()
    params["data"]["source"] = "sample"
    write_params(tmp_path / "params.yaml", params)
    proc = subprocess.run([sys.executable, "stages/prepare.py", "--sample-dir", "data/sample", "--system-prompt",
                           str(prompt), "--out-dir", str(tmp_path / "out"), "--params", str(tmp_path / "params.yaml")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = {s: read_jsonl(tmp_path / "out" / f"{s}.jsonl") for s in ("train", "validation", "test")}
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert {s: len(r) for s, r in out.items()} == {s: stats[f"{s}_count"] for s in out} == {
        "train": 307, "validation": 13, "test": 100}
    assert out["train"][0]["prompt"][0]["content"] == "Giải bài toán.\n"
    assert not questions(out["validation"]) & questions(out["train"])


def test_atomic_writes_respect_the_umask(tmp_path):
    import os
    import stat

    from vigsm.io import write_json, write_jsonl

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        write_jsonl(tmp_path / "b.jsonl", [{"x": 1}])
        os.umask(0o027)
        write_json(tmp_path / "c.json", {"x": 1})
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"a.json": 0o644, "b.jsonl": 0o644, "c.json": 0o640}
