"""A resolution that changes nothing on the account (an exchange, its freight waived or
none) still answers the account as it stands, not as this process last cached it: another
process's deposit in between is in the answer (and in what its key replays)."""

from __future__ import annotations

from datetime import date, timedelta
from uuid import UUID

import pytest

from ledger.application import LedgerApplication
from ledger.commands import CaseApplication
from ledger.identity import Actor
from tests.app.conftest import open_funded


def case_with_supplier(app: LedgerApplication, cs: Actor) -> UUID:
    today = app.today()
    case = CaseApplication(
        username="alice", order_no="ORD-1", kind="damaged", shipped_on=today - timedelta(days=3),
        items=[{"sku": "SKU-7", "description": "desk lamp", "quantity": 1}],
        goods_photos=["photo://goods-1"], package_photos=["photo://box-1"],
        replaced_or_modified=False, parts_missing=False, opened_media=False,
        has_quality_assurance=True, note="customer wrote in",
    )
    case_id = UUID(app.open_return_case(case, actor=cs).body["id"])
    app.start_supplier_review(case_id, "asked", actor=cs)
    app.accept_return_case(case_id, today + timedelta(days=10), "Supplier Co", "", actor=cs)
    app.receive_return(case_id, date.fromisoformat(today.isoformat()), True, True, True, actor=cs)
    app.forward_to_supplier(case_id, "on to the supplier", actor=cs)
    return case_id


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_an_exchange_answers_the_account_as_it_stands_after_another_process_wrote_to_it(
    app: LedgerApplication, second_process: LedgerApplication, system: Actor, cs: Actor,
) -> None:
    # Given a case ready to resolve, this process holding alice's account in its cache
    open_funded(app, system, amount=2_000)
    app.purchase("alice", "ORD-1", 1_000, actor=system)
    case_id = case_with_supplier(app, cs)
    assert app.account("alice").posted == 1_000

    # When another process takes a deposit, and this one then resolves by exchange
    second_process.deposit("alice", 500, "PAY-LATER", actor=system)
    resolved = app.resolve_return_case(case_id, "exchange", None, 0, "EX-OUT-1", actor=cs,
                                       idempotency_key="k-resolve")

    # Then the answer's account is the account as it stands
    assert resolved.body["account"]["posted"] == 1_500
