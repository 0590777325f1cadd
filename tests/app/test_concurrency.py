"""Concurrency, on both stores: no available balance below zero and no lost update, whether the
writers are threads of one process or two processes (two separately opened applications)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ledger.application import LedgerApplication
from ledger.errors import InsufficientFunds, LedgerError
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.audit import verify
from tests.app.conftest import open_funded

T = TypeVar("T")


def race(workers: int, jobs: list[Callable[[], T]]) -> list[T | LedgerError]:
    """Run the jobs from ``workers`` threads released together; refusals are results, any
    other exception fails the test."""
    start = threading.Barrier(min(workers, len(jobs)))

    def run(job: Callable[[], T], index: int) -> T | LedgerError:
        if index < workers:
            start.wait(timeout=10)
        try:
            return job()
        except LedgerError as refused:
            return refused

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run, job, n) for n, job in enumerate(jobs)]
        return [f.result(timeout=60) for f in futures]


def test_sixty_parallel_purchases_spend_a_balance_of_twenty_exactly_once(
    app: LedgerApplication, system: Actor,
) -> None:
    open_funded(app, system, amount=2_000)
    purchases = [
        lambda n=n: app.purchase("alice", f"ORD-{n}", 100, actor=system) for n in range(60)
    ]

    results = race(16, purchases)

    refused = [r for r in results if isinstance(r, LedgerError)]
    assert all(isinstance(r, InsufficientFunds) for r in refused), refused
    assert len(results) - len(refused) == 20
    account = app.account("alice")
    assert (account.posted, account.available) == (0, 0)
    assert len(account.orders) == 20


def test_two_processes_depositing_to_one_account_lose_no_update(
    app: LedgerApplication, second_process: LedgerApplication, system: Actor,
) -> None:
    app.open_account("alice", "USD", actor=system)
    deposits = [
        lambda n=n: (app if n % 2 else second_process).deposit(
            "alice", n + 1, f"PAY-{n}", actor=system
        )
        for n in range(80)
    ]

    results = race(8, deposits)

    assert not [r for r in results if isinstance(r, LedgerError)]
    for process in (app, second_process):
        account = process.account("alice")
        assert account.posted == sum(range(1, 81))
        assert len(account.deposits) == 80
        assert account.version == 81


def test_two_processes_writing_at_once_leave_one_sealed_log_without_gaps(
    app: LedgerApplication, second_process: LedgerApplication, system: Actor,
    settings: StoreSettings,
) -> None:
    # Each process's writer last wrote what the other has since written past: the position it
    # would give next is taken, and it reads the log's head again (PostgreSQL)
    app.open_account("alice", "USD", actor=system)
    second_process.open_account("bob", "USD", actor=system)
    deposits = [
        lambda n=n: (app, second_process)[n % 2].deposit(
            ("alice", "bob")[n % 2], n + 1, f"PAY-{n}", actor=system
        )
        for n in range(80)
    ]

    results = race(8, deposits)

    assert not [r for r in results if isinstance(r, LedgerError)]
    log = app.recorder.select_notifications(start=1, limit=1_000)
    assert [n.id for n in log] == list(range(1, 83))
    report = verify(settings, app, read_models=False)
    assert report.ok and report.damage == [] and report.events_checked == 82


def test_two_processes_purchasing_from_one_account_never_overdraw_it(
    app: LedgerApplication, second_process: LedgerApplication, system: Actor,
) -> None:
    open_funded(app, system, amount=2_000)
    purchases = [
        lambda n=n: (app if n % 2 else second_process).purchase(
            "alice", f"ORD-{n}", 100, actor=system
        )
        for n in range(40)
    ]

    results = race(8, purchases)

    refused = [r for r in results if isinstance(r, LedgerError)]
    assert all(isinstance(r, InsufficientFunds) for r in refused), refused
    assert len(results) - len(refused) == 20
    assert app.account("alice").available == 0


def test_refund_requests_and_purchases_racing_for_one_balance_never_overdraw_it(
    app: LedgerApplication, second_process: LedgerApplication, system: Actor, cs: Actor,
) -> None:
    app.open_account("alice", "USD", actor=system)
    for n in range(15):
        app.deposit("alice", 100, f"PAY-{n}", actor=system)
    jobs: list[Callable[[], object]] = []
    for n in range(15):
        jobs.append(lambda n=n: app.purchase("alice", f"ORD-{n}", 100, actor=system))
        jobs.append(
            lambda n=n: second_process.request_refund(
                "alice", f"PAY-{n}", 100, "wants it back", actor=cs
            )
        )

    results = race(8, jobs)

    refused = [r for r in results if isinstance(r, LedgerError)]
    assert all(isinstance(r, InsufficientFunds) for r in refused), refused
    assert len(results) - len(refused) == 15
    account = app.account("alice")
    assert account.available == 0
    assert account.posted == 1_500 - 100 * len(account.orders)
    assert account.held == 100 * len(account.holds)
