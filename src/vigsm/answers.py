"""Final-answer extraction: pure functions, no torch.

Public API (called from outside this repository; keep it stable):

- :func:`extract_answer` reads the final number of a solution as a canonical decimal string.
- :func:`numbers_equal` compares two such strings by exact decimal value.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

__all__ = ["canonical_number", "extract_answer", "numbers_equal", "split_reasoning"]

# The answer marker: "###" or more hashes ("####" is GSM8K's own).
MARKER = re.compile(r"#{3,}")

# Minus signs that models and typesetters use besides ASCII "-".
_MINUS = str.maketrans({"\u2212": "-", "\ufe63": "-", "\uff0d": "-", "\u2012": "-", "\u2013": "-"})
# Spaces that may separate thousands.
_SPACES = "\u0020\u00a0\u202f\u2009"

# A number token: optional sign (only where it cannot be a binary minus: not after a digit, letter or
# closing bracket), digits, then groups joined by "." or "," (followed by digits), or by a space that is
# followed by exactly three digits. The sign may be separated from the digits by a currency sign.
NUMBER = re.compile(
    rf"(?<![\w)\]}}.,])(?P<sign>[-+]\s?[$€£₫]?\s?)?"
    rf"(?P<num>\d+(?:(?:[.,]|[{_SPACES}](?=\d{{3}}(?!\d)))\d+)*)"
)


def _digits_ok_as_thousands(groups: list[str]) -> bool:
    """The separator rule: leading group 1-3 digits and not "0"; every later group exactly 3 digits."""
    lead, rest = groups[0], groups[1:]
    return 1 <= len(lead) <= 3 and lead != "0" and all(len(g) == 3 for g in rest)


_SPACE = re.compile(f"[{_SPACES}]")

# A token whose spaces group thousands: a valid leading group, then one or more groups of exactly three
# digits after a space. A group may go on with "." or "," ("1 234,5"): that part is read afterwards.
_SPACED = re.compile(
    rf"""
    (?P<lead> (?!0[{_SPACES}]) \d{{1,3}} )                         # 1-3 digits, not a lone "0"
    (?P<groups> (?: [{_SPACES}] \d{{3}} (?!\d) [.,\d]* )+ )       # " 234", " 567,5", ...
    """,
    re.VERBOSE,
)

# A token without spaces, cut into the parts the separator rule speaks of.
_SHAPE = re.compile(
    r"""
    (?P<int>  \d+ (?: (?P<sep>[.,]) \d+ (?: (?P=sep) \d+ )* )? )   # digit runs joined by one separator kind
    (?: (?P<dec>[.,]) (?P<frac>\d+) )?                            # then the other kind once, and digits
    (?P<rest> [.,\d]* )                                           # whatever follows that
    """,
    re.VERBOSE,
)


def _without_spaces(token: str) -> str:
    """Spaces only ever group thousands: a validly spaced token loses its spaces ("1 234,5" -> "1234,5");
    otherwise the number ends at its first space ("0 500" -> "0")."""
    if _SPACED.fullmatch(token):
        return _SPACE.sub("", token)
    return _SPACE.split(token, maxsplit=1)[0]


def _one_kind(groups: list[str]) -> Decimal:
    """One separator kind: thousands where the groups allow it ("1.000", "1,234,567"), otherwise a decimal
    point, and only one may stand in a number ("2,5" -> 2.5, "1.5.2" -> 1.5)."""
    if _digits_ok_as_thousands(groups):
        return Decimal("".join(groups))
    return Decimal(f"{groups[0]}.{groups[1]}")


def _both_kinds(groups: list[str], frac: str, rest: str) -> Decimal:
    """Both kinds: the last separator is the decimal point when it stands once, after valid thousands
    groups ("1.234,5", "1,234.5"); otherwise the number ends at its first separator ("1,5.2" -> 1)."""
    if not rest and _digits_ok_as_thousands(groups):
        return Decimal(f"{''.join(groups)}.{frac}")
    return Decimal(groups[0])


def _parse_token(token: str) -> Decimal:
    """Read one number token (``NUMBER``'s ``num`` part: digits and separators, no sign) by the separator
    rule of :func:`extract_answer`:

    ======================================  ===================  ==========================================
    token                                   example              value
    ======================================  ===================  ==========================================
    spaces after a valid leading group      ``1 234 567,5``      spaces dropped, then the rows below
    spaces otherwise                        ``0 500``            the part before the first space, then below
    digits only                             ``1234``             as written
    one separator kind                      ``1.000``, ``2,5``   :func:`_one_kind`
    both kinds                              ``1.234,5``          :func:`_both_kinds`
    ======================================  ===================  ==========================================
    """
    shape = _SHAPE.fullmatch(_without_spaces(token))
    if shape is None:
        raise ValueError(f"not a number token: {token!r}")
    if shape["sep"] is None:
        return Decimal(shape["int"])
    groups = shape["int"].split(shape["sep"])
    if shape["dec"] is None:
        return _one_kind(groups)
    return _both_kinds(groups, shape["frac"], shape["rest"])


def _canonical(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", "+0", ""):
        text = "0"
    return text.lstrip("+")


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_MINUS)
    # Markdown emphasis and LaTeX wrappers around numbers carry no meaning for the value.
    text = re.sub(r"\\(?:boxed|text|mathrm|mathbf|textbf)\s*\{", " ", text)
    text = re.sub(r"\\[()\[\]]|[*_`{}]", " ", text)
    # LaTeX thousands spacing "1{,}000" became "1 , 000" above; "1\,000" and "1\ 000" are spaces.
    text = re.sub(r"(\d) ?, ?(\d{3})(?!\d)", r"\1,\2", text)
    return re.sub(r"(\d)\\[,;: ](\d{3})(?!\d)", r"\1 \2", text)


def _numbers(text: str) -> list[Decimal]:
    out = []
    for m in NUMBER.finditer(text):
        value = _parse_token(m.group("num"))
        if m.group("sign") and m.group("sign").strip()[0] == "-":
            value = -value
        out.append(value)
    return out


def canonical_number(text: str) -> str | None:
    """The first number in ``text`` as a canonical decimal string, or None if there is none."""
    nums = _numbers(_clean(text))
    return _canonical(nums[0]) if nums else None


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
    cleaned = _clean(text)
    marker = MARKER.search(cleaned)
    if marker:
        nums = _numbers(cleaned[marker.end():])
        if nums:
            return _canonical(nums[0])
    if strict:
        return None
    nums = _numbers(cleaned)
    return _canonical(nums[-1]) if nums else None


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
    parts = text.split("###", 1)
    if len(parts) == 2:
        return parts[0].strip(), parts[1].strip()
    return text.strip(), ""
