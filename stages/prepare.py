"""prepare: load the problems, check and normalise them, write chat records and stats (CPU only)."""

import argparse
from pathlib import Path

from vigsm.config import load_section
from vigsm.data import OUTPUT_SPLITS, prepare, read_system_prompt
from vigsm.errors import run_cli
from vigsm.io import write_json, write_jsonl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sample-dir", type=Path, required=True, help="the bundled sample (data.source=sample)")
    ap.add_argument("--system-prompt", type=Path, required=True, help="text file: the system prompt, verbatim")
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
    params = load_section("data", path=args.params)
    records, stats = prepare(params, args.sample_dir, read_system_prompt(args.system_prompt))
    for split in OUTPUT_SPLITS:
        write_jsonl(args.out_dir / f"{split}.jsonl", records[split])
    write_json(args.out_dir / "stats.json", stats)
    print(f"[vigsm] prepared {stats['train_count']} train / {stats['validation_count']} validation "
          f"(from {stats['validation_from']}) / {stats['test_count']} test records from {stats['source']}")


if __name__ == "__main__":
    run_cli(main)
