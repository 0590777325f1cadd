"""Refund requests read model: finance's queue of balance-refund requests, with their steps.

Its tables, its projection, and its queries (``requests`` a page at a time, ``request``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar
from uuid import UUID

from ledger.refund_request import RefundRequest
from projections.events import json_text, moment_text, own_fields
from projections.paging import Page, cursor, page_size, paged
from projections.views import ReadModelProjection, ReadModelView, Row

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

STATUS_AFTER: dict[type[Any], str] = {
    RefundRequest.Requested: "requested",
    RefundRequest.Approved: "approved",
    # The first of two approvals: the request is still waiting for the second.
    RefundRequest.FirstApproved: "requested",
    RefundRequest.Rejected: "rejected",
    RefundRequest.Cancelled: "cancelled",
    RefundRequest.PaidOut: "paid",
}


class RefundRequestsProjection(ReadModelProjection):
    name = "refund_requests"
    ddl = DDL
    keys: ClassVar[Mapping[str, tuple[str, ...]]] = {"rm_refund_requests": ("id",)}
    handles = frozenset(STATUS_AFTER)

    def process_event(self, event: Any, position: int) -> None:
        kind = type(event)
        if kind not in STATUS_AFTER:
            return
        step = _step(event, position)
        if kind is RefundRequest.Requested:
            request: Row = {
                "id": step["id"],
                "username": event.username,
                "currency": event.currency,
                "order_no": event.order_no,
                "amount": event.amount,
                "reason": event.reason,
                "status": step["status"],
                "requested_at": step["at"],
                "updated_at": step["at"],
                "seq": position,
                "position": position,
            }
        else:
            request = {
                **self.rows.get("rm_refund_requests", step["id"]),
                "status": step["status"],
                "updated_at": step["at"],
                "position": position,
            }
        self.rows.put("rm_refund_requests", request)
        self.rows.add("rm_refund_request_steps", step)


def _step(event: Any, position: int) -> Row:
    return {
        "id": str(event.originator_id),
        "version": event.originator_version,
        "status": STATUS_AFTER[type(event)],
        "at": moment_text(event.timestamp),
        "actor": event.actor,
        "position": position,
        "data": json_text(own_fields(event)),
    }


# -- queries -----------------------------------------------------------------------------------


# ``?status=open``: the requests still holding money (requested or approved).
OPEN = "open"


def _filters(
    status: str | None, username: str | None, currency: str | None
) -> tuple[list[str], dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {}
    if status == OPEN:
        where.append("status IN ('requested', 'approved')")
    elif status is not None:
        where.append("status = %(status)s")
        params["status"] = status
    if username is not None:
        where.append("username = %(username)s")
        params["username"] = username
    if currency is not None:
        where.append("currency = %(currency)s")
        params["currency"] = currency
    return where, params


def requests(
    view: ReadModelView,
    *,
    status: str | None,
    username: str | None,
    limit: int,
    after: str | None,
    currency: str | None = None,
) -> Page:
    where, params = _filters(status, username, currency)
    where.insert(0, "seq > %(after)s")
    params.update({"after": cursor(after), "limit": page_size(limit) + 1})
    rows = view.query(
        f"SELECT {_REQUEST_COLUMNS} FROM rm_refund_requests WHERE {' AND '.join(where)}"  # noqa: S608
        " ORDER BY seq LIMIT %(limit)s",
        params,
    )
    return paged(rows, limit, key="seq")


def totals(
    view: ReadModelView, *, status: str | None, username: str | None, currency: str | None
) -> list[dict[str, Any]]:
    """Per currency, how many requests the filters keep (every page, not one) and their sum,
    and when the oldest of them was requested."""
    where, params = _filters(status, username, currency)
    condition = " AND ".join(where) or "TRUE"  # fixed texts; the values are parameters
    rows = view.query(
        "SELECT currency, COUNT(*) AS count, COALESCE(SUM(amount), 0) AS amount,"  # noqa: S608
        f" MIN(requested_at) AS oldest_requested_at FROM rm_refund_requests WHERE {condition}"
        " GROUP BY currency ORDER BY currency",
        params,
    )
    return [
        {"currency": r["currency"], "count": int(r["count"]), "amount": int(r["amount"]),
         "oldest_requested_at": r["oldest_requested_at"]}
        for r in rows
    ]


def request(view: ReadModelView, request_id: UUID) -> dict[str, Any] | None:
    rows = view.query(
        f"SELECT {_REQUEST_COLUMNS} FROM rm_refund_requests WHERE id = %(id)s",  # noqa: S608
        {"id": str(request_id)},
    )
    if not rows:
        return None
    steps = view.query(
        "SELECT status, at, actor, position, data FROM rm_refund_request_steps"
        " WHERE id = %(id)s ORDER BY version",
        {"id": str(request_id)},
    )
    request = rows[0]
    request.pop("seq")
    request["steps"] = [
        {
            "status": s["status"],
            "at": s["at"],
            "actor": s["actor"],
            "position": s["position"],
            "data": json.loads(s["data"]),
        }
        for s in steps
    ]
    return request


_REQUEST_COLUMNS = (
    "id, username, currency, order_no, amount, reason, status, requested_at, updated_at, seq"
)
