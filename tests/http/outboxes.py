"""A store whose outbox holds customers' deposits, for tests of the webhook deliverer."""

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
from tests.conftest import store_settings

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
