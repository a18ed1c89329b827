"""The sample generator at vi_gsm8k's sizes (the device's learning check uses 7473 / 1319)."""

from vigsm.sample import make_problems


def test_generates_vi_gsm8k_sizes_with_no_repeated_question():
    train, test = make_problems(7473, 1319, seed=1234)
    questions = [r["question"] for r in train + test]
    assert (len(train), len(test)) == (7473, 1319)
    assert len(set(questions)) == len(questions)


def test_default_sizes_match_the_bundled_sample_count():
    train, test = make_problems()
    assert (len(train), len(test)) == (320, 100)
