"""The double-entry journal (DOMAIN.md, "Double-entry journal"): every money event posts
balanced entries to the chart, and the journal read model pages them per event."""

from __future__ import annotations

from typing import Any

import pytest

from ledger import journal
from ledger.account import Account
from ledger.identity import Actor
from tests.audit.conftest import Ledger
from tests.audit.history import KIND_OF_TOPIC, History, RandomChooser

# The chart's answer for each money event: (debited, credited); "customer" is the user's own.
CHART = {
    Account.DepositReceived: ("clearing:deposits", "customer"),
    Account.PurchasePaid: ("customer", "orders:paid"),
    Account.PurchaseFailed: ("orders:paid", "customer"),
    Account.ReturnRefundCredited: ("suppliers:receivable", "customer"),
    Account.FreightCharged: ("customer", "revenue:freight"),
    Account.BalanceRefundPaidOut: ("customer", "clearing:payouts"),
}
TYPE_OF_KIND = {
    "deposits": "deposit_received",
    "purchases": "purchase_paid",
    "failure_credits": "purchase_failed",
    "return_refunds": "return_refund_credited",
    "freight": "freight_charged",
    "payouts": "balance_refund_paid_out",
}
MONEY_TOPICS = {topic for topic, kind in KIND_OF_TOPIC.items() if kind not in ("hold", "release")}


def every_kind_of_account_event(actor: Actor) -> list[Any]:
    """One account that has recorded every kind of event it knows."""
    account = Account.open("ann.lee", "JPY", actor=actor)
    account.receive_deposit(10_000, "PAY-1", actor=actor)
    account.pay_purchase("ORD-1", 4_000, actor=actor)
    account.fail_purchase("ORD-1", 1_000, "out of stock", actor=actor)
    account.credit_return_refund("case-1", "ORD-1", 500, actor=actor)
    account.charge_freight("case-1", "ORD-1", 300, actor=actor)
    account.hold_for_refund_request("req-1", "PAY-1", 2_000, "moving", actor=actor)
    account.pay_out_refund("req-1", "BANK-1", actor=actor)
    account.hold_for_refund_request("req-2", "ORD-1", 100, "changed mind", actor=actor)
    account.release_refund_hold("req-2", "cancelled", "changed mind", actor=actor)
    return list(account.collect_events())


def test_each_money_event_posts_one_debit_and_one_equal_credit_as_the_chart_says(
    system: Actor,
) -> None:
    events = [e for e in every_kind_of_account_event(system) if type(e) in CHART]
    assert {type(e) for e in events} == set(CHART) == journal.MONEY_EVENTS

    for event in events:
        postings = journal.postings(event, "ann.lee", "JPY")

        debit, credit = postings
        assert sum(p.amount for p in postings) == 0
        assert debit.amount == event.amount > 0 and credit.amount == -event.amount
        assert {p.currency for p in postings} == {"JPY"}
        expected = tuple("customer:ann.lee" if a == "customer" else a for a in CHART[type(event)])
        assert (debit.account, credit.account) == expected


def test_events_that_move_no_money_post_nothing(system: Actor) -> None:
    quiet = [e for e in every_kind_of_account_event(system) if type(e) not in CHART]

    assert {type(e) for e in quiet} == {
        Account.Opened,
        Account.BalanceRefundRequested,
        Account.BalanceRefundReleased,
    }
    assert all(journal.postings(e, "ann.lee", "JPY") == [] for e in quiet)


@pytest.fixture
def journaled(ledger: Ledger) -> tuple[Ledger, History]:
    history = History(ledger.app, RandomChooser(seed=11)).run(50)
    ledger.read_models.wait_caught_up()
    return ledger, history


def test_the_journal_pages_every_money_event_once_in_log_order_with_balanced_postings(
    journaled: tuple[Ledger, History],
) -> None:
    ledger, _ = journaled
    log = list(ledger.app.recorder.select_notifications(start=1, limit=10_000))
    money_positions = [n.id for n in log if n.topic in MONEY_TOPICS]

    entries, after, pages = [], None, 0
    while pages < 1_000:  # bounded: a page of 3 per money event at most
        page = ledger.read_models.journal(account=None, limit=3, after=after)
        assert len(page.items) <= 3
        entries += page.items
        pages += 1
        if page.next is None:
            break
        after = page.next

    assert [e["position"] for e in entries] == money_positions
    for entry, notification in zip(
        entries, (n for n in log if n.topic in MONEY_TOPICS), strict=True
    ):
        event = ledger.app.mapper.to_domain_event(notification)
        debit, credit = entry["postings"]
        assert debit["amount"] == event.amount == -credit["amount"]
        assert entry["type"] == TYPE_OF_KIND[KIND_OF_TOPIC[notification.topic]]
        assert entry["event_id"] == f"{event.originator_id}/{event.originator_version}"
        assert f"customer:{entry['username']}" in (debit["account"], credit["account"])


def test_the_journal_of_one_customer_shows_only_the_events_that_post_to_them_in_full(
    journaled: tuple[Ledger, History],
) -> None:
    ledger, history = journaled
    customer = max(history.customers.values(), key=lambda c: len(c.deposits))
    chart_account = f"customer:{customer.username}"

    entries = ledger.read_models.journal(account=chart_account, limit=1000, after=None).items

    assert entries and all(e["username"] == customer.username for e in entries)
    assert all(len(e["postings"]) == 2 for e in entries)
    balance = -sum(
        p["amount"] for e in entries for p in e["postings"] if p["account"] == chart_account
    )
    assert balance == customer.posted
    everyone = list(ledger.read_models.journal_entries())
    # A page says who did each entry (issue 11), and the export's entries are the same.
    assert all(e["actor"].startswith("system:") or e["type"] != "deposit_received"
               for e in entries)
    assert [e for e in everyone if e["username"] == customer.username] == entries
