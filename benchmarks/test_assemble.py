"""benchmarks/assemble.py's readers: a train stage's log (the step times the results quote), the rl stage's
reward curve, and the spread of the runs. Beside the assembler, not in tests/: nothing in tests/ imports
from benchmarks/."""

from __future__ import annotations

from assemble import reward_curve, spread, train_log_times  # pytest puts this folder on sys.path


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


def test_reward_curve_is_read_from_the_rl_stage_log():
    """TRL's printed log dicts, tqdm's carriage returns and all; non-finite and unlisted keys left out."""
    log = ("Loading weights: 100%\r 50%|#####     | 1/2 [00:29<00:29]  {'loss': '0.01', 'grad_norm': '0.5', "
           "'reward': '0.25', 'reward_std': '0.4', 'groups_any_correct': '0.5', 'completions/mean_length': '16', "
           "'step_time': '28.65', 'epoch': '0.04'}\n 50%|#####\r100%|##########| 2/2 {'loss': '0', 'reward': '0.5', "
           "'kl': 'nan', 'step_time': '17.1'}\n{'train_runtime': '48.27', 'train_loss': '0'}\n")
    curve = reward_curve(log)
    assert [r["step"] for r in curve] == [1, 2]
    assert curve[0]["reward"] == 0.25 and curve[0]["groups_any_correct"] == 0.5 and curve[1]["step_time"] == 17.1
    assert "epoch" not in curve[0] and "kl" not in curve[1]
