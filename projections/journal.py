"""Journal read model: the balanced postings of every money event (``ledger.journal``).

``rm_journal`` holds one row per posting with the event's log position, so any total — per
chart account, per kind of event, per order — can be summed up to any position. The account's
user name and currency come from its opening, kept in ``rm_journal_accounts``.

Its tables, its projection, and its queries (``entries`` a page at a time, ``all_entries``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from ledger import journal
from ledger.account import Account
from projections.events import moment_text, snake, uuid_text
from projections.paging import MAX_PAGE, Page, cursor, page_size, paged
from projections.views import ReadModelProjection, ReadModelView, Row

DDL = (
    "CREATE TABLE IF NOT EXISTS rm_journal_accounts ("
    " account_id TEXT PRIMARY KEY, username TEXT NOT NULL, currency TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rm_journal ("
    " position BIGINT NOT NULL, leg INTEGER NOT NULL, type TEXT NOT NULL,"
    " account TEXT NOT NULL, amount BIGINT NOT NULL, currency TEXT NOT NULL,"
    " username TEXT NOT NULL, order_no TEXT, event_id TEXT NOT NULL, at TEXT NOT NULL,"
    " PRIMARY KEY (position, leg), CHECK (amount <> 0))",
    "CREATE INDEX IF NOT EXISTS rm_journal_by_account ON rm_journal (account, position)",
    # What matches a money event to a bank statement or a case, beside its order number: a
    # deposit's payment reference, a payout's reference and request, a return's case (one
    # row per money event that has any). Added by issue 12: a store made before it fills
    # this table with ``ledger rebuild``.
    "CREATE TABLE IF NOT EXISTS rm_journal_references ("
    " position BIGINT PRIMARY KEY, payment_reference TEXT, payout_reference TEXT,"
    " case_id TEXT, request_id TEXT)",
)
# The event fields a journal entry carries as its references (None where the event has none).
REFERENCES = ("payment_reference", "payout_reference", "case_id", "request_id")


def event_id(event: Any) -> str:
    """A stored event's identity: its aggregate and version."""
    return f"{uuid_text(event.originator_id)}/{event.originator_version}"


class JournalProjection(ReadModelProjection):
    name = "journal"
    ddl = DDL
    keys: ClassVar[Mapping[str, tuple[str, ...]]] = {"rm_journal_accounts": ("account_id",)}
    handles = frozenset({Account.Opened, *journal.MONEY_EVENTS})

    def process_event(self, event: Any, position: int) -> None:
        kind = type(event)
        if kind is Account.Opened:
            owner: Row = {
                "account_id": event.originator_id.hex,
                "username": event.username,
                "currency": event.currency,
            }
            self.rows.put("rm_journal_accounts", owner)
        else:
            owner = self.rows.get("rm_journal_accounts", event.originator_id.hex)
            username = owner["username"]
            kind_text, order_no = snake(kind.__name__), getattr(event, "order_no", None)
            identity, at = event_id(event), moment_text(event.timestamp)
            references = _references(event)
            if any(value is not None for value in references.values()):
                self.rows.add("rm_journal_references", {"position": position, **references})
            for leg, posting in enumerate(journal.postings(event, username, owner["currency"])):
                self.rows.add(
                    "rm_journal",
                    {
                        "position": position,
                        "leg": leg,
                        "type": kind_text,
                        "account": posting.account,
                        "amount": posting.amount,
                        "currency": posting.currency,
                        "username": username,
                        "order_no": order_no,
                        "event_id": identity,
                        "at": at,
                    },
                )


def _references(event: Any) -> dict[str, str | None]:
    return {
        "payment_reference": getattr(event, "reference", None),
        "payout_reference": getattr(event, "payout_reference", None),
        "case_id": getattr(event, "case_id", None),
        "request_id": getattr(event, "request_id", None),
    }


# -- queries -----------------------------------------------------------------------------------


def entries(
    view: ReadModelView,
    *,
    account: str | None,
    limit: int,
    after: str | None,
    currency: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Page:
    """Balanced postings per money event, in log order; ``account`` keeps the events that
    post to that chart account (all their postings shown), ``currency`` those in it, and
    ``since``/``until`` (RFC 3339 text, as stored) those recorded at or after ``since`` and
    before ``until``."""
    params: dict[str, Any] = {"after": cursor(after), "limit": page_size(limit) + 1}
    events_sql = "SELECT DISTINCT position FROM rm_journal WHERE position > %(after)s"
    if account is not None:
        events_sql += " AND account = %(account)s"
        params["account"] = account
    if currency is not None:
        events_sql += " AND currency = %(currency)s"
        params["currency"] = currency
    if since is not None:
        events_sql += " AND at >= %(since)s"
        params["since"] = since
    if until is not None:
        events_sql += " AND at < %(until)s"
        params["until"] = until
    positions = [
        r["position"]
        for r in view.query(f"{events_sql} ORDER BY position LIMIT %(limit)s", params)
    ]
    rows = view.query(
        "SELECT position, leg, type, account, amount, currency, username, order_no, event_id,"
        " at FROM rm_journal WHERE position >= %(first)s AND position <= %(last)s"
        " ORDER BY position, leg",
        {"first": positions[0] if positions else 0, "last": positions[-1] if positions else -1},
    )
    wanted = set(positions)
    entries: dict[int, dict[str, Any]] = {}
    for r in rows:
        if r["position"] not in wanted:
            continue
        entry = entries.setdefault(
            r["position"],
            {
                "position": r["position"],
                "type": r["type"],
                "event_id": r["event_id"],
                "username": r["username"],
                "order_no": r["order_no"],
                "at": r["at"],
                "currency": r["currency"],
                "postings": [],
            },
        )
        entry["postings"].append({"account": r["account"], "amount": r["amount"]})
    found: dict[int, dict[str, Any]] = {}
    if positions:
        for r in view.query(
            "SELECT position, payment_reference, payout_reference, case_id, request_id"
            " FROM rm_journal_references WHERE position >= %(first)s AND position <= %(last)s",
            {"first": positions[0], "last": positions[-1]},
        ):
            found[r["position"]] = r
    for position, entry in entries.items():
        references = found.get(position, {})
        entry.update({name: references.get(name) for name in REFERENCES})
    return paged(list(entries.values()), limit, key="position")


def all_entries(view: ReadModelView, *, currency: str | None = None) -> Iterator[dict[str, Any]]:
    """Every journal entry in log order (of one currency, if given), a page at a time."""
    after: str | None = None
    while True:
        page = entries(view, account=None, limit=MAX_PAGE, after=after, currency=currency)
        yield from page.items
        if page.next is None:
            return
        after = page.next

