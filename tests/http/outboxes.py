"""Outboxes for tests of the webhook deliverer: a store whose outbox holds customers' deposits,
or an empty outbox on either store with messages added by hand."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.identity import Actor
from projections import outbox, replay
from projections.outbox import OutboxProjection
from projections.readmodels import open_view
from projections.store import open_application
from projections.views import ReadModelView
from tests.conftest import drop_pg_database, make_pg_database, pg_url, store_settings

ACTOR = Actor("cs:webhooks", "test-webhooks")


@dataclass
class Store:
    settings: Any
    view: ReadModelView
    key: Any  # the chain key, which seals the outbox's messages


@contextmanager
def outbox_of(folder: Path, deposits: Sequence[tuple[str, int, str]]) -> Iterator[Store]:
    """A SQLite store in ``folder`` whose outbox holds a message for each deposit (customer,
    amount, payment reference; each customer's account opened, in USD, before their first),
    its delivery tables made."""
    settings = store_settings(f"sqlite:///{folder}/ledger.db", pool_size=2)
    app = open_application(settings)
    view = open_view(settings, OutboxProjection, pool_size=2)
    try:
        opened: set[str] = set()
        for username, amount, reference in deposits:
            if username not in opened:
                app.open_account(username, "USD", actor=ACTOR)
                opened.add(username)
            app.deposit(username, amount, reference, actor=ACTOR)
        replay.replay(app, [(OutboxProjection, view)])
        outbox.create_delivery_tables(view)
        yield Store(settings, view, app.recorder.chain_key)  # type: ignore[attr-defined]
    finally:
        view.datastore.close()
        app.close()


@contextmanager
def outbox_view(kind: str, folder: Path) -> Iterator[ReadModelView]:
    """An empty outbox with its delivery tables, on SQLite (in ``folder``) or PostgreSQL."""
    name = make_pg_database() if kind == "postgres" else None
    url = f"sqlite:///{folder}/ledger.db" if name is None else pg_url(name)
    try:
        opened = open_view(store_settings(url), OutboxProjection)
        try:
            outbox.create_delivery_tables(opened)
            yield opened
        finally:
            opened.datastore.close()
    finally:
        if name is not None:
            drop_pg_database(name)


def add_message(view: ReadModelView, position: int, username: str) -> None:
    """A message of ``username`` at ``position`` (id ``m<position>``), sealed."""
    outbox.execute(view, "INSERT INTO ob_messages (id, position, type, username, currency,"
                         " amount, case_id, request_id, order_no, customer_message, details,"
                         " created_at) VALUES (%(id)s, %(p)s, 'deposit.recorded', %(u)s, 'EUR',"
                         " 1, NULL, NULL, NULL, 'a payment', '{}', '2026-12-07T00:00:00Z')",
                   {"id": f"m{position}", "p": position, "u": username})
    outbox.execute(view, "INSERT INTO ob_seals (message_id, position, seal)"
                         " VALUES (%(id)s, %(p)s, 'seal')", {"id": f"m{position}", "p": position})
