"""Run dvc.yaml stages' commands in order, as `dvc repro` would run them, and time each one.

For machines without DVC (the GPU box): each stage's `cmd` is taken from dvc.yaml verbatim and run with
bash from the repository root, so the measured work is exactly the pipeline's. DVC's own bookkeeping
(hashing, caching outputs) is not included. `--drop-option --live-dir` removes an option and its value
from every command (the GPU box lacks dvclive). The JSON written after each stage holds every stage's
wall seconds and return code, so a run cut off by a time limit keeps what finished.

    python benchmarks/run_stages.py --out times.json prepare train generate-base generate
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml


def stage_command(stage: str, drop: list[str], dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """The stage's command from dvc.yaml as an argv, with each option in ``drop`` and its value removed."""
    stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    if stage not in stages:
        raise SystemExit(f"run_stages: no stage {stage!r} in {dvc_yaml} (stages: {', '.join(stages)})")
    argv = shlex.split(" ".join(stages[stage]["cmd"].split()))
    for opt in drop:
        while opt in argv:
            i = argv.index(opt)
            del argv[i:i + 2]
    return argv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stages", nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--drop-option", action="append", default=[], metavar="OPT")
    ap.add_argument("--log-dir", type=Path, default=None, help="one log file per stage")
    args = ap.parse_args()
    times: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    for stage in args.stages:
        argv = stage_command(stage, args.drop_option)
        argv = [sys.executable if a == "python" else a for a in argv]
        t0 = time.perf_counter()
        if args.log_dir:
            with open(args.log_dir / f"{stage}.log", "w") as log:
                proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT)
        else:
            proc = subprocess.run(argv)
        seconds = time.perf_counter() - t0
        times[stage] = {"seconds": round(seconds, 2), "rc": proc.returncode, "cmd": " ".join(argv),
                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        args.out.write_text(json.dumps(times, indent=2))
        print(f"[stages] {stage}: rc={proc.returncode} {seconds:.1f}s", flush=True)
        if proc.returncode != 0:
            raise SystemExit(proc.returncode)


if __name__ == "__main__":
    main()
