"""Journal read model: the balanced postings of every money event (``ledger.journal``).

``rm_journal`` holds one row per posting with the event's log position, so any total — per
chart account, per kind of event, per order — can be summed up to any position. The account's
user name and currency come from its opening, kept in ``rm_journal_accounts``.
"""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from ledger import journal
from ledger.account import Account
from ledger.clock import rfc3339
from projections.events import snake
from projections.views import ReadModelView, Statement

DDL = (
    "CREATE TABLE IF NOT EXISTS rm_journal_accounts ("
    " account_id TEXT PRIMARY KEY, username TEXT NOT NULL, currency TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rm_journal ("
    " position BIGINT NOT NULL, leg INTEGER NOT NULL, type TEXT NOT NULL,"
    " account TEXT NOT NULL, amount BIGINT NOT NULL, currency TEXT NOT NULL,"
    " username TEXT NOT NULL, order_no TEXT, event_id TEXT NOT NULL, at TEXT NOT NULL,"
    " PRIMARY KEY (position, leg), CHECK (amount <> 0))",
    "CREATE INDEX IF NOT EXISTS rm_journal_by_account ON rm_journal (account, position)",
)

_OPENED = (
    "INSERT INTO rm_journal_accounts (account_id, username, currency)"
    " VALUES (%(account_id)s, %(username)s, %(currency)s)"
)
_POSTING = (
    "INSERT INTO rm_journal (position, leg, type, account, amount, currency, username, order_no,"
    " event_id, at) VALUES (%(position)s, %(leg)s, %(type)s, %(account)s, %(amount)s,"
    " %(currency)s, %(username)s, %(order_no)s, %(event_id)s, %(at)s)"
)


def event_id(event: Any) -> str:
    """A stored event's identity: its aggregate and version."""
    return f"{event.originator_id}/{event.originator_version}"


class JournalProjection(Projection[ReadModelView]):
    name = "journal"
    ddl = DDL

    def __init__(self, view: ReadModelView) -> None:
        super().__init__(view)
        # account id -> (user name, currency): fixed at opening, so safe to remember
        self._owners: dict[str, tuple[str, str]] = {}

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        statements: list[Statement] = []
        if type(domain_event) in journal.MONEY_EVENTS:
            username, currency = self._owner(domain_event.originator_id.hex)
            common = {
                "position": tracking.notification_id,
                "type": snake(type(domain_event).__name__),
                "username": username,
                "order_no": getattr(domain_event, "order_no", None),
                "event_id": event_id(domain_event),
                "at": rfc3339(domain_event.timestamp),
            }
            for leg, posting in enumerate(journal.postings(domain_event, username, currency)):
                statements.append(
                    (
                        _POSTING,
                        {
                            **common,
                            "leg": leg,
                            "account": posting.account,
                            "amount": posting.amount,
                            "currency": posting.currency,
                        },
                    )
                )
        self.view.record(tracking, statements)

    @process_event.register
    def _opened(self, domain_event: Account.Opened, tracking: Tracking) -> None:
        params = {
            "account_id": domain_event.originator_id.hex,
            "username": domain_event.username,
            "currency": domain_event.currency,
        }
        # Remembered now: in a batched replay the row is not committed before the next event.
        self._owners[params["account_id"]] = (params["username"], params["currency"])
        self.view.record(tracking, [(_OPENED, params)])

    def _owner(self, account_id: str) -> tuple[str, str]:
        if account_id not in self._owners:
            rows = self.view.query(
                "SELECT username, currency FROM rm_journal_accounts WHERE account_id = %(id)s",
                {"id": account_id},
            )
            assert rows, f"a money event of account {account_id} before its opening"
            self._owners[account_id] = (rows[0]["username"], rows[0]["currency"])
        return self._owners[account_id]
