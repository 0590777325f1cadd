"""Case-status read model: every return or exchange case, its facts and its steps.

Days open, days since shipping, the 30-day full return and the overdue flags change with the
calendar, so the rows keep the dates they derive from and ``case_status`` works them out for the
day asked (an injected clock in tests). The ``overdue`` filter is a date comparison in SQL.

Its tables, its projection, and its queries (``cases`` a page at a time, ``case``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any, ClassVar
from uuid import UUID

from ledger import policy
from ledger.return_case import ENDED_STATES, OPEN_STATES, REFUSED, ReturnCase
from projections.events import json_text, moment_text, own_fields, snake
from projections.paging import Page, cursor, page_size, paged
from projections.views import ReadModelProjection, ReadModelView, Row

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
    ReturnCase.FreightWaived: None,
    ReturnCase.EvidenceAdded: None,
}
# A case is born opened, or refused by the policy (its reason is in its first step's data).
BORN: dict[type[Any], str] = {ReturnCase.Opened: "opened", ReturnCase.Refused: REFUSED}
HANDLED: frozenset[type[Any]] = frozenset({*BORN, ReturnCase.Received, *STATE_AFTER})


class ReturnCasesProjection(ReadModelProjection):
    name = "return_cases"
    ddl = DDL
    keys: ClassVar[Mapping[str, tuple[str, ...]]] = {"rm_return_cases": ("id",)}
    handles = HANDLED

    def process_event(self, event: Any, position: int) -> None:
        kind = type(event)
        if kind not in HANDLED:
            return
        step = _step(event, position)
        if kind in BORN:
            case = _opened(event, position, step, BORN[kind])
            self.rows.put("rm_return_cases", case)
        else:
            case = self.rows.get("rm_return_cases", step["id"])
            if kind is ReturnCase.Received:
                step["data"] = _received_data(event)
            state = _state_after(event)
            if state is not None:  # a note leaves the case as it is
                case = _moved(case, event, state, position)
                self.rows.put("rm_return_cases", case)
        self.rows.add("rm_return_case_steps", {**step, "state": case["state"]})


def _state_after(event: Any) -> str | None:
    if isinstance(event, ReturnCase.Received):
        return "late" if event.late else "received"
    return STATE_AFTER[type(event)]


def _received_data(event: ReturnCase.Received) -> str:
    """The step's data, with what arrived missing named."""
    missing = [
        name
        for name in ("goods", "original_packaging", "acceptance_copy")
        if not getattr(event, name)
    ]
    return json_text({**own_fields(event), "missing": missing})


def _opened(event: Any, position: int, step: Row, state: str) -> Row:
    return {
        "id": step["id"],
        "username": event.username,
        "currency": event.currency,
        "order_no": event.order_no,
        "kind": event.kind,
        "state": state,
        "opened_at": step["at"],
        "opened_on": event.on,
        "shipped_on": event.shipped_on,
        "guarantee_until": event.guarantee_until,
        "return_by": None,
        "postmark_date": None,
        "received_on": None,
        "outcome": None,
        "refund_amount": 0,
        "freight_amount": 0,
        "items": json_text(event.items),
        "seq": position,
        "position": position,
    }


def _moved(case: Row, event: Any, state: str, position: int) -> Row:
    """The case after a step that moves it: its new state and the dated facts the step adds."""
    facts = _facts(event)
    return {
        **case,
        "state": state,
        "position": position,
        **{
            name: case[name] if facts[name] is None else facts[name]
            for name in ("return_by", "postmark_date", "received_on", "outcome")
        },
        "refund_amount": case["refund_amount"] + facts["refund_amount"],
        "freight_amount": case["freight_amount"] + facts["freight_amount"],
    }


def _step(event: Any, position: int) -> dict[str, Any]:
    return {
        "id": str(event.originator_id),
        "version": event.originator_version,
        "step": snake(type(event).__name__),
        "on_date": event.on,
        "at": moment_text(event.timestamp),
        "actor": event.actor,
        "position": position,
        "data": json_text(own_fields(event)),
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
    """The figures of a case that change with the calendar, for the day asked. A case's days
    stop at the day it ended (``ended_on``: its step into a final state, or the day it was
    refused): a case closed in March is 21 days open a year later, and the 30 days of a
    case cancelled before any goods came back stop counting on that day."""
    shipped_on = date.fromisoformat(row["shipped_on"])
    return_by = _date(row["return_by"])
    postmark = _date(row["postmark_date"])
    ended_on = _date(row.get("ended_on"))
    until = today if ended_on is None else min(today, ended_on)
    full_return = policy.thirty_day_full_return(shipped_on, postmark, until)
    past_return_by = policy.past_return_by(row["state"], return_by, today)
    unresolved = policy.unresolved_too_long(
        row["state"], _date(row["received_on"]), today, unresolved_after_days
    )
    return {
        "days_open": (until - date.fromisoformat(row["opened_on"])).days,
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


# -- queries -----------------------------------------------------------------------------------


def case(
    view: ReadModelView, case_id: UUID, *, today: date, unresolved_after_days: int
) -> dict[str, Any] | None:
    rows = view.query(
        f"SELECT {_CASE_COLUMNS} FROM rm_return_cases WHERE id = %(id)s",  # noqa: S608
        {"id": str(case_id)},
    )
    if not rows:
        return None
    steps = view.query(
        "SELECT step, state, on_date, at, actor, position, data FROM rm_return_case_steps"
        " WHERE id = %(id)s ORDER BY version",
        {"id": str(case_id)},
    )
    found = _case_item(rows[0], today, unresolved_after_days)
    found.pop("seq")
    first = json.loads(steps[0]["data"]) if steps else {}
    found["refusal_reason"] = first.get("reason") if found["state"] == REFUSED else None
    found["steps"] = [
        {
            "step": s["step"],
            "state": s["state"],
            "on": s["on_date"],
            "at": s["at"],
            "actor": s["actor"],
            "position": s["position"],
            "data": json.loads(s["data"]),
        }
        for s in steps
    ]
    return found


def cases(
    view: ReadModelView,
    *,
    state: str | None,
    username: str | None,
    overdue: bool | None,
    limit: int,
    after: str | None,
    today: date,
    unresolved_after_days: int,
) -> Page:
    where, params = _filters(state, username, overdue, today, unresolved_after_days)
    where.insert(0, "seq > %(after)s")
    params.update({"after": cursor(after), "limit": page_size(limit) + 1})
    rows = view.query(
        f"SELECT {_CASE_COLUMNS} FROM rm_return_cases WHERE {' AND '.join(where)}"  # noqa: S608
        " ORDER BY seq LIMIT %(limit)s",
        params,
    )
    items = [_case_item(row, today, unresolved_after_days) for row in rows]
    reasons = _refusal_reasons(view, [i["id"] for i in items[:limit] if i["state"] == REFUSED])
    for item in items:
        item["refusal_reason"] = reasons.get(item["id"])
    return paged(items, limit, key="seq")


def counts(
    view: ReadModelView,
    *,
    state: str | None,
    username: str | None,
    overdue: bool | None,
    today: date,
    unresolved_after_days: int,
) -> list[dict[str, Any]]:
    """Per state, how many cases the filters keep (every page, not one): finance counts the
    refusals with ``state=refused``."""
    where, params = _filters(state, username, overdue, today, unresolved_after_days)
    condition = " AND ".join(where) or "TRUE"  # fixed texts; the values are parameters
    rows = view.query(
        "SELECT state, COUNT(*) AS count FROM rm_return_cases"  # noqa: S608
        f" WHERE {condition} GROUP BY state ORDER BY state",
        params,
    )
    return [{"state": r["state"], "count": int(r["count"])} for r in rows]


def _filters(
    state: str | None,
    username: str | None,
    overdue: bool | None,
    today: date,
    unresolved_after_days: int,
) -> tuple[list[str], dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {}
    if state == OPEN:  # a work queue: every case still in progress
        where.append(f"state IN ({', '.join(repr(s) for s in sorted(OPEN_STATES))})")
    elif state is not None:
        where.append("state = %(state)s")
        params["state"] = state
    if username is not None:
        where.append("username = %(username)s")
        params["username"] = username
    if overdue is not None:
        condition, overdue_params = overdue_where(today, unresolved_after_days)
        where.append(condition if overdue else f"NOT {condition}")
        params.update(overdue_params)
    return where, params


def _refusal_reasons(view: ReadModelView, case_ids: list[str]) -> dict[str, str]:
    """The policy's reason of each refused case named (at most a page's worth), by id: the
    data of its one step."""
    found: dict[str, str] = {}
    for start in range(0, len(case_ids), 100):  # bounded IN lists
        chunk = case_ids[start:start + 100]
        names = {f"id{n}": case_id for n, case_id in enumerate(chunk)}
        marks = ", ".join(f"%({name})s" for name in names)
        for row in view.query(
            "SELECT id, data FROM rm_return_case_steps"  # noqa: S608
            f" WHERE version = 1 AND id IN ({marks})",
            names,
        ):
            found[row["id"]] = json.loads(row["data"])["reason"]
    return found


# ``?state=open``: the cases still in progress (ledger.return_case.OPEN_STATES).
OPEN = "open"


def briefs(view: ReadModelView, case_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Kind, state and opening date of each case named (at most a page's worth), by id."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(case_ids), 100):  # bounded IN lists
        chunk = case_ids[start:start + 100]
        names = {f"id{n}": case_id for n, case_id in enumerate(chunk)}
        marks = ", ".join(f"%({name})s" for name in names)
        for row in view.query(
            "SELECT id, kind, state, opened_on FROM rm_return_cases"  # noqa: S608
            f" WHERE id IN ({marks})",
            names,
        ):
            found[row["id"]] = dict(row)
    return found


def _case_item(row: dict[str, Any], today: date, unresolved_after_days: int) -> dict[str, Any]:
    item = {k: row[k] for k in row if k not in ("items", "received_on", "ended_on")}
    item["items"] = json.loads(row["items"])
    item.update(case_status(row, today, unresolved_after_days))
    return item


# The day a case ended: the first of its steps that led to a final state (its steps' key,
# (id, version), finds them).
# A case is open until it is closed, rejected, expired, late, cancelled or refused (a resolved
# one is closed next: open until then).
_FINAL_STATES = (ENDED_STATES - {"resolved"}) | {REFUSED}
_ENDED_STATES_SQL = ", ".join(f"'{state}'" for state in sorted(_FINAL_STATES))
_ENDED_ON = (
    "(SELECT MIN(s.on_date) FROM rm_return_case_steps s"  # noqa: S608 (fixed texts)
    f" WHERE s.id = rm_return_cases.id AND s.state IN ({_ENDED_STATES_SQL})) AS ended_on"
)
_CASE_COLUMNS = (
    "id, username, currency, order_no, kind, state, opened_at, opened_on, shipped_on,"
    " guarantee_until, return_by, postmark_date, received_on, outcome, refund_amount,"
    f" freight_amount, items, seq, {_ENDED_ON}"
)
