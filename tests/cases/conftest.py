"""Fixtures and builders for return/exchange-case tests, on both stores.

One store of each kind per test module (a fresh PostgreSQL database per module rather than per
test keeps the suite fast); every test has a customer of its own, so tests never see each
other's accounts, orders or cases. Tests that count positions in the log run one at a time.

The shop's calendar is a ``ShopClock`` injected into the application: tests set the day and move
it, so every date a case records (a step's ``on``, the ``return_by`` checks, the ``today`` of the
status view) comes from it. Event timestamps (``opened_at``, a step's ``at``) are the library's.

The story every walk follows (dates chosen to cross a month end and the 2028 leap day):
    shipped 2028-01-31 · opened 2028-02-10 · accepted 2028-02-12, return_by 2028-02-29
    shipped back 2028-02-14 · received 2028-02-20 (postmark 2028-02-16) · forwarded 2028-02-21
    resolved 2028-03-01 · closed 2028-03-02
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from ledger.account import Account
from ledger.application import CaseApplication, LedgerApplication, Outcome
from ledger.identity import Actor
from ledger.policy import CASE_KINDS
from ledger.settings import StoreSettings
from projections.readmodels import ReadModelKeeper, ReadModels, prepare_read_models
from projections.store import open_application
from tests.conftest import drop_pg_database, make_pg_database, pg_url, store_settings

KINDS = sorted(CASE_KINDS)
SHIPPED_ON = date(2028, 1, 31)
OPENED_ON = date(2028, 2, 10)
ACCEPTED_ON = date(2028, 2, 12)
RETURN_BY = date(2028, 2, 29)
SHIPPED_BACK_ON = date(2028, 2, 14)
POSTMARK = date(2028, 2, 16)
RECEIVED_ON = date(2028, 2, 20)
FORWARDED_ON = date(2028, 2, 21)
RESOLVED_ON = date(2028, 3, 1)
CLOSED_ON = date(2028, 3, 2)
LATE_POSTMARK = date(2028, 3, 1)
LATE_RECEIVED_ON = date(2028, 3, 5)
GUARANTEE_UNTIL = date(2029, 1, 31)

DEPOSIT = 20_000
ORDER_PAID = 3_000  # one order per kind: 12,000 paid, 8,000 left available

OPEN_STATES = (
    "opened", "supplier_review", "accepted", "goods_in_transit", "received", "with_supplier",
)
TERMINAL_STATES = ("closed", "rejected", "expired", "late", "cancelled")

POOL_SIZE = 2
_customers = itertools.count(1)


# -- the store, the clock, the application -------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> (
    Iterator[str]
):
    """A fresh store of each kind for the module (overrides the per-test one of tests/)."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("cases")
        yield f"sqlite:///{path}/ledger.db"
        return
    name = make_pg_database()
    try:
        yield pg_url(name)
    finally:
        drop_pg_database(name)


@pytest.fixture(scope="module")
def settings(store_url: str) -> StoreSettings:
    """Small connection pools: the PostgreSQL server is shared with other test sessions."""
    return store_settings(store_url, pool_size=POOL_SIZE)


class ShopClock:
    """The application's clock: a moment on the shop's calendar that a test moves by hand."""

    def __init__(self, today: date) -> None:
        self.now = _at_ten(today)

    def __call__(self) -> datetime:
        return self.now

    @property
    def today(self) -> date:
        return self.now.date()

    def set(self, today: date) -> None:
        self.now = _at_ten(today)

    def follow_wall_time(self) -> None:
        """Agree with the library's own clock, the one that stamps events."""
        self.now = datetime.now(UTC)


def _at_ten(day: date) -> datetime:
    return datetime.combine(day, time(10, 0), tzinfo=UTC)


@pytest.fixture
def clock() -> ShopClock:
    return ShopClock(OPENED_ON)


@pytest.fixture
def customer() -> str:
    """A user name no other test uses."""
    return f"cust-{next(_customers)}-{uuid4().hex[:8]}"


@pytest.fixture
def shop(
    settings: StoreSettings, clock: ShopClock, customer: str, system: Actor
) -> Iterator[LedgerApplication]:
    """The ledger on the module's store, on ``clock``; the customer deposited 20,000 and paid
    3,000 for one order of each kind (``ORD-<kind>``)."""
    app = open_application(settings, clock=clock)
    try:
        fund(app, customer, system)
        yield app
    finally:
        app.close()


def fund(app: LedgerApplication, customer: str, actor: Actor) -> None:
    app.open_account(customer, "USD", actor=actor)
    app.deposit(customer, DEPOSIT, "PAY-1", actor=actor)
    for kind in KINDS:
        app.purchase(customer, order_of(kind), ORDER_PAID, actor=actor)


@pytest.fixture
def desk(shop: LedgerApplication, clock: ShopClock, customer: str, cs: Actor) -> CaseDesk:
    return CaseDesk(shop, clock, customer, cs)


@pytest.fixture(scope="module")
def keeper(settings: StoreSettings) -> Iterator[ReadModelKeeper]:
    """One keeper of the read models for the module's store, started as a serving process
    starts it (once the store has its tables), and running: it has applied an event.

    Waiting until it runs matters on PostgreSQL: a keeper makes sure of its tables as it starts,
    and a test opening the ledger at that moment makes DDL race (see the report)."""
    app = open_application(settings)
    prepare_read_models(settings)
    running = ReadModelKeeper(settings)
    running.start()
    models = ReadModels(settings, app, pool_size=1)
    try:
        probe = Actor("system:keeper-probe", "req-keeper-probe")
        app.open_account(f"keeper-probe-{uuid4().hex[:8]}", "USD", actor=probe)
        models.wait_caught_up()
        yield running
    finally:
        models.close()
        app.close()
        running.stop()


@pytest.fixture
def read_models(
    settings: StoreSettings, keeper: ReadModelKeeper, shop: LedgerApplication
) -> Iterator[ReadModels]:
    """The read models over ``shop`` (its clock says what today is), kept current by the
    keeper; a case counts as unresolved too long more than 10 days after its goods arrived."""
    models = ReadModels(settings, shop, pool_size=1, unresolved_after_days=10)
    try:
        yield models
    finally:
        models.close()


# -- builders ------------------------------------------------------------------------------------


def order_of(kind: str) -> str:
    return f"ORD-{kind}"


def last_position(app: LedgerApplication) -> int:
    return app.recorder.max_notification_id() or 0


def day_after(day: date) -> date:
    return day + timedelta(days=1)


Step = Callable[["CaseDesk", UUID], Outcome]

# The happy path: each state, the day its step is taken and the step that leads to it.
PATH: tuple[tuple[str, date, Step], ...] = (
    ("supplier_review", OPENED_ON,
     lambda d, c: d.app.start_supplier_review(c, "asked the supplier", actor=d.actor)),
    ("accepted", ACCEPTED_ON,
     lambda d, c: d.app.accept_return_case(
         c, RETURN_BY, "Supplier Co, 1 Factory Rd, Yiwu", "keep the box", actor=d.actor)),
    ("goods_in_transit", SHIPPED_BACK_ON,
     lambda d, c: d.app.ship_back(c, "RR123456789CN", actor=d.actor)),
    ("received", RECEIVED_ON,
     lambda d, c: d.app.receive_return(c, POSTMARK, True, True, True, actor=d.actor)),
    ("with_supplier", FORWARDED_ON,
     lambda d, c: d.app.forward_to_supplier(c, "sent on to the supplier", actor=d.actor)),
    ("resolved", RESOLVED_ON,
     lambda d, c: d.app.resolve_return_case(c, "exchange", None, 0, "EX-OUT-1", actor=d.actor)),
    ("closed", CLOSED_ON,
     lambda d, c: d.app.close_return_case(c, "customer has the replacement", actor=d.actor)),
)


@dataclass
class CaseDesk:
    """Customer service at work on one customer's cases: opens them and walks them along."""

    app: LedgerApplication
    clock: ShopClock
    customer: str
    actor: Actor

    def application(self, kind: str, **changes: Any) -> CaseApplication:
        """An application the policy accepts for ``kind``; ``changes`` break it on purpose."""
        eligible = CaseApplication(
            username=self.customer,
            order_no=order_of(kind),
            kind=kind,
            shipped_on=SHIPPED_ON,
            items=[{"sku": "SKU-7", "description": "desk lamp", "quantity": 1}],
            goods_photos=["photo://goods-1"],
            package_photos=["photo://box-1"],
            replaced_or_modified=False,
            parts_missing=False,
            opened_media=False,
            has_quality_assurance=True,
            guarantee_until=GUARANTEE_UNTIL if kind == "quality_problem" else None,
            note="customer wrote in",
        )
        return replace(eligible, **changes)

    def open(self, kind: str, **changes: Any) -> UUID:
        """Open a case today (the clock's day)."""
        outcome = self.app.open_return_case(self.application(kind, **changes), actor=self.actor)
        return UUID(outcome.body["id"])

    def walk(self, case_id: UUID, state: str) -> None:
        """Take the happy path's steps from where the case is, each on its day, until it is in
        ``state``."""
        states = ["opened", *(reached for reached, _, _ in PATH)]
        now = states.index(self.state(case_id))
        if state == states[now]:
            return
        for reached, day, step in PATH[now:]:
            self.clock.set(day)
            step(self, case_id)
            if reached == state:
                return
        raise AssertionError(f"{state} is not on the happy path")

    def reach(self, kind: str, state: str, **changes: Any) -> UUID:
        """A new case of ``kind``, opened on OPENED_ON and taken to ``state`` by the happy path
        or by the branch that ends there."""
        self.clock.set(OPENED_ON)
        case_id = self.open(kind, **changes)
        if state in OPEN_STATES or state in ("resolved", "closed"):
            self.walk(case_id, state)
        elif state == "rejected":
            self.walk(case_id, "supplier_review")
            self.app.reject_return_case(case_id, "supplier says misuse", actor=self.actor)
        elif state == "expired":
            self.walk(case_id, "accepted")
            self.clock.set(day_after(RETURN_BY))
            self.app.expire_return_case(case_id, "nothing came back", actor=self.actor)
        elif state == "late":
            self.walk(case_id, "goods_in_transit")
            self.clock.set(LATE_RECEIVED_ON)
            self.app.receive_return(case_id, LATE_POSTMARK, True, True, True, actor=self.actor)
        elif state == "cancelled":
            self.app.cancel_return_case(case_id, "customer changed their mind", actor=self.actor)
        else:
            raise AssertionError(f"no way to {state}")
        assert self.state(case_id) == state
        return case_id

    def state(self, case_id: UUID) -> str:
        return self.app.return_case(case_id).state

    def events(self, case_id: UUID) -> list[Any]:
        return list(self.app.events.get(case_id))

    def account(self) -> Account:
        return self.app.account(self.customer)
