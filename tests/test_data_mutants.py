"""Data: the validation split's size and the length percentiles, on literal inputs."""

import pytest

from vigsm.data import length_stats, split_validation, validation_count
from vigsm.errors import VigsmError


def _train(n: int) -> list[dict]:
    return [{"id": f"train-{i}", "question": f"Câu {i}?"} for i in range(n)]


@pytest.mark.parametrize(("size", "n_train", "count"), [
    (0.01, 20, 1),  # 0.2 rounds to 0: a fraction asks for at least one problem
    (0.02, 20, 1),  # 0.4 likewise
    (0.1, 20, 2), (0.25, 10, 2), (0.5, 7, 4), (0.99, 3, 3),
    (1, 20, 1), (5, 20, 5), (5.0, 20, 5), (0, 20, 0),
])
def test_validation_count(size, n_train, count):
    assert validation_count(size, n_train) == count


@pytest.mark.parametrize("size", [-0.1, -1, 1.5, 2.25])
def test_validation_count_rejects(size):
    with pytest.raises(VigsmError, match=r"^params: data.validation_size: .* is neither 0, a fraction"):
        validation_count(size, 20)


def test_a_tiny_fraction_still_moves_one_question():
    train, validation = split_validation(_train(20), 0.01, seed=0)
    assert len(validation) == 1 and len(train) == 19
    assert not {r["id"] for r in train} & {r["id"] for r in validation}


def test_split_validation_keeps_file_order_and_size_zero_keeps_all():
    rows = _train(12)
    train, validation = split_validation(rows, 4, seed=5)
    assert len(validation) == 4 and len(train) == 8
    assert [r["id"] for r in train] == [r["id"] for r in rows if r not in validation]
    assert validation == sorted(validation, key=lambda r: int(r["id"].split("-")[1]))
    assert split_validation(rows, 0, seed=5) == (rows, [])


def test_split_validation_that_takes_everything_is_an_error():
    with pytest.raises(VigsmError, match="takes 3 of the 3 training problems and leaves none"):
        split_validation(_train(3), 3, seed=0)
    # one fewer leaves one to train on
    train, validation = split_validation(_train(3), 2, seed=0)
    assert (len(train), len(validation)) == (1, 2)


def test_length_percentiles():
    # 11 texts of 1..11 words: inclusive percentiles are 1 + 10 * q, so p50 6, p90 10, p99 10.9
    texts = [" ".join(["từ"] * k) for k in range(11, 0, -1)]
    stats = length_stats(texts, "q")
    assert stats == pytest.approx({"q_p50": 6, "q_p90": 10, "q_p99": 10.9, "q_max": 11})
    assert length_stats(["một hai ba"], "one") == {"one_p50": 3, "one_p90": 3, "one_p99": 3, "one_max": 3}
    assert length_stats([], "none") == {}
