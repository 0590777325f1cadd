"""A rebuild beside a running keeper puts a wrong read-model row right (``projections.replay``),
and it stays right once the keeper applies the next event to it, on both stores: the keeper
does not write the row again from the wrong copy it remembers from before the swap.

On PostgreSQL the swap may also come while the keeper is building a batch (the keeper takes the
swap's fence only inside its write transaction, ``projections.leadership.SwapFence``): the
batch, built on the wrong copy, is rolled back and applied again on the fresh rows. (On SQLite
the keeper holds the fence around its whole batch, so no swap comes meanwhile.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from eventsourcing.persistence import Notification

from ledger.identity import Actor
from projections.batches import Batch, BatchApplier
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


@contextmanager
def a_keeper_that_built_on_a_wrong_row(ledger: Ledger, system: Actor) -> Iterator[ReadModelKeeper]:
    """Ann's balance row gone wrong behind the keeper's back (101 for 100), which a keeper then
    read, remembers, and built a deposit of 5 on (106)."""
    ledger.app.open_account("ann", "USD", actor=system)
    ledger.app.deposit("ann", 100, "PAY-1", actor=system)
    ledger.settle()
    ledger.stop_keeper()
    _behind_the_keepers_back(
        ledger, "UPDATE rm_accounts SET posted = posted + 1 WHERE username = %(u)s", {"u": "ann"}
    )
    keeper = ReadModelKeeper(ledger.settings, lock_retry_s=0.1)
    keeper.start()
    try:
        assert keeper.is_leader.wait(10)
        ledger.app.deposit("ann", 5, "PAY-2", actor=system)
        ledger.settle()
        assert _posted(ledger, "ann") == 106
        yield keeper
    finally:
        keeper.stop()


def test_a_row_a_rebuild_put_right_is_not_written_back_wrong_by_the_next_event(
    ledger: Ledger, system: Actor
) -> None:
    with a_keeper_that_built_on_a_wrong_row(ledger, system) as keeper:
        # When a rebuild beside it puts the row right
        rebuild(ledger.settings, ledger.app, lock_timeout_s=30)
        assert _posted(ledger, "ann") == 105
        assert keeper.is_leader.is_set()  # the same keeper went on all along

        # Then the next event to the account builds on the row put right
        ledger.app.deposit("ann", 7, "PAY-3", actor=system)
        ledger.settle()
        assert _posted(ledger, "ann") == 112


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_batch_built_on_rows_a_swap_replaced_meanwhile_is_applied_again_on_the_fresh_ones(
    ledger: Ledger, system: Actor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="projections.readmodels")
    with a_keeper_that_built_on_a_wrong_row(ledger, system):
        # When a rebuild swaps fresh read models in just after the keeper built its next batch
        # (a deposit of 7, on the 106 it remembers), before that batch is written
        swapped = threading.Event()
        build = BatchApplier.prepare

        def prepare_then_swap(self: BatchApplier, batch: Sequence[Notification]) -> Batch | None:
            built = build(self, batch)
            if threading.current_thread().name == "read-model-keeper" and built is not None \
                    and not swapped.is_set():
                swapped.set()
                # fresh read models at the position the live ones stand (this batch's start):
                # the batch's move of the tracking records would still find them there
                rebuild(ledger.settings, ledger.app, lock_timeout_s=30)
            return built

        monkeypatch.setattr(BatchApplier, "prepare", prepare_then_swap)
        ledger.app.deposit("ann", 7, "PAY-3", actor=system)
        ledger.settle()

        # Then the batch is written on the fresh rows, and the keeper went on (it did not fail
        # and start again)
        assert swapped.is_set()
        assert _posted(ledger, "ann") == 112
        assert [r.getMessage() for r in caplog.records if "starting again" in r.getMessage()] == []
        assert any("applied again" in r.getMessage() for r in caplog.records)
        ledger.app.deposit("ann", 1, "PAY-4", actor=system)
        ledger.settle()
        assert _posted(ledger, "ann") == 113
