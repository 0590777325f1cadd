"""Accounts read model: balances per account, and each account's history of money events.

Rows: ``rm_accounts`` (posted, held; available = posted - held, which the table itself refuses
to see negative) and ``rm_account_history`` (one row per account event, with the balances after
it, so a balance as of any position or time is one indexed look-up).

The module holds the read model whole: its tables, its projection, and its queries
(``account``, ``history``, ``balance``; ``projections.readmodels.ReadModels`` calls them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from ledger.account import Account, account_id
from ledger.clock import rfc3339
from projections.events import json_text, moment_text, own_fields, snake
from projections.paging import MAX_POSITION, Page, Query, cursor, page_size, paged
from projections.views import BrokenReadModel, ReadModelProjection, ReadModelView, Row

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
    # Finance's reconciliation asks for the lowest available balance any account ever had
    # (``projections.reconciliation``): found at the head of this index, not by reading the
    # whole history. Added after stores were made: IF NOT EXISTS builds it on the next start.
    "CREATE INDEX IF NOT EXISTS rm_account_history_by_available"
    " ON rm_account_history ((posted_after - held_after))",
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


# -- queries -----------------------------------------------------------------------------------


def account_query(username: str) -> Query:
    """One account's balances now: its row, or None."""

    def shape(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        if not rows:
            return None
        row = rows[0]
        available = row["posted"] - row["held"]
        return {**row, "available": available, "refundable": available}

    return Query(
        "SELECT username, currency, posted, held, opened_at, version FROM rm_accounts"
        " WHERE account_id = %(id)s",
        {"id": account_id(username).hex},
        shape,
        keepable=True,
    )


def account(view: ReadModelView, username: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = account_query(username).on(view)
    return found


def history(view: ReadModelView, username: str, *, limit: int, after: str | None) -> Page:
    rows = view.query(
        "SELECT position, type, amount, posted_after, held_after, at, actor, correlation_id,"
        " data FROM rm_account_history WHERE account_id = %(id)s AND position > %(after)s"
        " ORDER BY position LIMIT %(limit)s",
        {"id": account_id(username).hex, "after": cursor(after), "limit": page_size(limit) + 1},
    )
    items = [
        {
            "position": r["position"],
            "type": r["type"],
            "amount": r["amount"],
            **_signed(r["type"], r["amount"]),
            "posted_after": r["posted_after"],
            "available_after": r["posted_after"] - r["held_after"],
            "at": r["at"],
            "actor": r["actor"],
            "correlation_id": r["correlation_id"],
            "data": json.loads(r["data"]),
        }
        for r in rows
    ]
    return paged(items, limit, key="position")


# An event's name in history (``purchase_paid``) -> how it moves (posted, held).
_EFFECT_BY_NAME = {snake(kind.__name__): effect for kind, effect in MONEY_EFFECTS.items()}


def _signed(name: str, amount: int) -> dict[str, int]:
    """The amount with its sign: how the event moved the posted balance (a purchase is
    negative, a deposit positive) and the available one (a hold is negative)."""
    posted_sign, held_sign = _EFFECT_BY_NAME.get(name, (0, 0))
    return {
        "signed_amount": posted_sign * amount,
        "available_change": (posted_sign - held_sign) * amount,
    }


def balance_query(
    username: str, *, at_position: int | None = None, as_of: datetime | None = None
) -> Query:
    """The balances as they stood at a log position or a moment (the latest event at or before
    it); None when the account did not exist yet. One statement for the account and its row;
    unbounded ends are the largest position and the latest time."""

    def shape(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        if not rows:
            return None
        row = rows[0]
        available = row["posted_after"] - row["held_after"]
        return {
            "username": row["username"],
            "currency": row["currency"],
            "posted": row["posted_after"],
            "held": row["held_after"],
            "available": available,
            "refundable": available,
            "position": row["position"],
            "at": row["at"],
        }

    return Query(
        "SELECT a.username, a.currency, h.position, h.posted_after, h.held_after, h.at"
        " FROM rm_accounts a JOIN rm_account_history h ON h.account_id = a.account_id"
        " WHERE a.account_id = %(id)s AND h.position <= %(position)s AND h.at <= %(at)s"
        " ORDER BY h.position DESC LIMIT 1",
        {
            "id": account_id(username).hex,
            "position": MAX_POSITION if at_position is None else at_position,
            "at": "9999" if as_of is None else rfc3339(as_of),
        },
        shape,
        keepable=True,
    )


def balance(
    view: ReadModelView,
    username: str,
    *,
    at_position: int | None = None,
    as_of: datetime | None = None,
) -> dict[str, Any] | None:
    query = balance_query(username, at_position=at_position, as_of=as_of)
    found: dict[str, Any] | None = query.on(view)
    return found


def customers(
    view: ReadModelView,
    *,
    prefix: str | None,
    currency: str | None,
    with_balance: bool | None,
    limit: int,
    after: str | None,
) -> Page:
    """Customers' accounts in user-name order, a page at a time (``after``: the last user name
    shown); by name prefix, currency, and whether anything is available."""
    where = ["username > %(after)s"]
    params: dict[str, Any] = {"after": after or "", "limit": page_size(limit) + 1}
    if prefix:
        where.append("substr(username, 1, %(length)s) = %(prefix)s")
        params.update(prefix=prefix, length=len(prefix))
    if currency is not None:
        where.append("currency = %(currency)s")
        params["currency"] = currency
    if with_balance is not None:
        where.append("posted - held > 0" if with_balance else "posted - held = 0")
    rows = view.query(
        "SELECT username, currency, posted, held, opened_at, version FROM rm_accounts"  # noqa: S608
        f" WHERE {' AND '.join(where)} ORDER BY username LIMIT %(limit)s",
        params,
    )
    items = [
        {**r, "available": r["posted"] - r["held"], "refundable": r["posted"] - r["held"]}
        for r in rows
    ]
    shown = items[:limit]
    return Page(shown, shown[-1]["username"] if len(items) > limit else None)
