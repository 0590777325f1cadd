"""Orders read model: per order, what was paid and credited back, what is refundable, and the
return cases opened on it.

``order refundable`` = paid - credited back (failure credits and return refunds), which the
table refuses to see negative.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ledger.account import Account, account_id
from ledger.return_case import ReturnCase
from projections.views import BrokenReadModel, ReadModelProjection, Row

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
    handles = frozenset({Account.PurchasePaid, *CREDITS_BACK, ReturnCase.Opened})

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
        elif kind is ReturnCase.Opened:
            case = {
                "account_id": account_id(event.username).hex,
                "order_no": event.order_no,
                "case_id": str(event.originator_id),
                "position": position,
            }
            self.rows.add("rm_order_cases", case)
