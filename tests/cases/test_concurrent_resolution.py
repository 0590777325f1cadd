"""Two cases on one order resolved at the same time cannot together refund more than was paid
(DOMAIN.md, Invariant 7), on both stores: by threads of one application, and by two
applications on the same store whose saves are made to race."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from uuid import UUID

import pytest

from ledger.application import LedgerApplication, Outcome
from ledger.errors import OverRefundable
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.store import wire
from tests.cases.conftest import KINDS, ORDER_PAID, CaseDesk, ShopClock, order_of

TIMEOUT_S = 30


class RacingLedger(LedgerApplication):
    """A ledger whose next save waits until its rival's save is about to happen too, so that
    both decide from the same state and only the store can tell which one wins."""

    name = LedgerApplication.name  # the same event tables (eventsourcing names them after it)

    def __init__(
        self,
        settings: StoreSettings,
        barrier: threading.Barrier,
        clock: ShopClock,
        max_attempts: int = 40,
    ) -> None:
        super().__init__(settings.app_env(), clock=clock, max_attempts=max_attempts)
        wire(self, settings)
        self.barrier = barrier
        self.armed = False

    def _record(self, processing_event: Any) -> Any:
        if self.armed:
            self.armed = False
            self.barrier.wait(TIMEOUT_S)
        return super()._record(processing_event)


@pytest.fixture
def racers(settings: StoreSettings, clock: ShopClock) -> Iterator[list[RacingLedger]]:
    barrier = threading.Barrier(2)
    pair = [RacingLedger(settings, barrier, clock) for _ in range(2)]
    try:
        yield pair
    finally:
        for app in pair:
            app.close()


def race(calls: list[Callable[[], Outcome]]) -> list[Outcome | BaseException]:
    """Run the calls at once, each in a thread of its own; their outcomes or errors, in order."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], Outcome]) -> Outcome:
        start.wait(TIMEOUT_S)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures: list[Future[Outcome]] = [pool.submit(run, call) for call in calls]
        return [f.exception(TIMEOUT_S) or f.result() for f in futures]


def two_cases_with_the_supplier(desk: CaseDesk, kind: str) -> list[UUID]:
    return [desk.reach(kind, "with_supplier") for _ in range(2)]


def assert_exactly_one_full_refund(
    desk: CaseDesk, cases: list[UUID], results: list[Outcome | BaseException], kind: str
) -> None:
    won = [r for r in results if isinstance(r, Outcome)]
    lost = [r for r in results if not isinstance(r, Outcome)]
    assert len(won) == 1, results
    assert len(lost) == 1 and isinstance(lost[0], OverRefundable), results
    assert lost[0].context == {"refundable": 0}
    # the order is credited back exactly what was paid, by one credit, and one case resolved
    order_no = order_of(kind)
    assert desk.account().orders[order_no] == [ORDER_PAID, ORDER_PAID]
    credits = [
        e for e in desk.app.events.get(desk.account().id)
        if type(e).__name__ == "ReturnRefundCredited" and e.order_no == order_no
    ]
    assert [c.amount for c in credits] == [ORDER_PAID]
    assert sorted(desk.state(c) for c in cases) == ["resolved", "with_supplier"]
    assert credits[0].case_id == won[0].body["id"]


def test_threads_resolving_two_cases_on_one_order_refund_it_once(
    desk: CaseDesk, finance: Actor
) -> None:
    for kind in KINDS:
        # Given two cases on one order of 3,000, both with the supplier
        cases = two_cases_with_the_supplier(desk, kind)
        posted = desk.account().posted

        # When two threads refund the full 3,000 on each case at the same moment
        results = race([
            lambda c=case: desk.app.resolve_return_case(  # type: ignore[misc]
                c, "refund", ORDER_PAID, 0, None, actor=finance
            )
            for case in cases
        ])

        # Then one refund is credited and the other is refused as over the refundable
        assert_exactly_one_full_refund(desk, cases, results, kind)
        assert desk.account().posted == posted + ORDER_PAID


def test_two_applications_on_one_store_resolving_two_cases_on_one_order_refund_it_once(
    desk: CaseDesk, racers: list[RacingLedger], finance: Actor
) -> None:
    for kind in KINDS:
        # Given two cases on one order, and two ledgers (as in two processes) on the store
        cases = two_cases_with_the_supplier(desk, kind)
        posted = desk.account().posted
        for racer in racers:
            racer.armed = True

        # When each ledger refunds the full 3,000 on one of the cases, both deciding from the
        # same state before either saves
        results = race([
            lambda r=racer, c=case: r.resolve_return_case(  # type: ignore[misc]
                c, "refund", ORDER_PAID, 0, None, actor=finance
            )
            for racer, case in zip(racers, cases, strict=True)
        ])

        # Then the store lets one save through; the other decides again and is refused
        assert_exactly_one_full_refund(desk, cases, results, kind)
        assert desk.account().posted == posted + ORDER_PAID
        assert not any(racer.armed for racer in racers)


def test_it_is_the_store_that_stops_the_second_refund_when_two_applications_race(
    desk: CaseDesk, settings: StoreSettings, clock: ShopClock, finance: Actor
) -> None:
    # Given two ledgers that may try a save once only, and two cases on one order
    barrier = threading.Barrier(2)
    racers = [RacingLedger(settings, barrier, clock, max_attempts=1) for _ in range(2)]
    try:
        cases = two_cases_with_the_supplier(desk, "damaged")
        for racer in racers:
            racer.armed = True

        # When both refund the full amount, both deciding from the same state
        results = race([
            lambda r=racer, c=case: r.resolve_return_case(  # type: ignore[misc]
                c, "refund", ORDER_PAID, 0, None, actor=finance
            )
            for racer, case in zip(racers, cases, strict=True)
        ])
    finally:
        for racer in racers:
            racer.close()

    # Then the store refused the second save (the loser had no attempt left to decide again),
    # and the order was refunded once
    assert sorted(type(r).__name__ for r in results) == ["Contention", "Outcome"]
    assert desk.account().orders["ORD-damaged"] == [ORDER_PAID, ORDER_PAID]
