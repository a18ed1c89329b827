"""Ragged answer lengths as users' data give them, forced onto any causal LM (random weights included).

The generate stage's cost on real answers is set by how long they run: on SmolLM2 fine-tuned on a
grade-school set (issue 21), about half ended within 50 tokens, a tenth ran past 400, and 78 of 1,319 (~6%)
ran to the 768-token cap without a loop the stop rule catches. :func:`ragged_lengths` draws such a schedule;
:class:`ForcedLengths` wraps a model so that each prompt's answer has its scheduled length, whatever the
weights: every computed step still runs the whole model, only the chosen token is forced. The forced tokens
count down through ids that hold no newline and no answer marker, so no stop rule fires and no two are
equal (no loop).
"""

from __future__ import annotations

import random
from typing import Any

SHORT_SHARE, LONG_SHARE, CAP_SHARE = 0.5, 0.10, 0.06  # <= 50 tokens, > 400 tokens (cap rows included), at the cap
SHORT, LONG = 50, 400


def ragged_lengths(n: int, max_new_tokens: int, seed: int = 0) -> list[int]:
    """``n`` answer lengths in new tokens (end-of-turn included), shuffled: ``round(n * SHORT_SHARE)`` in
    [8, 50], ``round(n * CAP_SHARE)`` equal to ``max_new_tokens + 1`` (they would end after the cap, so they
    run to it), the rest of ``round(n * LONG_SHARE)`` in (400, max_new_tokens), and the others in (50, 400].
    Needs ``max_new_tokens > LONG + 1``."""
    if max_new_tokens <= LONG + 1:
        raise ValueError(f"max_new_tokens must exceed {LONG + 1}")
    r = random.Random(seed)
    n_short, n_cap = round(n * SHORT_SHARE), round(n * CAP_SHARE)
    n_long = max(round(n * LONG_SHARE) - n_cap, 0)
    n_mid = n - n_short - n_cap - n_long
    lengths = ([r.randint(8, SHORT) for _ in range(n_short)] + [r.randint(SHORT + 1, LONG) for _ in range(n_mid)]
               + [r.randint(LONG + 1, max_new_tokens - 1) for _ in range(n_long)] + [max_new_tokens + 1] * n_cap)
    r.shuffle(lengths)
    return lengths


class ForcedLengths:
    """``model`` with each prompt's answer forced to its length (as :func:`vigsm.decoding.decode` and the
    static decoder call it: a prefill with a 2-D mask, then one-token steps).

    The prefill picks each row's first token from its prompt (``lengths[i]`` for ``prompts[i]``); a step maps
    the row's last token to the next one through a table on the device (captured in a CUDA graph like the
    rest of the step). A row of length ``L`` writes ``L - 1`` countdown tokens, then the end-of-turn token.
    """

    def __init__(self, model: Any, tok: Any, prompts: list[list[int]], lengths: list[int],
                 max_new_tokens: int) -> None:
        import torch

        from vigsm.decoding import _token_classes, eos_ids

        self.model = model
        self.eos = min(eos_ids(model, tok))
        newline, marker = _token_classes(tok)
        special = set(tok.all_special_ids)
        free = [i for i in range(100, len(tok)) if i not in newline and i not in marker and i not in special]
        if len(free) < max_new_tokens:
            raise ValueError("the tokenizer has too few plain tokens for this length cap")
        self.countdown = free[:max_new_tokens]
        vocab = model.config.get_text_config().vocab_size
        table = torch.full((vocab,), self.eos, dtype=torch.long)
        table[self.countdown[0]] = self.eos
        for k in range(1, len(self.countdown)):
            table[self.countdown[k]] = self.countdown[k - 1]
        self.table = table.to(model.device)
        self.first = {tuple(p): self._first(n, max_new_tokens) for p, n in zip(prompts, lengths, strict=True)}

    def _first(self, length: int, max_new_tokens: int) -> int:
        length = min(length, max_new_tokens + 1)
        return self.eos if length < 2 else self.countdown[length - 2]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, input_ids: Any, attention_mask: Any = None, **kwargs: Any) -> Any:
        import torch

        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if input_ids.shape[1] > 1:  # a prefill: look each row's prompt up (left padding dropped)
            rows = [[t for t, m in zip(ids, mask, strict=True) if m]
                    for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True)]
            nxt = torch.tensor([self.first[tuple(r)] for r in rows], device=input_ids.device)
        else:
            nxt = self.table[input_ids[:, -1]]
        last = out.logits[:, -1]
        last.zero_()
        last.scatter_(1, nxt[:, None], 1.0)
        return out
