"""When a generated row may stop early: pure functions on text and token ids, no torch.

Two rules, each switched by a ``generate`` param:

- ``stop_at_answer``: a row stops once its answer line is complete, i.e. the text holds a ``###`` marker
  followed by a number and then a newline (:func:`answer_end`). End of turn stops every row anyway.
  After that point nothing the model writes can change the extracted answer, strict or flexible: the
  strict answer is the first number after the first marker, and the flexible one is the strict one when
  there is one (``vigsm.answers.extract_answer``). The test reads only how the marker and numbers are
  written (:mod:`vigsm.notation`), so generate does not depend on the extraction rules.
- ``stop_loops``: a row stops once its last tokens are one short cycle repeated (:func:`loop_period`):
  a period of at most :data:`LOOP_MAX_PERIOD` tokens, repeated at least :data:`LOOP_MIN_REPEATS` times and
  covering at least :data:`LOOP_MIN_SPAN` tokens. Such a row is then completed, without computing, by
  repeating its cycle up to ``max_new_tokens`` (:func:`continue_cycle`): the text is the one the model
  writes if the cycle goes on to the cap, which is what greedy decoding does once a cycle has set in
  (the benchmark counts the answers where it did not).
"""

from __future__ import annotations

from vigsm.notation import MARKER_CHARS, marked_number

__all__ = ["LOOP_MAX_PERIOD", "LOOP_MIN_REPEATS", "LOOP_MIN_SPAN", "answer_end", "continue_cycle", "loop_period"]

LOOP_MAX_PERIOD = 96  # tokens in one cycle, at most
LOOP_MIN_REPEATS = 4  # whole cycles seen in a row, at least
LOOP_MIN_SPAN = 64  # tokens covered by the repeats, at least (a 2-token cycle must run 32 times)


def answer_end(text: str) -> int | None:
    """The index just after the newline that completes the answer line, or None if it is not complete.

    It is the first newline ``c`` with a number after the first marker in ``text[:c + 1]``
    (:func:`vigsm.notation.marked_number`, the strict answer of ``extract_answer``). Contract: for every
    suffix ``s``, ``extract_answer(text[:end] + s, strict)`` equals ``extract_answer(text[:end], strict)``
    for strict and flexible alike (a number never spans a newline, and the first marker and the first
    number after it both lie before ``end``).
    """
    first = min((i for i in (text.find(ch) for ch in MARKER_CHARS) if i >= 0), default=-1)
    if first < 0:
        return None
    c = text.find("\n", first)
    while c >= 0:
        if marked_number(text[: c + 1]) is not None:
            return c + 1
        c = text.find("\n", c + 1)
    return None


def loop_period(tokens: list[int], max_period: int = LOOP_MAX_PERIOD, min_repeats: int = LOOP_MIN_REPEATS,
                min_span: int = LOOP_MIN_SPAN) -> int | None:
    """The shortest period ``p`` such that the last ``max(min_repeats * p, min_span)`` tokens repeat with
    period ``p`` (each equals the token ``p`` before it), or None."""
    n = len(tokens)
    for p in range(1, max_period + 1):
        span = max(min_repeats * p, min_span)
        if span > n:
            break
        if tokens[n - 1 - p] != tokens[n - 1]:
            continue  # the cheap test first; most periods fail it
        if tokens[n - span + p:] == tokens[n - span: n - p]:
            return p
    return None


def continue_cycle(tokens: list[int], period: int, length: int) -> list[int]:
    """``tokens`` extended to ``length`` by repeating its last ``period`` tokens (unchanged if long enough)."""
    out = list(tokens)
    while len(out) < length:
        out.append(out[len(out) - period])
    return out
