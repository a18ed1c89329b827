"""The small shared helpers that replaced repeated logic: atomic directories, digests, the local-path
guess, the interval verdict, and the report's table of rows."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from vigsm import metrics as M
from vigsm.config import ScoreParams
from vigsm.digest import fingerprint, sha256_hex
from vigsm.hub import names_local_path
from vigsm.io import atomic_dir


def test_atomic_dir_replaces_the_old_directory_whole(tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "old.bin").write_text("old")
    with atomic_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp != out and not any(tmp.iterdir())
        (tmp / "new.bin").write_text("new")
        assert (out / "old.bin").is_file()  # the old one stays until the new one is complete
    assert sorted(p.name for p in out.iterdir()) == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temporary left beside it


def test_atomic_dir_keeps_the_old_directory_when_writing_fails(tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "old.bin").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "half.bin").write_text("half")
        raise RuntimeError("killed while saving")
    assert sorted(p.name for p in out.iterdir()) == ["old.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_atomic_dir_keep_existing_leaves_another_writers_copy(tmp_path):
    out = tmp_path / "cache" / "model"
    with atomic_dir(out, keep_existing=True) as tmp:
        (tmp / "mine.bin").write_text("mine")
        out.mkdir()  # another process finished the same entry meanwhile
        (out / "theirs.bin").write_text("theirs")
    assert sorted(p.name for p in out.iterdir()) == ["theirs.bin"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]
    with atomic_dir(tmp_path / "cache" / "fresh", keep_existing=True) as tmp:
        (tmp / "mine.bin").write_text("mine")
    assert (tmp_path / "cache" / "fresh" / "mine.bin").read_text() == "mine"


def test_digests_are_the_ones_the_caches_were_keyed_by(tmp_path):
    """A changed digest would silently orphan GGUF conversions and restart resumable training runs."""
    big = tmp_path / "w.gguf"
    big.write_bytes(os.urandom((1 << 20) + 12345))  # more than one read chunk
    data = tmp_path / "train.jsonl"
    data.write_text('{"x": 1}\n')
    assert sha256_hex(big) == hashlib.sha256(big.read_bytes()).hexdigest()
    settings = [{"name": "m", "lr": 1e-4}, {"r": 8}]
    old = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    old.update(data.read_bytes())
    assert fingerprint(settings, data) == old.hexdigest()[:16]
    assert sha256_hex("đ", b"x") == hashlib.sha256("đx".encode()).hexdigest()


def test_names_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("./m", "/m", "~/m", "../m"):
        assert names_local_path(name), name
    assert not names_local_path("owner/model")
    (tmp_path / "owner" / "model").mkdir(parents=True)
    assert names_local_path("owner/model")  # a folder by that name wins over the hub id


@pytest.mark.parametrize(("lo", "hi", "side"), [(0.01, 0.2, 1), (-0.3, -0.01, -1), (-0.1, 0.1, 0), (0.0, 0.2, 0),
                                                (-0.2, 0.0, 0)])
def test_interval_side(lo, hi, side):
    assert M.interval_side(lo, hi) == side


def test_report_is_its_table_of_rows_and_names_its_variant():
    from vigsm.scoring import render_report, report_variant, score_variant

    score_p = ScoreParams(confidence=0.95, bootstrap_samples=100, seed=0, report_examples=1)
    rows = {v: [{"id": f"test-{i}", "raw": f"so {i} ### {i + k}", "question": f"q{i}", "reference": f"### {i}",
                 "reference_explanation": f"so {i}", "reference_answer": str(i)} for i in range(4)]
            for v, k in (("finetuned", 0), ("base", 1))}
    scores, per_q = {}, {}
    for v in rows:
        scores[v], per_q[v] = score_variant(rows[v], score_p)
    assert report_variant(list(scores)) == "finetuned" and report_variant(["base"]) == "base"
    text = render_report(scores, rows, per_q, score_p, None, examples_of="finetuned")
    lines = text.splitlines()
    assert "| metric | finetuned | base |" in lines
    assert "| **EM flexible (%)** | **100.0** [51.0, 100.0] | **0.0** [0.0, 49.0] |" in lines
    assert "| EM seed: string equality after ### (%) | 100.0 | 0.0 |" in lines
    assert sum(line.startswith("| rouge") for line in lines) == 6
    assert "## Right answers (finetuned)" in lines and "## Wrong answers (finetuned)" in lines
    assert "### test-0" in lines and "(none)" in lines  # its first right answer; it has no wrong one
    assert "Did fine-tuning help?" not in text


# One case per row of answers._parse_token's rule table, and the edges between rows.
@pytest.mark.parametrize(("token", "value"), [
    ("1 234 567,5", "1234567.5"),  # spaces after a valid leading group: dropped, then the separator rules
    ("1 234,567", "1234.567"),  # ... which read "1234,567" as a decimal (leading group of 4 digits)
    ("0 500", "0"),  # spaces otherwise: the number ends at the first space
    ("1,5 000", "1.5"),
    ("1234", "1234"),  # digits only
    ("1.000", "1000"), ("1,234,567", "1234567"), ("0,500", "0.5"), ("2,5", "2.5"),  # one separator kind
    ("1.5.2", "1.5"),  # only one decimal point: cut at the second
    ("1.234,5", "1234.5"), ("1,234.5", "1234.5"),  # both kinds: the last one is the decimal point
    ("1,5.2", "1"), ("1.234,5.6", "1"), ("1.234,5,6", "1"),  # both kinds otherwise: cut at the first separator
])
def test_number_token_rule_table(token, value):
    from vigsm.answers import canonical_number

    assert canonical_number(f"đáp số {token} quả") == value
