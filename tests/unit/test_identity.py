"""User names, outside references and free text: what is accepted and how it is normalised."""

from __future__ import annotations

import pytest

from ledger import identity
from ledger.errors import InvalidInput
from ledger.identity import Actor


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("alice", "alice"),
        ("  Alice  ", "alice"),
        ("ALICE.SMITH_1-2", "alice.smith_1-2"),
        ("\tbob\n", "bob"),
        ("abc", "abc"),
        ("a" * 64, "a" * 64),
        ("0.9", "0.9"),
        ("...", "..."),
    ],
)
def test_a_user_name_is_trimmed_and_lower_cased(raw: str, normalised: str) -> None:
    assert identity.username(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ab",
        "   ab   ",
        "a" * 65,
        "alice smith",
        "alice@example.com",
        "alice+1",
        "élodie",
        "\uff41\uff4c\uff49\uff43\uff45",
        "ali\u200bce",
        "alice\n2",
        "名前です",
        "alice/../bob",
    ],
    ids=[
        "empty", "two-chars", "two-chars-after-trim", "65-chars", "inner-space", "at-sign",
        "plus", "accented", "full-width", "zero-width-space", "inner-newline", "cjk", "slash",
    ],
)
def test_a_user_name_outside_the_allowed_alphabet_or_length_is_refused(raw: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        identity.username(raw)

    assert refused.value.field == "username"


@pytest.mark.parametrize(
    "raw",
    ["P", "PAY-2026-0001", "order #12/3", "a" * 128, "~!@#$%^&*()", "a b", "x" + " " * 126 + "y"],
    ids=["one-char", "typical", "inner-space-and-symbols", "128-chars", "punctuation",
         "inner-space", "128-with-inner-spaces"],
)
def test_a_reference_is_one_to_128_printable_ascii_characters(raw: str) -> None:
    assert identity.reference(raw, field="reference") == raw


@pytest.mark.parametrize(
    "raw",
    [
        "", " ", " P1", "P1 ", "a" * 129, "P\t1", "P\n1", "Ré1", "P\x001", "P\x7f1",
        "\uff30\uff21\uff39",
    ],
    ids=["empty", "space", "leading-space", "trailing-space", "129-chars", "tab", "newline",
         "accented", "nul", "del", "full-width"],
)
def test_a_reference_outside_printable_ascii_or_its_length_is_refused(raw: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        identity.reference(raw, field="order_no")

    assert refused.value.field == "order_no"


def test_a_reference_is_kept_exactly_as_given_without_normalising_case() -> None:
    assert identity.reference("Pay-ABC", field="reference") == "Pay-ABC"


def test_free_text_is_trimmed_and_may_hold_any_unicode() -> None:
    assert identity.text("  Goods arrived broken — 破損  ", field="reason") == (
        "Goods arrived broken — 破損"
    )


def test_free_text_may_be_empty() -> None:
    assert identity.text("   ", field="note") == ""


def test_free_text_longer_than_its_limit_after_trimming_is_refused() -> None:
    assert identity.text(" " + "x" * 2000 + " ", field="reason") == "x" * 2000

    with pytest.raises(InvalidInput) as refused:
        identity.text("x" * 2001, field="reason")

    assert refused.value.field == "reason"


def test_free_text_honours_a_smaller_limit_when_asked() -> None:
    assert identity.text("abcde", field="note", max_chars=5) == "abcde"
    with pytest.raises(InvalidInput):
        identity.text("abcdef", field="note", max_chars=5)


def test_an_actor_s_role_is_the_part_of_its_name_before_the_colon() -> None:
    assert Actor("finance:8c9d0e1f", "req-1").role == "finance"
    assert Actor("system", "req-2").role == "system"
