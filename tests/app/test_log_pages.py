"""Pages of the event log made by a child process on PostgreSQL (``api.log_pages``): the same
page the server's thread makes, gzipped when it can never change, refused where the history is
damaged; a child that dies is started again, and meanwhile the thread makes the pages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from api import log_pages
from api.log_pages import PageMaker, PageMakerFailed, Placed, made
from api.sealed_pages import unpack
from ledger.application import LedgerApplication
from ledger.commands import Deposit
from ledger.errors import HistoryDamaged
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.readmodels import log_page
from tests.app.conftest import last_position, open_funded
from tests.audit.conftest import Intruder

on_postgres = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)


@pytest.fixture
def maker(settings: StoreSettings) -> Iterator[PageMaker]:
    with closing(PageMaker(settings)) as made_by:
        yield made_by


def deposits(app: LedgerApplication, system: Actor, count: int) -> None:
    open_funded(app, system)
    for n in range(count):
        app.execute(Deposit("alice", 100 + n, f"PAY-{n}"), actor=system)


def all_placed(after: int, count: int) -> Placed:
    """As the notary answers once its tree holds every event (leaf index = position - 1)."""
    return Placed(after, list(range(after + 1, after + 1 + count)))


@on_postgres
def test_the_child_makes_the_page_the_thread_makes_gzipped_once_it_cannot_change(
    app: LedgerApplication, system: Actor, maker: PageMaker,
) -> None:
    deposits(app, system, 5)
    head = last_position(app)
    full = maker.make("1", 3, all_placed(1, 3))
    assert full == made(log_page(app, limit=3, after="1"), all_placed(1, 3))
    assert full.packed is not None and unpack(full.packed) == full.body
    assert b'"leaf_index":1' in full.body and b'"next":"4"' in full.body
    # the head page may still grow; a page whose events are not all placed may still change
    assert maker.make("4", 10, all_placed(4, head - 4)).packed is None
    assert maker.make("1", 3, Placed(1, [2, 3])).packed is None
    assert maker.pages == 3 and maker.failures == 0


@on_postgres
def test_a_page_beginning_at_an_event_written_behind_the_services_back_is_refused(
    app: LedgerApplication, settings: StoreSettings, system: Actor, maker: PageMaker,
) -> None:
    deposits(app, system, 1)
    forged = Intruder(settings).forge_deposit(last_position(app), 5_000_000, "FORGED-1")
    before = maker.make(None, 1000, None)
    assert b'"position":%d' % (forged - 1) in before.body
    assert b'"position":%d' % forged not in before.body
    with pytest.raises(HistoryDamaged) as refused:
        maker.make(str(forged - 1), 1000, None)
    assert refused.value.position == forged and f"position {forged}" in refused.value.detail


@on_postgres
def test_a_child_that_died_is_started_again_for_the_next_page(
    app: LedgerApplication, system: Actor, maker: PageMaker,
) -> None:
    deposits(app, system, 2)
    first = maker.make(None, 2, None)
    child = maker.child
    assert child is not None and child.is_alive()
    child.kill()
    child.join(10)
    assert maker.make(None, 2, None) == first
    assert maker.child is not None and maker.child.pid != child.pid and maker.failures == 0


@on_postgres
def test_a_child_that_cannot_answer_leaves_the_pages_to_the_thread_for_a_while(
    settings: StoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_key = replace(settings, chain_key_file=tmp_path / "no.key")  # the child cannot start
    with closing(PageMaker(no_key)) as maker:
        with pytest.raises(PageMakerFailed):
            maker.make(None, 2, None)
        assert maker.failures == 1 and maker.child is None
        with pytest.raises(PageMakerFailed, match="moments ago"):  # no child started meanwhile
            maker.make(None, 2, None)
        monkeypatch.setattr(log_pages, "RESTART_AFTER_S", 0.0)
        with pytest.raises(PageMakerFailed):  # tried again, and failed again
            maker.make(None, 2, None)
        assert maker.failures == 2


@on_postgres
def test_the_child_ends_when_the_server_closes_it(settings: StoreSettings, app: LedgerApplication,
                                                  system: Actor, maker: PageMaker) -> None:
    deposits(app, system, 1)
    maker.make(None, 10, None)
    child = maker.child
    assert child is not None
    maker.close()
    assert not child.is_alive() and child.exitcode == 0


@on_postgres
def test_a_child_asked_for_no_page_a_while_ends_and_the_next_page_starts_another(
    app: LedgerApplication, system: Actor, maker: PageMaker, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(log_pages, "IDLE_STOP_S", 0.2)
    monkeypatch.setattr(log_pages, "REAP_EVERY_S", 0.05)
    deposits(app, system, 1)
    first = maker.make(None, 10, None)
    child = maker.child
    assert child is not None
    deadline = time.monotonic() + 10
    while maker.child is not None:
        assert time.monotonic() < deadline, "the idle child was never ended"
        time.sleep(0.05)
    assert not child.is_alive() and child.exitcode == 0
    assert maker.make(None, 10, None) == first
    assert maker.child is not None and maker.child.pid != child.pid and maker.failures == 0
