"""Orders read model: per order, what was paid and credited back, what is refundable, and the
return cases opened on it.

``order refundable`` = paid - credited back (failure credits and return refunds), which the
table refuses to see negative.

Its tables, its projection, and its query (``orders``, a customer's orders a page at a time).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ledger.account import Account, account_id
from ledger.return_case import ReturnCase
from projections.paging import Page, cursor, page_size, paged
from projections.views import BrokenReadModel, ReadModelProjection, ReadModelView, Row

DDL = (
    "CREATE TABLE IF NOT EXISTS rm_orders ("
    " account_id TEXT NOT NULL, order_no TEXT NOT NULL, paid BIGINT NOT NULL,"
    " credited_back BIGINT NOT NULL, seq BIGINT NOT NULL, position BIGINT NOT NULL,"
    " PRIMARY KEY (account_id, order_no), CHECK (credited_back >= 0),"
    " CHECK (credited_back <= paid))",
    "CREATE TABLE IF NOT EXISTS rm_order_cases ("
    " account_id TEXT NOT NULL, order_no TEXT NOT NULL, case_id TEXT NOT NULL,"
    " position BIGINT NOT NULL, PRIMARY KEY (account_id, order_no, case_id))",
)

# Events that credit an order back, by the amount they carry.
CREDITS_BACK = frozenset({Account.PurchaseFailed, Account.ReturnRefundCredited})


class OrdersProjection(ReadModelProjection):
    name = "orders"
    ddl = DDL
    keys: ClassVar[Mapping[str, tuple[str, ...]]] = {"rm_orders": ("account_id", "order_no")}
    # A case refused by the policy is one of the order's cases too (in state refused).
    handles = frozenset({Account.PurchasePaid, *CREDITS_BACK, ReturnCase.Opened,
                         ReturnCase.Refused})

    def process_event(self, event: Any, position: int) -> None:
        kind = type(event)
        if kind is Account.PurchasePaid:
            order: Row = {
                "account_id": event.originator_id.hex,
                "order_no": event.order_no,
                "paid": event.amount,
                "credited_back": 0,
                "seq": position,
                "position": position,
            }
            self.rows.put("rm_orders", order)
        elif kind in CREDITS_BACK:
            order = self.rows.get("rm_orders", event.originator_id.hex, event.order_no)
            credited_back = order["credited_back"] + event.amount
            # The table checks the last row of a batch; this checks every event's.
            if credited_back > order["paid"]:
                raise BrokenReadModel(
                    f"order {event.order_no} credited back {credited_back} of {order['paid']}"
                )
            self.rows.put(
                "rm_orders", {**order, "credited_back": credited_back, "position": position}
            )
        elif kind is ReturnCase.Opened or kind is ReturnCase.Refused:
            case = {
                "account_id": account_id(event.username).hex,
                "order_no": event.order_no,
                "case_id": str(event.originator_id),
                "position": position,
            }
            self.rows.add("rm_order_cases", case)


# -- queries -----------------------------------------------------------------------------------


def orders(view: ReadModelView, username: str, *, limit: int, after: str | None) -> Page:
    rows = view.query(
        "SELECT order_no, paid, credited_back, seq FROM rm_orders"
        " WHERE account_id = %(id)s AND seq > %(after)s ORDER BY seq LIMIT %(limit)s",
        {"id": account_id(username).hex, "after": cursor(after), "limit": page_size(limit) + 1},
    )
    cases: dict[str, list[str]] = {}
    if rows:
        for case in view.query(
            "SELECT order_no, case_id FROM rm_order_cases WHERE account_id = %(id)s"
            " ORDER BY position",
            {"id": account_id(username).hex},
        ):
            cases.setdefault(case["order_no"], []).append(case["case_id"])
    items = [
        {
            "order_no": r["order_no"],
            "paid": r["paid"],
            "credited_back": r["credited_back"],
            "refundable": r["paid"] - r["credited_back"],
            "cases": cases.get(r["order_no"], []),
            "seq": r["seq"],
        }
        for r in rows
    ]
    return paged(items, limit, key="seq")

