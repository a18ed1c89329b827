"""Generation resumes to an identical result; score handles bad predictions; files are written atomically."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SHIPPED_PARAMS, SYSTEM_PROMPT, tiny_params, write_params
from vigsm.config import SECTIONS, parse_section
from vigsm.data import prepare
from vigsm.errors import VigsmError
from vigsm.io import atomic_path, write_jsonl


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model_dir):
    params = tiny_params(tiny_model_dir)
    s = {k: parse_section(k, params[k], SECTIONS[k]) for k in SECTIONS}
    records, _ = prepare(s["data"], ROOT / "data" / "sample", SYSTEM_PROMPT)
    return s, records


@pytest.mark.slow
def test_generation_resumes_identically(tiny, tmp_path):
    from static_generation import sort_by_length

    from vigsm.generation import fingerprint, read_partial, run_generation
    from vigsm.modeling import load_with_adapter

    s, records = tiny
    rows = records["test"][:10]
    model, tok = load_with_adapter(s["model"], None)
    fp = fingerprint(s["model"], s["generate"], rows, None)
    full = tmp_path / "full.jsonl"
    run_generation(model, tok, rows, s["generate"], full, fp)
    # Simulate a kill after the first flushed batch: keep the header and one batch, plus a torn line.
    resumed = tmp_path / "resumed.jsonl"
    partial = resumed.with_name(resumed.name + ".partial")
    done = {r["id"] for r in sort_by_length(rows, tok)[: s["generate"].batch_size]}
    first_batch = [r for r in map(json.loads, full.read_text().splitlines()) if r["id"] in done]
    partial.write_text(json.dumps({"fingerprint": fp}) + "\n" + "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                                        for r in first_batch) + '{"id": "torn')
    assert len(read_partial(partial, fp)) == len(first_batch)
    info = run_generation(model, tok, rows, s["generate"], resumed, fp)
    assert info["resumed"] == len(first_batch) > 0
    assert resumed.read_bytes() == full.read_bytes()
    assert not partial.exists()
    # a partial file from other settings is ignored, not mixed in
    assert read_partial(tmp_path / "nope", fp) == {}
    partial.write_text(json.dumps({"fingerprint": "other"}) + "\n" + json.dumps(first_batch[0]) + "\n")
    assert read_partial(partial, fp) == {}


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.OutOfMemoryError, which the CPU build cannot raise on demand."""


def test_out_of_memory_detection():
    from vigsm.generation import is_out_of_memory

    assert is_out_of_memory(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.slow
def test_generation_halves_batch_on_out_of_memory(tiny, tmp_path, monkeypatch):
    """Slots that do not fit are retried at half the count, for the questions not yet answered; the
    answers equal a run at that count."""
    import vigsm.decoding as decoding
    import vigsm.generation as gen
    from vigsm.modeling import load_with_adapter

    s, records = tiny
    rows = records["test"][:10]
    model, tok = load_with_adapter(s["model"], None)
    fp = gen.fingerprint(s["model"], s["generate"], rows, None)
    real, seen = decoding.decode, []

    def fits_three(model, tok, prompts, dec, *, slots, **kw):
        seen.append((slots, len(prompts)))
        if slots > 3:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(model, tok, prompts, dec, slots=slots, **kw)

    monkeypatch.setattr(decoding, "decode", fits_three)
    gen_p = s["generate"].__class__(**{**s["generate"].__dict__, "batch_size": 12})
    info = gen.run_generation(model, tok, rows, gen_p, tmp_path / "oom.jsonl", fp)
    assert seen == [(12, 10), (6, 10), (3, 10)] and info["batch_size_used"] == 3
    monkeypatch.setattr(decoding, "decode", real)
    ref = gen.run_generation(model, tok, rows, s["generate"].__class__(**{**gen_p.__dict__, "batch_size": 3}),
                             tmp_path / "ref.jsonl", fp)
    assert ref["batch_size_used"] == 3
    assert (tmp_path / "oom.jsonl").read_bytes() == (tmp_path / "ref.jsonl").read_bytes()

    def always(*a, **k):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(decoding, "decode", always)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        gen.run_generation(model, tok, rows, gen_p, tmp_path / "err.jsonl", fp)


@pytest.mark.slow
def test_generate_stage_kill_and_resume(tiny, tmp_path, tiny_model_dir):
    """SIGKILL the real generate stage after its first flushed batch; the rerun finishes the rest and the
    result equals an uninterrupted run byte for byte."""
    import os
    import signal
    import time

    params = tiny_params(tiny_model_dir, generate={"batch_size": 2, "max_new_tokens": 24})
    write_params(tmp_path / "params.yaml", params)
    _, records = tiny
    test = tmp_path / "test.jsonl"
    write_jsonl(test, records["test"])

    def cmd(out):
        return [sys.executable, str(ROOT / "stages" / "generate.py"), "--test", str(test), "--out", str(out),
                "--params", str(tmp_path / "params.yaml")]

    subprocess.run(cmd(tmp_path / "ref.jsonl"), check=True, capture_output=True, timeout=600)
    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    proc = subprocess.Popen(cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (not partial.exists() or partial.read_text().count("\n") < 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    res = subprocess.run(cmd(out), check=True, capture_output=True, text=True, timeout=600)
    assert "resumed" in res.stdout
    assert out.read_bytes() == (tmp_path / "ref.jsonl").read_bytes()


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "x.jsonl"
    write_jsonl(target, [{"a": 1}])

    def boom():
        yield {"a": 2}
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(target, boom())
    assert target.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]  # no temp file left behind
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "new.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert not (tmp_path / "new.json").exists()


def score_cmd(tmp_path: Path, test: Path, preds: Path) -> list[str]:
    return [sys.executable, str(ROOT / "stages" / "score.py"), "--test", str(test), "--predictions",
            f"finetuned={preds}", "--metrics", str(tmp_path / "m.json"), "--details", str(tmp_path / "d.json"),
            "--per-question-dir", str(tmp_path / "pq"),
            "--report", str(tmp_path / "r.md"), "--params", str(SHIPPED_PARAMS)]


def _test_rows():
    return [{"id": f"test-{i}", "question": f"Q{i}", "explanation": "1 + 1 = 2", "answer": str(i),
             "completion": [{"role": "assistant", "content": f"1 + 1 = 2\n### {i}"}]} for i in range(4)]


BAD_PREDICTIONS = [
    ("other split", [{"id": "train-0", "raw": "### 0"}], b"", 2, "not in the prepared test split"),
    ("duplicate", [{"id": "test-0", "raw": "### 0"}, {"id": "test-0", "raw": "### 0"}], b"", 2, "duplicate id"),
    ("missing raw", [{"id": "test-0"}], b"", 2, "missing field 'raw'"),
    ("non-utf8", None, b'{"id": "test-0", "raw": "\xff\xfe"}\n', 2, "not valid UTF-8"),
    ("empty file", [], b"", 2, "no predictions"),
]


@pytest.mark.parametrize(("name", "rows", "raw", "code", "fragment"), BAD_PREDICTIONS,
                         ids=[b[0] for b in BAD_PREDICTIONS])
def test_bad_predictions_are_rejected(tmp_path, name, rows, raw, code, fragment):
    test = tmp_path / "test.jsonl"
    write_jsonl(test, _test_rows())
    preds = tmp_path / "p.jsonl"
    if rows is None:
        preds.write_bytes(raw)
    else:
        write_jsonl(preds, rows)
    proc = subprocess.run(score_cmd(tmp_path, test, preds), capture_output=True, text=True, timeout=120)
    assert proc.returncode == code
    assert fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_odd_predictions_are_scored(tmp_path):
    """Empty output, no marker and junk are scored (as wrong or via the flexible fallback), not rejected."""
    test = tmp_path / "test.jsonl"
    write_jsonl(test, _test_rows())
    preds = tmp_path / "p.jsonl"
    write_jsonl(preds, [{"id": "test-0", "raw": ""}, {"id": "test-1", "raw": "1 + 0 = 1"},
                        {"id": "test-2", "raw": "lời giải\n### $2.00"}, {"id": "test-3", "raw": "###"}])
    subprocess.run(score_cmd(tmp_path, test, preds), check=True, capture_output=True, timeout=120)
    m = json.loads((tmp_path / "d.json").read_text())["finetuned"]
    assert m["n"] == 4
    assert m["exact_match_strict"] == 0.25 and m["exact_match_flexible"] == 0.5
    assert m["exact_match_strict_no_answer"] == 0.75
    assert m["exact_match_seed"] == 0.0  # "$2.00" != "2" as strings
    headline = json.loads((tmp_path / "m.json").read_text())["finetuned"]
    assert headline["exact_match_flexible"] == 0.5 and "exact_match_seed" not in headline
    pq = [json.loads(x) for x in (tmp_path / "pq" / "finetuned.jsonl").read_text().splitlines()]
    assert [q["correct_flexible"] for q in pq] == [False, True, True, False]


def test_headline_keeps_the_compared_keys_and_the_whole_delta():
    from vigsm.scoring import HEADLINE_KEYS, metrics_subset

    block = {k: 0.5 for k in HEADLINE_KEYS} | {"rouge1_p": 0.1, "exact_match_seed": 0.2, "bleu_signature": "x"}
    delta = {"exact_match_flexible": 0.1, "exact_match_flexible_mcnemar_p": 0.03}
    cut = metrics_subset({"base": block, "finetuned": block, "delta": delta})
    assert cut["delta"] == delta
    assert sorted(cut["base"]) == sorted(HEADLINE_KEYS) and "rouge1_p" not in cut["finetuned"]
    with pytest.raises(KeyError):  # a headline key the scores lack is an error, not a silent gap
        metrics_subset({"base": {"n": 1}})


def test_load_predictions_join(tmp_path):
    from vigsm.scoring import load_predictions

    preds = tmp_path / "p.jsonl"
    write_jsonl(preds, [{"id": "test-1", "raw": "x"}])
    rows = load_predictions(preds, _test_rows())
    assert rows[0]["reference_answer"] == "1"
    with pytest.raises(VigsmError):
        load_predictions(tmp_path / "missing.jsonl", _test_rows())


@pytest.mark.parametrize(("heads", "kv_heads"), [(8, 2), (4, 4)])
def test_decode_attention_matches_transformers_sdpa(tiny_model_dir, heads, kv_heads):
    """The grouped-query decoding path gives transformers' SDPA result on a left-padded batch."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from vigsm.attention import DECODE_ATTENTION, use_decode_attention

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.padding_side = "left"
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, pad_token_id=tok.pad_token_id)
    torch.manual_seed(1)
    model = LlamaForCausalLM(cfg).eval()
    enc = tok(["xin chào các bạn, hôm nay", "a", "một hai ba bốn năm sáu bảy tám chín mười"], return_tensors="pt",
              padding=True)
    assert (enc["attention_mask"] == 0).any()  # the padded case is the one that matters
    kw = dict(max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id, output_scores=True,
              return_dict_in_generate=True)
    with torch.no_grad():
        ref = model.generate(**enc, **kw)
        use_decode_attention(model)
        assert model.config._attn_implementation == DECODE_ATTENTION
        new = model.generate(**enc, **kw)
    assert torch.equal(ref.sequences, new.sequences)
    for a, b in zip(ref.scores, new.scores, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_separate_adapter_keeps_updates_a_bfloat16_merge_rounds_away(tiny, tmp_path):
    """generate.merge_adapter: folding a small LoRA update into bfloat16 weights loses part of it for good
    (updates under half a unit in the last place vanish from the weight); kept separate, the adapter's
    effect on the logits is the float32 one on average (bfloat16 rounds each activation, without bias)."""
    import dataclasses

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from vigsm.modeling import load_with_adapter, torch_dtype

    s, records = tiny
    model_p = s["model"]
    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_p.name, dtype=torch.float32),
                                LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj", "up_proj"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # an update ~1e-3 of the weights, like a short fine-tune's
            p.data.normal_(0, 2e-3)
    peft_model.save_pretrained(tmp_path / "adapter")
    _, tok = load_with_adapter(model_p, None)
    enc = tok([r["prompt"][-1]["content"] for r in records["test"][:4]], return_tensors="pt", padding=True)

    def logits(dtype: str, adapter: bool, merge: bool, adapter_dtype: str = "float32") -> torch.Tensor:
        model, _ = load_with_adapter(dataclasses.replace(model_p, dtype=dtype), str(tmp_path / "adapter") if adapter
                                     else None, merge_adapter=merge, adapter_dtype=adapter_dtype)
        lora = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
        assert bool(lora) == (adapter and not merge)
        if lora:  # generate.adapter_dtype: PEFT's float32, or the model's dtype
            assert lora == {torch.float32 if adapter_dtype == "float32" else torch_dtype(dtype)}
        with torch.no_grad():
            return model(**enc).logits.float()

    ref = logits("float32", True, False) - logits("float32", False, False)
    assert torch.equal(logits("float32", True, False, "compute") - logits("float32", False, False), ref)
    base = logits("bfloat16", False, False)
    eff = {merge: logits("bfloat16", True, merge) - base for merge in (False, True)}
    eff["compute"] = logits("bfloat16", True, False, "compute") - base  # the adapter itself in bfloat16
    kept = {m: float((e * ref).sum() / (ref * ref).sum()) for m, e in eff.items()}
    err = {m: float((e - ref).norm() / ref.norm()) for m, e in eff.items()}
    print(f"share of the adapter's effect kept: separate {kept[False]:.3f}, merged {kept[True]:.3f}, separate "
          f"in bfloat16 {kept['compute']:.3f}; error {err[False]:.3f} / {err[True]:.3f} / {err['compute']:.3f}")
    assert abs(kept[False] - 1) < abs(kept[True] - 1)
    # An update rounded to bfloat16 keeps its size (relative rounding of the update itself), unlike a merge,
    # which rounds it against the much larger weight.
    assert abs(kept["compute"] - 1) < abs(kept[True] - 1) and err["compute"] < err[True]
    assert not torch.equal(eff["compute"], eff[False])  # the cast really happened
