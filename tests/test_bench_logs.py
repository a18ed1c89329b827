"""benchmarks/defaults_results.py's reading of a train stage's log (the step times the results quote)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from defaults_results import train_log_times  # noqa: E402  (a script beside the benchmarks, not a package)


def bar(step: int, total: int, seconds: int) -> str:
    return f"\r {step}/{total} [{seconds // 60:02d}:{seconds % 60:02d}<00:10,  2.00it/s]"


def test_step_time_leaves_out_only_the_evaluations_inside_the_bar():
    # step 1 at 10 s (compiling), an evaluation of 6 s after step 2, step 4 at 22 s, then a final evaluation
    # of 100 s that runs after the bar has shown the last step
    log = "".join([bar(1, 4, 10), bar(2, 4, 12), "{'eval_runtime': '6.0'}", bar(3, 4, 20), bar(4, 4, 22),
                   "{'eval_runtime': '100.0'}"])
    times = train_log_times(log, 4)
    assert times["first_step_seconds"] == 10
    assert times["eval_seconds"] == [6.0, 100.0]
    assert times["seconds_per_step"] == (22 - 10 - 6.0) / 3


def test_no_bar_or_too_few_steps_gives_none():
    assert train_log_times("no bar here", 4) is None
    assert train_log_times(bar(1, 2, 5) + bar(2, 2, 6), 2) is None
