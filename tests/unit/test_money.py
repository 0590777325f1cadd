"""Money: amounts are int minor units in 1..10**12; currencies are ISO 4217 codes."""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

import api
from ledger import money
from ledger.errors import InvalidInput, LedgerError


@pytest.mark.parametrize("value", [1, 2, 99, 10**6, money.MAX_AMOUNT_MINOR - 1, 10**12])
def test_a_whole_number_of_minor_units_from_one_to_a_trillion_is_an_amount(value: int) -> None:
    assert money.amount(value) == value


def test_the_largest_amount_is_ten_to_the_twelve_minor_units() -> None:
    assert money.MAX_AMOUNT_MINOR == 10**12


@pytest.mark.parametrize(
    "value",
    [0, -1, -(10**12), 10**12 + 1, 10**18],
    ids=["zero", "minus-one", "minus-a-trillion", "a-trillion-and-one", "ten-to-eighteen"],
)
def test_an_amount_outside_one_to_a_trillion_is_refused(value: int) -> None:
    with pytest.raises(InvalidInput) as refused:
        money.amount(value)

    assert refused.value.field == "amount"
    assert refused.value.code == "validation_error"


@pytest.mark.parametrize(
    "value",
    [True, False, 1.0, 100.5, float("nan"), float("inf"), Decimal("1"), Fraction(1), "100", None],
    ids=["true", "false", "float-one", "float", "nan", "inf", "decimal", "fraction", "str", "none"],
)
def test_anything_but_a_plain_int_is_not_an_amount(value: object) -> None:
    with pytest.raises(InvalidInput):
        money.amount(value)  # type: ignore[arg-type]


def test_a_refused_amount_names_the_field_it_was_given_for() -> None:
    with pytest.raises(InvalidInput) as refused:
        money.amount(0, field="refund_amount")

    assert refused.value.field == "refund_amount"
    assert refused.value.context == {"field": "refund_amount"}


def test_an_invalid_amount_is_an_expected_refusal_not_a_crash() -> None:
    with pytest.raises(LedgerError):
        money.amount(-5)


@pytest.mark.parametrize(
    "code", ["USD", "EUR", "JPY", "CNY", "GBP", "HKD", "KWD", "ZWG", "XCG", "VED"]
)
def test_an_active_iso_4217_code_is_a_currency(code: str) -> None:
    assert money.currency(code) == code


@pytest.mark.parametrize(
    "code",
    [
        "usd", "Usd", "US", "USDD", " USD", "USD ", "", "XXX", "ABC", "XAU", "BOV",
        "\uff35\uff33\uff24", "U$D", "12A",
    ],
    ids=[
        "lower-case", "mixed-case", "two-letters", "four-letters", "leading-space",
        "trailing-space", "empty", "no-currency-code", "unassigned", "gold", "funds-code",
        "full-width-letters", "symbol", "digits",
    ],
)
def test_anything_but_an_active_iso_4217_code_is_refused_as_a_currency(code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        money.currency(code)

    assert refused.value.field == "currency"


def test_every_listed_currency_is_three_upper_case_letters() -> None:
    assert money.ISO_4217
    assert all(len(code) == 3 and code.isascii() and code.isupper() for code in money.ISO_4217)


def test_the_console_scales_amounts_by_the_ledger_s_own_digits_of_each_currency() -> None:
    """The console (api/console/console.js) shows and takes amounts in major units by a copy of
    the ledger's table, not the browser's currency data (which differs for HUF, IQD, ...)."""
    script = (Path(api.__file__).parent / "console" / "console.js").read_text()
    table = re.search(r"const MINOR_DIGITS = Object\.freeze\(\{(.*?)\}\);", script, re.S)
    assert table is not None, "console.js has no MINOR_DIGITS table"
    copied = {code: int(d) for code, d in re.findall(r"\b([A-Z]{3}): (\d)\b", table.group(1))}
    assert copied == money.MINOR_UNIT_DIGITS
