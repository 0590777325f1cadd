"""A rebuild beside a running keeper puts a wrong read-model row right (``projections.replay``),
and it stays right once the keeper applies the next event to it, on both stores: the keeper
does not write the row again from the wrong copy it remembers from before the swap."""

from __future__ import annotations

from typing import Any

from ledger.identity import Actor
from projections.readmodels import ReadModelKeeper
from projections.replay import rebuild
from projections.views import _to_sqlite
from tests.audit.conftest import Ledger


def _posted(ledger: Ledger, username: str) -> int:
    account = ledger.read_models.account(username)
    assert account is not None
    return int(account["posted"])


def _behind_the_keepers_back(ledger: Ledger, sql: str, params: dict[str, Any]) -> None:
    view: Any = ledger.read_models.views["accounts"]
    with view.datastore.transaction(commit=True) as cursor:
        cursor.execute(_to_sqlite(sql) if ledger.settings.kind == "sqlite" else sql, params)


def test_a_row_a_rebuild_put_right_is_not_written_back_wrong_by_the_next_event(
    ledger: Ledger, system: Actor
) -> None:
    ledger.app.open_account("ann", "USD", actor=system)
    ledger.app.deposit("ann", 100, "PAY-1", actor=system)
    ledger.settle()
    ledger.stop_keeper()
    # Given a row gone wrong behind the keeper's back, which a keeper then read and remembers
    _behind_the_keepers_back(
        ledger, "UPDATE rm_accounts SET posted = posted + 1 WHERE username = %(u)s", {"u": "ann"}
    )
    keeper = ReadModelKeeper(ledger.settings, lock_retry_s=0.1)
    keeper.start()
    try:
        assert keeper.is_leader.wait(10)
        ledger.app.deposit("ann", 5, "PAY-2", actor=system)
        ledger.settle()
        assert _posted(ledger, "ann") == 106  # the keeper built on the wrong row

        # When a rebuild beside it puts the row right
        rebuild(ledger.settings, ledger.app, lock_timeout_s=30)
        assert _posted(ledger, "ann") == 105
        assert keeper.is_leader.is_set()  # the same keeper went on all along

        # Then the next event to the account builds on the row put right
        ledger.app.deposit("ann", 7, "PAY-3", actor=system)
        ledger.settle()
        assert _posted(ledger, "ann") == 112
    finally:
        keeper.stop()
