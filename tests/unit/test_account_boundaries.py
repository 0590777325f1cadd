"""The customer account at its edges: amounts exactly equal to what is left, and refusals that
name the balance as the customer has it (DOMAIN.md: available never below zero)."""

from __future__ import annotations

import pytest

from ledger.account import Account
from ledger.errors import InsufficientFunds
from ledger.identity import Actor
from tests.unit.conftest import balances


def test_freight_of_exactly_the_available_balance_is_charged_and_leaves_nothing(
    paid: Account, cs: Actor
) -> None:
    # Given 500 available
    # When freight of exactly 500 is charged
    paid.charge_freight("case-1", "ORD-1", 500, actor=cs)

    # Then it is charged, and available is zero, not below
    assert balances(paid) == (0, 0, 0, 0)
    assert [type(e) for e in paid.collect_events()] == [Account.FreightCharged]


def test_freight_refused_beside_another_case_s_refund_names_that_refund_as_available(
    paid: Account, cs: Actor
) -> None:
    # Given a refund of 1,500 credited for case-1 in this command, not yet saved
    paid.credit_return_refund("case-1", "ORD-1", None, actor=cs)

    # When freight beyond everything is charged for another case
    with pytest.raises(InsufficientFunds) as refused:
        paid.charge_freight("case-2", "ORD-1", 2_001, actor=cs)

    # Then case-1's refund is part of what is available to case-2, not a refund of its own
    assert refused.value.context == {"available": 2_000}
    assert "available USD 20.00 does not cover" in refused.value.detail


def test_freight_refused_beside_an_unsaved_deposit_counts_the_deposit_as_available(
    paid: Account, cs: Actor, system: Actor
) -> None:
    # Given a deposit of 100 recorded in this command, not yet saved
    paid.receive_deposit(100, "PAY-2", actor=system)

    # When freight beyond the balance is charged
    with pytest.raises(InsufficientFunds) as refused:
        paid.charge_freight("case-1", "ORD-1", 601, actor=cs)

    # Then the refusal names 600 available, and no refund
    assert refused.value.context == {"available": 600}
    assert "refund" not in refused.value.detail.split(":")[0]
