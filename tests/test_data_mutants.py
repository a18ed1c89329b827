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


def test_clean_split_on_literal_rows():
    from vigsm.data import clean_split

    rows = [{"index": 7, "question": "  Lan có 2 bút? ", "explanation": " 2 + 0 = 2 ", "answer": "2"},
            {"index": 8, "question": None, "explanation": "x", "answer": "1"},
            {"index": 9, "question": "   ", "explanation": "x", "answer": "1"},
            {"index": 10, "question": "Q10", "explanation": None, "answer": None},
            {"index": 11, "question": "Q11", "explanation": "y", "answer": "không biết"},
            {"index": 12, "question": "Q12", "explanation": None, "answer": 1000}]
    kept, skipped = clean_split(rows, "train")
    assert kept == [{"id": "train-7", "index": 7, "question": "Lan có 2 bút?", "explanation": "2 + 0 = 2",
                     "answer": "2"},
                    {"id": "train-12", "index": 12, "question": "Q12", "explanation": "", "answer": "1000"}]
    assert skipped == {"empty_question": 2, "answer_without_number": 2}


def test_clean_split_errors_name_the_record():
    from vigsm.data import clean_split

    good = {"index": 1, "question": "Q", "explanation": "", "answer": "1"}
    with pytest.raises(VigsmError) as err:
        clean_split([good, {"index": 2, "question": "Q"}], "test")
    assert str(err.value) == ("test record 2: test record missing field 'explanation' "
                              "(need index, question, explanation, answer)")
    with pytest.raises(VigsmError) as err:
        clean_split([good, good], "train", locate=lambda i: f"train.jsonl:{i + 1}")
    assert str(err.value) == "train.jsonl:2: train record with duplicate index '1'"


def test_question_key_ignores_case_and_spacing_only():
    from vigsm.data import question_key

    assert question_key("  Lan CÓ\t2  bút? ") == "lan có 2 bút?"
    assert question_key("Lan có 2 bút?") != question_key("Lan có 3 bút?")


def test_to_record_is_a_conversation():
    from types import SimpleNamespace

    from vigsm.data import to_record

    row = {"id": "train-1", "question": "1+1?", "explanation": "1 + 1 = 2", "answer": "2"}
    params = SimpleNamespace(target_template=["{explanation}", "### {answer}"])
    assert to_record(row, params, "Bạn là trợ lý.") == {
        **row,
        "prompt": [{"role": "system", "content": "Bạn là trợ lý."}, {"role": "user", "content": "1+1?"}],
        "completion": [{"role": "assistant", "content": "1 + 1 = 2\n### 2"}]}
    with pytest.raises(VigsmError) as err:
        to_record(row, SimpleNamespace(target_template=["{reasoning}"]), "")
    assert str(err.value) == ("params: data.target_template: unknown field 'reasoning'; use {explanation} and "
                              "{answer}")


def test_length_percentiles_of_two():
    assert length_stats(["một", "một hai ba"], "q") == pytest.approx(
        {"q_p50": 2, "q_p90": 2.8, "q_p99": 2.98, "q_max": 3})
