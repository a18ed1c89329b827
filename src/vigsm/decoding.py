"""Slot-based decoding over a Hugging Face causal LM: a finished row leaves the batch at once, and free
slots are refilled with waiting prompts.

Why not transformers' continuous batching (``generate_batch`` / ``ContinuousBatchingManager``)? It was
slower than a static batch on an H200, its CUDA graphs with async batching ran out of memory, it runs its
own paged attention (so :func:`vigsm.attention.gqa_decode_attention` does not apply), and a request ends
only at its end-of-sequence ids or its length cap, so the stop rules below would need a watcher cancelling
requests from outside (the measurements: docs/decoding.md). This module keeps the model's own forward with
SDPA or the registered decode attention, and removes the static batch's waste instead:

- every row decodes in one running batch of at most ``slots`` rows, left-padded, with per-row positions;
- a row that ends (end of turn, ``max_new_tokens``, or a stop rule of :mod:`vigsm.stopping`) is handed to
  ``on_finish`` and dropped from the batch and its KV cache before the next step, so no step is spent on
  it; cache columns that only padding uses any more are cut off;
- when a quarter of the slots (at least one) are free, the next waiting prompts are prefilled as a batch
  of their own and their cache is merged into the running one (both left-padded to one length; where a
  row's padding sits does not matter, since its mask hides it and its positions are passed explicitly).

On a GPU with ``cuda_graphs`` (``generate.cuda_graphs``), :func:`decode` runs the same rows, stop rules
and callbacks over a preallocated KV cache instead, each step replayed as a CUDA graph: a finished row stays
in the batch until most rows have finished, then the live rows move to a smaller cache (``_decode_static``).
That trades a few wasted row-steps for one graph launch a step in place of thousands of kernel launches.

Only full-attention caches (``DynamicLayer``) are merged and trimmed: the models here (Qwen2.5, SmolLM2,
Llama) use no sliding-window layers.

Greedy decoding picks the arg-max as ``generate`` does, after the model's ``generation_config``
repetition penalty where it sets one (as ``generate`` applies it). Sampling draws each token from the
row's own counter-based random stream (question seed, token index), so a row's sample does not depend on
which rows share its batch, nor on the number of slots.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vigsm.notation import MARKER_CHARS
from vigsm.stopping import answer_end, continue_cycle, loop_period

REFILL_SHARE = 4  # refill once slots // REFILL_SHARE (at least one) are free: one prefill per several rows
LOOP_CHECK_EVERY = 16  # tokens between loop checks of a row (pure Python, so not at every step)
COLUMN_BUCKET = 128  # static decoding: attention reads the cache up to the next multiple (one graph each)
SHRINK_AT = 2  # static decoding: the rows move to a smaller cache once at most 1/SHRINK_AT of it is alive
LOOKAHEAD: bool | None = None  # static decoding: queue each step before reading the last (None: on a GPU)


@dataclass(frozen=True)
class Decoding:
    """What to decode: the length cap, greedy or sampling, and the stop rules."""

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    stop_at_answer: bool = False
    stop_loops: bool = False


@dataclass
class DecodeStats:
    """Work done, summed over calls: ``row_steps`` counts the rows of every forward pass that produced a
    next token (a prefill counts its rows once), so ``1 - new_tokens / row_steps`` is the share of work
    spent on rows that no longer needed it (0 here by construction; large for a static batch)."""

    row_steps: int = 0
    new_tokens: int = 0  # tokens the model computed (end-of-turn tokens included)
    cycle_tokens: int = 0  # tokens written by continue_cycle for rows stopped as loops, not computed
    forward_steps: int = 0
    prefills: int = 0
    stopped: dict[str, int] = field(default_factory=lambda: {"eos": 0, "answer": 0, "loop": 0, "max_new_tokens": 0})

    def as_dict(self) -> dict[str, Any]:
        waste = 1 - self.new_tokens / self.row_steps if self.row_steps else None
        return {"row_steps": self.row_steps, "new_tokens": self.new_tokens, "cycle_tokens": self.cycle_tokens,
                "waste": round(waste, 4) if waste is not None else None, "forward_steps": self.forward_steps,
                "prefills": self.prefills, "stopped_at_eos": self.stopped["eos"],
                "stopped_at_answer": self.stopped["answer"], "stopped_as_loop": self.stopped["loop"],
                "hit_max_new_tokens": self.stopped["max_new_tokens"]}


# id(tokenizer) -> (tokenizer, classes); holding the tokenizer keeps its id from being reused
_TOKEN_CLASSES: dict[int, tuple[Any, tuple[frozenset[int], frozenset[int]]]] = {}


def _token_classes(tok: Any) -> tuple[frozenset[int], frozenset[int]]:
    """Ids whose text holds a newline, and ids whose text holds a marker character (cached per tokenizer):
    only such tokens can complete an answer line, so only then is a row's text decoded."""
    key = id(tok)
    if key not in _TOKEN_CLASSES:
        pieces = tok.batch_decode([[i] for i in range(len(tok))])
        marks = frozenset(i for i, s in enumerate(pieces) if any(c in s for c in MARKER_CHARS))
        _TOKEN_CLASSES[key] = (tok, (frozenset(i for i, s in enumerate(pieces) if "\n" in s), marks))
    return _TOKEN_CLASSES[key][1]


def eos_ids(model: Any, tok: Any) -> set[int]:
    """The ids that end a turn: the model's generation_config (as ``generate`` reads them), else the
    tokenizer's end-of-sequence token."""
    gc = getattr(model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None) if gc is not None else None
    if eos is None:
        eos = tok.eos_token_id
    return set(eos) if isinstance(eos, list | tuple) else {eos}


def _processors(model: Any, dec: Decoding) -> Any:
    """transformers' own logits processors for what ``generate`` would apply with this decoding."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    gc = getattr(model, "generation_config", None)
    procs = LogitsProcessorList()
    penalty = getattr(gc, "repetition_penalty", None)
    if penalty not in (None, 1.0):
        procs.append(RepetitionPenaltyLogitsProcessor(penalty))
    if dec.do_sample:
        if dec.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(dec.temperature))
        top_k = getattr(gc, "top_k", None)  # generate keeps the generation_config's top_k when sampling
        if top_k:
            procs.append(TopKLogitsWarper(top_k))
        if dec.top_p < 1.0:
            procs.append(TopPLogitsWarper(dec.top_p))
    return procs


# splitmix64 constants, as signed 64-bit integers (torch has no unsigned 64-bit arithmetic).
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


def _srl(x: Any, k: int) -> Any:
    return (x >> k) & ((1 << (64 - k)) - 1)  # a logical shift: >> on int64 is arithmetic


def _mix(x: Any) -> Any:
    x = (x ^ _srl(x, 30)) * _MIX1
    x = (x ^ _srl(x, 27)) * _MIX2
    return x ^ _srl(x, 31)


def row_uniforms(seeds: Any, steps: Any, vocab: int) -> Any:
    """Uniforms in (0, 1), shape [rows, vocab], a pure function of (seed, step, token id) per row."""
    import torch

    key = _mix(seeds * _GOLDEN + steps)
    ids = torch.arange(vocab, device=seeds.device, dtype=torch.int64)
    x = _mix(key[:, None] ^ _mix(ids * _GOLDEN + 1)[None, :])
    return (_srl(x, 11).double() + 0.5) * 2.0 ** -53


class _Batch:
    """The running rows: their KV cache, attention mask, next positions and (where needed) token ids."""

    def __init__(self, keep_ids: bool) -> None:
        self.cache: Any = None
        self.mask: Any = None  # [B, L] long
        self.pos: Any = None  # [B] next position of each row
        self.ids: Any = None  # [B, L] prompt and generated ids (for the repetition penalty), left-padded
        self.keep_ids = keep_ids

    def __len__(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[0])

    @staticmethod
    def _left_pad(t: Any, length: int, dim: int, value: float = 0) -> Any:
        import torch

        missing = length - t.shape[dim]
        if missing == 0:
            return t
        shape = list(t.shape)
        shape[dim] = missing
        return torch.cat([torch.full(shape, value, dtype=t.dtype, device=t.device), t], dim=dim)

    def merge(self, other: _Batch, pad_id: int) -> None:
        """Append ``other``'s rows below these, both left-padded to the longer cache."""
        import torch

        if self.mask is None:
            self.cache, self.mask, self.pos, self.ids = other.cache, other.mask, other.pos, other.ids
            return
        length = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([self._left_pad(mine.keys, length, -2), self._left_pad(theirs.keys, length, -2)])
            mine.values = torch.cat([self._left_pad(mine.values, length, -2),
                                     self._left_pad(theirs.values, length, -2)])
        self.mask = torch.cat([self._left_pad(self.mask, length, 1), self._left_pad(other.mask, length, 1)])
        self.pos = torch.cat([self.pos, other.pos])
        if self.keep_ids:
            width = max(self.ids.shape[1], other.ids.shape[1])
            self.ids = torch.cat([self._left_pad(self.ids, width, 1, pad_id),
                                  self._left_pad(other.ids, width, 1, pad_id)])

    def select(self, keep: list[int]) -> None:
        """Keep only the rows ``keep`` (in this order), then drop the cache columns no kept row attends to."""
        import torch

        if len(keep) == len(self):
            return
        if not keep:
            self.cache = self.mask = self.pos = self.ids = None
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.pos = self.mask[index], self.pos[index]
        if self.keep_ids:
            self.ids = self.ids[index]
        first = int(self.mask.any(dim=0).long().argmax())
        if first > 0:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]


def _prefill(model: Any, prompts: list[list[int]], pad_id: int, keep_ids: bool) -> tuple[_Batch, Any]:
    """Run the prompts as one left-padded batch; return their batch state and last-position logits."""
    import torch
    from transformers import DynamicCache

    device = model.device
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate derives position ids
    batch = _Batch(keep_ids)
    batch.cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=batch.cache, use_cache=True,
                logits_to_keep=1)
    batch.mask, batch.pos = mask, mask.sum(-1)
    batch.ids = ids if keep_ids else None
    return batch, out.logits[:, -1, :].float()


@dataclass
class _Row:
    index: int
    seed: int
    tokens: list[int] = field(default_factory=list)
    marker_seen: bool = False
    done: bool = False


def _choose(logits: Any, dec: Decoding, procs: Any, ids: Any, seeds: Any, steps: Any) -> Any:
    """The next token of every row, on the logits' device: the processors (``ids`` is the rows' token ids
    where they need them), then the arg-max, or with sampling the Gumbel-max draw from each row's stream
    (``seeds`` and ``steps``: each row's seed and the index of the token being drawn, int64 tensors)."""
    import torch

    if ids is not None:
        logits = procs(ids, logits)
    if not dec.do_sample:
        return logits.argmax(-1)
    gumbel = -torch.log(-torch.log(row_uniforms(seeds, steps, logits.shape[-1])))
    return (logits.double() + gumbel).argmax(-1)


@dataclass(frozen=True)
class _Rules:
    """What the stop rules need besides the decoding: the tokenizer, end-of-turn ids and token classes."""

    tok: Any
    eos: set[int]
    newline_ids: frozenset[int]
    marker_ids: frozenset[int]


def _advance(row: _Row, t: int, dec: Decoding, rules: _Rules, stats: DecodeStats,
             on_token: Callable[[int, int], None] | None) -> str | None:
    """Append token ``t`` to ``row``; return why the row ends now (counted in ``stats``), or None."""
    row.tokens.append(t)
    stats.new_tokens += 1
    if on_token is not None:
        on_token(row.index, t)
    reason = None
    if t in rules.eos:
        reason = "eos"
    elif len(row.tokens) >= dec.max_new_tokens:
        reason = "max_new_tokens"
    elif dec.stop_at_answer:
        row.marker_seen = row.marker_seen or t in rules.marker_ids
        if row.marker_seen and t in rules.newline_ids and \
                answer_end(rules.tok.decode(row.tokens, skip_special_tokens=True)) is not None:
            reason = "answer"
    if reason is None and dec.stop_loops and len(row.tokens) % LOOP_CHECK_EVERY == 0:
        period = loop_period(row.tokens)
        if period is not None:
            stats.cycle_tokens += dec.max_new_tokens - len(row.tokens)
            row.tokens = continue_cycle(row.tokens, period, dec.max_new_tokens)
            reason = "loop"
    if reason is not None:
        stats.stopped[reason] += 1
    return reason


def decode(model: Any, tok: Any, prompts: list[list[int]], dec: Decoding, *, slots: int,
           on_finish: Callable[[int, list[int], str], None], seeds: list[int] | None = None,
           stats: DecodeStats | None = None, on_token: Callable[[int, int], None] | None = None,
           static: bool = False) -> DecodeStats:
    """Decode every prompt (token ids, chat template applied) with at most ``slots`` rows at a time.

    ``on_finish(i, tokens, reason)`` is called as soon as prompt ``i`` ends, with its new token ids (the
    end-of-turn token included where there is one) and the reason: ``eos``, ``max_new_tokens``, ``answer``
    or ``loop`` (:mod:`vigsm.stopping`). ``on_token(i, token)`` sees every computed token as it comes.
    Prompts are taken in the given order. ``seeds`` (one per prompt) drive sampling; greedy ignores them.

    ``static`` decodes with :func:`_decode_static` instead (a preallocated cache, each step replayed as a CUDA
    graph on a GPU): the same tokens and stop rules, a different schedule (no refills; see there).
    """
    import torch

    stats = stats if stats is not None else DecodeStats()
    seeds = seeds if seeds is not None else [0] * len(prompts)
    eos = eos_ids(model, tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else next(iter(eos))
    procs = _processors(model, dec)
    keep_ids = len(procs) > 0
    newline_ids, marker_ids = _token_classes(tok) if dec.stop_at_answer else (frozenset(), frozenset())
    rules = _Rules(tok, eos, newline_ids, marker_ids)
    if static:
        _decode_static(model, prompts, dec, rules, slots=slots, on_finish=on_finish, seeds=seeds, stats=stats,
                       on_token=on_token, pad_id=pad_id, procs=procs)
        return stats
    waiting = deque(range(len(prompts)))
    rows: list[_Row] = []
    batch = _Batch(keep_ids)
    logits = None
    refill_at = max(1, slots // REFILL_SHARE)
    with torch.inference_mode():
        while waiting or rows:
            free = slots - len(rows)
            if waiting and (not rows or free >= refill_at):
                take = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                new, new_logits = _prefill(model, [prompts[i] for i in take], pad_id, keep_ids)
                stats.prefills += 1
                batch.merge(new, pad_id)
                rows += [_Row(i, seeds[i]) for i in take]
                logits = new_logits if logits is None else torch.cat([logits, new_logits])
            stats.forward_steps += 1
            stats.row_steps += len(rows)
            seed_t = step_t = None
            if dec.do_sample:
                seed_t = torch.tensor([r.seed for r in rows], device=logits.device, dtype=torch.int64)
                step_t = torch.tensor([len(r.tokens) for r in rows], device=logits.device, dtype=torch.int64)
            chosen = _choose(logits, dec, procs, batch.ids if keep_ids else None, seed_t, step_t)
            keep, finished = [], []
            for j, (row, t) in enumerate(zip(rows, chosen.tolist(), strict=True)):
                reason = _advance(row, t, dec, rules, stats, on_token)
                if reason is None:
                    keep.append(j)
                else:
                    finished.append((row, reason))
            for row, reason in finished:
                on_finish(row.index, row.tokens, reason)
            if len(keep) < len(rows):
                batch.select(keep)
                rows = [rows[j] for j in keep]
                chosen = chosen[torch.tensor(keep, device=chosen.device)] if keep else chosen[:0]
            logits = None
            if not rows:
                continue
            if keep_ids:
                batch.ids = torch.cat([batch.ids, chosen[:, None]], dim=1)
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(rows), 1)], dim=1)
            out = model(input_ids=chosen[:, None], attention_mask=batch.mask, position_ids=batch.pos[:, None],
                        past_key_values=batch.cache, use_cache=True)
            batch.pos = batch.pos + 1
            logits = out.logits[:, -1, :].float()
    return stats


class _ColumnCache:
    """A preallocated KV cache for one-token steps: per layer, keys and values of ``[rows, heads, length,
    head_dim]``, and every row writes its next key and value at one shared column (``column``, a 1-element
    tensor set before each step). A step's shapes and addresses then never change, so it can be replayed as
    a CUDA graph. Only the models' ``past_key_values.update`` is implemented: the steps pass their own 4-D
    mask, so transformers asks the cache nothing else."""

    def __init__(self, keys: list[Any], values: list[Any], column: Any) -> None:
        self.keys, self.values, self.column = keys, values, column

    def update(self, key: Any, value: Any, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        k, v = self.keys[layer_idx], self.values[layer_idx]
        k.index_copy_(2, self.column, key)
        v.index_copy_(2, self.column, value)
        return k, v


class _StaticBatch:
    """The running rows of :func:`_decode_static`: the column cache, a boolean mask ``[rows, 1, 1, length]``,
    the next positions and input ids (static buffers), and the captured step graphs, one per mask width."""

    def __init__(self, model: Any, batch: _Batch, length: int) -> None:
        import torch

        first = batch.cache.layers[0].keys
        rows, width = batch.mask.shape
        self.model, self.length, self.column_at = model, length, width
        self.keys, self.values = [], []
        for layer in batch.cache.layers:
            for src, dst in ((layer.keys, self.keys), (layer.values, self.values)):
                buf = src.new_zeros(rows, src.shape[1], length, src.shape[3])
                buf[:, :, :width] = src
                dst.append(buf)
        self.column = torch.zeros(1, dtype=torch.long, device=first.device)
        self.cache = _ColumnCache(self.keys, self.values, self.column)
        self.mask = torch.zeros(rows, 1, 1, length, dtype=torch.bool, device=first.device)
        self.mask[:, 0, 0, :width] = batch.mask.bool()
        self.pos = batch.pos[:, None].clone()
        self.ids = torch.zeros(rows, 1, dtype=torch.long, device=first.device)
        # The decode attention (vigsm.attention) reads only the columns the mask covers; any other
        # attention reads the whole cache, so the mask must be as wide.
        from vigsm.attention import DECODE_ATTENTION

        self.bucketed = getattr(model.config, "_attn_implementation", None) == DECODE_ATTENTION
        self.graphs: dict[int, tuple[Any, Any]] = {}
        self.use_graphs = first.device.type == "cuda"
        self.warm = False

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    def select(self, keep: list[int]) -> None:
        """Keep only the rows ``keep`` (in this order), in new, smaller buffers (new graphs follow)."""
        import torch

        if self.graphs and self.use_graphs:
            torch.cuda.current_stream().synchronize()  # a queued replay of a graph about to be freed has run
        index = torch.tensor(keep, device=self.mask.device)
        for bufs in (self.keys, self.values):
            bufs[:] = [b.index_select(0, index) for b in bufs]
        self.mask, self.pos, self.ids = self.mask[index], self.pos[index], self.ids[index]
        self.graphs.clear()

    def _forward(self, width: int) -> Any:
        out = self.model(input_ids=self.ids, attention_mask=self.mask[:, :, :, :width], position_ids=self.pos,
                         past_key_values=self.cache, use_cache=True)
        return out.logits

    def step(self, chosen: Any) -> Any:
        """Feed ``chosen`` (one token per row) at the next column; return the next logits (float32)."""
        c = self.column_at
        if c >= self.length:
            raise RuntimeError("static decoding ran past its cache")  # a bug: length covers max_new_tokens
        self.ids.copy_(chosen[:, None])
        self.mask[:, :, :, c] = True
        self.column.fill_(c)
        width = min(self.length, -(-(c + 1) // COLUMN_BUCKET) * COLUMN_BUCKET) if self.bucketed else self.length
        if not self.use_graphs:
            logits = self._forward(width)
        else:
            if width not in self.graphs:
                self.graphs[width] = self._capture(width)
            graph, logits = self.graphs[width]
            if graph is None:
                logits = self._forward(width)
            else:
                graph.replay()
        self.column_at += 1
        self.pos.add_(1)
        return logits[:, -1, :].float()

    def _capture(self, width: int) -> tuple[Any, Any]:
        """A CUDA graph of one step at this mask width, with its output logits. The warm-up runs (the first
        capture only) write the same key and value at the same column as the replay that follows."""
        import torch

        try:
            if not self.warm:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):
                        self._forward(width)
                torch.cuda.current_stream().wait_stream(side)
                self.warm = True
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits = self._forward(width)
            return graph, logits
        except Exception as exc:  # noqa: BLE001 - a step that cannot be captured still decodes, eagerly
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"[vigsm] CUDA graph capture failed ({type(exc).__name__}: {first[:200]}); decoding eagerly",
                  flush=True)
            self.use_graphs = False
            return None, None


class _HostTokens:
    """Chosen tokens on their way to the host without stalling the GPU: each step's tokens are copied into
    one of two pinned buffers in turn, behind an event, so the next step can be queued before the host waits
    for them (two buffers: a step's copy never overwrites the tokens the host is still reading)."""

    def __init__(self, rows: int, device: Any) -> None:
        import torch

        self.on_gpu = device.type == "cuda"
        if self.on_gpu:
            self.bufs = [torch.empty(rows, dtype=torch.long, pin_memory=True) for _ in range(2)]
            self.events = [torch.cuda.Event() for _ in range(2)]
        self.turn = 0

    def send(self, chosen: Any) -> Callable[[], list[int]]:
        """Start copying ``chosen`` to the host; the returned function waits for it and gives the list."""
        if not self.on_gpu:
            return chosen.tolist
        i, self.turn = self.turn, self.turn ^ 1
        buf = self.bufs[i][: len(chosen)]
        buf.copy_(chosen, non_blocking=True)
        self.events[i].record()

        def receive() -> list[int]:
            self.events[i].synchronize()
            return buf.tolist()

        return receive


def _queue_step(state: _StaticBatch, chosen: Any, dec: Decoding, procs: Any, ids: Any, seeds: Any,
                steps: Any) -> tuple[Any, Any, Any]:
    """Queue the step that feeds ``chosen`` (one token per row) and the choice of the tokens after it, all on
    the device; return those tokens, the rows' ids with ``chosen`` appended (None where the processors need
    none) and the rows' next token indices."""
    import torch

    if ids is not None:
        ids = torch.cat([ids, chosen[:, None]], dim=1)
    steps = steps + 1
    return _choose(state.step(chosen), dec, procs, ids, seeds, steps), ids, steps


def lookahead_on(device: Any) -> bool:
    """Whether :func:`_decode_static` queues each step before reading the last one's tokens: where the host
    and the device run apart (a GPU), unless :data:`LOOKAHEAD` says otherwise (tests and benchmarks)."""
    return device.type == "cuda" if LOOKAHEAD is None else LOOKAHEAD


def _decode_static(model: Any, prompts: list[list[int]], dec: Decoding, rules: _Rules, *, slots: int,
                   on_finish: Callable[[int, list[int], str], None], seeds: list[int], stats: DecodeStats,
                   on_token: Callable[[int, int], None] | None, pad_id: int, procs: Any) -> None:
    """:func:`decode` over a preallocated cache, each step replayed as a CUDA graph where the model is on a GPU.

    The prompts are taken in chunks of ``slots``; each chunk is prefilled at once and decoded until its last
    row ends (no refills: the cache's columns are fixed, prompt width plus ``max_new_tokens``). A finished row
    stays in the batch (its tokens are computed and dropped) until at most ``1/SHRINK_AT`` of the rows are
    alive; then the live rows move to a smaller cache (and new graphs). The mask covers the written columns
    rounded up to ``COLUMN_BUCKET``, so attention reads no more than that. ``row_steps`` counts every row
    computed, finished ones included, so ``waste`` shows their share. Each row's tokens and stop rules are
    :func:`decode`'s; only the batch a row shares (and so the floating-point rounding) differs.

    With lookahead (:func:`lookahead_on`: on a GPU), the next step is queued on the chosen tokens, which stay
    on the device, before the host reads them: the host's work (the copy, the stop rules, the callbacks, the
    graph launch) overlaps the device's step instead of adding to it. The price is one step more per chunk
    and, at each shrink, one step for the rows that ended (both counted in ``row_steps``). A row draws
    token ``k`` from ``(seed, k)`` on either schedule; what lookahead changes is only the batch the step
    after a shrink runs in (the larger one), so, as between the decoders, rounding may differ.
    """
    import torch

    keep_ids = len(procs) > 0
    with torch.inference_mode():
        for start in range(0, len(prompts), slots):
            take = list(range(start, min(start + slots, len(prompts))))
            batch, logits = _prefill(model, [prompts[i] for i in take], pad_id, keep_ids)
            stats.prefills += 1
            ids = batch.ids
            state = _StaticBatch(model, batch, batch.mask.shape[1] + dec.max_new_tokens)
            ahead = lookahead_on(logits.device)
            del batch
            rows = [_Row(i, seeds[i]) for i in take]
            # each row's seed and the index of its next token, on the device: sampling reads no host state
            seed_t = torch.tensor([r.seed for r in rows], device=logits.device, dtype=torch.int64)
            step_t = torch.zeros(len(rows), device=logits.device, dtype=torch.int64)
            host = _HostTokens(len(rows), logits.device)
            chosen = _choose(logits, dec, procs, ids, seed_t, step_t)
            pending = (host.send(chosen), rows)  # the tokens on their way, and the rows they belong to
            live = len(rows)
            while True:
                nxt = None
                if ahead and state.column_at < state.length:
                    nxt, ids, step_t = _queue_step(state, chosen, dec, procs, ids, seed_t, step_t)
                    after = (host.send(nxt), rows)
                receive, layout = pending
                stats.forward_steps += 1
                stats.row_steps += len(layout)
                finished = []
                for row, t in zip(layout, receive(), strict=True):
                    if row.done:
                        continue
                    reason = _advance(row, t, dec, rules, stats, on_token)
                    if reason is not None:
                        row.done = True
                        finished.append((row, reason))
                live -= len(finished)
                for row, reason in finished:
                    on_finish(row.index, row.tokens, reason)
                if not live:
                    if nxt is not None:  # the step queued ahead, computed for nothing: count it
                        stats.forward_steps += 1
                        stats.row_steps += len(rows)
                    break
                if live * SHRINK_AT <= len(rows):
                    keep = [j for j, r in enumerate(rows) if not r.done]
                    index = torch.tensor(keep, device=chosen.device)
                    state.select(keep)
                    rows = [rows[j] for j in keep]
                    seed_t, step_t = seed_t[index], step_t[index]
                    ids = ids[index] if keep_ids else ids
                    if nxt is None:
                        chosen = chosen[index]
                    else:  # the step queued ahead already holds the new rows' next tokens, in the old layout
                        nxt = nxt[index]
                if nxt is None:
                    nxt, ids, step_t = _queue_step(state, chosen, dec, procs, ids, seed_t, step_t)
                    after = (host.send(nxt), rows)
                chosen, pending = nxt, after
            if state.use_graphs:
                torch.cuda.current_stream().synchronize()  # the step queued ahead has run before its graph goes
            del state
