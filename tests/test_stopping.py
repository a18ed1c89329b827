"""The stop rules on literal text and token ids, and the answer rule leaving strict and flexible EM unchanged."""

from __future__ import annotations

import pytest

from vigsm.answers import extract_answer, numbers_equal
from vigsm.stopping import LOOP_MIN_SPAN, answer_end, continue_cycle, loop_period

LOOP_LINE = "Vậy số táo còn lại là 12 - 5 = 7 quả.\n"

# Realistic outputs, each with the reference answer of its question.
SAVED_OUTPUTS = [
    # answer line, then the model goes on with more text
    ("Lan có 2 + 1 = 3 cây bút.\n### 3\nVậy đáp án là 3. Ngoài ra, 4 + 4 = 8.", "3"),
    # answer line, then a second ### with another number
    ("Mỗi ngày bán 45 quả, 7 ngày bán 45 x 7 = 315 quả.\n### 315\n### 320\n", "315"),
    # a label before the number, thousands separator, text after
    ("Tổng số tiền là 1.250.000 đồng.\n### Đáp án: 1.250.000 đồng\nGiải thích thêm: 250.000 + 1.000.000", "1250000"),
    # answer at the end of the turn: no newline after it, nothing to cut
    ("Số học sinh là 36 : 4 = 9 em.\n### 9", "9"),
    # no answer marker at all: the flexible answer is the last number, never cut
    ("Ta có 12 - 5 = 7. Vậy còn 7 quả táo.\nKết quả cuối cùng là 7", "7"),
    # a marker line without a number: the line does not complete the answer, the next one does
    ("Tính toán:\n###\n17 x 23 = 391\n391 - 5 = 386\n### 386\nHết.", "386"),
    # a wrong answer followed by a correction: cutting keeps the (wrong) first answer, as strict EM reads it
    ("50 : 2 = 25\n### 24\nXin lỗi, đáp án đúng là\n### 25\n", "25"),
    # looping text before any answer
    ("Bài toán cho biết:\n" + LOOP_LINE * 12, "7"),
    # looping text after the answer line
    ("12 - 5 = 7\n### 7\n" + LOOP_LINE * 12, "7"),
    # answer with a decimal comma and a unit, markdown around it
    ("Mỗi phần là 5 : 2 = 2,5 kg.\n### **2,5 kg**\n\nChúc bạn học tốt!", "2.5"),
]


@pytest.mark.parametrize(("text", "reference"), SAVED_OUTPUTS)
def test_answer_stop_leaves_strict_and_flexible_em_unchanged(text, reference):
    """Cut each saved output where the answer rule stops the row (also with stray text after the cut,
    as a token that holds the newline may carry); the extracted answers and the EM verdicts are the same."""
    end = answer_end(text)
    cuts = [text] if end is None else [text[:end], text[:end] + "Tiếp", text[:end] + "42\n### 9"]
    for strict in (True, False):
        before = extract_answer(text, strict=strict)
        for cut in cuts:
            after = extract_answer(cut, strict=strict)
            assert after == before, (strict, cut)
            assert numbers_equal(after, reference) == numbers_equal(before, reference)


def test_answer_end_positions():
    assert answer_end("a\n### 3\nmore") == len("a\n### 3\n")
    assert answer_end("### 3") is None  # the end of turn ends it, not this rule
    assert answer_end("### 1") is None and answer_end("### 18\n") == 7  # "1" may still become "18"
    assert answer_end("no marker 5\n") is None
    assert answer_end("###\n17\n") == len("###\n17\n")  # the first number after the marker, next line
    assert answer_end("### Đáp án:\n") is None
    assert answer_end("＃＃＃ 4\nx") == len("＃＃＃ 4\n")  # full-width hashes fold to "###"
    assert answer_end("## 4\n") is None


def test_a_cut_on_saved_outputs_actually_happens():
    """The rule is not vacuous: most saved outputs with an answer line are cut, and cut short."""
    cut = [t for t, _ in SAVED_OUTPUTS if answer_end(t) is not None and answer_end(t) < len(t)]
    assert len(cut) >= 6


def test_loop_period_on_token_ids():
    cycle = [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
    assert loop_period([1, 2, 3] + cycle * 7) == 10  # 70 tokens >= max(4 x 10, 64)
    assert loop_period([1, 2, 3] + cycle * 6) is None  # 60 tokens: not enough span yet
    assert loop_period([5] * LOOP_MIN_SPAN) == 1
    assert loop_period([5] * (LOOP_MIN_SPAN - 1)) is None
    assert loop_period([7, 8] * 40) == 2  # the shortest period, not a multiple of it
    assert loop_period([9] + [7, 8] * 40 + [7]) == 2  # a cycle may end mid-way
    assert loop_period(list(range(200))) is None
    assert loop_period([1, 2, 3] * 30 + [4]) is None  # one different token at the end breaks it
    long = list(range(100, 190))  # a 90-token cycle needs 4 repeats = 360 tokens
    assert loop_period(long * 3) is None and loop_period(long * 4) == 90
    assert loop_period(list(range(100, 200)) * 5) is None  # periods over 96 tokens are never loops


def test_continue_cycle():
    assert continue_cycle([1, 2, 3, 4, 3, 4], 2, 9) == [1, 2, 3, 4, 3, 4, 3, 4, 3]
    assert continue_cycle([1, 2, 3], 1, 2) == [1, 2, 3]
