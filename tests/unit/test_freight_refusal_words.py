"""Freight the customer cannot cover, as customer service reads the refusal.

When a case is resolved by refund, the refund is credited before the freight is charged, in one
decision that is refused whole. The refusal must not tell CS an "available" balance the customer
never had: it names what is available now, the refund the freight was weighed against, and that
the freight may be waived instead.
"""

from __future__ import annotations

import pytest

from ledger.account import Account
from ledger.errors import InsufficientFunds
from ledger.identity import Actor


def test_freight_beyond_a_refund_and_the_balance_names_both_not_their_sum_as_available(
    paid: Account, cs: Actor
) -> None:
    # Given a refund resolution that credits 1,500 on top of the 500 available
    paid.credit_return_refund("case-1", "ORD-1", None, actor=cs)

    # When its freight is more than both together
    with pytest.raises(InsufficientFunds) as refused:
        paid.charge_freight("case-1", "ORD-1", 2_001, actor=cs)

    # Then the words name the balance the customer has and the refund, apart
    detail = refused.value.detail
    assert "available USD 5.00" in detail
    assert "refund of USD 15.00" in detail
    assert "freight of USD 20.01" in detail
    assert "available USD 20.00" not in detail
    assert "waive" in detail


def test_freight_beyond_the_balance_of_an_exchange_says_it_may_be_waived(
    paid: Account, cs: Actor
) -> None:
    with pytest.raises(InsufficientFunds) as refused:
        paid.charge_freight("case-2", "ORD-1", 501, actor=cs)

    assert "available USD 5.00" in refused.value.detail
    assert "waive" in refused.value.detail
    assert refused.value.context == {"available": 500}


@pytest.mark.parametrize(("currency", "shown"), [("JPY", "JPY 119079"), ("KWD", "KWD 119.079"),
                                                 ("USD", "USD 1190.79")])
def test_a_refusal_names_amounts_as_people_read_them_in_the_account_s_currency(
    system: Actor, currency: str, shown: str,
) -> None:
    account = Account.open("kuwait", currency, actor=system)
    account.receive_deposit(119_079, "PAY-1", actor=system)
    with pytest.raises(InsufficientFunds) as refused:
        account.hold_for_refund_request("r-1", "PAY-1", 200_000, "moving", actor=system)
    assert f"refundable {shown} is less than" in refused.value.detail
    assert refused.value.context == {"available": 119_079}  # minor units, for programs
