"""Fixtures of the finance-and-audit tests: a ledger whose read models are kept by the real
keeper (and whose hash chain ``Ledger.settle`` links, for now), fresh stores for property tests,
and an intruder who edits the database behind the service's back with its guards switched off
(as a superuser could)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from ledger.application import LedgerApplication
from ledger.settings import StoreSettings
from ledger.staff import staff_id
from projections.readmodels import PROJECTIONS, ReadModelKeeper, ReadModels, open_view
from projections.readmodels import prepare_read_models as prepare
from projections.replay import tables_of
from projections.seal import ChainKey
from projections.store import open_application
from tests.conftest import drop_pg_database, make_pg_database, pg_url, store_settings

# Small pools: the PostgreSQL server (100 connections) is shared with other suites running at
# the same time, and a kept ledger opens the keeper's connections besides.
POOL_SIZE = 2


@pytest.fixture
def settings(store_url: str) -> StoreSettings:
    return store_settings(store_url, pool_size=POOL_SIZE)


@dataclass
class Ledger:
    """The application, its read models and the keeper that keeps them."""

    settings: StoreSettings
    app: LedgerApplication
    read_models: ReadModels
    keeper: ReadModelKeeper

    def settle(self) -> int:
        """Wait until the read models have reached the log's end (the writer seals each event
        as it records it, so the chain is there already)."""
        return self.read_models.wait_caught_up()

    def stop_keeper(self) -> None:
        self.keeper.stop()


@contextmanager
def running_ledger(settings: StoreSettings, app: LedgerApplication) -> Iterator[Ledger]:
    prepare(settings)
    keeper = ReadModelKeeper(settings)
    keeper.start()
    models = ReadModels(settings, app, pool_size=1)
    try:
        yield Ledger(settings, app, models, keeper)
    finally:
        keeper.stop()
        models.close()


@pytest.fixture
def ledger(settings: StoreSettings, app: LedgerApplication) -> Iterator[Ledger]:
    with running_ledger(settings, app) as running:
        yield running


@contextmanager
def fresh_store(kind: str) -> Iterator[StoreSettings]:
    """A new, empty store of one kind (for a property test's every example)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="ledger-audit-") as folder:
            yield store_settings(
                f"sqlite:///{Path(folder) / 'ledger.db'}", pool_size=POOL_SIZE
            )
        return
    name = make_pg_database()
    try:
        yield store_settings(pg_url(name), pool_size=POOL_SIZE)
    finally:
        drop_pg_database(name)


@contextmanager
def fresh_ledger(kind: str) -> Iterator[Ledger]:
    with fresh_store(kind) as settings:
        app = open_application(settings)
        try:
            with running_ledger(settings, app) as running:
                yield running
        finally:
            app.close()


def dump_read_models(settings: StoreSettings) -> dict[str, tuple[int, Any]]:
    """Every read model's rows and tracked position, by read model."""
    dumps = {}
    for projection in PROJECTIONS:
        view = open_view(settings, projection, pool_size=1)
        try:
            dumps[projection.name] = view.dump(tables_of(projection))
        finally:
            view.datastore.close()  # type: ignore[attr-defined]
    return dumps


# -- behind the service's back -----------------------------------------------------------------


class Intruder:
    """Plain SQL on the store with a connection of its own. ``unguarded`` switches the
    database's guards off for the statements (a superuser's ``session_replication_role``
    on PostgreSQL; dropping and re-creating the triggers in one transaction on SQLite)."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.kind = settings.kind
        self.events = "stored_events" if self.kind == "sqlite" else "ledger_events"
        self.key = "rowid" if self.kind == "sqlite" else "notification_id"

    def run(self, statement: str, params: tuple[Any, ...] = (), *, unguarded: bool) -> None:
        if self.kind == "sqlite":
            self._run_sqlite([(statement, params)], unguarded=unguarded)
        else:
            self._run_postgres([(statement, params)], unguarded=unguarded)

    def _run_sqlite(
        self, statements: list[tuple[str, tuple[Any, ...]]], *, unguarded: bool
    ) -> None:
        assert self.settings.sqlite_path is not None
        with closing(sqlite3.connect(self.settings.sqlite_path, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                triggers = []
                if unguarded:
                    triggers = db.execute(
                        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
                    ).fetchall()
                    for name, _ in triggers:
                        db.execute(f'DROP TRIGGER "{name}"')
                for statement, params in statements:
                    db.execute(statement.replace("%s", "?"), params)
                for _, sql in triggers:
                    db.execute(sql)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _run_postgres(
        self, statements: list[tuple[str, tuple[Any, ...]]], *, unguarded: bool
    ) -> None:
        with psycopg.connect(pg_url(self.settings.postgres["POSTGRES_DBNAME"])) as db:
            if unguarded:
                db.execute("SET session_replication_role = replica")
            for statement, params in statements:
                db.execute(statement, params)  # type: ignore[arg-type]

    def read_model_sql(self, projection_name: str, statement: str) -> None:
        """Change a read model's rows by hand (read models have no guard)."""
        if self.kind == "postgres":
            self._run_postgres([(statement, ())], unguarded=False)
            return
        env = self.settings.env_for(projection_name)
        with closing(sqlite3.connect(env["SQLITE_DBNAME"], isolation_level=None)) as db:
            db.execute(statement)

    # -- tamperings of the log ---------------------------------------------------------------

    def state_at(self, position: int) -> bytes:
        rows = self.select(f"SELECT state FROM {self.events} WHERE {self.key} = %s", (position,))
        assert rows, f"no stored event at position {position}"
        return bytes(rows[0][0])

    def select(self, statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            assert self.settings.sqlite_path is not None
            with closing(sqlite3.connect(self.settings.sqlite_path)) as db:
                return db.execute(statement.replace("%s", "?"), params).fetchall()
        with psycopg.connect(pg_url(self.settings.postgres["POSTGRES_DBNAME"])) as db:
            return db.execute(statement, params).fetchall()  # type: ignore[arg-type]

    def set_state(self, position: int, state: bytes) -> None:
        self.run(
            f"UPDATE {self.events} SET state = %s WHERE {self.key} = %s",
            (state, position),
            unguarded=True,
        )

    def flip_amount_digit(self, position: int) -> None:
        """Change one byte of one stored event: the first digit of its amount."""
        state = bytearray(self.state_at(position))
        at = state.index(b'"amount":') + len(b'"amount":')
        state[at] = ord("9") if state[at] != ord("9") else ord("8")
        self.set_state(position, bytes(state))

    def delete(self, position: int) -> None:
        self.run(f"DELETE FROM {self.events} WHERE {self.key} = %s", (position,), unguarded=True)

    def delete_with_seal(self, position: int) -> None:
        """DELETE one stored event and its link together (guards off): the events that remain
        keep seals that hold, and only the log's gap tells."""
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (f"DELETE FROM {self.events} WHERE {self.key} = %s", (position,)),
            ("DELETE FROM ledger_chain WHERE position = %s", (position,)),
        ]
        if self.kind == "sqlite":
            self._run_sqlite(statements, unguarded=True)
        else:
            self._run_postgres(statements, unguarded=True)

    def swap(self, first: int, second: int) -> None:
        a, b = self.state_at(first), self.state_at(second)
        assert a != b
        self.set_state(first, b)
        self.set_state(second, a)

    def move_with_seals(self, first: int, second: int) -> None:
        """Swap two whole stored events (stream, version, topic, state) and their seals, in one
        transaction: each event now stands at the other's position, carrying its own seal."""
        columns = "originator_id, originator_version, topic, state"
        rows = {p: self.select(f"SELECT {columns} FROM {self.events} WHERE {self.key} = %s",
                               (p,))[0] for p in (first, second)}
        links = {p: self.select("SELECT hash, previous FROM ledger_chain WHERE position = %s",
                                (p,))[0] for p in (first, second)}
        park = f"UPDATE {self.events} SET originator_version = %s WHERE {self.key} = %s"
        place = (f"UPDATE {self.events} SET originator_id = %s, originator_version = %s,"
                 f" topic = %s, state = %s WHERE {self.key} = %s")
        seal = "UPDATE ledger_chain SET hash = %s, previous = %s WHERE position = %s"
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (park, (-1, first)), (park, (-2, second)),  # (stream, version) stays unique
            (place, (*rows[second], first)), (place, (*rows[first], second)),
            (seal, (*links[second], first)), (seal, (*links[first], second)),
        ]
        if self.kind == "sqlite":
            self._run_sqlite(statements, unguarded=True)
        else:
            self._run_postgres(statements, unguarded=True)

    def _event_and_last_version(self, like: int) -> tuple[Any, str, Any, int]:
        """The stream, topic and state of the event at position ``like``, and its stream's last
        version."""
        rows = self.select(
            f"SELECT originator_id, topic, state FROM {self.events} WHERE {self.key} = %s",
            (like,),
        )
        stream, topic, state = rows[0]
        (version,) = self.select(
            f"SELECT MAX(originator_version) FROM {self.events} WHERE originator_id = %s",
            (stream,),
        )[0]
        return stream, topic, state, version

    def forge_deposit(self, like: int, amount: int, reference: str) -> int:
        """INSERT, with plain SQL, a well-formed deposit on the account of the deposit at
        position ``like``, as that account's next version; answers the forged row's position.
        (No guard refuses an INSERT: only the seal it cannot make tells.)"""
        originator_id, topic, state, version = self._event_and_last_version(like)
        data = json.loads(bytes(state))
        data.update(amount=amount, reference=reference)
        forged = json.dumps(data, separators=(",", ":")).encode()
        return self._insert_next(originator_id, version + 1, topic, forged)

    def forge_at(self, like: int, position: int) -> Any:
        """INSERT, with plain SQL, a copy of the event at position ``like`` as its stream's next
        version, at ``position`` (any: no guard refuses an INSERT); answers its stream."""
        stream, topic, state, version = self._event_and_last_version(like)
        self.run(
            f"INSERT INTO {self.events} ({self.key}, originator_id, originator_version, topic,"
            " state) VALUES (%s, %s, %s, %s, %s)",
            (position, stream, version + 1, topic, state),
            unguarded=False,
        )
        return stream

    def _insert_next(self, stream: Any, version: int, topic: str, state: bytes) -> int:
        """INSERT an event at the log's next position, as the writer places its events (on
        SQLite the rowid's default; PostgreSQL's writer gives positions itself, not the
        column's sequence); answers its position."""
        placed = "" if self.kind == "sqlite" else f"{self.key}, "
        at = "" if self.kind == "sqlite" else f"(SELECT MAX({self.key}) + 1 FROM {self.events}), "
        self.run(
            f"INSERT INTO {self.events} ({placed}originator_id, originator_version, topic, state)"
            f" VALUES ({at}%s, %s, %s, %s)",
            (stream, version, topic, state),
            unguarded=False,
        )
        (position,) = self.select(f"SELECT MAX({self.key}) FROM {self.events}", ())[0]
        return int(position)

    def set_topic(self, position: int, topic: str) -> None:
        """Give the stored event at ``position`` another topic (guards off): the log keeps its
        rows, its positions and every other seal."""
        self.run(f"UPDATE {self.events} SET topic = %s WHERE {self.key} = %s", (topic, position),
                 unguarded=True)

    def move_to_stream(self, position: int, stream: UUID, topic: str) -> None:
        """Make the stored event at ``position`` read as an event of another stream and topic
        (guards off), the stream spelled as the store spells the one it had."""
        (original,) = self.select(
            f"SELECT originator_id FROM {self.events} WHERE {self.key} = %s", (position,))[0]
        spelled: Any = stream
        if isinstance(original, str):
            spelled = str(stream) if "-" in original else stream.hex
        self.run(f"UPDATE {self.events} SET originator_id = %s, topic = %s"
                 f" WHERE {self.key} = %s", (spelled, topic, position), unguarded=True)

    def delete_seal(self, position: int) -> None:
        """DELETE only the stored link of the event at ``position`` (guards off)."""
        self.run("DELETE FROM ledger_chain WHERE position = %s", (position,), unguarded=True)

    def positions_of(self, topic: str) -> list[int]:
        """The positions of the stored events of ``topic``, in log order."""
        rows = self.select(
            f"SELECT {self.key} FROM {self.events} WHERE topic = %s ORDER BY {self.key}", (topic,)
        )
        return [int(row[0]) for row in rows]

    def forge_staff(self, like: int, name: str, role: str, token: str) -> int:
        """INSERT, with plain SQL, a member of staff ``name`` in ``role`` with ``token``: a copy
        of the StaffAdded at position ``like`` with those fields changed, as a new stream at the
        log's next position; answers its position."""
        rows = self.select(
            f"SELECT originator_id, originator_version, topic, state FROM {self.events}"
            f" WHERE {self.key} = %s",
            (like,),
        )
        original, version, topic, state = rows[0]
        assert topic == "ledger:Staff.StaffAdded", topic
        data = json.loads(bytes(state))
        data.update(name=name, role=role, token_hash=hashlib.sha256(token.encode()).hexdigest())
        forged = json.dumps(data, separators=(",", ":")).encode()
        stream: Any = staff_id(name)  # spelled as the store spells the one it copies
        if isinstance(original, str):
            stream = str(stream) if "-" in original else stream.hex
        return self._insert_next(stream, version, topic, forged)

    def relink_with_sha256(self, position: int) -> None:
        """Recompute the stored link at ``position`` and every one after it as an intruder
        without the key would: plain SHA-256 over the same parts (guards off)."""
        links = self.select(
            "SELECT position, previous FROM ledger_chain WHERE position >= %s ORDER BY position",
            (position,),
        )
        previous = links[0][1]
        for at, _ in links:
            state = self.state_at(at)
            forged = hashlib.sha256(previous.encode() + str(at).encode() + state).hexdigest()
            self.run(
                "UPDATE ledger_chain SET previous = %s, hash = %s WHERE position = %s",
                (previous, forged, at),
                unguarded=True,
            )
            previous = forged

    def relink_with_key(self, key: ChainKey, position: int) -> None:
        """Recompute every link from ``position`` with the chain key (an insider holding it)."""
        events = self.select(
            f"SELECT {self.key}, originator_id, originator_version, topic, state"
            f" FROM {self.events} WHERE {self.key} >= %s ORDER BY {self.key}",
            (position,),
        )
        (previous,) = self.select(
            "SELECT previous FROM ledger_chain WHERE position = %s", (position,)
        )[0]
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("DELETE FROM ledger_chain WHERE position >= %s", (position,))
        ]
        for at, originator_id, version, topic, state in events:
            link = key.link(previous, at, originator_id, version, topic, bytes(state))
            statements.append((
                "INSERT INTO ledger_chain (position, previous, hash) VALUES (%s, %s, %s)",
                (at, previous, link),
            ))
            previous = link
        if self.kind == "sqlite":
            self._run_sqlite(statements, unguarded=True)
        else:
            self._run_postgres(statements, unguarded=True)


@pytest.fixture
def intruder(settings: StoreSettings) -> Intruder:
    return Intruder(settings)


def seals_checked_here(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The positions whose seal this thread checks from now on (``ChainKey.holds``): a test's
    own rounds of the notary or reads of the staff directory run here; on SQLite the keeper's
    thread, in the same process, checks the same events meanwhile, and is not counted."""
    checked: list[int] = []
    holds = ChainKey.holds
    here = threading.get_ident()

    def counted(key: ChainKey, link: str | None, previous: str | None, position: int,
                *rest: Any) -> bool:
        if threading.get_ident() == here:
            checked.append(position)
        return holds(key, link, previous, position, *rest)

    monkeypatch.setattr(ChainKey, "holds", counted)
    return checked
