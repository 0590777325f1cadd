"""Journal read model: the balanced postings of every money event (``ledger.journal``).

``rm_journal`` holds one row per posting with the event's log position, so any total — per
chart account, per kind of event, per order — can be summed up to any position. The account's
user name and currency come from its opening, kept in ``rm_journal_accounts``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ledger import journal
from ledger.account import Account
from projections.events import moment_text, snake, uuid_text
from projections.views import ReadModelProjection, Row

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
