"""extract_answer / numbers_equal: the public API, on literal inputs."""

import pytest

from vigsm.answers import canonical_number, extract_answer, numbers_equal, split_reasoning

STRICT = [
    # plain, and GSM8K's own marker
    ("### 18", "18"),
    ("#### 72", "72"),
    ("Lời giải...\n### 72", "72"),
    ("### 72\n### 80", "72"),  # the first marker wins
    # currency and units
    ("### $18", "18"),
    ("### 18$", "18"),
    ("### 18 đô la", "18"),
    ("### 18đ", "18"),
    ("### 18 đồng", "18"),
    ("### 18%", "18"),
    ("### 18 quả", "18"),
    ("### 100.000 đồng", "100000"),
    ("### 25.000đ", "25000"),
    ("### €5", "5"),
    # signs
    ("### -5", "-5"),
    ("### −5", "-5"),  # Unicode minus
    ("### -$5", "-5"),
    ("### +7", "7"),
    ("### -0", "0"),
    ("### -0.0", "0"),
    ("### -2,5", "-2.5"),
    # wrappers and labels
    ("### **18**", "18"),
    ("### \\boxed{18}", "18"),
    ("### $\\boxed{1,000}$", "1000"),
    ("### `42`", "42"),
    ("### Đáp án: 18", "18"),
    ("### Đáp số: 1.500 quả", "1500"),
    ("### The answer is 9.", "9"),
    # thousands separators
    ("### 1.000", "1000"),
    ("### 1,000", "1000"),
    ("### 1 000", "1000"),
    ("### 1\u00a0000", "1000"),
    ("### 1,000,000", "1000000"),
    ("### 1.000.000", "1000000"),
    ("### 12.345", "12345"),
    ("### 999,999", "999999"),
    ("### 1{,}000", "1000"),
    ("### 1\\,000", "1000"),
    # both styles
    ("### 1.234,5", "1234.5"),
    ("### 1,234.5", "1234.5"),
    ("### 1.234.567,89", "1234567.89"),
    ("### 1,234,567.89", "1234567.89"),
    ("### 1 234,5", "1234.5"),
    # decimals
    ("### 2,5", "2.5"),
    ("### 2.5", "2.5"),
    ("### 0,500", "0.5"),
    ("### 0.75", "0.75"),
    ("### 1234.5", "1234.5"),
    ("### 1234,567", "1234.567"),
    ("### 18.0", "18"),
    ("### 2.50", "2.5"),
    ("### 10.10", "10.1"),
    ("### 12,34", "12.34"),
    ("### 1,00", "1"),
    ("### 0.05", "0.05"),
    # a separator that cannot be a thousands separator ends the number
    ("### 1.5.2", "1.5"),
    ("### 2021 100", "2021"),
    # arithmetic after the marker: the first number
    ("### 10 - 3 = 7", "10"),
    ("### 16-3", "16"),
    # no number / no marker
    ("###", None),
    ("### không có đáp án", None),
    ("Đáp án là 18", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), STRICT)
def test_strict(text, expected):
    assert extract_answer(text) == expected
    assert extract_answer(text, strict=True) == expected


FLEXIBLE = [
    ("Đáp án là 18", "18"),
    ("16 - 3 - 4 = 9 quả trứng", "9"),
    ("Số tiền là 9 * $2 = $18.", "18"),
    ("tổng 1.000 rồi 2,5", "2.5"),
    ("Kết quả: -5", "-5"),
    ("Kết quả: −5°C", "-5"),
    ("16-3", "3"),  # a minus after a digit is subtraction, not a sign
    ("Answer: **1,234.5**", "1234.5"),
    ("\\boxed{42}", "42"),
    ("### 72 nhưng cuối cùng 80", "72"),  # strict wins when it exists
    ("### nothing here, then 5", "5"),
    ("không có số", None),
    ("###", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), FLEXIBLE)
def test_flexible(text, expected):
    assert extract_answer(text, strict=False) == expected


def test_flexible_falls_back_only_without_strict():
    text = "Bước 1: 3 + 4 = 7\nBước 2: 7 * 2 = 14"
    assert extract_answer(text) is None
    assert extract_answer(text, strict=False) == "14"


def test_canonical_output_has_no_exponent_or_trailing_zeros():
    assert extract_answer("### 1000000") == "1000000"
    assert extract_answer("### 100") == "100"
    assert extract_answer("### 0") == "0"
    assert extract_answer("### 000") == "0"
    assert extract_answer("### 3.1400") == "3.14"
    assert extract_answer("### 3.140") == "3140"  # by the separator rule: three digits group thousands


def test_rejects_non_string():
    with pytest.raises(TypeError):
        extract_answer(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("1000", "1000", True),
        ("18", "18.0", True),
        ("2.5", "2.50", True),
        ("-0", "0", True),
        ("-5", "5", False),
        ("2.5", "25", False),
        ("1000", "1001", False),
        ("0.1", "0.10000", True),
        (None, "5", False),
        ("5", None, False),
        (None, None, False),
        ("abc", "abc", False),
        (" 7 ", "7", True),
    ],
)
def test_numbers_equal(a, b, equal):
    assert numbers_equal(a, b) is equal


def test_notebook_failures_are_fixed():
    """The seed's string equality (as vigsm.scoring reproduces it) called these wrong; the numeric
    comparison calls them right."""
    from vigsm.config import ScoreParams
    from vigsm.scoring import score_variant

    cases = [("### $18", "18"), ("### 18 đô la", "18"), ("### 1.000", "1000"), ("### 1,000", "1000"),
             ("### 18.0", "18")]
    rows = [{"id": f"t{i}", "raw": raw, "question": "q", "reference": f"lời giải\n### {ref}",
             "reference_explanation": "lời giải", "reference_answer": ref} for i, (raw, ref) in enumerate(cases)]
    scores, per_q = score_variant(rows, ScoreParams(confidence=0.95, bootstrap_samples=100, seed=0,
                                                    report_examples=0))
    assert scores["exact_match_seed"] == 0.0  # the seed's exact match: every one wrong
    assert scores["exact_match_strict"] == scores["exact_match_flexible"] == 1.0  # corrected: every one right
    assert [q["answer_strict"] for q in per_q] == ["18", "18", "1000", "1000", "18"]


def test_answer_field_normalisation_keeps_sign_and_decimals():
    """The notebook's re.sub(r'[^\\d]', '', answer) made -5 into 5 and 2.5 into 25."""
    assert canonical_number("-5") == "-5"
    assert canonical_number("2.5") == "2.5"
    assert canonical_number("1,000") == "1000"
    assert canonical_number("$18") == "18"


def test_split_reasoning_is_the_notebooks_split():
    assert split_reasoning("a b\n### 5") == ("a b", "5")
    assert split_reasoning("no marker") == ("no marker", "")
