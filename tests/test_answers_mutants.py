"""Answers: the cases the main tests leave loose, each on literal text."""

from vigsm.answers import split_reasoning


def test_split_reasoning_cuts_at_the_first_marker():
    """The notebook's split is at the first ``###``; what follows keeps any later marker."""
    assert split_reasoning("a ### b ### c") == ("a", "b ### c")
    assert split_reasoning("  lý do\n#### 18 \n") == ("lý do", "# 18")
    assert split_reasoning("###") == ("", "")
