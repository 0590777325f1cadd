"""The second approval of large balance refunds, as finance meets it.

The threshold per currency (``LEDGER_SECOND_APPROVAL_ABOVE``) guards four eyes on large
refunds: a setting that names no real currency, or names one twice, must stop the service at
start rather than quietly leave that currency's refunds to one person. And a request that has
the first of its two approvals is told as such when someone tries to pay it.
"""

from __future__ import annotations

from uuid import uuid4

import pytest

from ledger.errors import InvalidInput, InvalidTransition
from ledger.identity import Actor
from ledger.refund_request import RefundRequest, second_approval_thresholds

ANN = Actor.of_person("ann", "finance", "req-ann")
BEA = Actor.of_person("bea", "finance", "req-bea")


@pytest.mark.parametrize(
    "setting",
    ["UDS=100000", "XXX=5", "USD=100000,EUR=90000,ABC=1"],
    ids=["typo-of-usd", "not-a-currency", "one-of-several"],
)
def test_a_threshold_for_no_iso_4217_currency_is_refused_at_start(setting: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        second_approval_thresholds(setting)

    assert refused.value.field == "LEDGER_SECOND_APPROVAL_ABOVE"
    assert "ISO 4217" in refused.value.detail


def test_a_currency_given_two_thresholds_is_refused_rather_than_the_last_winning() -> None:
    with pytest.raises(InvalidInput) as refused:
        second_approval_thresholds("USD=100000,usd=900000000")

    assert refused.value.field == "LEDGER_SECOND_APPROVAL_ABOVE"
    assert "USD" in refused.value.detail


def test_paying_a_request_that_has_one_of_its_two_approvals_says_a_second_is_missing() -> None:
    # Given a request above the threshold, approved once
    request = RefundRequest.request(
        id=uuid4(), username="alice", currency="USD", order_no="ORD-1", amount=1_001,
        reason="moving abroad", actor=Actor("cs:4e5f6a7b", "req-cs"),
    )
    request.approve("first look", actor=ANN, second_approval_above=1_000)

    # When someone tries to pay it
    with pytest.raises(InvalidTransition) as refused:
        request.pay("WIRE-1", actor=BEA)

    # Then it is refused as before, in words that say what it still needs
    assert refused.value.context == {"status": "requested"}
    assert "second approval" in refused.value.detail
    assert "ann" in refused.value.detail
