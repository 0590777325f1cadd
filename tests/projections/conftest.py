"""The read models over a store of each kind, kept current by a keeper of their own."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager

import psycopg
import pytest
from eventsourcing.persistence import Notification

from ledger.application import LedgerApplication
from ledger.settings import StoreSettings
from projections.batches import BatchApplier
from projections.readmodels import (
    PROJECTIONS,
    ReadModelKeeper,
    ReadModels,
    close_views,
    open_views,
    prepare_read_models,
)
from tests.conftest import pg_url

WAIT_S = 10.0


def wait_until(condition: Callable[[], bool], timeout_s: float = WAIT_S,
               what: str = "not in time") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def read_models(settings: StoreSettings, app: LedgerApplication) -> Iterator[ReadModels]:
    prepare_read_models(settings)
    keeper = ReadModelKeeper(settings)
    keeper.start()
    models = ReadModels(settings, app)
    try:
        yield models
    finally:
        keeper.stop()
        models.close()


def log(app: LedgerApplication) -> Sequence[Notification]:
    """The log's first 1,000 events (a test's whole log)."""
    return app.recorder.select_notifications(0, 1000, inclusive_of_start=False)


@contextmanager
def applier(settings: StoreSettings, app: LedgerApplication) -> Iterator[BatchApplier]:
    views = open_views(settings, pool_size=2)
    try:
        yield BatchApplier(app.mapper, [(p, views[p.name]) for p in PROJECTIONS],
                           key=app.recorder.chain_key)  # type: ignore[attr-defined]
    finally:
        close_views(views)


def read_model_sql(settings: StoreSettings, read_model: str, statements: list[str]) -> None:
    """Plain SQL on one read model's tables, behind the keeper's back."""
    if settings.kind == "postgres":
        with psycopg.connect(pg_url(settings.postgres["POSTGRES_DBNAME"])) as db:
            for statement in statements:
                db.execute(statement)  # type: ignore[arg-type]
        return
    path = settings.env_for(read_model)["SQLITE_DBNAME"]
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        for statement in statements:
            db.execute(statement)
