"""Helpers for application tests: each runs once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.application import LedgerApplication
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.store import open_application


def last_position(app: LedgerApplication) -> int:
    """The position of the last event in the store's log (0 when it is empty)."""
    return app.recorder.max_notification_id() or 0


def open_funded(
    app: LedgerApplication, actor: Actor, username: str = "alice", amount: int = 2_000,
    currency: str = "USD",
) -> None:
    app.open_account(username, currency, actor=actor)
    app.deposit(username, amount, "PAY-FUND", actor=actor)


@pytest.fixture
def second_process(settings: StoreSettings, app: LedgerApplication) -> Iterator[LedgerApplication]:
    """Another application on the same store, as another ``ledger serve`` process would be."""
    other = open_application(settings)
    try:
        yield other
    finally:
        other.close()
