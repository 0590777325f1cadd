"""Unmatched money, which DOMAIN.md asks to stand out: what finance looks into by hand.

- ``deposits_never_spent``: accounts that received deposits and never paid for anything: its
  ``amount`` is what they have available now (the money still unmatched; what they hold for
  refund requests shows in the last two sections), its ``deposited`` what they paid in;
- ``idle_balances``: accounts with money available whose last event is older than a cut-off;
- ``refunds_waiting``: balance-refund requests still waiting for finance (requested);
- ``payouts_not_paid``: requests approved but not paid out.

Each is one currency's (or every currency's), counted and summed over all that match, per
currency (and over the section when it keeps to one currency), with at most ``limit`` of them
listed, oldest first. Read from the accounts and refund-requests read
models.
"""

from __future__ import annotations

from typing import Any

from projections.paging import page_size
from projections.views import ReadModelView


def _currency_clause(currency: str | None, column: str) -> str:
    # the column is ours; the currency a parameter
    return "" if currency is None else f" AND {column} = %(currency)s"


def _section(
    view: ReadModelView, sql: str, params: dict[str, Any], limit: int, **sums: str
) -> dict[str, Any]:
    """Count every row the query finds and sum each of its ``sums`` columns (in the database,
    by the name given) per currency, and list the first ``limit`` of them. A sum over the whole
    section is given only when the query keeps to one currency (``params["currency"]``): minor
    units of two currencies do not add up; ``by_currency`` carries each currency's."""
    summed = "".join(f", COALESCE(SUM({column}), 0) AS {name}" for name, column in sums.items())
    rows = view.query(
        f"SELECT currency, COUNT(*) AS count{summed} FROM ({sql}) AS found"  # noqa: S608 (fixed texts)
        " GROUP BY currency ORDER BY currency",
        params,
    )
    by_currency = [
        {"currency": r["currency"], "count": int(r["count"]), **{n: int(r[n]) for n in sums}}
        for r in rows
    ]
    one_currency = params.get("currency") is not None
    items = view.query(f"{sql} LIMIT %(limit)s", {**params, "limit": limit})
    return {
        "count": sum(c["count"] for c in by_currency),
        **{n: sum(c[n] for c in by_currency) if one_currency else None for n in sums},
        "by_currency": by_currency,
        "items": items,
    }


def deposits_never_spent(
    accounts: ReadModelView, *, currency: str | None, limit: int
) -> dict[str, Any]:
    sql = (
        "SELECT a.username, a.currency, SUM(h.amount) AS deposited,"  # noqa: S608 (fixed texts)
        " a.posted - a.held AS available, MIN(h.at) AS first_deposit_at"
        " FROM rm_accounts a JOIN rm_account_history h ON h.account_id = a.account_id"
        " WHERE h.type = 'deposit_received'" + _currency_clause(currency, "a.currency")
        + " AND NOT EXISTS (SELECT 1 FROM rm_account_history p"
        " WHERE p.account_id = a.account_id AND p.type = 'purchase_paid')"
        " GROUP BY a.account_id, a.username, a.currency, a.posted, a.held"
        " ORDER BY first_deposit_at"
    )
    found = _section(accounts, sql, {"currency": currency}, limit, amount="available",
                     deposited="deposited")
    found["items"] = [{**r, "deposited": int(r["deposited"])} for r in found["items"]]
    return found


def idle_balances(
    accounts: ReadModelView, *, currency: str | None, idle_before: str, limit: int
) -> dict[str, Any]:
    sql = (
        "SELECT a.username, a.currency, a.posted - a.held AS available,"  # noqa: S608 (fixed texts)
        " h.at AS last_event_at FROM rm_accounts a JOIN rm_account_history h"
        " ON h.account_id = a.account_id AND h.position = a.position"
        " WHERE a.posted - a.held > 0 AND h.at < %(before)s"
        + _currency_clause(currency, "a.currency") + " ORDER BY h.at"
    )
    return _section(accounts, sql, {"currency": currency, "before": idle_before}, limit,
                    amount="available")


def requests_in(
    requests: ReadModelView, status: str, *, currency: str | None, limit: int
) -> dict[str, Any]:
    sql = (
        "SELECT id, username, currency, order_no, amount, requested_at, updated_at"  # noqa: S608 (fixed texts)
        " FROM rm_refund_requests WHERE status = %(status)s"
        + _currency_clause(currency, "currency") + " ORDER BY requested_at"
    )
    return _section(requests, sql, {"currency": currency, "status": status}, limit,
                    amount="amount")


def report(
    accounts: ReadModelView,
    requests: ReadModelView,
    *,
    currency: str | None,
    idle_before: str,
    limit: int,
) -> dict[str, Any]:
    limit = page_size(limit)
    return {
        "currency": currency,
        "idle_before": idle_before,
        "deposits_never_spent": deposits_never_spent(accounts, currency=currency, limit=limit),
        "idle_balances": idle_balances(
            accounts, currency=currency, idle_before=idle_before, limit=limit
        ),
        "refunds_waiting": requests_in(requests, "requested", currency=currency, limit=limit),
        "payouts_not_paid": requests_in(requests, "approved", currency=currency, limit=limit),
    }
