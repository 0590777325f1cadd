"""The read models, on both stores: what they show after writes, paging, currency, takeover."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import pytest

from ledger.application import LedgerApplication
from ledger.errors import InvalidInput, NotReady
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.leadership import LeaderLock
from projections.readmodels import ReadModelKeeper, ReadModels, prepare_read_models
from tests.projections.conftest import wait_until


def test_balances_orders_and_history_follow_the_writes(
    app: LedgerApplication, read_models: ReadModels, system: Actor, cs: Actor
) -> None:
    app.open_account("ann", "USD", actor=system)
    app.deposit("ann", 1_000, "pay-1", actor=system)
    app.purchase("ann", "order-1", 400, actor=system)
    app.fail_purchase("ann", "order-1", 150, "out of stock", actor=cs)
    app.request_refund("ann", "pay-1", 300, "moving away", actor=cs)

    read_models.wait_caught_up()

    assert read_models.account("ann") == {
        "username": "ann",
        "currency": "USD",
        "posted": 750,
        "held": 300,
        "available": 450,
        "refundable": 450,
        "opened_at": read_models.account("ann")["opened_at"],
        "version": 5,
    }
    orders = read_models.orders("ann", limit=10, after=None)
    assert orders.items == [
        {"order_no": "order-1", "paid": 400, "credited_back": 150, "refundable": 250, "cases": []}
    ]
    history = read_models.history("ann", limit=10, after=None).items
    assert [(h["type"], h["amount"], h["posted_after"], h["available_after"]) for h in history] == [
        ("opened", 0, 0, 0),
        ("deposit_received", 1_000, 1_000, 1_000),
        ("purchase_paid", 400, 600, 600),
        ("purchase_failed", 150, 750, 750),
        ("balance_refund_requested", 300, 750, 450),
    ]
    assert history[3]["actor"] == cs.name and history[3]["data"]["reason"] == "out of stock"


def test_a_balance_is_answered_as_it_stood_at_a_position_or_a_moment(
    app: LedgerApplication, read_models: ReadModels, system: Actor
) -> None:
    app.open_account("bea", "EUR", actor=system)
    first = app.deposit("bea", 500, "pay-1", actor=system)
    app.purchase("bea", "order-1", 200, actor=system)
    read_models.wait_caught_up()
    after_deposit = read_models.history("bea", limit=10, after=None).items[1]

    at_position = read_models.balance("bea", at_position=first.position)
    assert at_position is not None and at_position["posted"] == 500
    as_of = read_models.balance("bea", as_of=_parse(after_deposit["at"]))
    assert as_of is not None and as_of["posted"] == 500
    now = read_models.balance("bea")
    assert now is not None and now["posted"] == 300
    before_opening = read_models.balance(
        "bea", as_of=_parse(after_deposit["at"]) - timedelta(days=1)
    )
    assert before_opening is None


def test_the_refund_queue_shows_each_request_with_its_steps(
    app: LedgerApplication, read_models: ReadModels, system: Actor, cs: Actor, finance: Actor,
    payer: Actor,
) -> None:
    app.open_account("cat", "USD", actor=system)
    app.deposit("cat", 900, "pay-1", actor=system)
    request_id = UUID(
        app.request_refund("cat", "pay-1", 400, "no more orders", actor=cs).body["id"]
    )
    app.approve_refund(request_id, "checked", actor=finance)
    app.pay_refund(request_id, "bank-77", actor=payer)
    read_models.wait_caught_up()

    request = read_models.refund_request(request_id)
    assert request is not None
    assert request["status"] == "paid" and request["amount"] == 400
    assert [s["status"] for s in request["steps"]] == ["requested", "approved", "paid"]
    assert request["steps"][2]["data"] == {"payout_reference": "bank-77"}
    assert read_models.refund_requests(status="paid", username="cat", limit=5, after=None).items
    assert not read_models.refund_requests(
        status="requested", username=None, limit=5, after=None
    ).items
    account = read_models.account("cat")
    assert account is not None and (account["posted"], account["held"]) == (500, 0)


def test_small_pages_yield_every_item_once_in_order(
    app: LedgerApplication, read_models: ReadModels, system: Actor
) -> None:
    app.open_account("dan", "USD", actor=system)
    app.deposit("dan", 10_000, "pay-1", actor=system)
    for n in range(7):
        app.purchase("dan", f"order-{n}", 10, actor=system)
    read_models.wait_caught_up()

    seen, after = [], None
    for _ in range(10):  # bounded: 7 orders in pages of 2 take 4 pages
        page = read_models.orders("dan", limit=2, after=after)
        seen += [o["order_no"] for o in page.items]
        if page.next is None:
            break
        after = page.next
    assert seen == [f"order-{n}" for n in range(7)]


def test_a_bad_page_size_or_cursor_is_refused(read_models: ReadModels) -> None:
    with pytest.raises(InvalidInput):
        read_models.orders("dan", limit=0, after=None)
    with pytest.raises(InvalidInput):
        read_models.orders("dan", limit=1001, after=None)
    with pytest.raises(InvalidInput):
        read_models.orders("dan", limit=10, after="not-a-cursor")


def test_a_read_that_cannot_become_current_in_time_is_refused_not_stale(
    settings: StoreSettings, app: LedgerApplication, system: Actor
) -> None:
    prepare_read_models(settings)
    models = ReadModels(settings, app)  # and no keeper running
    try:
        app.open_account("eve", "USD", actor=system)
        with pytest.raises(NotReady):
            models.wait_current(timeout_s=0.2)
    finally:
        models.close()


def test_waiting_for_read_models_that_make_no_progress_says_they_are_stuck(
    settings: StoreSettings, app: LedgerApplication, system: Actor
) -> None:
    prepare_read_models(settings)
    models = ReadModels(settings, app)  # and no keeper running, so nothing ever moves
    try:
        app.open_account("eve", "USD", actor=system)
        with pytest.raises(NotReady, match="stuck"):
            models.wait_caught_up(stall_timeout_s=0.3)
    finally:
        models.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_one_keeper_leads_and_another_takes_over_when_it_stops(
    settings: StoreSettings, app: LedgerApplication, system: Actor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prepare_read_models(settings)
    refused = []
    try_acquire = LeaderLock.try_acquire

    def counted(lock: LeaderLock) -> bool:
        held = try_acquire(lock)
        if not held:
            refused.append(lock)
        return held

    monkeypatch.setattr(LeaderLock, "try_acquire", counted)
    first = ReadModelKeeper(settings, lock_retry_s=0.2)
    second = ReadModelKeeper(settings, lock_retry_s=0.2)
    models = ReadModels(settings, app)
    first.start()
    assert first.is_leader.wait(10)
    second.start()
    try:
        wait_until(lambda: len(refused) >= 3,  # the second has asked for the lock three times
                   what="the second keeper never asked for the lock")
        assert not second.is_leader.is_set()  # exactly one keeps the read models at a time
        app.open_account("fay", "USD", actor=system)
        models.wait_caught_up()

        first.stop()
        assert second.is_leader.wait(5)
        app.deposit("fay", 70, "pay-1", actor=system)
        models.wait_caught_up()
        account = models.account("fay")
        assert account is not None and account["posted"] == 70
    finally:
        first.stop()
        second.stop()
        models.close()


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
