"""Time as the ledger tells it: UTC, RFC 3339 in one fixed width (text order is time order)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """``2026-11-26T09:00:00.000000Z``: microseconds always, so text order is time order."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat, not strftime: the same text at a third of the cost (read models write it for
    # every event they apply). It ends "+00:00" for UTC.
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"
