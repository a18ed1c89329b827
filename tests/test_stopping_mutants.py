"""Stopping rules: the edges the main tests leave loose, on literal text and token ids."""

from vigsm.stopping import LOOP_MAX_PERIOD, answer_end, loop_period


def test_answer_end_is_the_first_newline_that_completes_the_answer():
    # the first newline after the marker leaves no number; the next one does; later ones do not count
    assert answer_end("### \n18\nabc\n") == len("### \n18\n")
    assert answer_end("### \n\n18\nabc\n\n") == len("### \n\n18\n")


def test_loop_period_tries_every_period_up_to_the_maximum():
    assert loop_period([1, 2, 3] * 30, max_period=3, min_span=12) == 3  # the largest period allowed
    assert loop_period([1, 2, 3, 4] * 30, max_period=3, min_span=12) is None  # one over it
    cycle = list(range(1000, 1000 + LOOP_MAX_PERIOD))
    assert loop_period(cycle * 4) == LOOP_MAX_PERIOD
    assert loop_period([*cycle, 5] * 4) is None
