"""Input rules hold for every value, not just the examples the unit tests name."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from api import parsing
from ledger import identity, money
from ledger.errors import InvalidInput

BOUNDED = settings(max_examples=200, deadline=None)
USERNAME_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789._-"


@BOUNDED
@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_an_int_is_an_amount_exactly_when_it_lies_between_one_and_a_trillion(value: int) -> None:
    try:
        accepted = money.amount(value) == value
    except InvalidInput:
        accepted = False

    assert accepted is (1 <= value <= 10**12)


@BOUNDED
@given(st.one_of(st.floats(), st.booleans(), st.decimals(), st.text(), st.none()))
def test_no_float_bool_decimal_text_or_none_is_ever_an_amount(value: object) -> None:
    try:
        money.amount(value)  # type: ignore[arg-type]
    except InvalidInput:
        return
    raise AssertionError(f"{value!r} was taken for an amount")


@BOUNDED
@given(st.text(alphabet=USERNAME_ALPHABET + USERNAME_ALPHABET.upper() + " \t", max_size=80))
def test_a_normalised_user_name_is_its_own_normal_form(raw: str) -> None:
    try:
        name = identity.username(raw)
    except InvalidInput:
        assert not 3 <= len(raw.strip()) <= 64 or any(c in " \t" for c in raw.strip())
        return

    assert identity.username(name) == name
    assert name == raw.strip().lower()
    assert 3 <= len(name) <= 64 and set(name) <= set(USERNAME_ALPHABET)


@BOUNDED
@given(st.text(max_size=140))
def test_a_reference_is_accepted_exactly_when_it_is_1_to_128_printable_ascii_unpadded(
    raw: str,
) -> None:
    expected = (
        1 <= len(raw) <= 128
        and all(" " <= c <= "~" for c in raw)
        and raw[0] != " "
        and raw[-1] != " "
    )
    try:
        accepted = identity.reference(raw, field="reference") == raw
    except InvalidInput:
        accepted = False

    assert accepted is expected


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**15), 10**15) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)


@BOUNDED
@given(JSON_VALUES, st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32"]))
def test_a_body_is_read_as_the_json_it_holds_in_every_encoding_json_allows(
    value: object, encoding: str
) -> None:
    raw = json.dumps(value, ensure_ascii=False).encode(encoding)

    assert parsing._decode(raw) == value == json.loads(raw)
