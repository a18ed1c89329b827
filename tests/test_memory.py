"""lora.gradient_checkpointing: auto, on the CPU with the GPU's figures injected: what the rule picks for
the 3B and SmolLM2 on a 16 GB, a 24 GB card and an H200, its calibration against the committed peaks, and
how params.yaml, check and train take it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SYSTEM_PROMPT, shipped_params, tiny_params
from vigsm import memory
from vigsm.config import SECTIONS, LoraParams, ModelParams, TrainParams, parse_section
from vigsm.errors import VigsmError
from vigsm.memory import ModelShape, decide, estimate_gb, padded_length

# gpu_bench.QWEN25_3B and SmolLM2-135M-Instruct's config.json, as transformers configs give them
QWEN_3B = dict(model_type="qwen2", vocab_size=151936, hidden_size=2048, intermediate_size=11008,
               num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2, tie_word_embeddings=True)
SMOLLM2 = dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# free memory as torch.cuda.mem_get_info reports it, in GB (1e9 bytes): at most the card's size (the CUDA
# context takes some), and the H200's 139 GiB the device README gives
CARD_16GB, CARD_24GB, H200 = 16.0, 24.0, 139 * 2**30 / 1e9


def shape(cfg: dict) -> ModelShape:
    from types import SimpleNamespace

    s = memory.shape_from_config(SimpleNamespace(**cfg))
    assert s is not None
    return s


def shipped(cfg: dict, free_gb: float, *, seq_len: int | None = None, backend: str = "unsloth") -> memory.Choice:
    """The rule on params.yaml's training figures: 4-bit bfloat16, r=32 on the seven projections, 12 rows
    per step on one GPU, max_seq_length 1536 (a multiple of pad_to_multiple_of 64)."""
    doc = shipped_params()
    m, lo, t = doc["model"], doc["lora"], doc["train"]
    assert (m["load_in_4bit"], m["dtype"], lo["r"], t["per_device_train_batch_size"] // t["gpus"]) == (
        True, "bfloat16", 32, 12)
    length = seq_len or padded_length(m["max_seq_length"], t["pad_to_multiple_of"])
    return decide(shape(cfg), load_in_4bit=True, dtype="bfloat16", rows=12, seq_len=length, rank=lo["r"],
                  targets=lo["target_modules"], backend=backend, free_gb=free_gb)


def test_shape_counts_the_3b_parameters_as_the_benchmarks_did():
    # gpu_bench.base_params (the figure in every results file) and the adapter size in its memory note
    assert shape(QWEN_3B).parameters == 3085938688
    assert memory.lora_parameters(shape(QWEN_3B), 32, PROJECTIONS) == 59867136


def test_3b_keeps_checkpointing_on_16_and_24_gb_and_drops_it_on_an_h200():
    picks = {name: shipped(QWEN_3B, free) for name, free in
             (("16GB", CARD_16GB), ("24GB", CARD_24GB), ("H200", H200))}
    for name, c in picks.items():
        print(f"[memory] 3B {name}: {c.reason}")
    assert picks["16GB"].enabled and picks["24GB"].enabled and not picks["H200"].enabled
    assert picks["H200"].estimate_gb == pytest.approx(54.5, abs=0.1)  # 12 x 1536 tokens
    # with max_seq_length 384 (above the data's longest row, 368) a 24 GB card fits it, a 16 GB card not
    short = {name: shipped(QWEN_3B, free, seq_len=384) for name, free in (("16GB", CARD_16GB), ("24GB", CARD_24GB))}
    for name, c in short.items():
        print(f"[memory] 3B {name} at max_seq_length 384: {c.reason}")
    assert short["16GB"].enabled and not short["24GB"].enabled


def test_smollm2_drops_checkpointing_everywhere():
    for free in (CARD_16GB, CARD_24GB, H200):
        c = shipped(SMOLLM2, free)
        print(f"[memory] SmolLM2 {free:.0f} GB: {c.reason}")
        assert not c.enabled


def test_the_rule_is_a_threshold_in_free_memory():
    """Off from exactly HEADROOM x estimate + RESERVE_GB free memory upwards, on below it."""
    est = shipped(QWEN_3B, 0.0).estimate_gb
    need = memory.HEADROOM * est + memory.RESERVE_GB
    assert need > est + 1
    assert not shipped(QWEN_3B, need).enabled
    assert shipped(QWEN_3B, need - 0.01).enabled
    assert shipped(QWEN_3B, 0.0).enabled and not shipped(QWEN_3B, 10_000.0).enabled


def test_estimate_grows_with_every_figure_it_takes():
    base = dict(load_in_4bit=True, dtype="bfloat16", rows=12, seq_len=384, rank=32, targets=PROJECTIONS,
                backend="unsloth")
    e = estimate_gb(shape(QWEN_3B), **base)
    assert estimate_gb(shape(QWEN_3B), **{**base, "rows": 24}) > e
    assert estimate_gb(shape(QWEN_3B), **{**base, "seq_len": 768}) > e
    assert estimate_gb(shape(QWEN_3B), **{**base, "rank": 64}) > e
    assert estimate_gb(shape(QWEN_3B), **{**base, "backend": "peft"}) > e
    # the PEFT backend's tokens cost PEFT_FACTOR times unsloth's (its eager layers keep more)
    per_row = {b: estimate_gb(shape(QWEN_3B), **{**base, "backend": b, "rows": 13})
               - estimate_gb(shape(QWEN_3B), **{**base, "backend": b}) for b in ("unsloth", "peft")}
    assert per_row["peft"] == pytest.approx(memory.PEFT_FACTOR * per_row["unsloth"]) and memory.PEFT_FACTOR > 1
    assert estimate_gb(shape(QWEN_3B), **{**base, "load_in_4bit": False}) > e + 4  # 3.1 B bf16 weights: 6.2 GB
    assert estimate_gb(shape(QWEN_3B), **{**base, "load_in_4bit": False, "dtype": "float32"}) > \
        estimate_gb(shape(QWEN_3B), **{**base, "load_in_4bit": False})
    assert estimate_gb(shape(SMOLLM2), **base) < e


def _peaks(path: str) -> list[dict]:
    doc = json.loads((ROOT / "benchmarks" / "results" / path).read_text(encoding="utf-8"))
    return doc["train"]


def test_estimate_covers_the_committed_checkpointing_off_peaks_closely():
    """The 3B-shaped model, unsloth, batch 12 on the bundled sample (longest row 368: 12 x 384 padded
    tokens at most), checkpointing off: the estimate must not fall below a measured peak, nor sit more
    than 15% above the highest (an estimate far above every measurement would keep checkpointing where
    it is not needed)."""
    runs = [r for f in ("2026-11-29-h200-training.json", "2026-11-29-h200.json") for r in _peaks(f)
            if r["backend"] == "unsloth" and not r["gradient_checkpointing"]]
    assert sorted(round(r["peak_memory_gb"], 2) for r in runs) == [13.82, 14.5, 15.09]  # the three recorded
    assert {(r["batch"], r["accum"], r["base_params"]) for r in runs} == {(12, 1, 3085938688)}
    est = estimate_gb(shape(QWEN_3B), load_in_4bit=True, dtype="bfloat16", rows=12, seq_len=384, rank=32,
                      targets=PROJECTIONS, backend="unsloth")
    highest = max(r["peak_memory_gb"] for r in runs)
    print(f"[memory] 3B at 12 x 384 tokens, checkpointing off: estimate {est:.2f} GB, measured peaks "
          f"{sorted(round(r['peak_memory_gb'], 2) for r in runs)}")
    assert highest <= est <= 1.15 * highest
    # and it fits the measured card sizes it is meant for: the 3.48 GB checkpointed peak is far below
    on = [r["peak_memory_gb"] for r in _peaks("2026-11-29-h200-training.json") if r["gradient_checkpointing"]
          and r["backend"] == "unsloth"]
    assert on and max(on) < est / 4


def _cfg_dir(tmp_path: Path, cfg: dict) -> Path:
    d = tmp_path / cfg["model_type"]
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return d


def _sections(lora: dict | None = None, model: dict | None = None) -> tuple[ModelParams, LoraParams, TrainParams]:
    doc = shipped_params()
    doc["lora"].update(lora or {})
    doc["model"].update(model or {})
    return (parse_section("model", doc["model"], ModelParams), parse_section("lora", doc["lora"], LoraParams),
            parse_section("train", doc["train"], TrainParams))


@pytest.mark.parametrize(("cfg", "free", "enabled"), [(QWEN_3B, CARD_16GB, True), (QWEN_3B, H200, False),
                                                      (SMOLLM2, CARD_16GB, False)], ids=["3b-16gb", "3b-h200",
                                                                                           "smollm2-16gb"])
def test_choose_reads_the_config_and_the_free_memory(tmp_path, monkeypatch, cfg, free, enabled):
    import vigsm.device

    monkeypatch.setattr(vigsm.device, "cuda_available", lambda: True)
    monkeypatch.setattr(memory, "free_gpu_gb", lambda: free)
    model_p, lora_p, train_p = _sections()
    c = memory.choose(model_p, lora_p, train_p, backend="unsloth", source=str(_cfg_dir(tmp_path, cfg)))
    assert c.enabled is enabled
    assert c.free_gb == free and c.tokens == 12 * 1536
    assert c.metrics()["gradient_checkpointing"] is enabled and c.metrics()["free_gb"] == round(free, 2)
    assert c.metrics()["memory_estimate_gb"] == round(c.estimate_gb, 2)


def test_choose_sizes_the_longest_row_only_where_max_seq_length_does_not_fit(tmp_path, monkeypatch):
    import vigsm.device

    monkeypatch.setattr(vigsm.device, "cuda_available", lambda: True)
    src = str(_cfg_dir(tmp_path, QWEN_3B))
    calls = []

    def longest() -> int:
        calls.append(1)
        return 368 + 8  # the bundled sample's longest row and vigsm.training.ROW_MARGIN

    picks = {}
    for name, free in (("16GB", CARD_16GB), ("24GB", CARD_24GB), ("H200", H200)):
        monkeypatch.setattr(memory, "free_gpu_gb", lambda free=free: free)
        calls.clear()
        picks[name] = memory.choose(*_sections(), backend="unsloth", source=src, longest=longest)
        picks[name + " calls"] = len(calls)
        print(f"[memory] 3B {name} with the sample's rows: {picks[name].reason}")
    assert picks["H200"].tokens == 12 * 1536 and not picks["H200"].enabled and picks["H200 calls"] == 0
    assert picks["24GB"].tokens == 12 * 384 and not picks["24GB"].enabled and picks["24GB calls"] == 1
    assert picks["16GB"].tokens == 12 * 384 and picks["16GB"].enabled
    assert "the longest row has 376 tokens" in picks["24GB"].reason
    # a row longer than max_seq_length is truncated: sized at max_seq_length, not beyond
    monkeypatch.setattr(memory, "free_gpu_gb", lambda: CARD_24GB)
    c = memory.choose(*_sections(model={"max_seq_length": 512}), backend="unsloth", source=src, longest=lambda: 5000)
    assert c.tokens == 12 * 512


def test_choose_on_the_cpu_and_when_set(tmp_path, monkeypatch):
    import vigsm.device

    def no_memory() -> float:
        raise AssertionError("free GPU memory read on a CPU")

    monkeypatch.setattr(vigsm.device, "cuda_available", lambda: False)
    monkeypatch.setattr(memory, "free_gpu_gb", no_memory)
    src = str(tmp_path / "nowhere")  # auto on a CPU reads no config either
    c = memory.choose(*_sections(), backend="peft", source=src)
    assert not c.enabled and "no CUDA" in c.reason and c.metrics() == {
        "gradient_checkpointing": False, "gradient_checkpointing_reason": c.reason}
    # true / false are taken as set, on any machine (make offline sets false)
    for value in (True, False):
        c = memory.choose(*_sections({"gradient_checkpointing": value}), backend="peft", source=src)
        assert c.enabled is value and c.reason == "set in params.yaml"
    monkeypatch.setattr(vigsm.device, "cuda_available", lambda: True)
    c = memory.choose(*_sections({"gradient_checkpointing": False}), backend="unsloth", source=src)
    assert not c.enabled


def test_an_unknown_architecture_keeps_checkpointing(tmp_path, monkeypatch):
    import vigsm.device

    monkeypatch.setattr(vigsm.device, "cuda_available", lambda: True)
    monkeypatch.setattr(memory, "free_gpu_gb", lambda: H200)
    d = _cfg_dir(tmp_path, {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 2, "vocab_size": 100,
                                  "bos_token_id": 0, "eos_token_id": 0})
    c = memory.choose(*_sections(), backend="unsloth", source=str(d))
    assert c.enabled and "cannot size" in c.reason


def test_most_cautious_agrees_on_the_process_that_needs_it():
    off = memory.Choice(False, "off", 10.0, 100.0)
    on = memory.Choice(True, "on", 10.0, 12.0)
    less = memory.Choice(False, "off", 10.0, 50.0)
    assert memory.most_cautious([off, on, less]) is on
    assert memory.most_cautious([off, less]) is less
    assert memory.most_cautious([off]) is off
    unsized = memory.Choice(True, "auto: cannot size", None, None)  # kept on without figures
    assert memory.most_cautious([off, unsized, less]) is unsized


@pytest.mark.parametrize("value", [True, False, "auto"])
def test_params_take_true_false_and_auto(value):
    doc = shipped_params()
    assert parse_section("lora", {**doc["lora"], "gradient_checkpointing": value}, SECTIONS["lora"]) \
        .gradient_checkpointing == value


@pytest.mark.parametrize("value", ["yes", "Auto", "true", 1, 0, None, [True]])
def test_params_reject_other_values(value):
    doc = shipped_params()
    with pytest.raises(VigsmError, match=r"lora\.gradient_checkpointing: expected true or false or 'auto'"):
        parse_section("lora", {**doc["lora"], "gradient_checkpointing": value}, SECTIONS["lora"])


def test_check_stops_on_a_bad_value_in_one_line(tmp_path):
    doc = shipped_params()
    doc["data"]["source"] = "sample"
    doc["lora"]["gradient_checkpointing"] = "sometimes"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "check.py"), "--sample-dir", str(ROOT / "data" / "sample"),
         "--system-prompt", str(ROOT / "data" / "system_prompt.txt"), "--out", str(tmp_path / "checked.txt"),
         "--params", str(tmp_path / "params.yaml")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "lora.gradient_checkpointing: expected true or false or 'auto', got 'sometimes'" in lines[0]
    assert not (tmp_path / "checked.txt").exists()


@pytest.mark.slow
def test_train_records_what_auto_picked_on_the_cpu(tmp_path, tiny_model_dir):
    from vigsm.data import prepare
    from vigsm.training import train

    params = tiny_params(tiny_model_dir, lora={"gradient_checkpointing": "auto"}, train={"max_steps": 2})
    s = {k: parse_section(k, params[k], SECTIONS[k]) for k in SECTIONS}
    records, _ = prepare(s["data"], ROOT / "data" / "sample", SYSTEM_PROMPT)
    data = tmp_path / "prepared"
    data.mkdir()
    for split, rows in records.items():
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    metrics = train(s["model"], s["lora"], s["train"], data, tmp_path / "adapter", tmp_path / "ckpt",
                    tmp_path / "train.json")
    written = json.loads((tmp_path / "train.json").read_text())
    assert written["gradient_checkpointing"] is False and metrics["gradient_checkpointing"] is False
    assert "no CUDA" in written["gradient_checkpointing_reason"]


@pytest.mark.slow
def test_build_trainer_applies_the_choice_not_the_raw_value(tmp_path, tiny_model_dir):
    """lora.gradient_checkpointing: auto with a choice of on (as on a 16 GB card): the trainer checkpoints."""
    from vigsm.data import prepare
    from vigsm.training import build_trainer

    params = tiny_params(tiny_model_dir, lora={"gradient_checkpointing": "auto"})
    s = {k: parse_section(k, params[k], SECTIONS[k]) for k in SECTIONS}
    records, _ = prepare(s["data"], ROOT / "data" / "sample", SYSTEM_PROMPT)
    trainer, _ = build_trainer(s["model"], s["lora"], s["train"], records["train"][:8], records["validation"][:4],
                               tmp_path / "ckpt", ckpt=memory.Choice(True, "injected"))
    assert trainer.args.gradient_checkpointing is True  # the Trainer turns it on in the model as train() starts
    # the length auto sizes where max_seq_length does not fit: the longest tokenized row, never below it
    from vigsm.training import ROW_MARGIN, longest_row

    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    estimate = longest_row(s["model"], str(tiny_model_dir), records["train"][:8])
    print(f"[memory] longest row: trainer {max(lengths)} tokens, longest_row {estimate}")
    assert max(lengths) <= estimate <= max(lengths) + ROW_MARGIN
