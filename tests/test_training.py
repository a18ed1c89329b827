"""Training on the tiny model: the loss mask on the real collated batch, and resuming after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SYSTEM_PROMPT, collated_loss, tiny_params, write_params
from vigsm.config import SECTIONS, parse_section
from vigsm.data import prepare

pytestmark = pytest.mark.slow


def sections(params: dict):
    return {k: parse_section(k, params[k], SECTIONS[k]) for k in SECTIONS}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("prepared")
    params = tiny_params(tiny_model_dir)
    records, _ = prepare(sections(params)["data"], ROOT / "data" / "sample", SYSTEM_PROMPT)
    for split, rows in records.items():
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return out, params, records


def test_completion_only_labels_on_the_real_collated_batch(prepared, tmp_path):
    from vigsm.training import build_trainer, label_coverage

    _, params, records = prepared
    s = sections(params)
    trainer, backend = build_trainer(s["model"], s["lora"], s["train"], records["train"], records["validation"][:4],
                                     tmp_path / "ckpt")
    assert backend == "peft"
    tok = trainer.processing_class
    features = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(features)
    assistant_header = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for i, rec in enumerate(records["train"][:4]):
        ids = batch["input_ids"][i].tolist()
        labels = batch["labels"][i].tolist()
        # the prompt ends right after the last assistant header
        start = max(j + len(assistant_header) for j in range(len(ids))
                    if ids[j:j + len(assistant_header)] == assistant_header)
        assert all(x == -100 for x in labels[:start]), "a prompt token carries a label"
        n = len(features[i]["input_ids"])
        assert labels[start:n] == ids[start:n], "a completion token is masked"
        assert all(x == -100 for x in labels[n:]), "padding carries a label"
        text = tok.decode(labels[start:n])
        assert text.startswith(rec["completion"][0]["content"])
        assert text.rstrip().endswith("<|im_end|>")  # the end of turn is learned
    cov = label_coverage(trainer, records["train"])
    assert cov["prompt_tokens_labelled"] == 0
    assert cov["completion_tokens_labelled"] == cov["completion_tokens"] > 0


def test_padding_free_and_rounded_batches_give_the_padded_loss(prepared, tmp_path):
    """Flattened rows with per-sequence position ids must not let one example attend to another, and
    rounding a padded batch's length up (train.pad_to_multiple_of) must only add unlabelled padding."""
    import dataclasses

    from vigsm.training import build_trainer, first_batch

    _, params, records = prepared
    s = sections(params)
    losses, lengths = {}, {}
    for name, padding_free, multiple in (("padded", False, 0), ("rounded", False, 64), ("padding-free", True, 0)):
        train_p = dataclasses.replace(s["train"], padding_free=padding_free, pad_to_multiple_of=multiple)
        trainer, _ = build_trainer(s["model"], s["lora"], train_p, records["train"], records["validation"][:4],
                                   tmp_path / "c")
        _, batch = first_batch(trainer, 3)
        assert (batch["input_ids"].shape[0] == 1) == padding_free
        lengths[name] = batch["input_ids"].shape[1]
        losses[name] = collated_loss(trainer, n=6)
    assert lengths["rounded"] % 64 == 0 and lengths["rounded"] > lengths["padded"]
    # exact in float32 here; letting the sequences see each other moves this loss by ~3e-5 (relative)
    assert losses["padding-free"] == pytest.approx(losses["padded"], rel=1e-6)
    assert losses["rounded"] == pytest.approx(losses["padded"], rel=1e-6)


def test_padding_free_refuses_examples_it_cannot_truncate(prepared, tmp_path):
    import dataclasses

    from vigsm.errors import VigsmError
    from vigsm.training import build_trainer

    _, params, records = prepared
    s = sections(params)
    model_p = dataclasses.replace(s["model"], max_seq_length=64)
    train_p = dataclasses.replace(s["train"], padding_free=True)
    with pytest.raises(VigsmError, match=r"train.padding_free: \d+ training examples are longer"):
        build_trainer(model_p, s["lora"], train_p, records["train"], records["validation"][:4], tmp_path / "c")


def train_cmd(work: Path, data_dir: Path) -> list[str]:
    return [sys.executable, str(ROOT / "stages" / "train.py"), "--data-dir", str(data_dir), "--adapter-dir",
            str(work / "adapter"), "--checkpoint-dir", str(work / "ckpt"), "--metrics", str(work / "train.json"),
            "--params", str(work / "params.yaml"), "--live-dir", str(work / "live")]


def logged_step_losses(live: Path) -> dict[int, float]:
    """The training loss of each logged step, from DVCLive's TSV (eval/loss.tsv holds the eval losses, and
    train/loss.tsv the trainer's final train_loss), keyed by DVCLive's step: a row logged again after a
    resume replaces the first."""
    import csv

    with open(live / "plots" / "metrics" / "loss.tsv", encoding="utf-8") as fh:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(fh, delimiter="\t")}


def test_training_resumes_after_sigkill(prepared, tmp_path, tiny_model_dir):
    """Kill training after its first checkpoint; the rerun resumes there and ends where an uninterrupted
    run with the same seed ends (eval loss within 1e-4, adapter weights within 1e-4), and every figure of
    its metrics describes the whole run as the uninterrupted run's do, except THIS_RUN_KEYS."""
    data_dir, params, _ = prepared
    params = tiny_params(tiny_model_dir, train={"max_steps": 8, "save_steps": 2, "eval_steps": 2,
                                                "load_best_model_at_end": False})
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    for work in (ref, killed):
        work.mkdir()
        write_params(work / "params.yaml", params)
    subprocess.run(train_cmd(ref, data_dir), check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(train_cmd(killed, data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((killed / "ckpt").glob("checkpoint-4/trainer_state.json")):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "adapter").exists() and not (killed / "train.json").exists()
    # A checkpoint torn by the kill is detected and skipped: fake one past the last complete one.
    torn = killed / "ckpt" / "checkpoint-99"
    torn.mkdir()
    (torn / "adapter_model.safetensors").write_bytes(b"torn")
    out = subprocess.run(train_cmd(killed, data_dir), check=True, capture_output=True, text=True, timeout=600)
    assert "skipping incomplete checkpoint" in out.stdout and "resuming from" in out.stdout
    m_ref = json.loads((ref / "train.json").read_text())
    m_killed = json.loads((killed / "train.json").read_text())
    assert m_killed["resumed_from_step"] >= 2 and m_killed["global_step"] == m_ref["global_step"] == 8
    assert m_killed["eval_loss"] == pytest.approx(m_ref["eval_loss"], abs=1e-4)
    # train_loss averages all 8 steps, not the sum of the resumed part over 8 (the trainer's own figure)
    assert m_killed["train_loss_steps"] == m_ref["train_loss_steps"] == 8
    assert m_killed["train_loss"] == pytest.approx(m_ref["train_loss"], rel=1e-6)
    for work, m in ((ref, m_ref), (killed, m_killed)):  # the mean of the 8 logged step losses (logging_steps 1)
        steps = logged_step_losses(work / "live")  # by DVCLive's own step counter (eval logs count too)
        assert len(steps) == 8, steps
        assert m["train_loss"] == pytest.approx(sum(steps.values()) / 8, rel=1e-5)
    from vigsm.training import THIS_RUN_KEYS

    assert m_killed.keys() == m_ref.keys() and m_ref["resumed_from_step"] == 0
    whole = {k: v for k, v in m_ref.items() if k not in THIS_RUN_KEYS}
    for key, value in whole.items():
        if isinstance(value, float):
            assert m_killed[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
        else:
            assert m_killed[key] == value, key
    # Throughput counts only the steps this process trained, not the ones before the checkpoint.
    share = (8 - m_killed["resumed_from_step"]) / 8
    assert m_killed["train_tokens_this_run"] == pytest.approx(m_ref["train_tokens_this_run"] * share, abs=1)
    assert m_ref["train_tokens_this_run"] > 0
    from safetensors.torch import load_file

    a = load_file(ref / "adapter" / "adapter_model.safetensors")
    b = load_file(killed / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-4, k


def test_train_selects_on_validation_without_a_repeated_evaluation_and_publishes_no_pickle(
        prepared, tmp_path, monkeypatch):
    """train reads train.jsonl and validation.jsonl only (no test.jsonl in its data dir), evaluates once per
    eval step (no final evaluation repeating the last one), reports the best checkpoint's eval loss, and
    leaves no pickle in the adapter directory that `dvc push` publishes."""
    import shutil

    from trl import SFTTrainer

    from vigsm.training import train

    data_dir, params, _ = prepared
    only = tmp_path / "data"
    only.mkdir()
    for split in ("train", "validation"):
        shutil.copy(data_dir / f"{split}.jsonl", only / f"{split}.jsonl")
    s = sections(params)
    assert s["train"].load_best_model_at_end and s["train"].max_steps == 4 and s["train"].eval_steps == 2
    losses: list[tuple[int, float]] = []
    evaluate = SFTTrainer.evaluate

    def spy(self, *args, **kwargs):
        out = evaluate(self, *args, **kwargs)
        losses.append((self.state.global_step, out["eval_loss"]))
        return out

    monkeypatch.setattr(SFTTrainer, "evaluate", spy)
    m = train(s["model"], s["lora"], s["train"], only, tmp_path / "adapter", tmp_path / "ckpt",
              tmp_path / "train.json")
    assert [step for step, _ in losses] == [2, 4]
    assert m["eval_loss"] == min(loss for _, loss in losses)
    assert m["eval_split"] == "validation[:8]" and m["eval_examples"] == 8
    published = sorted(p.name for p in (tmp_path / "adapter").rglob("*"))
    assert "adapter_model.safetensors" in published
    assert not [n for n in published if n.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))], published
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "adapter").iterdir()}
    assert set(modes.values()) == {0o666 & ~umask}, modes  # safetensors writes its file 0600


def test_changed_params_do_not_resume_a_stale_checkpoint(prepared, tmp_path, tiny_model_dir):
    from vigsm.training import resume_checkpoint

    ckpt = tmp_path / "ckpt"
    (ckpt / "checkpoint-2").mkdir(parents=True)
    (ckpt / "vigsm-fingerprint.txt").write_text("old")
    assert resume_checkpoint(ckpt, "new") is None
    assert not (ckpt / "checkpoint-2").exists()


def test_four_bit_on_cpu_is_refused_before_loading(tmp_path, tiny_model_dir, prepared):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data_dir, _, _ = prepared
    params = tiny_params(tiny_model_dir, model={"load_in_4bit": True})
    write_params(tmp_path / "params.yaml", params)
    proc = subprocess.run(train_cmd(tmp_path, data_dir), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "model.load_in_4bit: 4-bit loading needs a CUDA GPU" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_whole_run_train_loss_after_a_resume():
    """The trainer's training_loss after a resume from step 4 of 8: the losses of steps 5-8 summed, over 8
    steps. The whole run's mean adds steps 1-4 from the logged history (restored with the checkpoint)."""
    from vigsm.training import whole_run_train_loss

    losses = {step: 10.0 - step for step in range(1, 9)}  # 9, 8, ..., 2: mean 5.5
    history = [{"loss": losses[s], "step": s} for s in range(1, 9)] + [{"eval_loss": 3.0, "step": 4}]
    trainer_figure = sum(losses[s] for s in range(5, 9)) / 8  # what transformers reports after the resume
    assert whole_run_train_loss(history, trainer_figure, 4, 8) == (pytest.approx(5.5), 8)
    # not resumed: the trainer's own figure, over every step
    assert whole_run_train_loss(history, 5.5, 0, 8) == (pytest.approx(5.5), 8)
    # logging every 3 steps, resumed from step 4: step 4 was never logged, so the mean covers the 7 others
    every3 = [{"loss": (9 + 8 + 7) / 3, "step": 3}, {"loss": (5 + 4 + 3) / 3, "step": 6}]
    got, steps = whole_run_train_loss(every3, sum(losses[s] for s in range(5, 9)) / 8, 4, 8)
    assert steps == 7 and got == pytest.approx((9 + 8 + 7 + 5 + 4 + 3 + 2) / 7)
