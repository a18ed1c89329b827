"""benchmarks/assemble.py's shared readers: a train stage's log (the step times the results quote) and the
spread of the runs. Beside the assembler, not in tests/: nothing in tests/ imports from benchmarks/."""

from __future__ import annotations

from assemble import spread, train_log_times  # pytest puts this folder on sys.path (rootdir-relative import)


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


def test_spread_is_median_min_max_n_rounded_only_when_asked():
    assert spread([]) is None
    assert spread([3.0, 1.0, 2.5, 10.0]) == {"median": 2.75, "min": 1.0, "max": 10.0, "n": 4}
    assert spread([1.23456, 2.0], 2) == {"median": 1.62, "min": 1.23, "max": 2.0, "n": 2}
