"""A decision made again from the store (after a refusal, a natural duplicate or a lost race)
reads every aggregate it loads from the store, not only those the first decision read: its
refusal is final (and, under a key, recorded for the key's lifetime), so it is never made on
what this process cached before another process changed it. On both stores."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import pytest

from ledger.application import LedgerApplication
from ledger.errors import InvalidTransition
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.store import open_application
from tests.app.conftest import open_funded

TWO_APPROVALS_ABOVE = {"USD": 100}


@pytest.fixture
def two_processes(settings: StoreSettings) -> Iterator[tuple[LedgerApplication, ...]]:
    """Two applications on one store, where a refund above 1.00 needs two approvals."""
    first = open_application(settings, second_approval_above=TWO_APPROVALS_ABOVE)
    try:
        second = open_application(settings, second_approval_above=TWO_APPROVALS_ABOVE)
        try:
            yield first, second
        finally:
            second.close()
    finally:
        first.close()


def test_a_payout_decided_again_reads_the_account_another_process_changed_not_the_cached_one(
    app: LedgerApplication, second_process: LedgerApplication, system: Actor, cs: Actor,
    finance: Actor, payer: Actor,
) -> None:
    open_funded(app, system)  # this process caches alice, holding nothing
    requested = second_process.request_refund("alice", "PAY-FUND", 500, "why", actor=cs)
    request_id = UUID(requested.body["id"])
    with pytest.raises(InvalidTransition):  # not approved yet: it reads the request only
        app.pay_refund(request_id, "PO-1", actor=payer)
    second_process.approve_refund(request_id, "ok", actor=finance)

    paid = app.pay_refund(request_id, "PO-1", actor=payer, idempotency_key="k-pay")

    assert paid.body["status"] == "paid"
    again = app.pay_refund(request_id, "PO-1", actor=payer, idempotency_key="k-pay")
    assert again.replayed and again.body == paid.body  # the key holds the payout, no refusal
    alice = second_process.account("alice")
    assert alice.posted == 1_500 and alice.held == 0


def test_a_decision_made_again_reads_from_the_store_what_the_first_did_not_reach(
    two_processes: tuple[LedgerApplication, LedgerApplication], system: Actor, cs: Actor,
    finance: Actor, payer: Actor,
) -> None:
    here, elsewhere = two_processes
    open_funded(here, system)  # cached here, holding nothing
    requested = elsewhere.request_refund("alice", "PAY-FUND", 500, "why", actor=cs)
    request_id = UUID(requested.body["id"])
    here.approve_refund(request_id, "first of two", actor=finance)  # cached here: not approved
    elsewhere.approve_refund(request_id, "second", actor=Actor.of_person("ann", "finance", "r"))

    # Decided first on the cached request (not approved: refused), then again from the store:
    # the request, approved, and the account, which holds the refund (not as cached here).
    paid = here.pay_refund(request_id, "PO-1", actor=payer, idempotency_key="k-pay")

    assert paid.body["status"] == "paid"
    alice = elsewhere.account("alice")
    assert alice.posted == 1_500 and alice.held == 0
