"""The customer account: deposits, purchases, failure credits and refund holds.

Balances (DOMAIN.md): posted = deposits - purchases + failure credits - payouts;
held = open refund requests; available = posted - held, never negative; refundable = available.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ledger.account import Account, account_id
from ledger.clock import rfc3339
from ledger.errors import (
    DuplicateOrder,
    DuplicateReference,
    InsufficientFunds,
    InvalidInput,
    InvalidTransition,
    OverRefundable,
    RequestOpenForOrder,
    UnknownOrder,
)
from ledger.identity import Actor
from tests.unit.conftest import balances, state_of

INVALID_AMOUNTS = [0, -1, 10**12 + 1, True, 1.5, "100"]


def deposited(account: Account, amount: int, actor: Actor, reference: str = "PAY-1") -> Account:
    account.receive_deposit(amount, reference, actor=actor)
    return account


# -- opening -----------------------------------------------------------------------------------


def test_an_account_opens_for_a_user_name_in_one_currency_with_nothing_on_it(system: Actor) -> None:
    account = Account.open("alice", "USD", actor=system)

    assert (account.username, account.currency) == ("alice", "USD")
    assert balances(account) == (0, 0, 0, 0)
    assert account.version == 1
    assert account.orders == {} and account.deposits == {} and account.holds == {}


def test_an_account_s_id_derives_from_its_user_name_so_there_is_one_account_per_name(
    system: Actor, cs: Actor,
) -> None:
    first = Account.open("alice", "USD", actor=system)
    second = Account.open("alice", "EUR", actor=cs)

    assert first.id == second.id == account_id("alice")
    assert account_id("alice") != account_id("bob")


@pytest.mark.parametrize("code", ["usd", "XXX", "US", "", "EURO"])
def test_an_account_cannot_open_in_anything_but_an_iso_4217_currency(
    system: Actor, code: str,
) -> None:
    with pytest.raises(InvalidInput) as refused:
        Account.open("alice", code, actor=system)

    assert refused.value.field == "currency"


def test_opening_records_who_opened_the_account_and_in_which_request(system: Actor) -> None:
    account = Account.open("alice", "JPY", actor=system)

    (opened,) = account.collect_events()

    assert isinstance(opened, Account.Opened)
    assert (opened.username, opened.currency) == ("alice", "JPY")
    assert (opened.actor, opened.correlation_id) == (system.name, system.request_id)


# -- deposits ----------------------------------------------------------------------------------


def test_a_deposit_credits_posted_available_and_refundable(account: Account, system: Actor) -> None:
    credited = account.receive_deposit(2_500, "PAY-1", actor=system)

    assert credited is True
    assert balances(account) == (2_500, 0, 2_500, 2_500)
    (event,) = account.collect_events()
    assert isinstance(event, Account.DepositReceived)
    assert (event.amount, event.reference) == (2_500, "PAY-1")


def test_deposits_add_up_exactly_even_at_the_largest_amounts(
    account: Account, system: Actor,
) -> None:
    account.receive_deposit(10**12, "PAY-1", actor=system)
    account.receive_deposit(10**12, "PAY-2", actor=system)
    account.receive_deposit(1, "PAY-3", actor=system)

    assert account.posted == 2 * 10**12 + 1
    assert type(account.posted) is int


def test_a_deposit_seen_before_with_the_same_amount_is_the_same_deposit_and_records_nothing(
    account: Account, system: Actor, cs: Actor,
) -> None:
    deposited(account, 2_500, system, "PAY-1")
    account.collect_events()
    before = state_of(account)

    credited = account.receive_deposit(2_500, "PAY-1", actor=cs)

    assert credited is False
    assert state_of(account) == before
    assert account.collect_events() == []


def test_a_payment_reference_seen_before_with_another_amount_is_refused_and_changes_nothing(
    account: Account, system: Actor,
) -> None:
    deposited(account, 2_500, system, "PAY-1")
    account.collect_events()
    before = state_of(account)

    with pytest.raises(DuplicateReference) as refused:
        account.receive_deposit(2_501, "PAY-1", actor=system)

    assert refused.value.context == {"reference": "PAY-1"}
    assert state_of(account) == before
    assert account.collect_events() == []


def test_payment_references_are_told_apart_exactly(account: Account, system: Actor) -> None:
    account.receive_deposit(100, "PAY-1", actor=system)
    account.receive_deposit(200, "pay-1", actor=system)

    assert account.posted == 300


@pytest.mark.parametrize("amount", INVALID_AMOUNTS)
def test_a_deposit_of_an_invalid_amount_is_refused_and_changes_nothing(
    account: Account, system: Actor, amount: Any,
) -> None:
    before = state_of(account)

    with pytest.raises(InvalidInput):
        account.receive_deposit(amount, "PAY-1", actor=system)

    assert state_of(account) == before


def test_a_deposit_remembers_the_version_of_the_event_that_recorded_it(
    account: Account, system: Actor,
) -> None:
    account.receive_deposit(1_000, "PAY-1", actor=system)
    account.pay_purchase("ORD-1", 300, actor=system)
    account.receive_deposit(500, "PAY-2", actor=system)

    events = {
        e.reference: e for e in account.collect_events() if isinstance(e, Account.DepositReceived)
    }

    assert account.deposit_version("PAY-1") == events["PAY-1"].originator_version == 2
    assert account.deposit_version("PAY-2") == events["PAY-2"].originator_version == 4
    assert account.deposit_version("PAY-3") is None


# -- purchases ---------------------------------------------------------------------------------


def test_a_purchase_debits_posted_and_available_and_remembers_the_order(
    account: Account, system: Actor,
) -> None:
    deposited(account, 2_000, system).collect_events()

    account.pay_purchase("ORD-1", 1_200, actor=system)

    assert balances(account) == (800, 0, 800, 800)
    assert account.order_refundable("ORD-1") == 1_200
    (event,) = account.collect_events()
    assert isinstance(event, Account.PurchasePaid)
    assert (event.order_no, event.amount) == ("ORD-1", 1_200)


def test_a_purchase_of_exactly_the_available_balance_leaves_nothing_available(
    account: Account, system: Actor,
) -> None:
    deposited(account, 2_000, system)

    account.pay_purchase("ORD-1", 2_000, actor=system)

    assert balances(account) == (0, 0, 0, 0)


def test_a_purchase_beyond_the_available_balance_is_refused_and_changes_nothing(
    account: Account, system: Actor,
) -> None:
    deposited(account, 2_000, system).collect_events()
    before = state_of(account)

    with pytest.raises(InsufficientFunds) as refused:
        account.pay_purchase("ORD-1", 2_001, actor=system)

    assert refused.value.context == {"available": 2_000}
    assert state_of(account) == before
    assert account.collect_events() == []


def test_a_purchase_on_an_empty_account_is_refused(account: Account, system: Actor) -> None:
    with pytest.raises(InsufficientFunds):
        account.pay_purchase("ORD-1", 1, actor=system)


def test_a_purchase_cannot_spend_money_held_for_a_refund_request(
    account: Account, system: Actor, cs: Actor,
) -> None:
    deposited(account, 1_000, system, "PAY-1")
    account.hold_for_refund_request("R1", "PAY-1", 400, "moving abroad", actor=cs)

    with pytest.raises(InsufficientFunds):
        account.pay_purchase("ORD-1", 601, actor=system)
    account.pay_purchase("ORD-1", 600, actor=system)

    assert balances(account) == (400, 400, 0, 0)


def test_an_order_number_paid_again_with_its_amount_is_the_same_purchase(
    account: Account, system: Actor
) -> None:
    deposited(account, 2_000, system)
    assert account.pay_purchase("ORD-1", 500, actor=system)
    account.collect_events()
    before = state_of(account)

    assert account.pay_purchase("ORD-1", 500, actor=system) is False

    assert state_of(account) == before
    assert account.collect_events() == []
    assert account.purchase_version("ORD-1") == account.version


def test_an_order_number_paid_once_cannot_be_paid_again_with_another_amount(
    account: Account, system: Actor
) -> None:
    deposited(account, 2_000, system)
    account.pay_purchase("ORD-1", 500, actor=system)
    account.collect_events()
    before = state_of(account)

    with pytest.raises(DuplicateOrder) as refused:
        account.pay_purchase("ORD-1", 501, actor=system)

    assert refused.value.context == {"order_no": "ORD-1"}
    assert state_of(account) == before
    assert account.collect_events() == []


def test_an_order_refused_for_lack_of_funds_may_be_paid_once_funds_arrive(
    account: Account, system: Actor,
) -> None:
    with pytest.raises(InsufficientFunds):
        account.pay_purchase("ORD-1", 500, actor=system)
    deposited(account, 500, system)

    account.pay_purchase("ORD-1", 500, actor=system)

    assert account.orders == {"ORD-1": [500, 0]}


@pytest.mark.parametrize("amount", INVALID_AMOUNTS)
def test_a_purchase_of_an_invalid_amount_is_refused_and_changes_nothing(
    account: Account, system: Actor, amount: Any,
) -> None:
    deposited(account, 2_000, system)
    before = state_of(account)

    with pytest.raises(InvalidInput):
        account.pay_purchase("ORD-1", amount, actor=system)

    assert state_of(account) == before


# -- failed purchases --------------------------------------------------------------------------


def test_a_failed_purchase_credits_back_all_that_is_still_uncredited_by_default(
    paid: Account, cs: Actor,
) -> None:
    credited = paid.fail_purchase("ORD-1", None, "out of stock", actor=cs)

    assert credited == 1_500
    assert balances(paid) == (2_000, 0, 2_000, 2_000)
    assert paid.orders["ORD-1"] == [1_500, 1_500]
    assert paid.order_refundable("ORD-1") == 0
    (event,) = paid.collect_events()
    assert isinstance(event, Account.PurchaseFailed)
    assert (event.order_no, event.amount, event.reason) == ("ORD-1", 1_500, "out of stock")


def test_a_failed_purchase_may_credit_back_part_and_later_the_rest(
    paid: Account, cs: Actor,
) -> None:
    first = paid.fail_purchase("ORD-1", 400, "one item out of stock", actor=cs)
    rest = paid.fail_purchase("ORD-1", None, "the others too", actor=cs)

    assert (first, rest) == (400, 1_100)
    assert paid.orders["ORD-1"] == [1_500, 1_500]
    assert paid.posted == 2_000


def test_a_failure_credit_beyond_what_is_left_on_the_order_is_refused_and_changes_nothing(
    paid: Account, cs: Actor,
) -> None:
    paid.fail_purchase("ORD-1", 1_000, "partly failed", actor=cs)
    paid.collect_events()
    before = state_of(paid)

    with pytest.raises(OverRefundable) as refused:
        paid.fail_purchase("ORD-1", 501, "the rest and a bit", actor=cs)

    assert refused.value.context == {"refundable": 500}
    assert state_of(paid) == before
    assert paid.collect_events() == []


def test_an_order_credited_back_in_full_cannot_fail_again(paid: Account, cs: Actor) -> None:
    paid.fail_purchase("ORD-1", None, "failed", actor=cs)
    before = state_of(paid)

    with pytest.raises(OverRefundable):
        paid.fail_purchase("ORD-1", None, "failed again", actor=cs)
    with pytest.raises(OverRefundable):
        paid.fail_purchase("ORD-1", 1, "failed again", actor=cs)

    assert state_of(paid) == before


@pytest.mark.parametrize("order_no", ["ORD-2", "PAY-1"], ids=["never-paid", "a-deposit-reference"])
def test_a_failure_of_an_order_the_account_never_paid_is_refused_as_unknown(
    paid: Account, cs: Actor, order_no: str,
) -> None:
    before = state_of(paid)

    with pytest.raises(UnknownOrder) as refused:
        paid.fail_purchase(order_no, None, "failed", actor=cs)

    assert refused.value.context == {"order_no": order_no}
    assert state_of(paid) == before


@pytest.mark.parametrize("amount", INVALID_AMOUNTS)
def test_a_failure_credit_of_an_invalid_amount_is_refused_and_changes_nothing(
    paid: Account, cs: Actor, amount: Any,
) -> None:
    before = state_of(paid)

    with pytest.raises(InvalidInput):
        paid.fail_purchase("ORD-1", amount, "failed", actor=cs)

    assert state_of(paid) == before


# -- return refunds and freight ---------------------------------------------------------------


def test_a_return_refund_credits_what_the_order_has_left_by_default(
    paid: Account, cs: Actor,
) -> None:
    credited = paid.credit_return_refund("case-1", "ORD-1", None, actor=cs)

    assert credited == 1_500
    assert paid.orders["ORD-1"] == [1_500, 1_500]
    assert balances(paid) == (2_000, 0, 2_000, 2_000)
    (event,) = paid.collect_events()
    assert isinstance(event, Account.ReturnRefundCredited)
    assert (event.case_id, event.order_no, event.amount) == ("case-1", "ORD-1", 1_500)


def test_failure_credits_and_return_refunds_share_what_the_order_has_left(
    paid: Account, cs: Actor,
) -> None:
    paid.fail_purchase("ORD-1", 400, "one item out of stock", actor=cs)
    paid.collect_events()
    before = state_of(paid)

    with pytest.raises(OverRefundable) as refused:
        paid.credit_return_refund("case-1", "ORD-1", 1_101, actor=cs)
    assert refused.value.context == {"refundable": 1_100}
    assert state_of(paid) == before

    assert paid.credit_return_refund("case-1", "ORD-1", None, actor=cs) == 1_100
    with pytest.raises(OverRefundable):
        paid.fail_purchase("ORD-1", None, "and now it failed", actor=cs)
    assert paid.orders["ORD-1"] == [1_500, 1_500]


def test_a_return_refund_for_an_order_the_account_never_paid_is_refused(
    paid: Account, cs: Actor,
) -> None:
    with pytest.raises(UnknownOrder):
        paid.credit_return_refund("case-1", "ORD-404", None, actor=cs)


def test_freight_is_charged_to_the_account(paid: Account, cs: Actor) -> None:
    paid.charge_freight("case-1", "ORD-1", 120, actor=cs)

    assert balances(paid) == (380, 0, 380, 380)
    (event,) = paid.collect_events()
    assert isinstance(event, Account.FreightCharged)
    assert (event.case_id, event.order_no, event.amount) == ("case-1", "ORD-1", 120)


def test_freight_beyond_the_available_balance_is_refused_and_changes_nothing(
    paid: Account, cs: Actor,
) -> None:
    paid.hold_for_refund_request("R1", "ORD-1", 300, "wants it back", actor=cs)
    paid.collect_events()
    before = state_of(paid)

    with pytest.raises(InsufficientFunds) as refused:
        paid.charge_freight("case-1", "ORD-1", 201, actor=cs)

    assert refused.value.context == {"available": 200}
    assert state_of(paid) == before


@pytest.mark.parametrize("amount", INVALID_AMOUNTS)
def test_freight_of_an_invalid_amount_is_refused_as_the_freight_amount(
    paid: Account, cs: Actor, amount: Any,
) -> None:
    with pytest.raises(InvalidInput) as refused:
        paid.charge_freight("case-1", "ORD-1", amount, actor=cs)

    assert refused.value.field == "freight_amount"


# -- refund holds ------------------------------------------------------------------------------


@pytest.fixture
def funded(account: Account, system: Actor) -> Account:
    """Alice deposited 3,000 (PAY-1) and paid 1,000 for ORD-1: 2,000 available."""
    deposited(account, 3_000, system, "PAY-1")
    account.pay_purchase("ORD-1", 1_000, actor=system)
    account.collect_events()
    return account


def test_a_refund_request_holds_its_amount_and_leaves_posted_alone(
    funded: Account, cs: Actor,
) -> None:
    funded.hold_for_refund_request("R1", "ORD-1", 700, "wants it back", actor=cs)

    assert balances(funded) == (2_000, 700, 1_300, 1_300)
    assert funded.holds == {"R1": 700}
    assert funded.open_request_by_order == {"ORD-1": "R1"}
    (event,) = funded.collect_events()
    assert isinstance(event, Account.BalanceRefundRequested)
    assert (event.request_id, event.order_no, event.amount, event.reason) == (
        "R1", "ORD-1", 700, "wants it back",
    )


def test_a_refund_request_may_name_a_deposit_reference_instead_of_an_order(
    funded: Account, cs: Actor,
) -> None:
    funded.hold_for_refund_request("R1", "PAY-1", 2_000, "overpaid", actor=cs)

    assert balances(funded) == (2_000, 2_000, 0, 0)


def test_a_refund_request_must_name_one_of_the_account_s_orders_or_deposit_references(
    funded: Account, cs: Actor,
) -> None:
    before = state_of(funded)

    with pytest.raises(UnknownOrder) as refused:
        funded.hold_for_refund_request("R1", "ORD-404", 100, "?", actor=cs)

    assert refused.value.context == {"order_no": "ORD-404"}
    assert state_of(funded) == before


def test_only_one_refund_request_may_be_open_per_order_number(funded: Account, cs: Actor) -> None:
    funded.hold_for_refund_request("R1", "ORD-1", 100, "first", actor=cs)
    funded.collect_events()
    before = state_of(funded)

    with pytest.raises(RequestOpenForOrder) as refused:
        funded.hold_for_refund_request("R2", "ORD-1", 100, "second", actor=cs)

    assert refused.value.context == {"order_no": "ORD-1"}
    assert "R1" in refused.value.detail
    assert state_of(funded) == before
    assert funded.collect_events() == []


def test_another_order_number_may_carry_its_own_open_request(funded: Account, cs: Actor) -> None:
    funded.hold_for_refund_request("R1", "ORD-1", 100, "first", actor=cs)
    funded.hold_for_refund_request("R2", "PAY-1", 200, "second", actor=cs)

    assert funded.held == 300


@pytest.mark.parametrize("outcome", ["rejected", "cancelled"])
def test_once_its_request_is_released_an_order_may_carry_a_new_request(
    funded: Account, cs: Actor, finance: Actor, outcome: str,
) -> None:
    funded.hold_for_refund_request("R1", "ORD-1", 100, "first", actor=cs)
    funded.release_refund_hold("R1", outcome, "no", actor=finance)

    funded.hold_for_refund_request("R2", "ORD-1", 100, "again", actor=cs)

    assert funded.holds == {"R2": 100}
    assert funded.open_request_by_order == {"ORD-1": "R2"}


def test_once_its_request_is_paid_out_an_order_may_carry_a_new_request(
    funded: Account, cs: Actor, finance: Actor,
) -> None:
    funded.hold_for_refund_request("R1", "ORD-1", 100, "first", actor=cs)
    funded.pay_out_refund("R1", "WIRE-1", actor=finance)

    funded.hold_for_refund_request("R2", "ORD-1", 100, "again", actor=cs)

    assert funded.open_request_by_order == {"ORD-1": "R2"}


def test_a_refund_request_beyond_the_refundable_balance_is_refused_and_changes_nothing(
    funded: Account, cs: Actor,
) -> None:
    funded.hold_for_refund_request("R1", "ORD-1", 1_500, "most of it", actor=cs)
    funded.collect_events()
    before = state_of(funded)

    with pytest.raises(InsufficientFunds) as refused:
        funded.hold_for_refund_request("R2", "PAY-1", 501, "the rest and a bit", actor=cs)

    assert refused.value.context == {"available": 500}
    assert state_of(funded) == before
    assert funded.collect_events() == []


def test_a_refund_request_of_exactly_the_refundable_balance_is_accepted(
    funded: Account, cs: Actor,
) -> None:
    funded.hold_for_refund_request("R1", "ORD-1", 2_000, "all of it", actor=cs)

    assert balances(funded) == (2_000, 2_000, 0, 0)


@pytest.mark.parametrize("amount", INVALID_AMOUNTS)
def test_a_refund_request_of_an_invalid_amount_is_refused_and_changes_nothing(
    funded: Account, cs: Actor, amount: Any,
) -> None:
    before = state_of(funded)

    with pytest.raises(InvalidInput):
        funded.hold_for_refund_request("R1", "ORD-1", amount, "?", actor=cs)

    assert state_of(funded) == before


@pytest.mark.parametrize("outcome", ["rejected", "cancelled"])
def test_releasing_a_hold_gives_its_amount_back_to_available(
    funded: Account, cs: Actor, finance: Actor, outcome: str,
) -> None:
    funded.hold_for_refund_request("R1", "ORD-1", 700, "wants it back", actor=cs)
    funded.collect_events()

    funded.release_refund_hold("R1", outcome, "not eligible", actor=finance)

    assert balances(funded) == (2_000, 0, 2_000, 2_000)
    assert funded.holds == {} and funded.open_request_by_order == {}
    (event,) = funded.collect_events()
    assert isinstance(event, Account.BalanceRefundReleased)
    assert (event.request_id, event.amount, event.outcome, event.reason) == (
        "R1", 700, outcome, "not eligible",
    )


def test_paying_out_a_refund_takes_it_off_posted_and_releases_its_hold(
    funded: Account, cs: Actor, finance: Actor,
) -> None:
    funded.hold_for_refund_request("R1", "ORD-1", 700, "wants it back", actor=cs)
    funded.collect_events()

    paid_out = funded.pay_out_refund("R1", "WIRE-77", actor=finance)

    assert paid_out == 700
    assert balances(funded) == (1_300, 0, 1_300, 1_300)
    (event,) = funded.collect_events()
    assert isinstance(event, Account.BalanceRefundPaidOut)
    assert (event.request_id, event.amount, event.payout_reference) == ("R1", 700, "WIRE-77")


def test_paying_out_one_request_leaves_the_other_holds_in_place(
    funded: Account, cs: Actor, finance: Actor,
) -> None:
    funded.hold_for_refund_request("R1", "ORD-1", 700, "one", actor=cs)
    funded.hold_for_refund_request("R2", "PAY-1", 300, "two", actor=cs)

    funded.pay_out_refund("R1", "WIRE-1", actor=finance)

    assert funded.holds == {"R2": 300}
    assert funded.open_request_by_order == {"PAY-1": "R2"}
    assert balances(funded) == (1_300, 300, 1_000, 1_000)


@pytest.mark.parametrize("first", ["release", "pay"])
@pytest.mark.parametrize("then", ["release", "pay"])
def test_a_hold_released_or_paid_out_cannot_be_released_or_paid_out_again(
    funded: Account, cs: Actor, finance: Actor, first: str, then: str,
) -> None:
    funded.hold_for_refund_request("R1", "ORD-1", 700, "wants it back", actor=cs)
    steps = {
        "release": lambda: funded.release_refund_hold("R1", "rejected", "no", actor=finance),
        "pay": lambda: funded.pay_out_refund("R1", "WIRE-1", actor=finance),
    }
    steps[first]()
    funded.collect_events()
    before = state_of(funded)

    with pytest.raises(InvalidTransition):
        steps[then]()

    assert state_of(funded) == before
    assert funded.collect_events() == []


def test_a_request_that_holds_nothing_on_the_account_can_be_neither_released_nor_paid(
    funded: Account, finance: Actor,
) -> None:
    before = state_of(funded)

    with pytest.raises(InvalidTransition):
        funded.release_refund_hold("R-unknown", "cancelled", "?", actor=finance)
    with pytest.raises(InvalidTransition):
        funded.pay_out_refund("R-unknown", "WIRE-1", actor=finance)

    assert state_of(funded) == before


# -- balances together -------------------------------------------------------------------------


def test_held_is_the_sum_of_open_requests_and_available_is_posted_minus_held(
    account: Account, system: Actor, cs: Actor, finance: Actor,
) -> None:
    account.receive_deposit(5_000, "PAY-1", actor=system)
    account.pay_purchase("ORD-1", 1_000, actor=system)
    account.pay_purchase("ORD-2", 800, actor=system)
    account.fail_purchase("ORD-2", 300, "one item missing", actor=cs)
    account.hold_for_refund_request("R1", "ORD-1", 400, "a", actor=cs)
    account.hold_for_refund_request("R2", "ORD-2", 250, "b", actor=cs)
    account.hold_for_refund_request("R3", "PAY-1", 100, "c", actor=cs)
    account.release_refund_hold("R2", "cancelled", "changed mind", actor=cs)
    account.pay_out_refund("R3", "WIRE-1", actor=finance)

    posted = 5_000 - 1_000 - 800 + 300 - 100
    assert account.posted == posted
    assert account.held == 400
    assert account.available == account.refundable == posted - 400


def test_the_snapshot_shows_the_account_as_the_api_does(funded: Account, cs: Actor) -> None:
    funded.hold_for_refund_request("R1", "ORD-1", 500, "some", actor=cs)

    assert funded.snapshot() == {
        "username": "alice",
        "currency": "USD",
        "posted": 2_000,
        "held": 500,
        "available": 1_500,
        "refundable": 1_500,
        "opened_at": rfc3339(funded.created_on),
        "version": funded.version,
    }
    assert funded.version == 4


def test_every_event_carries_the_actor_and_the_http_request_that_caused_it(
    account: Account,
) -> None:
    shop = Actor("system:00aa", "req-deposit")
    actors = [Actor(f"cs:{n:04x}", f"req-{n}") for n in range(8)]
    account.receive_deposit(5_000, "PAY-1", actor=shop)
    account.pay_purchase("ORD-1", 1_000, actor=actors[0])
    account.fail_purchase("ORD-1", 100, "damaged", actor=actors[1])
    account.hold_for_refund_request("R1", "ORD-1", 100, "a", actor=actors[2])
    account.release_refund_hold("R1", "rejected", "no", actor=actors[3])
    account.hold_for_refund_request("R2", "ORD-1", 100, "b", actor=actors[4])
    account.pay_out_refund("R2", "WIRE-1", actor=actors[5])
    account.credit_return_refund("case-1", "ORD-1", 50, actor=actors[6])
    account.charge_freight("case-1", "ORD-1", 30, actor=actors[7])

    events = account.collect_events()

    assert [(e.actor, e.correlation_id) for e in events] == [
        (a.name, a.request_id) for a in [shop, *actors]
    ]
    assert [type(e) for e in events] == [
        Account.DepositReceived,
        Account.PurchasePaid,
        Account.PurchaseFailed,
        Account.BalanceRefundRequested,
        Account.BalanceRefundReleased,
        Account.BalanceRefundRequested,
        Account.BalanceRefundPaidOut,
        Account.ReturnRefundCredited,
        Account.FreightCharged,
    ]


# -- the copy a command is handed ----------------------------------------------------------------


def test_a_copy_of_an_account_shares_nothing_a_command_can_change(
    account: Account, system: Actor
) -> None:
    account.receive_deposit(1_000, "PAY-1", actor=system)
    account.pay_purchase("ORD-1", 300, actor=system)
    account.hold_for_refund_request("req-1", "PAY-1", 100, "too much", actor=system)
    account.collect_events()
    before = state_of(account)

    copied = copy.deepcopy(account)
    assert state_of(copied) == before
    assert copied.id == account.id and copied.created_on == account.created_on
    copied.receive_deposit(50, "PAY-2", actor=system)
    copied.fail_purchase("ORD-1", 200, "lost", actor=system)
    copied.release_refund_hold("req-1", "rejected", "no", actor=system)
    copied.pay_purchase("ORD-2", 10, actor=system)

    assert state_of(account) == before
    assert account.collect_events() == []
    assert [type(e).__name__ for e in copied.collect_events()] == [
        "DepositReceived", "PurchaseFailed", "BalanceRefundReleased", "PurchasePaid",
    ]
