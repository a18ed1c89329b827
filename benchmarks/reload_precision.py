"""Why a reloaded PEFT adapter's greedy text can differ from the live trained model's (device, real weights).

The PEFT backend trains on a 4-bit base prepared by ``prepare_model_for_kbit_training``, which upcasts the
norms, embeddings and head to float32, and the Trainer runs under bfloat16 autocast. The generate stage
reloads the saved adapter onto a plain bfloat16 base. This trains a short adapter with the project's
``build_trainer``, then reloads it three ways and counts the greedy texts identical to the live model's:

- ``stage``: as the generate stage's 4-bit path loads it (``load_with_adapter(base_16bit=False)``);
- ``kbit``: the base prepared as in training (``as_trained.load_as_trained``, beside this script);
- ``kbit+autocast``: that, decoded under bfloat16 autocast.

Usage (on the device; run_device.sh's ``reload`` mode passes SmolLM2's params):
    python benchmarks/reload_precision.py --params P --data-dir data/prepared --work /tmp/rl_p --out R.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import sys
from pathlib import Path

from vigsm.config import load_section
from vigsm.io import read_jsonl, write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))  # static_generation, as_trained


def autocast(model, on: bool):
    """bfloat16 autocast on the model's device, or nothing."""
    import torch

    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16) if on else contextlib.nullcontext()


def dtypes(model) -> dict[str, str]:
    """dtype of each kind of non-quantised parameter (norms, embeddings) in ``model``."""
    out: dict[str, str] = {}
    for name, p in model.named_parameters():
        kind = "norm" if "norm" in name else "embed" if "embed" in name else None
        if kind and kind not in out:
            out[kind] = str(p.dtype).replace("torch.", "")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, required=True)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()
    model_p, lora_p = load_section("model", path=args.params), load_section("lora", path=args.params)
    train_p = dataclasses.replace(load_section("train", path=args.params), backend="peft", max_steps=args.steps)
    gen_p = dataclasses.replace(load_section("generate", path=args.params), do_sample=False,
                             max_new_tokens=args.new_tokens, batch_size=args.prompts)

    import torch
    from static_generation import generate_batch

    from as_trained import load_as_trained
    from vigsm.modeling import load_with_adapter
    from vigsm.training import build_trainer

    train, test = (read_jsonl(args.data_dir / f"{s}.jsonl") for s in ("train", "test"))
    prompts = [r["prompt"] for r in test[: args.prompts]]
    trainer, _ = build_trainer(model_p, lora_p, train_p, train, test[:8], args.work / "ckpt")
    trainer.train()
    trainer.save_model(str(args.work / "adapter"))
    live = trainer.model
    live.eval()
    tok = trainer.processing_class
    tok.padding_side = "left"
    result: dict = {"model": model_p.name, "gguf_file": model_p.gguf_file, "steps": args.steps, "prompts": len(prompts),
                    "new_tokens": args.new_tokens, "live_dtypes": dtypes(live), "reloads": {}}
    ref = {}
    for on in (False, True):
        with autocast(live, on):
            ref[on] = generate_batch(live, tok, prompts, gen_p, seed=0)[0]
    result["live_autocast_vs_live"] = sum(a == b for a, b in zip(ref[False], ref[True], strict=True))
    del trainer, live
    gc.collect()
    torch.cuda.empty_cache()

    adapter = str(args.work / "adapter")
    for name in ("stage", "kbit", "kbit+autocast"):
        # the same tokenizer files for every reload: the live model's, left-padded
        model = (load_with_adapter(model_p, adapter, base_16bit=False)[0] if name == "stage"
                 else load_as_trained(model_p, adapter))
        with autocast(model, name.endswith("autocast")):
            texts = generate_batch(model, tok, prompts, gen_p, seed=0)[0]
        result["reloads"][name] = {
            "dtypes": dtypes(model),
            "identical_to_live": sum(a == b for a, b in zip(ref[False], texts, strict=True)),
            "identical_to_live_under_autocast": sum(a == b for a, b in zip(ref[True], texts, strict=True))}
        print(f"[reload] {name:14} {result['reloads'][name]}", flush=True)
        del model
        gc.collect()
        torch.cuda.empty_cache()
    write_json(args.out, result)
    print(f"[reload] live {result['live_dtypes']}; live under autocast = live for "
          f"{result['live_autocast_vs_live']}/{len(prompts)} texts")


if __name__ == "__main__":
    main()
