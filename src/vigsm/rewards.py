"""GRPO's rewards: pure functions of the completion text and the reference answer (no torch).

Each reward has TRL's signature ``f(prompts, completions, completion_ids, **dataset_columns)`` and returns
one float per completion. A completion is text, or (conversational prompts) a list of messages whose last
one is the assistant's reply. The answer is read by :mod:`vigsm.answers`, the same judge that scores the
test split, so the reward is exactly the score's exact match for one completion.

A reward must never raise: one odd completion would otherwise kill a run that has spent minutes on
rollouts. Anything unreadable (no text, no number, a malformed number) earns 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from vigsm.answers import extract_answer, numbers_equal
from vigsm.notation import MARKER, MARKER_CHARS

RewardFunc = Callable[..., list[float]]

# The answer line the SFT target teaches ("### 180"): a marker at the start of a line, then a number (a
# label such as "Đáp án:" and units may stand around it, as extract_answer accepts).
_ANSWER_LINE = re.compile(rf"(?m)^[ \t]*{re.escape(MARKER_CHARS[0])}{{3,}}[^\n]*\d")


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as is; a list of messages, the last one's ``content``;
    anything else ""."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        last = completion[-1]
        if isinstance(last, dict) and isinstance(last.get("content"), str):
            return last["content"]
    if isinstance(completion, dict) and isinstance(completion.get("content"), str):
        return completion["content"]
    return ""


def is_correct(text: str, reference: Any, *, strict: bool) -> bool:
    """True when the answer read from ``text`` (strict: after ``###`` only; flexible: else the last
    number) equals ``reference`` by decimal value. Never raises."""
    try:
        return numbers_equal(extract_answer(text, strict=strict), None if reference is None else str(reference))
    except Exception:  # noqa: BLE001 - a reward that raises kills the run; an unreadable text is simply wrong
        return False


def has_answer_line(text: str) -> bool:
    """The completion states its answer once, the way the SFT target does: exactly one ``###`` marker,
    at the start of a line, with a number after it on that line. A looping completion that repeats its
    answer line does not qualify."""
    try:
        return len(MARKER.findall(text)) == 1 and _ANSWER_LINE.search(text) is not None \
            and extract_answer(text, strict=True) is not None
    except Exception:  # noqa: BLE001 - as is_correct: never raise
        return False


def group_any_share(flags: Sequence[bool], group_size: int) -> float:
    """The share of consecutive groups of ``group_size`` with at least one True: the prompts whose group
    carries a learning signal for a 0/1 reward (a group all wrong, or all right, has zero advantage)."""
    if group_size < 1 or not flags:
        return 0.0
    groups = [flags[i:i + group_size] for i in range(0, len(flags), group_size)]
    return sum(1 for g in groups if any(g)) / len(groups)


def correctness_reward(mode: str, group_size: int) -> RewardFunc:
    """The reward 1.0 for a completion whose answer (read ``mode``: strict or flexible) equals the
    dataset's ``answer`` column, else 0.0. Each call also reports, through TRL's ``log_metric`` keyword,
    ``groups_any_correct``: the share of its groups (``group_size`` consecutive completions of one
    prompt, as TRL's sampler orders them) with any correct completion."""
    if mode not in ("strict", "flexible"):
        raise ValueError(f"reward mode must be strict or flexible, got {mode!r}")
    strict = mode == "strict"

    def correct(prompts: Sequence[Any] = (), completions: Sequence[Any] = (), completion_ids: Any = None,
                answer: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
        refs = list(answer) if answer is not None else [None] * len(completions)
        flags = [is_correct(completion_text(c), r, strict=strict) for c, r in zip(completions, refs, strict=False)]
        flags += [False] * (len(completions) - len(flags))
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric("groups_any_correct", group_any_share(flags, group_size))
        return [1.0 if f else 0.0 for f in flags]

    correct.__name__ = "correct"
    return correct


def format_reward(prompts: Sequence[Any] = (), completions: Sequence[Any] = (), completion_ids: Any = None,
                  **kwargs: Any) -> list[float]:
    """1.0 for a completion with one ``### N`` answer line (:func:`has_answer_line`), else 0.0; weighted
    by ``rl.format_reward``."""
    return [1.0 if has_answer_line(completion_text(c)) else 0.0 for c in completions]


def reward_functions(mode: str, format_weight: float, group_size: int) -> tuple[list[RewardFunc], list[float]]:
    """The reward functions and their weights for GRPOTrainer: correctness (weight 1), and the format
    reward when its weight is above 0."""
    funcs, weights = [correctness_reward(mode, group_size)], [1.0]
    if format_weight > 0:
        funcs.append(format_reward)
        weights.append(float(format_weight))
    return funcs, weights
