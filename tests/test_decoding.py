"""Slot-based decoding (vigsm.decoding) gives the static model.generate path's greedy texts, frees and
refills slots, samples reproducibly per question, and the generation stage resumes per question."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import SYSTEM_PROMPT, tiny_params
from vigsm.answers import extract_answer
from vigsm.config import SECTIONS, parse_section

QUESTIONS = ["Lan có 2 cây bút, hôm sau mua thêm 1 cây. Lan có bao nhiêu cây bút?", "1+1?",
             "Một cửa hàng bán 45 quả táo mỗi ngày trong 7 ngày. Hỏi cửa hàng bán tổng cộng bao nhiêu quả táo?",
             "x", "hai cộng ba bằng mấy", "Tính 17 nhân 23, rồi trừ đi 5. Kết quả?", "abc def"]
MAX_NEW = 20


@pytest.fixture(scope="module")
def varied_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model's shape with larger random weights, so greedy texts vary from token to token (the
    conftest model repeats one token), and a LoRA adapter that changes them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("varied")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = LlamaConfig.from_pretrained(tiny_model_dir)
    cfg.initializer_range = 0.3
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out / "base", safe_serialization=True)
    tok.save_pretrained(out / "base")
    torch.manual_seed(1)
    peft_model = get_peft_model(LlamaForCausalLM.from_pretrained(out / "base"),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    peft_model.save_pretrained(out / "adapter")
    return out


def _model_params(model_dir):
    return parse_section("model", tiny_params(model_dir)["model"], SECTIONS["model"])


def _prompt_ids(tok):
    from vigsm.modeling import chat_prompt_ids

    return [chat_prompt_ids(tok, [{"role": "user", "content": q}]) for q in QUESTIONS]


def _static(model, tok, ids):
    """The old path: one left-padded model.generate batch, greedy; the new text of each row."""
    import torch

    enc = tok.pad({"input_ids": ids}, return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=tok.pad_token_id,
                             temperature=None, top_p=None, top_k=None)
    return out[:, enc["input_ids"].shape[1]:].tolist()


def _slots(model, tok, ids, slots, static=False, **kw):
    from vigsm.decoding import Decoding, decode

    got, order = {}, []

    def finish(i, tokens, reason):
        got[i] = (tokens, reason)
        order.append(i)

    stats = decode(model, tok, ids, Decoding(max_new_tokens=MAX_NEW, **kw), slots=slots, on_finish=finish,
                   seeds=[1000 + i for i in range(len(ids))], static=static)
    return [got[i][0] for i in range(len(ids))], stats, order


def _with_varied_ends(model, tok, ids):
    """Make some rows end early: a few tokens of the static run become end-of-turn tokens (both paths read
    generation_config.eos_token_id), at different positions in different rows."""
    rows = _static(model, tok, ids)
    picks = [(0, 3), (2, 9), (4, 14), (5, 6), (6, 1)]
    model.generation_config.eos_token_id = sorted({rows[r][k] for r, k in picks})


@pytest.mark.parametrize("variant", ["plain", "adapter", "merged", "penalty"])
def test_slot_decoding_matches_static_generate(varied_model_dir, tiny_model_dir, variant, monkeypatch):
    """Greedy texts equal model.generate's for prompts of different lengths, with as many slots as prompts
    and with fewer (so finished rows leave and waiting prompts are merged in). "penalty": a
    generation_config repetition penalty (Qwen2.5-Instruct ships 1.05), which generate applies."""
    from vigsm import decoding
    from vigsm.attention import DECODE_ATTENTION
    from vigsm.decoding import eos_ids
    from vigsm.modeling import load_with_adapter

    adapter = None if variant in ("plain", "penalty") else str(varied_model_dir / "adapter")
    # The conftest model repeats one token: a repetition penalty changes its output.
    base = tiny_model_dir if variant == "penalty" else varied_model_dir / "base"
    model, tok = load_with_adapter(_model_params(base), adapter, merge_adapter=variant == "merged")
    if variant == "penalty":
        unpenalised = _static(model, tok, _prompt_ids(tok))
        model.generation_config.repetition_penalty = 1.5
        assert _static(model, tok, _prompt_ids(tok)) != unpenalised
    assert model.config._attn_implementation == DECODE_ATTENTION
    assert any("lora_" in n for n, _ in model.named_parameters()) == (variant == "adapter")
    ids = _prompt_ids(tok)
    assert len({len(i) for i in ids}) >= 5
    if variant != "penalty":
        _with_varied_ends(model, tok, ids)
    static = _static(model, tok, ids)
    eos = set(eos_ids(model, tok))
    lengths = [next((k + 1 for k, t in enumerate(r) if t in eos), MAX_NEW) for r in static]
    if variant != "penalty":
        assert len(set(lengths)) >= 4 and min(lengths) < MAX_NEW  # rows really end at different steps
    ref = tok.batch_decode(static, skip_special_tokens=True)
    for slots in (len(ids), 3, 1):
        tokens, stats, _ = _slots(model, tok, ids, slots)
        assert tok.batch_decode(tokens, skip_special_tokens=True) == ref, slots
        assert [len(t) for t in tokens] == lengths
        # No step is spent on a finished row: every row computed gave a kept token.
        assert stats.row_steps == stats.new_tokens == sum(lengths)
        assert stats.as_dict()["waste"] == 0.0
        if slots < len(ids):
            assert stats.prefills > 1  # free slots were refilled
            assert stats.forward_steps > MAX_NEW
        # The static decoder (a preallocated cache; CUDA graphs on a GPU): the same texts, chunks of `slots`
        # prefilled once each, finished rows computed until the batch halves (row_steps counts them).
        # With lookahead (on a GPU: each step queued before the host reads the last one's tokens), the same
        # texts at one step more per chunk and per shrink.
        steps = {}
        for ahead in (False, True):
            monkeypatch.setattr(decoding, "LOOKAHEAD", ahead)
            tokens, stats, _ = _slots(model, tok, ids, slots, static=True)
            assert tok.batch_decode(tokens, skip_special_tokens=True) == ref, ("static", slots, ahead)
            assert [len(t) for t in tokens] == lengths
            assert stats.new_tokens == sum(lengths) and stats.prefills == -(-len(ids) // slots)
            assert sum(lengths) <= stats.row_steps < 2 * sum(lengths) + 2 * len(ids)
            steps[ahead] = stats.forward_steps
        assert steps[True] > steps[False]  # the lookahead really ran: its extra steps are counted
    if variant == "adapter":
        base, _ = load_with_adapter(_model_params(varied_model_dir / "base"), None)
        base.generation_config.eos_token_id = model.generation_config.eos_token_id
        assert tok.batch_decode(_static(base, tok, ids), skip_special_tokens=True) != ref  # the adapter matters


@pytest.mark.gpu
def test_static_decoding_on_a_gpu_replays_graphs_with_lookahead(varied_model_dir, monkeypatch, capsys):
    """On a GPU the static decoder replays CUDA graphs and queues each step before the host reads the last
    one: in float32 its greedy texts equal generate's (adapter on, rows ending at different steps, so the
    batch shrinks while a step is queued) and its samples equal the slot decoder's."""
    from vigsm import decoding
    from vigsm.decoding import lookahead_on
    from vigsm.modeling import load_with_adapter

    model, tok = load_with_adapter(_model_params(varied_model_dir / "base"), str(varied_model_dir / "adapter"))
    assert model.device.type == "cuda" and lookahead_on(model.device)
    ids = _prompt_ids(tok)
    _with_varied_ends(model, tok, ids)
    ref = tok.batch_decode(_static(model, tok, ids), skip_special_tokens=True)
    for slots in (len(ids), 3):
        tokens, stats, _ = _slots(model, tok, ids, slots, static=True)
        assert tok.batch_decode(tokens, skip_special_tokens=True) == ref, slots
        monkeypatch.setattr(decoding, "LOOKAHEAD", False)
        assert stats.forward_steps > _slots(model, tok, ids, slots, static=True)[1].forward_steps  # it ran ahead
        monkeypatch.setattr(decoding, "LOOKAHEAD", None)
    kw = dict(do_sample=True, temperature=0.7, top_p=0.95)
    assert _slots(model, tok, ids, len(ids), static=True, **kw)[0] == _slots(model, tok, ids, 2, **kw)[0]
    assert "CUDA graph capture failed" not in capsys.readouterr().out  # graphs, not the eager fallback


def test_rows_finish_in_order_of_their_end(varied_model_dir):
    from vigsm.modeling import load_with_adapter

    model, tok = load_with_adapter(_model_params(varied_model_dir / "base"), None)
    ids = _prompt_ids(tok)
    _with_varied_ends(model, tok, ids)
    tokens, _, order = _slots(model, tok, ids, len(ids))
    ends = [len(tokens[i]) for i in order]
    assert ends == sorted(ends) and ends[0] < MAX_NEW  # handed over as they end, not at the batch's end


def test_sampling_is_reproducible_per_question(varied_model_dir, monkeypatch):
    """A row's sample depends on its seed only: the same with 7 slots or 2, with the static decoder (with
    and without lookahead, whose draws come from a step counter kept on the device), and different seeds
    differ."""
    from vigsm import decoding
    from vigsm.decoding import row_uniforms
    from vigsm.modeling import load_with_adapter

    model, tok = load_with_adapter(_model_params(varied_model_dir / "base"), None)
    ids = _prompt_ids(tok)
    _with_varied_ends(model, tok, ids)  # rows end at different steps, so the static batch shrinks
    kw = dict(do_sample=True, temperature=0.7, top_p=0.95)
    a, _, _ = _slots(model, tok, ids, len(ids), **kw)
    b, _, _ = _slots(model, tok, ids, 2, **kw)
    greedy, _, _ = _slots(model, tok, ids, len(ids))
    assert a == b
    assert a != greedy
    for ahead in (False, True):
        monkeypatch.setattr(decoding, "LOOKAHEAD", ahead)
        assert _slots(model, tok, ids, len(ids), static=True, **kw)[0] == a, ahead
        assert _slots(model, tok, ids, 3, static=True, **kw)[0] == a, ahead
    import torch

    u = row_uniforms(torch.tensor([1, 1, 2]), torch.tensor([0, 1, 0]), 1000)
    assert ((u > 0) & (u < 1)).all() and abs(float(u.mean()) - 0.5) < 0.05
    assert not torch.equal(u[0], u[1]) and not torch.equal(u[0], u[2])
    assert torch.equal(u[0], row_uniforms(torch.tensor([1]), torch.tensor([0]), 1000)[0])


def test_stop_rules_in_the_loop(varied_model_dir, monkeypatch):
    """stop_loops ends a looping row and writes its cycle on to max_new_tokens; stop_at_answer ends a row
    at the newline after "### <number>". Forced with a model whose next token is scripted per row."""
    import torch

    from vigsm.decoding import Decoding, decode
    from vigsm.modeling import load_with_adapter

    model, tok = load_with_adapter(_model_params(varied_model_dir / "base"), None)
    answer = tok("Vậy 2 + 1 = 3\n### 3\nThêm chữ", add_special_tokens=False)["input_ids"]
    cycle = tok(" lặp lại", add_special_tokens=False)["input_ids"]
    # Row 1 ends first, so row 0 keeps its place in the batch and its script (a scripted row is its index).
    scripts = [(cycle * 200)[:100], answer + [5] * 100]
    real_forward = model.forward
    step = {"n": 0}

    def scripted(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        logits = torch.full_like(out.logits, -1e9)
        n = step["n"]
        for r in range(logits.shape[0]):
            logits[r, -1, scripts[r][n]] = 0.0
        step["n"] += 1
        out.logits = logits
        return out

    monkeypatch.setattr(model, "forward", scripted)
    model.generation_config.eos_token_id = [tok.eos_token_id]
    ids = _prompt_ids(tok)[:2]
    for stop in (True, False):
        step["n"] = 0
        got: dict = {}
        stats = decode(model, tok, ids, Decoding(max_new_tokens=100, stop_at_answer=stop, stop_loops=stop),
                       slots=2, on_finish=lambda i, t, r, got=got: got.__setitem__(i, (t, r)))
        if stop:
            assert got[1][1] == "answer" and tok.decode(got[1][0]).endswith("### 3\n")
            assert got[0][1] == "loop" and got[0][0] == scripts[0]  # the cycle written on, not computed
            assert stats.cycle_tokens > 0 and stats.new_tokens < 100 + len(answer)
            assert stats.stopped["answer"] == stats.stopped["loop"] == 1
        else:
            assert [got[i][1] for i in (0, 1)] == ["max_new_tokens"] * 2 and stats.new_tokens == 200
            assert got[0][0] == scripts[0]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from conftest import ROOT
    from vigsm.data import prepare

    params = tiny_params(tiny_model_dir)
    s = {k: parse_section(k, params[k], SECTIONS[k]) for k in SECTIONS}
    records, _ = prepare(s["data"], ROOT / "data" / "sample", SYSTEM_PROMPT)
    return s, records


def test_partial_gains_a_line_per_answer_and_resumes_per_question(varied_model_dir, tiny, tmp_path, monkeypatch):
    """Each answer is in the partial file (flushed) when the next one is made; a run killed after k answers
    resumes with exactly those k and ends with the uninterrupted run's file."""
    import vigsm.generation as gen
    from vigsm.modeling import load_with_adapter

    s, records = tiny
    rows = records["test"][:7]
    gen_p = dataclasses.replace(s["generate"], batch_size=3, max_new_tokens=MAX_NEW)
    model_p = _model_params(varied_model_dir / "base")
    model, tok = load_with_adapter(model_p, None)
    from vigsm.modeling import chat_prompt_ids

    ids = [chat_prompt_ids(tok, r["prompt"]) for r in rows]
    _with_varied_ends(model, tok, ids)
    fp = gen.fingerprint(model_p, gen_p, rows, None)
    full = tmp_path / "full.jsonl"
    info = gen.run_generation(model, tok, rows, gen_p, full, fp)
    assert info["questions"] == 7 and info["row_steps"] == info["new_tokens"] > 0
    # A prediction holds what generate knows, and nothing score derives (references, reasoning, answers).
    preds = [json.loads(line) for line in full.read_text().splitlines()]
    assert [list(p) for p in preds] == [list(gen.ROW_FIELDS)] * 7 == [["id", "raw", "stop", "new_tokens"]] * 7
    assert [p["id"] for p in preds] == [r["id"] for r in rows]
    assert {p["stop"] for p in preds} <= {"eos", "max_new_tokens", "answer", "loop"}
    assert sum(p["new_tokens"] for p in preds) == info["new_tokens"]

    out = tmp_path / "out.jsonl"
    partial = out.with_name(out.name + ".partial")
    real_make_row, made = gen.make_row, []

    def make_row_then_die(rec, raw, *rest):
        # Before answer k+1 is made, the file holds the header and the k answers made so far.
        assert partial.read_text().count("\n") == 1 + len(made)
        if len(made) == 4:
            raise KeyboardInterrupt("killed")
        made.append(rec["id"])
        return real_make_row(rec, raw, *rest)

    monkeypatch.setattr(gen, "make_row", make_row_then_die)
    with pytest.raises(KeyboardInterrupt):
        gen.run_generation(model, tok, rows, gen_p, out, fp)
    assert not out.exists()
    assert set(gen.read_partial(partial, fp)) == set(made) and len(made) == 4
    monkeypatch.setattr(gen, "make_row", real_make_row)
    info = gen.run_generation(model, tok, rows, gen_p, out, fp)
    assert info["resumed"] == 4 and info["questions"] == 7
    assert out.read_bytes() == full.read_bytes()
    assert not partial.exists()


def test_generation_paths_benchmark_runs_on_cpu(varied_model_dir, tiny, tmp_path):
    """benchmarks/generation_paths.py on the tiny model: the static and slot paths give the same greedy
    texts, and the JSON holds the figures per path."""
    import subprocess
    import sys

    from conftest import ROOT, write_params
    from vigsm.io import write_jsonl

    _, records = tiny
    params = tiny_params(varied_model_dir / "base", generate={"batch_size": 2, "max_new_tokens": 8})
    write_params(tmp_path / "params.yaml", params)
    write_jsonl(tmp_path / "test.jsonl", records["test"])
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generation_paths.py"), "--params",
                    str(tmp_path / "params.yaml"), "--test", str(tmp_path / "test.jsonl"), "--limit", "5",
                    "--repeats", "2", "--adapter", str(varied_model_dir / "adapter"), "--out", str(out)],
                   check=True, capture_output=True, timeout=600)
    res = json.loads(out.read_text())
    assert res["questions"] == 5 and set(res["paths"]) == {"static", "slots", "slots-no-stop"}
    for p in res["paths"].values():
        assert len(p["seconds"]) == 2 and p["seconds_min"] <= p["seconds_median"] <= p["seconds_max"]
        assert p["new_tokens"] == 5 * 8 and 0 <= p["waste"] < 1
    assert res["static_vs_slots_no_stop"]["identical_texts"] == 1.0
    assert res["stop_rules_off_vs_on"]["em_verdicts_changed_strict"] == 0


def test_ask_streams_the_generate_paths_greedy_text(varied_model_dir, monkeypatch, capsys):
    """vigsm.ask decodes through vigsm.decoding and streams every token: what it prints is what it returns,
    and equals model.generate's greedy text for the same prompt."""
    import vigsm.ask as ask_mod
    from vigsm.modeling import load_with_adapter

    params = tiny_params(varied_model_dir / "base")
    monkeypatch.setattr(ask_mod, "params_at", lambda rev, params_path="params.yaml": params)
    adapter = str(varied_model_dir / "adapter")
    text, answer = ask_mod.ask("5 + 7 = ?", adapter=adapter, max_new_tokens=MAX_NEW)
    printed = capsys.readouterr().out
    assert printed.strip() == text.strip() and len(text) > 10
    assert answer == extract_answer(text, strict=False)
    model, tok = load_with_adapter(_model_params(varied_model_dir / "base"), adapter)
    from vigsm.modeling import chat_prompt_ids

    ids = chat_prompt_ids(tok, [{"role": "system", "content": SYSTEM_PROMPT},
                                {"role": "user", "content": "5 + 7 = ?"}])
    assert text == tok.decode(_static(model, tok, [ids])[0], skip_special_tokens=True)


def test_ragged_schedule_has_users_shape():
    """Half the answers end within 50 tokens, a tenth run past 400, 6% run to the cap; the same seed gives
    the same schedule."""
    from ragged import ragged_lengths

    lengths = ragged_lengths(1319, 768, seed=0)
    assert len(lengths) == 1319 and lengths == ragged_lengths(1319, 768, seed=0)
    assert sum(x <= 50 for x in lengths) == 660 and min(lengths) >= 8
    assert sum(x > 400 for x in lengths) == 132 and sum(x == 769 for x in lengths) == 79
    assert max(x for x in lengths if x <= 768) < 768  # only the cap rows reach the cap
    assert lengths != sorted(lengths)  # shuffled: length does not follow the prompt order
    with pytest.raises(ValueError):
        ragged_lengths(10, 400)


@pytest.mark.parametrize("static", [False, True, "ahead"])
def test_forced_lengths_give_each_row_its_length(varied_model_dir, static, monkeypatch):
    """ForcedLengths makes each prompt's answer exactly its scheduled length under both decoders (the static
    one also with lookahead), with the stop rules on and never firing (no newline, no marker, no repeat)."""
    from ragged import ForcedLengths

    from vigsm import decoding
    from vigsm.decoding import Decoding, decode
    from vigsm.modeling import load_with_adapter

    monkeypatch.setattr(decoding, "LOOKAHEAD", static == "ahead")
    static = bool(static)

    model, tok = load_with_adapter(_model_params(varied_model_dir / "base"), None)
    ids = _prompt_ids(tok)
    lengths = [1, 5, 30, 41, 12, 2, 60]  # 41 and 60 pass the cap of 40
    forced = ForcedLengths(model, tok, ids, lengths, 40)
    got = {}
    decode(forced, tok, ids, Decoding(max_new_tokens=40, stop_at_answer=True, stop_loops=True), slots=3,
           static=static, on_finish=lambda i, t, r: got.__setitem__(i, (t, r)))
    assert [len(got[i][0]) for i in range(len(ids))] == [min(n, 40) for n in lengths]
    assert [got[i][1] for i in range(len(ids))] == ["eos" if n <= 40 else "max_new_tokens" for n in lengths]
    assert all(len(set(got[i][0])) == len(got[i][0]) for i in got)  # no token repeats in a row


def _schedule(lengths, slots, refill_at):
    """(forward steps, prefills) of the refill rule on rows of known lengths: rows waiting in order, a prefill
    whenever no row runs or at least ``refill_at`` slots are free, one token per running row a step."""
    waiting, running, steps, prefills = list(lengths), [], 0, 0
    while waiting or running:
        free = slots - len(running)
        if waiting and (not running or free >= refill_at):
            running += waiting[:free]
            waiting = waiting[free:]
            prefills += 1
        steps += 1
        running = [n - 1 for n in running if n > 1]
    return steps, prefills


def test_free_slots_are_refilled_once_a_quarter_is_free(varied_model_dir):
    """With up to 7 slots a single free slot is refilled at the next step (slots // 4 rounds to 0, so at
    least 1); with 8 slots it waits for 2. Each step spends one row-step per running row, never more."""
    from vigsm.modeling import load_with_adapter

    model, tok = load_with_adapter(_model_params(varied_model_dir / "base"), None)
    ids = _prompt_ids(tok) * 2  # 14 prompts
    _with_varied_ends(model, tok, ids[:7])
    lengths = [len(t) for t in _slots(model, tok, ids, len(ids))[0]]
    assert len(set(lengths)) >= 4
    for slots, refill_at in ((2, 1), (3, 1), (7, 1), (8, 2)):
        _, stats, _ = _slots(model, tok, ids, slots)
        assert (stats.forward_steps, stats.prefills) == _schedule(lengths, slots, refill_at), slots
        assert stats.row_steps == stats.new_tokens == sum(lengths)
    # refilling only when every slot is free would take more steps: the rule above is what saves them
    assert _schedule(lengths, 3, 1)[0] < _schedule(lengths, 3, 3)[0]
