"""Fixtures shared by every layer: a fresh store of each kind per test.

PostgreSQL tests make their own uniquely named database and drop it. Without a reachable server
they skip, except under ``CI=true``, where they must run and pass.
"""

from __future__ import annotations

import os
import random
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import psycopg_pool.base
import pytest
from eventsourcing.application import AggregateNotFoundError

from api.config import load as load_config
from ledger.application import LedgerApplication
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.store import open_application

# One chain key for the whole session, shared by the servers the tests start (they inherit the
# environment) and the applications the tests open in-process on the same stores.
os.environ.setdefault(
    "LEDGER_CHAIN_KEY_FILE",
    str(Path(tempfile.gettempdir()) / f"ledger-tests-{os.getpid()}" / "chain.key"),
)
# The service's configuration as the servers the tests start read it (api.config), read once.
CONFIG = load_config()


@pytest.fixture(autouse=True, scope="session")
def pool_jitter_of_its_own() -> Iterator[None]:
    """psycopg_pool spreads its connections' lifetimes with the ``random`` module's shared
    generator, from its own threads. Hypothesis watches that generator while it draws, and a
    pool's thread opening a connection meanwhile reads to it as a strategy using ``random``
    (a HypothesisDeprecationWarning now, an error in a later hypothesis): the pools' jitter
    draws from a generator of its own in the tests, the same spread."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(psycopg_pool.base, "random", random.Random().random)
        yield


def store_settings(url: str | None = None, **options: Any) -> StoreSettings:
    """A store's settings as a server of this session makes them: sealed with the session's
    chain key."""
    return StoreSettings.from_url(url, chain_key_file=CONFIG.chain_key_file, **options)


PG_ADMIN_URL = os.environ.get("LEDGER_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _pg_admin() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true and is unreachable: {error}")
        pytest.skip(f"PostgreSQL unreachable: {error}")


def make_pg_database() -> str:
    name = f"ledger_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg_database(name: str) -> None:
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL of a fresh, empty store: once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
        return
    name = make_pg_database()
    try:
        yield pg_url(name)
    finally:
        drop_pg_database(name)


@pytest.fixture
def settings(store_url: str) -> StoreSettings:
    return store_settings(store_url)


@pytest.fixture
def app(settings: StoreSettings) -> Iterator[LedgerApplication]:
    application = open_application(settings)
    try:
        yield application
    finally:
        application.close()


@pytest.fixture
def system() -> Actor:
    return Actor("system:0a1b2c3d", "req-system")


@pytest.fixture
def cs() -> Actor:
    return Actor("cs:4e5f6a7b", "req-cs")


@pytest.fixture
def finance() -> Actor:
    return Actor("finance:8c9d0e1f", "req-finance")


@pytest.fixture
def payer() -> Actor:
    """A second finance person: four eyes, whoever approved a refund request cannot pay it."""
    return Actor.of_person("bea", "finance", "req-payer")


def load_or_none(app: LedgerApplication) -> Callable[[UUID], Any]:
    """The application's aggregates by id, None for an id with none (as ``ledger.staff`` reads
    them)."""
    def get(aggregate_id: UUID) -> Any:
        try:
            return app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
    return get
