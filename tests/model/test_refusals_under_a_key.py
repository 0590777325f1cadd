"""A refusal under an Idempotency-Key, on both stores (API.md "Idempotency"): the first response
is a first response; only a retry is the first response *again*, marked replayed.

The state machine checks the same over any history; this is the shortest history that shows it.
"""

from __future__ import annotations

import pytest

from ledger.application import LedgerApplication
from ledger.errors import InsufficientFunds
from ledger.identity import Actor


def test_a_refused_request_is_not_marked_replayed_until_it_is_retried(
    app: LedgerApplication, system: Actor
) -> None:
    # given an account with nothing on it
    app.open_account("ann", "USD", actor=system)

    # when a purchase under a key is refused, and then retried with the key
    with pytest.raises(InsufficientFunds) as first:
        app.purchase("ann", "ORD-1", 500, actor=system, idempotency_key="k-1")
    with pytest.raises(InsufficientFunds) as retry:
        app.purchase("ann", "ORD-1", 500, actor=system, idempotency_key="k-1")

    # then the first refusal is no replay (no Idempotent-Replayed header), the retry is one
    assert first.value.replayed is False
    assert retry.value.replayed is True
    assert str(retry.value) == str(first.value)
