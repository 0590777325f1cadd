"""Accounts read model: balances per account, and each account's history of money events.

Rows: ``rm_accounts`` (posted, held; available = posted - held, which the table itself refuses
to see negative) and ``rm_account_history`` (one row per account event, with the balances after
it, so a balance as of any position or time is one indexed look-up).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ledger.account import Account
from projections.events import json_text, moment_text, own_fields, snake
from projections.views import BrokenReadModel, ReadModelProjection, Row

# How each account event moves (posted, held), by the sign of its amount.
MONEY_EFFECTS: dict[type[Any], tuple[int, int]] = {
    Account.DepositReceived: (+1, 0),
    Account.PurchasePaid: (-1, 0),
    Account.PurchaseFailed: (+1, 0),
    Account.BalanceRefundRequested: (0, +1),
    Account.BalanceRefundReleased: (0, -1),
    Account.BalanceRefundPaidOut: (-1, -1),
    Account.ReturnRefundCredited: (+1, 0),
    Account.FreightCharged: (-1, 0),
}

DDL = (
    "CREATE TABLE IF NOT EXISTS rm_accounts ("
    " account_id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, currency TEXT NOT NULL,"
    " posted BIGINT NOT NULL, held BIGINT NOT NULL, opened_at TEXT NOT NULL,"
    " version BIGINT NOT NULL, position BIGINT NOT NULL,"
    " CHECK (held >= 0), CHECK (posted - held >= 0))",
    "CREATE TABLE IF NOT EXISTS rm_account_history ("
    " account_id TEXT NOT NULL, position BIGINT NOT NULL, version BIGINT NOT NULL,"
    " type TEXT NOT NULL, amount BIGINT NOT NULL, posted_after BIGINT NOT NULL,"
    " held_after BIGINT NOT NULL, at TEXT NOT NULL, actor TEXT NOT NULL,"
    " correlation_id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (account_id, position))",
)


class AccountsProjection(ReadModelProjection):
    name = "accounts"
    ddl = DDL
    keys: ClassVar[Mapping[str, tuple[str, ...]]] = {"rm_accounts": ("account_id",)}
    handles = frozenset({Account.Opened, *MONEY_EFFECTS})

    def process_event(self, event: Any, position: int) -> None:
        kind = type(event)
        if kind is Account.Opened:
            account: Row = {
                "account_id": event.originator_id.hex,
                "username": event.username,
                "currency": event.currency,
                "posted": 0,
                "held": 0,
                "opened_at": moment_text(event.timestamp),
                "version": event.originator_version,
                "position": position,
            }
        elif kind in MONEY_EFFECTS:
            account = _moved(self.rows.get("rm_accounts", event.originator_id.hex), event, position)
        else:
            return
        self.rows.put("rm_accounts", account)
        self.rows.add("rm_account_history", _history(event, position, account))


def _moved(account: Row, event: Any, position: int) -> Row:
    posted_sign, held_sign = MONEY_EFFECTS[type(event)]
    posted = account["posted"] + posted_sign * event.amount
    held = account["held"] + held_sign * event.amount
    # The table checks the last row of a batch; this checks every event's.
    if held < 0 or posted - held < 0:
        raise BrokenReadModel(
            f"account {account['username']} at position {position}: posted {posted}, held {held}"
        )
    return {
        **account,
        "posted": posted,
        "held": held,
        "version": event.originator_version,
        "position": position,
    }


def _history(event: Any, position: int, account: Row) -> Row:
    data = own_fields(event)
    return {
        "account_id": account["account_id"],
        "position": position,
        "version": event.originator_version,
        "type": snake(type(event).__name__),
        "amount": data.get("amount", 0),
        "posted_after": account["posted"],
        "held_after": account["held"],
        "at": moment_text(event.timestamp),
        "actor": event.actor,
        "correlation_id": event.correlation_id,
        "data": json_text(data),
    }
