"""Notation on literal inputs: what the extraction rules never pass to it but a direct caller can."""

from decimal import Decimal

import pytest

from vigsm.notation import canonical


@pytest.mark.parametrize(("value", "text"), [
    (Decimal("-0"), "0"), (Decimal("-0.000"), "0"), (Decimal("0E+3"), "0"),
    (Decimal("-1.50"), "-1.5"), (Decimal("1E+2"), "100"), (Decimal("0.0100"), "0.01"),
])
def test_canonical_of_a_decimal(value, text):
    # a negative zero Decimal (not one numbers() makes: it negates with `-value`, which gives +0) is "0"
    assert canonical(value) == text
