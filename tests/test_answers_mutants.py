"""Answers: the cases the main tests leave loose, each on literal text."""

import pytest

from vigsm.answers import canonical_number, extract_answer, split_reasoning


def test_split_reasoning_cuts_at_the_first_marker():
    """The notebook's split is at the first ``###``; what follows keeps any later marker."""
    assert split_reasoning("a ### b ### c") == ("a", "b ### c")
    assert split_reasoning("  lý do\n#### 18 \n") == ("lý do", "# 18")
    assert split_reasoning("###") == ("", "")


def test_negative_zero_is_zero():
    assert extract_answer("### -0") == "0"
    assert extract_answer("### −0,0 đô la") == "0"  # Unicode minus, a decimal comma
    assert canonical_number("-0.000") == "0"
    assert extract_answer("### -0.50") == "-0.5"


def test_a_non_string_is_named_in_the_error():
    with pytest.raises(TypeError, match=r"^extract_answer expects a str, got int$"):
        extract_answer(18)
