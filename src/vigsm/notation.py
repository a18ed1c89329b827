"""How numbers and the answer marker are written: pure functions, no torch, no other vigsm module.

The lexical layer under :mod:`vigsm.answers`: the marker characters, the cleaning of markdown and LaTeX
wrappers, what a number token is, the separator rule that reads its value, and the canonical form. It is
what prepare needs (a dataset's answer field read as a canonical number) and what the generation stop rule
needs (:mod:`vigsm.stopping`: has the answer line ended?), so those stages do not depend on the extraction
rules of :mod:`vigsm.answers` (which number is the answer, strict or flexible; equality), which only score
reads: an edit there reruns score alone.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal

# The answer marker: three or more "#" ("####" is GSM8K's own). Models also write the full-width "＃",
# which the cleaning (NFKC) folds to "#": MARKER_CHARS are the characters a marker can be written with,
# MARKER finds one in cleaned text, and NOTEBOOK_MARKER is the literal the notebook split raw text at.
MARKER_CHARS = ("#", "\uff03")
MARKER = re.compile(f"{MARKER_CHARS[0]}{{3,}}")
NOTEBOOK_MARKER = MARKER_CHARS[0] * 3

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
    rule of :func:`vigsm.answers.extract_answer`:

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


def canonical(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", "+0", ""):
        text = "0"
    return text.lstrip("+")


def clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_MINUS)
    # Markdown emphasis and LaTeX wrappers around numbers carry no meaning for the value.
    text = re.sub(r"\\(?:boxed|text|mathrm|mathbf|textbf)\s*\{", " ", text)
    text = re.sub(r"\\[()\[\]]|[*_`{}]", " ", text)
    # LaTeX thousands spacing "1{,}000" became "1 , 000" above; "1\,000" and "1\ 000" are spaces.
    text = re.sub(r"(\d) ?, ?(\d{3})(?!\d)", r"\1,\2", text)
    return re.sub(r"(\d)\\[,;: ](\d{3})(?!\d)", r"\1 \2", text)


def numbers(text: str) -> list[Decimal]:
    out = []
    for m in NUMBER.finditer(text):
        value = _parse_token(m.group("num"))
        if m.group("sign") and m.group("sign").strip()[0] == "-":
            value = -value
        out.append(value)
    return out


def canonical_number(text: str) -> str | None:
    """The first number in ``text`` as a canonical decimal string, or None if there is none."""
    nums = numbers(clean(text))
    return canonical(nums[0]) if nums else None


def marked_number(text: str) -> str | None:
    """The first number after the first answer marker in ``text``, canonical; None when there is no marker
    or no number after it. The strict answer of :func:`vigsm.answers.extract_answer`, and the test of
    :func:`vigsm.stopping.answer_end`."""
    cleaned = clean(text)
    marker = MARKER.search(cleaned)
    if marker:
        nums = numbers(cleaned[marker.end():])
        if nums:
            return canonical(nums[0])
    return None
