"""Final-answer extraction rules: pure functions, no torch. Only the score stage depends on this module.

Public API (called from outside this repository; keep it stable):

- :func:`extract_answer` reads the final number of a solution as a canonical decimal string.
- :func:`numbers_equal` compares two such strings by exact decimal value.

How numbers and the marker are written (the separator rule, the cleaning, the canonical form) is
:mod:`vigsm.notation`, which prepare and the generation stop rule read too; this module decides which
number is the answer.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from vigsm.notation import NOTEBOOK_MARKER, canonical, canonical_number, clean, marked_number, numbers

__all__ = ["canonical_number", "extract_answer", "numbers_equal", "split_reasoning"]


def extract_answer(text: str, strict: bool = True) -> str | None:
    """Extract the final numeric answer of a solution as a canonical decimal string.

    Canonical form: no thousands separators, "." as the decimal point, no trailing fractional zeros,
    no "+", and "-0" is "0". Examples: ``"1000"``, ``"-5"``, ``"2.5"``.

    - strict (default): the first number after the first ``###`` marker (``####`` counts too). None when
      there is no marker, or no number after it.
    - flexible (``strict=False``): the strict answer when there is one, otherwise the last number
      anywhere in the text; None when the text has no number at all.

    Accepted around a number: currency and units (``$18``, ``18 đô la``, ``18đ``, ``18%``, ``18 quả``), a
    Unicode minus, markdown and LaTeX wrappers (``**18**``, ``\\boxed{18}``), a label before it
    (``### Đáp án: 18``).

    Separator rule: ``,``, ``.`` and a space may group thousands. A separator is read as a thousands
    separator only when the leading group has 1-3 digits and is not ``0``, and every group after it has
    exactly three digits; otherwise it is a decimal point (``1.000`` and ``1,000`` are 1000, ``2,5`` is 2.5,
    ``0,500`` is 0.5, ``1234.5`` is 1234.5). When both ``.`` and ``,`` occur, the last one is the decimal
    point and the other groups thousands (``1.234,5`` and ``1,234.5`` are 1234.5). A space only ever
    groups thousands.
    """
    if not isinstance(text, str):
        raise TypeError(f"extract_answer expects a str, got {type(text).__name__}")
    answer = marked_number(text)
    if answer is not None or strict:
        return answer
    nums = numbers(clean(text))
    return canonical(nums[-1]) if nums else None


def numbers_equal(a: str | None, b: str | None) -> bool:
    """True when both are numbers with exactly the same decimal value; None equals nothing."""
    if a is None or b is None:
        return False
    try:
        return Decimal(a.strip()) == Decimal(b.strip())
    except (InvalidOperation, AttributeError):
        return False


def split_reasoning(text: str) -> tuple[str, str]:
    """Split a solution at the first marker into (reasoning, text after the marker), both stripped.

    This is the notebook's split: with no marker, the whole text is reasoning and the answer is "".
    """
    parts = text.split(NOTEBOOK_MARKER, 1)
    if len(parts) == 2:
        return parts[0].strip(), parts[1].strip()
    return text.strip(), ""
