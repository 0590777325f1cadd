"""How fast the read-model keeper applies events, on PostgreSQL (a fresh database, dropped after).

1. Backlog: events saved in bulk with no keeper running, then a keeper started: events applied
   per second until it has caught up (its ceiling).
2. Live: writer threads depositing one command per transaction at full rate while the keeper
   runs: writes per second, the keeper's lag (sampled), how long it takes to catch up once the
   writers stop, and PostgreSQL commits per deposit (``xact_commit``, everything included).

    .venv/bin/python -m bench.keeper_pace [--backlog 20000] [--writers 4] [--seconds 10]
"""

from __future__ import annotations

import threading
import time
import uuid

import click
import psycopg

from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.readmodels import ReadModelKeeper, ReadModels, prepare_read_models
from projections.store import open_application

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ACTOR = Actor("system:bench", "req-bench")
ACCOUNTS_IN_BACKLOG = 20


def save_backlog(settings: StoreSettings, events: int) -> None:
    """About ``events`` events (deposits, with a purchase every tenth) in few saves."""
    app = open_application(settings)
    per_account = max(1, events // ACCOUNTS_IN_BACKLOG)
    try:
        for n in range(ACCOUNTS_IN_BACKLOG):
            username = f"backlog.customer_{n}"
            app.open_account(username, "USD", actor=ACTOR)
            account = app.account(username)
            for d in range(per_account - 1):
                if d % 10 == 9:
                    account.pay_purchase(f"ORD-{d}", 1, actor=ACTOR)
                else:
                    account.receive_deposit(100, f"PAY-{d}", actor=ACTOR)
            app.save(account)
    finally:
        app.close()


def commits(dbname: str) -> int:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        row = admin.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (dbname,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def live(settings: StoreSettings, dbname: str, writers: int, seconds: float) -> None:
    app = open_application(settings)
    models = ReadModels(settings, app, pool_size=1)
    stop = threading.Event()
    written = [0] * writers

    def write(n: int) -> None:
        username = f"live.customer_{n}"
        app.open_account(username, "USD", actor=ACTOR)
        while not stop.is_set():
            app.deposit(username, 1, f"PAY-{written[n]}", actor=ACTOR)
            written[n] += 1

    try:
        models.wait_caught_up()
        before = commits(dbname)
        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        lags = []
        while time.perf_counter() - started < seconds:
            time.sleep(0.2)
            lags.append(models.status()["lag"])
        stop.set()
        for thread in threads:
            thread.join()
        wrote_s = time.perf_counter() - started
        stopped = time.perf_counter()
        models.wait_caught_up()
        caught_up_s = time.perf_counter() - stopped
        total = sum(written)
        per_deposit = (commits(dbname) - before) / total
        lags.sort()
        click.echo(
            f"live: {total} deposits by {writers} writers in {wrote_s:.1f} s"
            f" = {total / wrote_s:,.0f}/s; keeper lag p50 {lags[len(lags) // 2]},"
            f" max {lags[-1]} events; caught up {caught_up_s * 1000:.0f} ms after the writers"
            f" stopped; {per_deposit:.1f} PostgreSQL commits per deposit (all included)"
        )
    finally:
        models.close()
        app.close()


@click.command()
@click.option("--backlog", default=20_000, show_default=True, help="Events in the backlog.")
@click.option("--writers", default=4, show_default=True, help="Writer threads (live).")
@click.option("--seconds", default=10.0, show_default=True, help="How long the writers write.")
def main(backlog: int, writers: int, seconds: float) -> None:
    dbname = f"ledger_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        settings = StoreSettings.from_url(ADMIN_URL.rsplit("/", 1)[0] + f"/{dbname}")
        save_backlog(settings, backlog)
        prepare_read_models(settings)
        app = open_application(settings)
        models = ReadModels(settings, app, pool_size=1)
        keeper = ReadModelKeeper(settings)
        started = time.perf_counter()
        keeper.start()
        try:
            events = models.wait_caught_up()
            took = time.perf_counter() - started
            click.echo(f"backlog: {events} events applied in {took:.2f} s = {events / took:,.0f}/s")
            live(settings, dbname, writers, seconds)
        finally:
            keeper.stop()
            models.close()
            app.close()
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
