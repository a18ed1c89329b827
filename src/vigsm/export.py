"""Export: merge the LoRA adapter into a copy of the base in ``model.dtype``, as a plain HF model directory.

Usage: ``python -m vigsm.export --out models/merged`` (the adapter defaults to the train stage's, as
dvc.yaml declares it; the merged model is no pipeline output, so its place is yours to name)

The result loads with ``AutoModelForCausalLM.from_pretrained`` in any HF-compatible server (vLLM, TGI,
llama.cpp's converter) with no PEFT. A 4-bit base is dequantised first, so the merged weights are the
ones the adapter was trained against. Written under a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vigsm.config import load_section
from vigsm.errors import VigsmError, run_cli
from vigsm.io import atomic_dir, usual_permissions


def export_merged(adapter: Path, out: Path, params: Path = Path("params.yaml")) -> Path:
    from vigsm.modeling import load_with_adapter

    model_p = load_section("model", path=params)
    if not (adapter / "adapter_config.json").is_file():  # before minutes of loading the base
        raise VigsmError(f"adapter {adapter} has no adapter_config.json; run the train stage (dvc repro train) "
                         f"or dvc pull it")
    model, tok = load_with_adapter(model_p, str(adapter), base_16bit=True, merge_adapter=True)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.padding_side = "right"
        tok.save_pretrained(tmp)
        usual_permissions(tmp)  # safetensors writes its file 0600
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m vigsm.export", description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", type=Path, default=None, help="default: the train stage's (dvc.yaml)")
    ap.add_argument("--out", type=Path, required=True, help="directory for the merged model")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
    if args.adapter is None:
        from vigsm.paths import adapter_dir

        args.adapter = Path(adapter_dir())
    print(f"[vigsm] merged model written to {export_merged(args.adapter, args.out, args.params)}")


if __name__ == "__main__":
    run_cli(main)
