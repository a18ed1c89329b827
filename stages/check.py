"""check: validate params.yaml and the inputs before any other stage deletes its outputs (CPU, seconds)."""

import argparse
from pathlib import Path

from vigsm.checks import PASSED, check_all
from vigsm.errors import run_cli
from vigsm.io import write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sample-dir", type=Path, required=True, help="the bundled sample (data.source=sample)")
    ap.add_argument("--system-prompt", type=Path, required=True, help="the system prompt file prepare reads")
    ap.add_argument("--out", type=Path, required=True, help="written only when every check passes")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
    check_all(args.params, args.sample_dir, args.system_prompt)
    write_text(args.out, PASSED)
    print("[vigsm] params.yaml and the inputs are valid")


if __name__ == "__main__":
    run_cli(main)
