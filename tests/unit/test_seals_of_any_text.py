"""A seal read back from the database is compared, never trusted: whatever text is stored where
a seal belongs (a link, a message's or a stream's seal, a key record's), even text that is not
ASCII, makes the check say no, and is never an error that stops the reader."""

from __future__ import annotations

import pytest

from projections.outbox import SEALED, sealed
from projections.seal import ChainKey, same_seal
from projections.store import _KEY_COLUMNS, _key_record_sealed

KEY = ChainKey(bytes(range(32)))
NOT_ASCII = ["é" * 64, "\u0663" * 64, "a" * 63 + "\u00ff", "\u017f" * 10]


@pytest.mark.parametrize("stored", NOT_ASCII)
def test_a_link_that_is_not_ascii_does_not_hold(stored: str) -> None:
    assert not KEY.holds(stored, "0" * 64, 1, "acc", 1, "ledger:Account.Opened", b"{}")


@pytest.mark.parametrize("stored", NOT_ASCII)
def test_a_message_whose_seal_is_not_ascii_is_not_sealed(stored: str) -> None:
    message = {column: "x" for column in SEALED} | {"position": 1, "amount": 1, "seal": stored}
    assert not sealed(KEY, message)


@pytest.mark.parametrize("stored", NOT_ASCII)
def test_a_key_record_whose_seal_is_not_ascii_is_not_sealed(stored: str) -> None:
    row = {column: "x" for column in _KEY_COLUMNS} | {"position": 1, "seal": stored}
    assert not _key_record_sealed(KEY, row)


def test_the_same_seal_is_the_same_and_another_is_not() -> None:
    assert same_seal("ab" * 32, "ab" * 32)
    assert not same_seal("ab" * 32, "ba" * 32)
    assert not same_seal("ab" * 32, "é" * 64)
