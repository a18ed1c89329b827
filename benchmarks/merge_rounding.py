"""How much of a LoRA adapter survives being merged into 16-bit weights (CPU, no GPU needed).

For every adapted projection it compares the merged weight, rounded to ``--dtype``, with the exact one:
the share of weights the merge leaves unchanged (their update is under half a unit in the last place)
and the share of the update that survives (projection of the realised change on the exact update).

    python benchmarks/merge_rounding.py --base DIR --adapter DIR [--dtype bfloat16] [--out FILE]
"""

from __future__ import annotations

import argparse
import json

from vigsm.io import write_json


def merge_rounding(base: str, adapter: str, dtype: str = "bfloat16") -> dict:
    """Per-projection and overall figures for merging ``adapter`` into ``base`` held in ``dtype``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dt = getattr(torch, dtype)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=dt), adapter)
    unchanged = total = 0
    kept_num = kept_den = 0.0
    per_kind: dict[str, list[float]] = {}
    for name, module in model.named_modules():
        if not hasattr(module, "get_delta_weight") or not hasattr(module, "base_layer"):
            continue
        w = module.base_layer.weight.detach()
        delta = module.get_delta_weight("default").detach().float()
        realised = (w.float() + delta).to(dt).float() - w.float()
        unchanged += int((realised == 0).sum())
        total += realised.numel()
        num, den = float((realised * delta).sum()), float((delta * delta).sum())
        kept_num, kept_den = kept_num + num, kept_den + den
        per_kind.setdefault(name.rsplit(".", 1)[-1], []).append(num / den if den else 1.0)
    return {"dtype": dtype, "weights": total, "unchanged_share": unchanged / max(total, 1),
            "update_kept_share": kept_num / kept_den if kept_den else 1.0,
            "update_kept_share_by_projection": {k: sum(v) / len(v) for k, v in sorted(per_kind.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out")
    args = ap.parse_args()
    res = merge_rounding(args.base, args.adapter, args.dtype)
    print(json.dumps(res, indent=1))
    if args.out:
        write_json(args.out, res)


if __name__ == "__main__":
    main()
