"""Orders read model: per order, what was paid and credited back, what is refundable, and the
return cases opened on it.

``order refundable`` = paid - credited back (failure credits and return refunds), which the
table refuses to see negative.
"""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from ledger.account import Account, account_id
from ledger.return_case import ReturnCase
from projections.views import ReadModelView

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

_PAID = (
    "INSERT INTO rm_orders (account_id, order_no, paid, credited_back, seq, position)"
    " VALUES (%(account_id)s, %(order_no)s, %(amount)s, 0, %(position)s, %(position)s)"
)
_CREDITED = (
    "UPDATE rm_orders SET credited_back = credited_back + %(amount)s, position = %(position)s"
    " WHERE account_id = %(account_id)s AND order_no = %(order_no)s"
)

_CASE_OPENED = (
    "INSERT INTO rm_order_cases (account_id, order_no, case_id, position)"
    " VALUES (%(account_id)s, %(order_no)s, %(case_id)s, %(position)s)"
)


class OrdersProjection(Projection[ReadModelView]):
    name = "orders"
    ddl = DDL

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.record(tracking, [])

    @process_event.register
    def _paid(self, domain_event: Account.PurchasePaid, tracking: Tracking) -> None:
        self.view.record(tracking, [(_PAID, _params(domain_event, tracking))])

    @process_event.register
    def _failed(self, domain_event: Account.PurchaseFailed, tracking: Tracking) -> None:
        self.view.record(tracking, [(_CREDITED, _params(domain_event, tracking))])

    @process_event.register
    def _refunded(self, domain_event: Account.ReturnRefundCredited, tracking: Tracking) -> None:
        self.view.record(tracking, [(_CREDITED, _params(domain_event, tracking))])

    @process_event.register
    def _case_opened(self, domain_event: ReturnCase.Opened, tracking: Tracking) -> None:
        params = {
            "account_id": account_id(domain_event.username).hex,
            "order_no": domain_event.order_no,
            "case_id": str(domain_event.originator_id),
            "position": tracking.notification_id,
        }
        self.view.record(tracking, [(_CASE_OPENED, params)])


def _params(event: Any, tracking: Tracking) -> dict[str, Any]:
    return {
        "account_id": event.originator_id.hex,
        "order_no": event.order_no,
        "amount": event.amount,
        "position": tracking.notification_id,
    }
