"""Money as decimal text: an amount of minor units written exactly in the major unit, with the
currency's own number of minor-unit digits (ISO 4217), the sign on the whole amount, zero
unsigned. Finance's exports and the customer's messages print amounts this way."""

from __future__ import annotations

import pytest

from ledger import money


@pytest.mark.parametrize(
    ("amount_minor", "text"),
    [
        (123456, "1234.56"),
        (-1234, "-12.34"),
        (100, "1.00"),
        (5, "0.05"),
        (-5, "-0.05"),
        (1, "0.01"),
        (-1, "-0.01"),
        (0, "0.00"),
        (10**12, "10000000000.00"),
    ],
)
def test_a_two_digit_currency_is_written_with_its_cents_after_the_point_and_its_sign(
    amount_minor: int, text: str
) -> None:
    assert money.decimal_text(amount_minor, "USD") == text


def test_zero_is_written_without_a_minus_sign_in_any_currency() -> None:
    for code in ("USD", "JPY", "KWD"):
        assert not money.decimal_text(0, code).startswith("-")


@pytest.mark.parametrize(
    ("amount_minor", "code", "text"),
    [
        (1234, "JPY", "1234"),
        (-1234, "JPY", "-1234"),
        (0, "JPY", "0"),
        (1, "KRW", "1"),
        (1234, "KWD", "1.234"),
        (-5, "BHD", "-0.005"),
        (1000, "TND", "1.000"),
    ],
)
def test_a_currency_without_cents_or_with_three_digits_is_written_with_its_own_digits(
    amount_minor: int, code: str, text: str
) -> None:
    assert money.decimal_text(amount_minor, code) == text


def test_a_currency_the_table_does_not_name_is_written_with_two_digits() -> None:
    assert money.decimal_text(250, "EUR") == "2.50"
    assert money.decimal_text(250, "CNY") == "2.50"
