"""A Qwen2.5-3B-shaped random model and a LoRA adapter shaped by params.yaml's `lora` section, for timing.

Decoding speed does not depend on weight values, so the generate stage can be timed at the real model's
shapes without hub access: the base is built from its config (gpu_bench.QWEN25_3B) and the adapter is
PEFT's fresh initialisation (its B matrices are zero), saved where the generate stage reads an adapter.

    python benchmarks/random_adapter.py --tokenizer DIR --model-dir /tmp/qwen25-3b-random --adapter-dir DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_bench as gb  # a sibling script, not a package


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--adapter-dir", type=Path, required=True)
    args = ap.parse_args()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gb.build_model(args.model_dir, args.tokenizer)
    lora = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))["lora"]
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.bfloat16)
    cfg = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], bias=lora["bias"],
                     use_rslora=lora["use_rslora"], target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM")
    get_peft_model(model, cfg).save_pretrained(args.adapter_dir)
    AutoTokenizer.from_pretrained(args.model_dir).save_pretrained(args.adapter_dir)
    print(f"[adapter] r={lora['r']} on {', '.join(lora['target_modules'])} -> {args.adapter_dir}")


if __name__ == "__main__":
    main()
