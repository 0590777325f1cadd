"""An Idempotency-Key answers its first response even when the shop's day moved on
(API.md, Conventions: same caller, key and body within 24 h → the first response again).

A check of a date against the shop's day (``Command.check_on``) is made before the command is
decided; a retry sent after midnight must still hear the first response, not a refusal of a
date that was fine when the command was carried out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

import pytest

from ledger.application import LedgerApplication, Outcome
from ledger.commands import CaseApplication
from ledger.errors import IdempotencyKeyReused, InvalidInput
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.store import open_application
from tests.app.conftest import last_position, open_funded

LATE_EVENING = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
NEXT_MORNING = LATE_EVENING + timedelta(hours=2)  # another day, well within 24 h


class PinnedClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> PinnedClock:
    return PinnedClock(LATE_EVENING)


@pytest.fixture
def shop(settings: StoreSettings, clock: PinnedClock, system: Actor, cs: Actor
         ) -> Iterator[LedgerApplication]:
    app = open_application(settings, clock=clock)
    open_funded(app, system, amount=2_000)
    app.purchase("alice", "ORD-1", 1_000, actor=system)
    try:
        yield app
    finally:
        app.close()


def open_case(app: LedgerApplication, cs: Actor) -> UUID:
    case = CaseApplication(
        username="alice", order_no="ORD-1", kind="damaged",
        shipped_on=LATE_EVENING.date() - timedelta(days=3),
        items=[{"sku": "SKU-7", "description": "desk lamp", "quantity": 1}],
        goods_photos=["photo://goods-1"], package_photos=["photo://box-1"],
        replaced_or_modified=False, parts_missing=False, opened_media=False,
        has_quality_assurance=True, note="customer wrote in",
    )
    case_id = UUID(app.open_return_case(case, actor=cs).body["id"])
    app.start_supplier_review(case_id, "asked the supplier", actor=cs)
    return case_id


def accept(app: LedgerApplication, cs: Actor, case_id: UUID, return_by: date, key: str
           ) -> Outcome:
    return app.accept_return_case(case_id, return_by, "Supplier Co, Yiwu", "keep the box",
                                  actor=cs, idempotency_key=key)


def test_a_retry_after_midnight_of_a_step_dated_today_answers_its_first_response(
    shop: LedgerApplication, clock: PinnedClock, cs: Actor,
) -> None:
    # Given a case accepted late in the evening, to come back by that very day, under a key
    case_id = open_case(shop, cs)
    first = accept(shop, cs, case_id, LATE_EVENING.date(), "k-accept")
    written = last_position(shop)

    # When its client, who never heard the answer, sends it again after midnight
    clock.at = NEXT_MORNING
    retry = accept(shop, cs, case_id, LATE_EVENING.date(), "k-accept")

    # Then it hears the first response again, and nothing more is recorded
    assert retry.replayed is True
    assert (retry.outcome, retry.body, retry.position) == (first.outcome, first.body,
                                                            first.position)
    assert last_position(shop) == written


def test_a_key_reused_with_a_date_the_day_rules_out_is_refused_as_a_reused_key(
    shop: LedgerApplication, clock: PinnedClock, cs: Actor,
) -> None:
    case_id = open_case(shop, cs)
    accept(shop, cs, case_id, LATE_EVENING.date() + timedelta(days=5), "k-accept")

    clock.at = NEXT_MORNING
    with pytest.raises(IdempotencyKeyReused):  # another body under the key: 422 reused
        accept(shop, cs, case_id, LATE_EVENING.date(), "k-accept")


def test_a_date_the_day_rules_out_is_still_refused_under_a_fresh_key(
    shop: LedgerApplication, clock: PinnedClock, cs: Actor,
) -> None:
    case_id = open_case(shop, cs)
    clock.at = NEXT_MORNING
    with pytest.raises(InvalidInput):
        accept(shop, cs, case_id, LATE_EVENING.date(), "k-new")
