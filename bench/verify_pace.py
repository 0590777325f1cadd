"""Issue 10's figures on a real store: ``ledger verify``'s pace on 100,000 stored events, and what
the notary's first and next checkpoint and an inclusion proof cost, beside the pace of merely
reading and decoding the same events from the same database in the same run (these machines
are shared and noisy: the ratio says more than the rates).

    .venv/bin/python -m bench.verify_pace [--events 100000]

It makes a fresh PostgreSQL database (the events as ``bench.rebuild_pace`` saves them), signs
with a key made for the run, and drops the database after.
"""

from __future__ import annotations

import random
import time
import uuid

import click
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.rebuild_pace import ACTOR, ADMIN_URL, read_and_decode, save_events, timed
from ledger.application import LedgerApplication
from ledger.settings import StoreSettings
from projections.audit import verify
from projections.checkpoints import Notary, guard_notary
from projections.notes import Signer
from projections.readmodels import prepare_read_models
from projections.replay import rebuild
from projections.store import open_application

PROOFS = 1_000  # inclusion proofs timed, at random positions


def grow(app: LedgerApplication, events: int) -> None:
    """The log grows by ``events`` deposits to the first customer, in one save."""
    account = app.account("bench.customer_0")
    for n in range(events):
        account.receive_deposit(100, f"PAY-MORE-{n}", actor=ACTOR)
    app.save(account)


def measure(settings: StoreSettings, events: int) -> None:
    app = open_application(settings)
    try:
        started = time.perf_counter()
        save_events(app, events)
        logged = app.recorder.max_notification_id() or 0
        click.echo(f"saved {logged:,} events in {time.perf_counter() - started:.1f} s")
        prepare_read_models(settings)
        rebuild(settings, app)
        guard_notary(app.recorder)
        notary = Notary(app.recorder, Signer("bench.local/log", Ed25519PrivateKey.generate()),
                        None)
        rows = [("figure", "value", "baseline (read + decode, same run)", "ratio")]

        read, decode_s, _ = timed(lambda: read_and_decode(app))
        pace = read / decode_s
        rows.append((f"read and decode {read:,} events", f"{pace:,.0f} events/s", "—", ""))

        started = time.perf_counter()
        assert notary.round(force_checkpoint=True) is not None
        first_s = time.perf_counter() - started
        rows.append(("notary's first round: every leaf hashed and stored, the first checkpoint",
                     f"{first_s:.2f} s ({read / first_s:,.0f} events/s)",
                     f"{decode_s:.2f} s", f"{decode_s / first_s:.2f}"))

        grow(app, 1_000)
        started = time.perf_counter()
        assert notary.round(force_checkpoint=True) is not None
        next_ms = (time.perf_counter() - started) * 1000
        rows.append(("next round and checkpoint, after 1,000 more events", f"{next_ms:.0f} ms",
                     "", ""))

        size = len(notary.tree)
        positions = [notary.positions[random.randrange(size)] for _ in range(PROOFS)]
        started = time.perf_counter()
        for position in positions:
            notary.inclusion(position, size)
        proof_us = (time.perf_counter() - started) / PROOFS * 1e6
        rows.append((f"inclusion proof (mean of {PROOFS:,})", f"{proof_us:,.0f} µs", "", ""))

        read, decode_s, _ = timed(lambda: read_and_decode(app))
        checks = (("chain, checkpoints and invariants", False),
                  ("everything, read models replayed and compared too", True))
        for what, read_models in checks:
            started = time.perf_counter()
            report = verify(settings, app, read_models=read_models,
                            checkpoint_key=notary.verifier)
            verify_s = time.perf_counter() - started
            assert report.ok and report.events_checked == read, report.problems[:3]
            rows.append((f"`ledger verify` of {read:,} events: {what}",
                         f"{verify_s:.2f} s ({read / verify_s:,.0f} events/s)",
                         f"{decode_s:.2f} s", f"{decode_s / verify_s:.2f}"))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for n, row in enumerate(rows):
            cells = (c.ljust(w) for c, w in zip(row, widths, strict=True))
            click.echo("| " + " | ".join(cells) + " |")
            if n == 0:
                click.echo("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    finally:
        app.close()


@click.command()
@click.option("--events", default=100_000, show_default=True, help="Events in a fresh database.")
def main(events: int) -> None:
    dbname = f"ledger_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        measure(StoreSettings.from_url(ADMIN_URL.rsplit("/", 1)[0] + f"/{dbname}"), events)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
