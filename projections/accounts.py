"""Accounts read model: balances per account, and each account's history of money events.

Rows: ``rm_accounts`` (posted, held; available = posted - held, which the table itself refuses
to see negative) and ``rm_account_history`` (one row per account event, with the balances after
it, so a balance as of any position or time is one indexed look-up).
"""

from __future__ import annotations

import json
from functools import singledispatchmethod
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from ledger.account import Account
from ledger.clock import rfc3339
from projections.events import own_fields, snake
from projections.views import ReadModelView, Statement

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

_OPEN = (
    "INSERT INTO rm_accounts (account_id, username, currency, posted, held, opened_at, version,"
    " position) VALUES (%(account_id)s, %(username)s, %(currency)s, 0, 0, %(at)s, %(version)s,"
    " %(position)s)"
)
_MOVE = (
    "UPDATE rm_accounts SET posted = posted + %(posted_delta)s, held = held + %(held_delta)s,"
    " version = %(version)s, position = %(position)s WHERE account_id = %(account_id)s"
)
_HISTORY = (
    "INSERT INTO rm_account_history (account_id, position, version, type, amount, posted_after,"
    " held_after, at, actor, correlation_id, data) SELECT %(account_id)s, %(position)s,"
    " %(version)s, %(type)s, %(amount)s, posted, held, %(at)s, %(actor)s, %(correlation_id)s,"
    " %(data)s FROM rm_accounts WHERE account_id = %(account_id)s"
)


class AccountsProjection(Projection[ReadModelView]):
    name = "accounts"
    ddl = DDL

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        statements: list[Statement] = []
        if type(domain_event) in MONEY_EFFECTS:
            posted_sign, held_sign = MONEY_EFFECTS[type(domain_event)]
            params = _params(domain_event, tracking)
            params["posted_delta"] = posted_sign * domain_event.amount
            params["held_delta"] = held_sign * domain_event.amount
            statements = [(_MOVE, params), (_HISTORY, params)]
        # Every other event is tracked too, so waiting for any position ends.
        self.view.record(tracking, statements)

    @process_event.register
    def _opened(self, domain_event: Account.Opened, tracking: Tracking) -> None:
        params = _params(domain_event, tracking)
        params.update(username=domain_event.username, currency=domain_event.currency)
        self.view.record(tracking, [(_OPEN, params), (_HISTORY, params)])


def _params(event: Any, tracking: Tracking) -> dict[str, Any]:
    data = own_fields(event)
    return {
        "account_id": event.originator_id.hex,
        "position": tracking.notification_id,
        "version": event.originator_version,
        "type": snake(type(event).__name__),
        "amount": data.get("amount", 0),
        "at": rfc3339(event.timestamp),
        "actor": event.actor,
        "correlation_id": event.correlation_id,
        "data": json.dumps(data, sort_keys=True),
    }
