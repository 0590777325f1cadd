"""Case-status read model: every return or exchange case, its facts and its steps.

Days open, days since shipping, the 30-day full return and the overdue flags change with the
calendar, so the rows keep the dates they derive from and ``case_status`` works them out for the
day asked (an injected clock in tests). The ``overdue`` filter is a date comparison in SQL.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from functools import singledispatchmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from ledger import policy
from ledger.clock import rfc3339
from ledger.return_case import ReturnCase
from projections.events import own_fields, snake
from projections.views import ReadModelView, Statement

DDL = (
    "CREATE TABLE IF NOT EXISTS rm_return_cases ("
    " id TEXT PRIMARY KEY, username TEXT NOT NULL, currency TEXT NOT NULL,"
    " order_no TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,"
    " opened_at TEXT NOT NULL, opened_on TEXT NOT NULL, shipped_on TEXT NOT NULL,"
    " guarantee_until TEXT, return_by TEXT, postmark_date TEXT, received_on TEXT,"
    " outcome TEXT, refund_amount BIGINT NOT NULL, freight_amount BIGINT NOT NULL,"
    " items TEXT NOT NULL, seq BIGINT NOT NULL, position BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS rm_return_cases_by_state ON rm_return_cases (state, seq)",
    "CREATE INDEX IF NOT EXISTS rm_return_cases_by_user ON rm_return_cases (username, seq)",
    "CREATE TABLE IF NOT EXISTS rm_return_case_steps ("
    " id TEXT NOT NULL, version BIGINT NOT NULL, step TEXT NOT NULL, state TEXT NOT NULL,"
    " on_date TEXT NOT NULL, at TEXT NOT NULL, actor TEXT NOT NULL, position BIGINT NOT NULL,"
    " data TEXT NOT NULL, PRIMARY KEY (id, version))",
)

_OPENED = (
    "INSERT INTO rm_return_cases (id, username, currency, order_no, kind, state, opened_at,"
    " opened_on, shipped_on, guarantee_until, refund_amount, freight_amount, items, seq,"
    " position) VALUES (%(id)s, %(username)s, %(currency)s, %(order_no)s, %(kind)s, 'opened',"
    " %(at)s, %(on)s, %(shipped_on)s, %(guarantee_until)s, 0, 0, %(items)s, %(position)s,"
    " %(position)s)"
)
_MOVED = (
    "UPDATE rm_return_cases SET state = %(state)s, position = %(position)s,"
    " return_by = COALESCE(%(return_by)s, return_by),"
    " postmark_date = COALESCE(%(postmark_date)s, postmark_date),"
    " received_on = COALESCE(%(received_on)s, received_on),"
    " outcome = COALESCE(%(outcome)s, outcome),"
    " refund_amount = refund_amount + %(refund_amount)s,"
    " freight_amount = freight_amount + %(freight_amount)s WHERE id = %(id)s"
)
_STEP = (
    "INSERT INTO rm_return_case_steps (id, version, step, state, on_date, at, actor, position,"
    " data) SELECT %(id)s, %(version)s, %(step)s, state, %(on)s, %(at)s, %(actor)s,"
    " %(position)s, %(data)s FROM rm_return_cases WHERE id = %(id)s"
)

# The state each step leads to (a note leaves the state as it is).
STATE_AFTER: dict[type[Any], str | None] = {
    ReturnCase.SupplierReviewStarted: "supplier_review",
    ReturnCase.Accepted: "accepted",
    ReturnCase.Rejected: "rejected",
    ReturnCase.ShippedBack: "goods_in_transit",
    ReturnCase.Expired: "expired",
    ReturnCase.Forwarded: "with_supplier",
    ReturnCase.Resolved: "resolved",
    ReturnCase.Closed: "closed",
    ReturnCase.Cancelled: "cancelled",
    ReturnCase.NoteAdded: None,
}


class ReturnCasesProjection(Projection[ReadModelView]):
    name = "return_cases"
    ddl = DDL

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        statements: list[Statement] = []
        if type(domain_event) in STATE_AFTER:
            params = _step_params(domain_event, tracking)
            state = STATE_AFTER[type(domain_event)]
            if state is not None:
                statements.append((_MOVED, {**params, **_facts(domain_event), "state": state}))
            statements.append((_STEP, params))
        self.view.record(tracking, statements)

    @process_event.register
    def _opened(self, domain_event: ReturnCase.Opened, tracking: Tracking) -> None:
        params = _step_params(domain_event, tracking)
        params.update(
            username=domain_event.username,
            currency=domain_event.currency,
            order_no=domain_event.order_no,
            kind=domain_event.kind,
            shipped_on=domain_event.shipped_on,
            guarantee_until=domain_event.guarantee_until,
            items=json.dumps(domain_event.items, sort_keys=True),
        )
        self.view.record(tracking, [(_OPENED, params), (_STEP, params)])

    @process_event.register
    def _received(self, domain_event: ReturnCase.Received, tracking: Tracking) -> None:
        params = _step_params(domain_event, tracking)
        state = "late" if domain_event.late else "received"
        missing = [
            name
            for name in ("goods", "original_packaging", "acceptance_copy")
            if not getattr(domain_event, name)
        ]
        params["data"] = json.dumps(
            {**own_fields(domain_event), "missing": missing}, sort_keys=True
        )
        moved = {**params, **_facts(domain_event), "state": state}
        self.view.record(tracking, [(_MOVED, moved), (_STEP, params)])


def _step_params(event: Any, tracking: Tracking) -> dict[str, Any]:
    return {
        "id": str(event.originator_id),
        "version": event.originator_version,
        "step": snake(type(event).__name__),
        "on": event.on,
        "at": rfc3339(event.timestamp),
        "actor": event.actor,
        "position": tracking.notification_id,
        "data": json.dumps(own_fields(event), sort_keys=True),
    }


def _facts(event: Any) -> dict[str, Any]:
    """The dated facts a step adds to the case row (None: leave as it is)."""
    return {
        "return_by": getattr(event, "return_by", None),
        "postmark_date": getattr(event, "postmark_date", None),
        "received_on": event.on if isinstance(event, ReturnCase.Received) else None,
        "outcome": getattr(event, "outcome", None),
        "refund_amount": getattr(event, "refund_amount", 0),
        "freight_amount": getattr(event, "freight_amount", 0),
    }


def case_status(row: dict[str, Any], today: date, unresolved_after_days: int) -> dict[str, Any]:
    """The figures of a case that change with the calendar, for the day asked."""
    shipped_on = date.fromisoformat(row["shipped_on"])
    return_by = _date(row["return_by"])
    postmark = _date(row["postmark_date"])
    full_return = policy.thirty_day_full_return(shipped_on, postmark, today)
    past_return_by = policy.past_return_by(row["state"], return_by, today)
    unresolved = policy.unresolved_too_long(
        row["state"], _date(row["received_on"]), today, unresolved_after_days
    )
    return {
        "days_open": (today - date.fromisoformat(row["opened_on"])).days,
        "days_since_shipping": (today - shipped_on).days,
        "thirty_day_guarantee": {
            "holds": full_return.holds,
            "days_used": full_return.days_used,
            "last_postmark": full_return.last_postmark.isoformat(),
        },
        "overdue": past_return_by or unresolved,
        "overdue_reasons": [
            reason
            for reason, flag in (
                ("past_return_by", past_return_by),
                ("unresolved_after_receipt", unresolved),
            )
            if flag
        ],
    }


def overdue_where(today: date, unresolved_after_days: int) -> tuple[str, dict[str, Any]]:
    """The SQL condition of ``overdue`` (the same rules as ``case_status``, as date text)."""
    cutoff = today - timedelta(days=unresolved_after_days)
    return (
        "((state = 'accepted' AND return_by < %(today)s)"
        " OR (state IN ('received', 'with_supplier') AND received_on < %(cutoff)s))",
        {"today": today.isoformat(), "cutoff": cutoff.isoformat()},
    )


def _date(text: str | None) -> date | None:
    return None if text is None else date.fromisoformat(text)
