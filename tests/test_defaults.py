"""The shipped training split (one padded batch of 12, rounded to 64) learns what the notebook's 6 x 2 learns."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import ROOT, SYSTEM_PROMPT, tiny_params
from vigsm.config import SECTIONS, parse_section
from vigsm.data import prepare

pytestmark = pytest.mark.slow


def adapter_after_one_step(s: dict, train_rows: list[dict], eval_rows: list[dict], work, **train_changes) -> dict:
    import torch

    from vigsm.training import build_trainer

    train_p = dataclasses.replace(s["train"], max_steps=1, warmup_steps=0, eval_steps=1000, save_steps=1000,
                             load_best_model_at_end=False, **train_changes)
    torch.manual_seed(0)
    trainer, _ = build_trainer(s["model"], s["lora"], train_p, train_rows, eval_rows, work)
    trainer.train()
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}


def test_one_batch_of_12_learns_what_6_by_2_learns(tiny_model_dir, tmp_path):
    """One optimiser step on the same 12 rows: the shipped 12 x 1 padded to a multiple of 64 against the
    notebook's 6 x 2 padded to the longest row. The loss is normalised over every labelled token of the
    step either way, so the adapters must agree to float32 rounding."""
    import torch

    params = tiny_params(tiny_model_dir)
    s = {k: parse_section(k, params[k], SECTIONS[k]) for k in SECTIONS}
    records, _ = prepare(s["data"], ROOT / "data" / "sample", SYSTEM_PROMPT)
    rows = records["train"][:12]
    assert s["train"].pad_to_multiple_of == 64  # the shipped rounding (tiny_params keeps params.yaml's)
    a = adapter_after_one_step(s, rows, rows[:4], tmp_path / "a", per_device_train_batch_size=12,
                               gradient_accumulation_steps=1, pad_to_multiple_of=64)
    b = adapter_after_one_step(s, rows, rows[:4], tmp_path / "b", per_device_train_batch_size=6,
                               gradient_accumulation_steps=2, pad_to_multiple_of=0)
    init = adapter_after_one_step(s, rows, rows[:4], tmp_path / "c", learning_rate=1e-12)
    moved = max((a[k] - init[k]).abs().max().item() for k in a)
    assert moved > 1e-4  # the step changed the adapter, so the comparison below means something
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
