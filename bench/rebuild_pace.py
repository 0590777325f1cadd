"""``ledger rebuild``'s pace beside the pace of merely reading and decoding the same events, on
PostgreSQL, measured in the same run on the same database (these machines are shared and noisy:
only the ratio means much, so the two alternate for a few rounds).

Reading and decoding: ``select_notifications`` in batches and ``app.mapper.to_domain_event``
for each event, nothing else. Rebuild: ``projections.replay.rebuild`` (drop every read model,
replay the whole log into it).

    .venv/bin/python -m bench.rebuild_pace [--events 100000] [--rounds 3] [--database NAME]

Without ``--database`` it makes a fresh database with about ``--events`` events (accounts opened,
deposits with a purchase every tenth, saved many to a save) and drops it after.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable

import click
import psycopg

from ledger.application import LedgerApplication
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.readmodels import prepare_read_models
from projections.replay import REPLAY_BATCH, rebuild
from projections.store import open_application

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ACTOR = Actor("system:bench", "req-bench")
EVENTS_PER_ACCOUNT = 1000


def save_events(app: LedgerApplication, events: int) -> None:
    for n in range(max(1, events // EVENTS_PER_ACCOUNT)):
        username = f"bench.customer_{n}"
        app.open_account(username, "USD" if n % 2 else "EUR", actor=ACTOR)
        account = app.account(username)
        for d in range(EVENTS_PER_ACCOUNT - 1):
            if d % 10 == 9:
                account.pay_purchase(f"ORD-{d}", 50, actor=ACTOR)
            else:
                account.receive_deposit(100 + d, f"PAY-{d}", actor=ACTOR)
        app.save(account)


def read_and_decode(app: LedgerApplication) -> int:
    after, read = 0, 0
    while True:
        batch = app.recorder.select_notifications(after, REPLAY_BATCH, inclusive_of_start=False)
        for notification in batch:
            app.mapper.to_domain_event(notification)
        read += len(batch)
        if len(batch) < REPLAY_BATCH:
            return read
        after = batch[-1].id


def timed(work: Callable[[], int]) -> tuple[int, float, float]:
    """What the work answers (events), its wall-clock seconds and this process's CPU seconds
    (all threads): on a shared machine the second says more about the code."""
    wall, cpu = time.perf_counter(), time.process_time()
    events = work()
    return events, time.perf_counter() - wall, time.process_time() - cpu


def measure(dbname: str, rounds: int) -> None:
    settings = StoreSettings.from_url(ADMIN_URL.rsplit("/", 1)[0] + f"/{dbname}")
    app = open_application(settings)
    try:
        prepare_read_models(settings)
        ratios, cpu_ratios = [], []
        for n in range(rounds):
            events, decode_s, decode_cpu_s = timed(lambda: read_and_decode(app))
            rebuilt, rebuild_s, rebuild_cpu_s = timed(lambda: rebuild(settings, app).events)
            assert rebuilt == events
            ratios.append(decode_s / rebuild_s)
            cpu_ratios.append(decode_cpu_s / rebuild_cpu_s)
            click.echo(
                f"round {n + 1}: {events} events; read + decode {events / decode_s:,.0f}/s"
                f" ({decode_cpu_s:.2f} s CPU), rebuild {events / rebuild_s:,.0f}/s"
                f" ({rebuild_cpu_s:.2f} s CPU): {ratios[-1]:.0%} of the rate"
                f" ({cpu_ratios[-1]:.0%} by CPU time)"
            )
        click.echo(
            f"median: rebuild at {statistics.median(ratios):.0%} of the rate of reading and"
            f" decoding ({statistics.median(cpu_ratios):.0%} by CPU time)"
        )
    finally:
        app.close()


@click.command()
@click.option("--events", default=100_000, show_default=True, help="Events in a fresh database.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option("--database", default=None, help="Use this database (its events) as it is.")
def main(events: int, rounds: int, database: str | None) -> None:
    if database is not None:
        measure(database, rounds)
        return
    dbname = f"ledger_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        settings = StoreSettings.from_url(ADMIN_URL.rsplit("/", 1)[0] + f"/{dbname}")
        app = open_application(settings)
        try:
            started = time.perf_counter()
            save_events(app, events)
            click.echo(
                f"saved {app.recorder.max_notification_id()} events"
                f" in {time.perf_counter() - started:.1f} s"
            )
        finally:
            app.close()
        measure(dbname, rounds)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
