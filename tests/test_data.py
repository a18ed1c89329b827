"""prepare: sources, normalisation, chat records, and bad data (clear error or counted skip)."""

import json
import re
import subprocess
import sys
from fractions import Fraction

import pytest

from conftest import ROOT, write_params
from vigsm.config import DataParams, load_section
from vigsm.data import prepare
from vigsm.errors import VigsmError
from vigsm.io import read_jsonl
from vigsm.sample import generate

SAMPLE = ROOT / "data" / "sample"


def data_params(**kw) -> DataParams:
    import dataclasses

    base = load_section("data", path=ROOT / "params.yaml")
    return dataclasses.replace(base, **{"source": "sample", "train_limit": 0, "test_limit": 0, **kw})


def test_bundled_sample_is_reproducible_and_correct():
    train, test = generate()
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
    records, stats = prepare(data_params(), SAMPLE)
    rec = records["train"][0]
    assert [m["role"] for m in rec["prompt"]] == ["system", "user"]
    assert rec["completion"][0]["role"] == "assistant"
    assert rec["completion"][0]["content"] == f"{rec['explanation']}\n### {rec['answer']}"
    assert rec["prompt"][0]["content"].startswith("Bạn là một trợ lý toán học.")
    assert stats["train_count"] == 320 and stats["test_count"] == 100
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
     "missing field 'explanation'"),
    ("duplicate ids", lambda d: write_split(d / "train.jsonl", [row(0, q="A"), row(0, q="B")]), "duplicate index '0'"),
    ("bad json", lambda d: (d / "train.jsonl").write_text('{"index": 0,\n'), "not valid JSON"),
    ("bad utf-8", lambda d: (d / "train.jsonl").write_bytes(b'{"index": 0, "question": "\xff"}\n'),
     "not valid UTF-8"),
    ("all skipped", lambda d: write_split(d / "train.jsonl", [row(0, a="none")]), "train split is empty"),
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
    params = __import__("yaml").safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["source"] = str(tmp_path)
    write_params(tmp_path / "params.yaml", params)
    proc = subprocess.run([sys.executable, "stages/prepare.py", "--sample-dir", "data/sample", "--out-dir",
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
