"""``make demo``: a shop's month on the embedded SQLite store, to look at and to try.

``python -m api.demo DB`` builds it in a fresh store at the SQLite file ``DB`` (refused if the
file exists, unless ``--replace``): nine customers, three each in USD, EUR and JPY; their
deposits and purchases over the last thirty days; purchases that failed after payment and were
credited back; refund requests in every state (requested, approved, rejected, cancelled,
paid); and return cases in every state (opened, supplier_review, accepted, goods_in_transit,
received, with_supplier, resolved, closed, rejected, expired, late, cancelled). Every step is
taken on its day of the month (the shop's calendar; the events' own timestamps are when the
demo was built). ``make demo`` then serves it with the demo tokens below — for a demo only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

DEMO_TOKENS = {
    "system": "demo-system-token-0001",
    "cs": "demo-cs-token-00000002",
    "finance": "demo-finance-token-0003",
    "auditor": "demo-auditor-token-0004",
}
CURRENCIES = ("USD", "EUR", "JPY")
# Customers by currency: deposits in minor units (JPY has none below the yen).
CUSTOMERS: dict[str, list[tuple[str, int]]] = {
    "USD": [("alice", 120_000), ("bob", 45_000), ("carol", 80_000)],
    "EUR": [("dieter", 90_000), ("elise", 30_000), ("fabien", 150_000)],
    "JPY": [("haruto", 150_000), ("yui", 60_000), ("sora", 600_000)],
}
REFUND_STATES = ("requested", "approved", "rejected", "cancelled", "paid")
CASE_STATES = ("opened", "supplier_review", "accepted", "goods_in_transit", "received",
               "with_supplier", "resolved", "closed", "rejected", "expired", "late",
               "cancelled")
MONTH_DAYS = 30


def demo_tokens_env() -> str:
    return ",".join(f"{role}:{token}" for role, token in DEMO_TOKENS.items())


class DemoClock:
    """The shop's calendar, moved by the builder (10:00 UTC on the day set)."""

    def __init__(self, day: date) -> None:
        self.day = day

    def __call__(self) -> datetime:
        return datetime.combine(self.day, time(10, 0), tzinfo=UTC)


@dataclass
class Month:
    """What was built, to say it and to check it."""

    customers: dict[str, str]  # user name -> currency
    refund_requests: dict[str, UUID]  # state -> one request in it
    cases: dict[str, UUID]  # state -> one case in it
    failed_orders: list[tuple[str, str]]  # (user name, order number)
    events: int


def build(path: Path, *, today: date | None = None) -> Month:
    """The month, in a fresh SQLite store at ``path`` (its chain key beside it, ``.chain-key``
    for ``.db``: serve it with ``LEDGER_CHAIN_KEY_FILE`` pointing there)."""
    from ledger.application import CaseApplication
    from ledger.identity import Actor
    from ledger.settings import StoreSettings
    from projections.store import open_application

    today = today or datetime.now(UTC).date()
    first = today - timedelta(days=MONTH_DAYS - 1)
    settings = replace(StoreSettings.from_url(f"sqlite:///{path}"),
                       chain_key_file=path.with_suffix(".chain-key"))
    clock = DemoClock(first)
    app = open_application(settings, clock=clock)
    requests = iter(range(1, 1_000_000))

    def actor(role: str) -> Actor:
        return Actor(f"{role}:demo{role[:3]}", f"demo-{next(requests):06d}")

    def on(day: int) -> None:
        clock.day = first + timedelta(days=day)

    customers: dict[str, str] = {}
    orders: dict[str, list[tuple[str, int]]] = {}
    try:
        # Days 0-2: accounts and first deposits; then a purchase or two a day.
        for currency, people in CUSTOMERS.items():
            for number, (name, deposit) in enumerate(people):
                on(number)
                app.open_account(name, currency, actor=actor("system"))
                app.deposit(name, deposit, f"PAY-{name.upper()}-1", actor=actor("system"))
                customers[name] = currency
                orders[name] = []
        for day in range(3, MONTH_DAYS - 2):
            on(day)
            for index, name in enumerate(customers):
                if (day + index) % 4:
                    continue
                amount = _price(customers[name], day, index)
                order_no = f"ORD-{name.upper()}-{day:02d}"
                app.purchase(name, order_no, amount, actor=actor("system"))
                orders[name].append((order_no, amount))
            if day % 10 == 0:
                for name, (_, deposit) in zip(customers, _all_people(), strict=True):
                    app.deposit(name, deposit // 3, f"PAY-{name.upper()}-{day:02d}",
                                actor=actor("system"))
        # Purchases that failed after payment: credited back.
        on(MONTH_DAYS - 6)
        failed = []
        for name in ("bob", "elise", "yui"):
            order_no, _ = orders[name][0]
            app.fail_purchase(name, order_no, None, "supplier out of stock",
                              actor=actor("system"))
            failed.append((name, order_no))
        refunds = _refund_requests(app, customers, orders, on, actor)
        cases = _cases(app, CaseApplication, on, actor, today, first)
        events = app.recorder.max_notification_id() or 0
    finally:
        app.close()
    return Month(customers, refunds, cases, failed, events)


def _all_people() -> list[tuple[str, int]]:
    return [person for people in CUSTOMERS.values() for person in people]


def _price(currency: str, day: int, index: int) -> int:
    base = 1_200 + (day * 137 + index * 311) % 4_000
    return base * 3 // 2 if currency == "JPY" else base  # yen have no minor unit


def _refund_requests(app: Any, customers: dict[str, str],
                     orders: dict[str, list[tuple[str, int]]],
                     on: Callable[[int], None], actor: Callable[[str], Any]) -> dict[str, UUID]:
    """One refund request in each state, each for a different customer's latest order."""
    found: dict[str, UUID] = {}
    people = ["alice", "dieter", "haruto", "carol", "fabien"]
    for offset, (state, name) in enumerate(zip(REFUND_STATES, people, strict=True)):
        on(MONTH_DAYS - 5 + offset % 3)
        order_no, amount = orders[name][-1]
        outcome = app.request_refund(name, order_no, amount // 2, "customer asked for it back",
                                     actor=actor("cs"))
        request_id = UUID(outcome.body["id"])
        if state in ("approved", "paid"):
            app.approve_refund(request_id, "within policy", actor=actor("finance"))
        if state == "paid":
            app.pay_refund(request_id, f"PAYOUT-{name.upper()}", actor=actor("finance"))
        if state == "rejected":
            app.reject_refund(request_id, "order already shipped", actor=actor("finance"))
        if state == "cancelled":
            app.cancel_refund(request_id, "customer changed their mind", actor=actor("cs"))
        found[state] = request_id
    return found


def _cases(app: Any, case_application: Any, on: Callable[[int], None],
           actor: Callable[[str], Any], today: date, first: date) -> dict[str, UUID]:
    """One return case in each state: each its own order of sora's (JPY), opened on day 2 and
    walked along its days (accepted day 4, return by day 21, shipped back day 6, received day
    12, forwarded day 13, resolved day 21, closed day 22; expired day 22; late: received day
    26, postmarked day 22)."""
    cs = "cs"
    found: dict[str, UUID] = {}
    return_by = first + timedelta(days=21)
    kinds = ["defective", "damaged", "delivery_error", "quality_problem"]
    for number, state in enumerate(CASE_STATES):
        kind = kinds[number % len(kinds)]
        order_no = f"ORD-SORA-CASE-{number:02d}"
        on(1)
        app.purchase("sora", order_no, 12_000 + number * 500, actor=actor("system"))
        on(2)
        outcome = app.open_return_case(case_application(
            username="sora", order_no=order_no, kind=kind, shipped_on=first - timedelta(days=6),
            items=[{"sku": f"SKU-{number:03d}", "description": "a rice cooker", "quantity": 1}],
            goods_photos=[f"photo://goods-{number}"], package_photos=[f"photo://box-{number}"],
            replaced_or_modified=False, parts_missing=False, opened_media=False,
            has_quality_assurance=True,
            guarantee_until=today + timedelta(days=300) if kind == "quality_problem" else None,
            note="customer wrote in"), actor=actor(cs))
        case_id = UUID(outcome.body["id"])
        found[state] = case_id
        if state == "opened":
            continue
        if state == "cancelled":
            on(3)
            app.cancel_return_case(case_id, "customer changed their mind", actor=actor(cs))
            continue
        on(3)
        app.start_supplier_review(case_id, "asked the supplier", actor=actor(cs))
        app.add_case_note(case_id, "customer told we asked the supplier", actor=actor(cs))
        if state == "supplier_review":
            continue
        if state == "rejected":
            on(5)
            app.reject_return_case(case_id, "supplier found signs of misuse", actor=actor(cs))
            continue
        on(4)
        app.accept_return_case(case_id, return_by, "Supplier Ltd, Dock 4",
                               "in the original box", actor=actor(cs))
        if state == "accepted":
            continue
        if state == "expired":
            on(22)
            app.expire_return_case(case_id, "nothing came back by the date", actor=actor(cs))
            continue
        on(6)
        app.ship_back(case_id, f"TRK-{number:04d}", actor=actor(cs))
        if state == "goods_in_transit":
            continue
        if state == "late":
            on(26)
            app.receive_return(case_id, first + timedelta(days=22), True, True, True,
                               actor=actor(cs))
            continue
        on(12)
        app.receive_return(case_id, first + timedelta(days=8), True, True, True,
                           actor=actor(cs))
        if state == "received":
            continue
        on(13)
        app.forward_to_supplier(case_id, "sent on to the supplier", actor=actor(cs))
        if state == "with_supplier":
            continue
        on(21)
        app.resolve_return_case(case_id, "refund", None, 800, None, actor=actor(cs))
        if state == "resolved":
            continue
        on(22)
        app.close_return_case(case_id, "customer thanked us", actor=actor(cs))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.demo", description=__doc__.split(
        "\n")[0])
    parser.add_argument("db", type=Path, help="the SQLite file to build the month in")
    parser.add_argument("--replace", action="store_true",
                        help="remove DB, its chain key and its read models first")
    options = parser.parse_args(argv)
    path: Path = options.db
    key = path.with_suffix(".chain-key")
    if path.exists() or key.exists():
        if not options.replace:
            print(f"{path} exists: give --replace to build the demo afresh", file=sys.stderr)
            return 2
        # The store, its key, its read models (<stem>.<model>.db) and SQLite's side files.
        for old in path.parent.glob(f"{path.stem}.*"):
            old.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    month = build(path)
    print(f"built a shop's month in {path}: {len(month.customers)} customers in "
          f"{', '.join(CURRENCIES)}, {month.events} events; refund requests "
          f"{', '.join(month.refund_requests)}; cases {', '.join(month.cases)}")
    print("demo tokens (for this demo only):")
    for role, token in DEMO_TOKENS.items():
        print(f"  {role}:{token}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
