"""Refund requests read model: finance's queue of balance-refund requests, with their steps."""

from __future__ import annotations

import json
from functools import singledispatchmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from ledger.clock import rfc3339
from ledger.refund_request import RefundRequest
from projections.events import own_fields
from projections.views import ReadModelView

DDL = (
    "CREATE TABLE IF NOT EXISTS rm_refund_requests ("
    " id TEXT PRIMARY KEY, username TEXT NOT NULL, currency TEXT NOT NULL,"
    " order_no TEXT NOT NULL, amount BIGINT NOT NULL, reason TEXT NOT NULL,"
    " status TEXT NOT NULL, requested_at TEXT NOT NULL, updated_at TEXT NOT NULL,"
    " seq BIGINT NOT NULL, position BIGINT NOT NULL, CHECK (amount > 0))",
    "CREATE INDEX IF NOT EXISTS rm_refund_requests_by_status ON rm_refund_requests (status, seq)",
    "CREATE INDEX IF NOT EXISTS rm_refund_requests_by_user ON rm_refund_requests (username, seq)",
    "CREATE TABLE IF NOT EXISTS rm_refund_request_steps ("
    " id TEXT NOT NULL, version BIGINT NOT NULL, status TEXT NOT NULL, at TEXT NOT NULL,"
    " actor TEXT NOT NULL, position BIGINT NOT NULL, data TEXT NOT NULL,"
    " PRIMARY KEY (id, version))",
)

_REQUESTED = (
    "INSERT INTO rm_refund_requests (id, username, currency, order_no, amount, reason, status,"
    " requested_at, updated_at, seq, position) VALUES (%(id)s, %(username)s, %(currency)s,"
    " %(order_no)s, %(amount)s, %(reason)s, %(status)s, %(at)s, %(at)s, %(position)s,"
    " %(position)s)"
)
_MOVED = (
    "UPDATE rm_refund_requests SET status = %(status)s, updated_at = %(at)s,"
    " position = %(position)s WHERE id = %(id)s"
)
_STEP = (
    "INSERT INTO rm_refund_request_steps (id, version, status, at, actor, position, data)"
    " VALUES (%(id)s, %(version)s, %(status)s, %(at)s, %(actor)s, %(position)s, %(data)s)"
)

STATUS_AFTER: dict[type[Any], str] = {
    RefundRequest.Requested: "requested",
    RefundRequest.Approved: "approved",
    RefundRequest.Rejected: "rejected",
    RefundRequest.Cancelled: "cancelled",
    RefundRequest.PaidOut: "paid",
}


class RefundRequestsProjection(Projection[ReadModelView]):
    name = "refund_requests"
    ddl = DDL

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        statements = []
        if type(domain_event) in STATUS_AFTER:
            params = _params(domain_event, tracking)
            statements = [(_MOVED, params), (_STEP, params)]
        self.view.record(tracking, statements)

    @process_event.register
    def _requested(self, domain_event: RefundRequest.Requested, tracking: Tracking) -> None:
        params = _params(domain_event, tracking)
        params.update(
            username=domain_event.username,
            currency=domain_event.currency,
            order_no=domain_event.order_no,
            amount=domain_event.amount,
            reason=domain_event.reason,
        )
        self.view.record(tracking, [(_REQUESTED, params), (_STEP, params)])


def _params(event: Any, tracking: Tracking) -> dict[str, Any]:
    return {
        "id": str(event.originator_id),
        "version": event.originator_version,
        "status": STATUS_AFTER[type(event)],
        "at": rfc3339(event.timestamp),
        "actor": event.actor,
        "position": tracking.notification_id,
        "data": json.dumps(own_fields(event), sort_keys=True),
    }
