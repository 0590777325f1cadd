"""The ledger the state machine drives: one store of each kind for a whole run, shared by the
examples, each example with customers of its own.

A ``Generation`` is a store (a SQLite file set, or a fresh PostgreSQL database) with the
application on the shop's clock, the real read-model keeper and the read models. A store serves
``EXAMPLES_PER_STORE`` examples, then is verified in full and replaced, so every check that reads
a whole currency or the whole log (reconciliation at each step, the full replay) stays bounded
however many examples a run asks for: the default run uses one store of each kind.

Each example's customers carry its own prefix (``x17s-ann``), so no example sees another's
accounts, orders, requests or cases; only this process writes to the store, so the events after
the position where an example began are exactly that example's.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.utils import Environment

from ledger.application import LedgerApplication
from ledger.errors import NotReady
from ledger.settings import StoreSettings
from projections.audit import verify
from projections.readmodels import APP_NAME, PROJECTIONS, ReadModelKeeper, ReadModels
from projections.readmodels import prepare_read_models as prepare
from projections.replay import replay, tables_of
from projections.store import open_application
from projections.views import ReadModelView, view_class
from tests.conftest import drop_pg_database, make_pg_database, pg_url, store_settings

# Bounds: a store's examples before it is verified and replaced; connections per pool (the
# PostgreSQL server is shared with other suites: 100 connections for everyone).
EXAMPLES_PER_STORE = 250
POOL_SIZE = 2
# SQLite files go to memory when the machine has it: the suite tests the ledger's logic, not
# the disk (the store tests check durability), and every commit's fsync would slow each step.
SCRATCH_ROOT = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None
# Each example starts on this day of the shop's calendar (time moves only within an example).
FIRST_DAY = date(2028, 2, 10)

# Where a read model's rows of one example are: every table with a ``position`` column holds
# the position of the row's last event, which is the example's for its rows and only for them.
_EXAMPLE_ROWS = {
    "rm_accounts": "position > %(start)s",
    "rm_account_history": "position > %(start)s",
    "rm_orders": "position > %(start)s",
    "rm_order_cases": "position > %(start)s",
    "rm_refund_requests": "position > %(start)s",
    "rm_refund_request_steps": "position > %(start)s",
    "rm_return_cases": "position > %(start)s",
    "rm_return_case_steps": "position > %(start)s",
    "rm_journal": "position > %(start)s",
    "rm_journal_references": "position > %(start)s",
    "rm_journal_accounts": "username LIKE %(prefix)s",
    "ob_messages": "position > %(start)s",
    "ob_seals": "position > %(start)s",
    "ob_streams": "username LIKE %(prefix)s",
}


class ShopClock:
    """The application's clock: the shop's moment, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime.combine(FIRST_DAY, time(10, 0), tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def start_example(self) -> None:
        self.now = datetime.combine(FIRST_DAY, time(10, 0), tzinfo=UTC)

    def advance(self, hours: int) -> None:
        self.now += timedelta(hours=hours)


@dataclass
class Generation:
    """One store with its application, keeper and read models."""

    kind: str
    settings: StoreSettings
    app: LedgerApplication
    keeper: ReadModelKeeper
    read_models: ReadModels
    remove: Callable[[], None]
    examples: int = 0
    # Every read model in memory, emptied for each example's replay (``example_differences``):
    # made once per store, where making them for each example took a twentieth of a run.
    scratch: list[tuple[Any, ReadModelView]] = field(default_factory=list)

    @classmethod
    def open(cls, kind: str, clock: ShopClock) -> Generation:
        if kind == "sqlite":
            folder = tempfile.mkdtemp(prefix="ledger-model-", dir=SCRATCH_ROOT)
            settings = store_settings(f"sqlite:///{folder}/ledger.db", pool_size=POOL_SIZE)

            def remove() -> None:
                shutil.rmtree(folder, ignore_errors=True)

        else:
            name = make_pg_database()
            settings = store_settings(pg_url(name), pool_size=POOL_SIZE)

            def remove() -> None:
                drop_pg_database(name)

        try:
            app = open_application(settings, clock=clock)
        except BaseException:
            remove()
            raise
        prepare(settings)
        # On PostgreSQL the keeper works in a process of its own, as `ledger serve` runs it:
        # its batches do not take the GIL from the examples' commands and checks.
        keeper = ReadModelKeeper(settings, in_child_process=kind == "postgres")
        keeper.start()
        read_models = ReadModels(settings, app, pool_size=1)
        return cls(kind, settings, app, keeper, read_models, remove)

    def log_position(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def settle(self) -> int:
        """Wait until every read model has reached the log's end; answer that position."""
        self.keeper.nudge()
        return self.read_models.wait_caught_up()

    def verify(self) -> list[str]:
        """``ledger verify`` on the whole store: the chain, the invariants at every position,
        and every read model against a fresh replay of the whole log."""
        where = f"{self.kind} store after {self.examples} examples"
        try:
            self.settle()
        except NotReady as error:
            return [f"{where}: {error}"]
        report = verify(self.settings, self.app)
        return [f"{where}: {problem}" for problem in report.problems]

    def close(self) -> None:
        try:
            self.keeper.stop()
            self.read_models.close()
            self.app.close()
            for _, view in self.scratch:
                view.datastore.close()  # type: ignore[attr-defined]
        finally:
            self.remove()


@dataclass
class Harness:
    """The stores of one kind for a whole run: a generation at a time."""

    kind: str
    examples_wanted: int = 200  # the search's (hypothesis's max_examples)
    clock: ShopClock = field(default_factory=ShopClock)
    generation: Generation | None = None
    examples: int = 0
    problems: list[str] = field(default_factory=list)
    coverage: Counter[str] = field(default_factory=Counter)

    def seen(self, what: str) -> None:
        """Count what the examples did (outcomes, refusals, states reached) for the report."""
        self.coverage[what] += 1

    def report(self) -> str:
        lines = [f"{self.kind}: {self.examples} examples"]
        lines += [f"  {count:6d}  {what}" for what, count in sorted(self.coverage.items())]
        return "\n".join(lines)

    def open(self) -> None:
        """Open the first store now, outside any example (a missing server skips the test)."""
        if self.generation is None:
            self.generation = Generation.open(self.kind, self.clock)

    def begin_example(self) -> tuple[Generation, str, int]:
        """The store for the next example (a new one every EXAMPLES_PER_STORE), the example's
        own prefix for user names, and the log position where the example begins."""
        if self.generation is not None and self.generation.examples >= EXAMPLES_PER_STORE:
            self._retire()
        if self.generation is None:
            self.generation = Generation.open(self.kind, self.clock)
        try:
            start = self.generation.settle()
        except NotReady:
            # A failed example left the keeper stuck on an event it cannot apply (the keeper's
            # log says why): later examples get a store of their own, so that the failure is
            # reported as the example that caused it, not as every example after it.
            self.problems.append(f"{self.kind} store: the read models stopped at an event")
            self._retire(verified=False)
            self.generation = Generation.open(self.kind, self.clock)
            start = self.generation.settle()
        self.examples += 1
        self.generation.examples += 1
        self.clock.start_example()
        return self.generation, f"x{self.examples}{self.kind[0]}-", start

    def _retire(self, *, verified: bool = True) -> None:
        assert self.generation is not None
        generation, self.generation = self.generation, None
        try:
            if verified:
                self.problems += generation.verify()
        finally:
            generation.close()
            # The full collection the test holds back, once a store; what outlives it (the
            # search's record, mostly) is frozen, so that the next looks only at what is newer.
            gc.collect()
            gc.freeze()

    def close(self) -> list[str]:
        """Verify the last store in full and drop it; answer what any full check found."""
        if self.generation is not None:
            self._retire()
        return self.problems


# -- one example's rows against a fresh replay of its events -------------------------------------


def example_differences(generation: Generation, start: int, prefix: str) -> list[str]:
    """Replay the example's events (those after ``start``) into fresh, empty read models and
    compare them with the live read models' rows of the example, table by table."""
    position = generation.settle()
    problems = []
    if not generation.scratch:
        generation.scratch = _scratch_views()
    views = generation.scratch
    for projection, view in views:
        # the fresh views begin where the example did: what came before is no concern of theirs
        _empty(view, projection)
        view.record(Tracking(APP_NAME, start), [])
    replay(generation.app, views, upto=position)
    params = {"start": start, "prefix": f"{prefix}%"}
    queries = {
        table: (projection.name, f"SELECT * FROM {table} WHERE {_EXAMPLE_ROWS[table]}")
        for projection, _ in views for table in tables_of(projection)
    }
    live = _live_rows(generation, queries, params)
    for projection, fresh in views:
        fresh_at = fresh.max_tracking_id(APP_NAME)
        if fresh_at != position:
            problems.append(f"{projection.name}: replay reached {fresh_at}, live {position}")
        for table in tables_of(projection):
            fresh_rows = _rows(fresh, queries[table][1], params)
            if live[table] != fresh_rows:
                problems.append(_difference(table, live[table], fresh_rows))
    return problems


def _live_rows(
    generation: Generation, queries: dict[str, tuple[str, str]], params: dict[str, Any]
) -> dict[str, list[tuple[Any, ...]]]:
    """Each table's rows by its (read model, query): on PostgreSQL, where the read models
    share one pool, every query in one round trip (a pipeline on one connection)."""
    read_models = generation.read_models
    if generation.kind != "postgres":
        return {table: _rows(read_models.views[name], sql, params)
                for table, (name, sql) in queries.items()}
    datastore: Any = next(iter(read_models.views.values())).datastore
    with datastore.get_connection() as connection:
        cursors = {table: connection.cursor() for table in queries}
        with connection.pipeline():  # one sync, as it ends (a fetch inside would sync again)
            for table, (_, sql) in queries.items():
                cursors[table].execute(sql, params)
        return {table: sorted(tuple(row.values()) for row in cursor.fetchall())
                for table, cursor in cursors.items()}


def _empty(view: ReadModelView, projection: Any) -> None:
    """No rows in the view's tables, and no tracking record."""
    with view.datastore.transaction(commit=True) as cursor:
        for table in [*tables_of(projection), "tracking"]:
            cursor.execute(f"DELETE FROM {table}")


def _scratch_views() -> list[tuple[Any, ReadModelView]]:
    """Every read model, empty, in an in-memory SQLite database of its own."""
    run = uuid4().hex
    views = []
    for projection in PROJECTIONS:
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": f"file:model-{run}-{projection.name}?mode=memory&cache=shared",
            "CREATE_TABLE": "y",
        }
        factory = InfrastructureFactory[ReadModelView].construct(Environment(projection.name, env))
        cls = view_class("sqlite", projection.name, projection.ddl)  # type: ignore[attr-defined]
        views.append((projection, factory.tracking_recorder(cls)))
    return views


def _rows(view: ReadModelView, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sorted(tuple(row.values()) for row in view.query(sql, params))


def _difference(table: str, live: list[tuple[Any, ...]], fresh: list[tuple[Any, ...]]) -> str:
    only_live = [row for row in live if row not in fresh]
    only_fresh = [row for row in fresh if row not in live]
    return (
        f"{table}: {len(live)} live rows, {len(fresh)} replayed; live only {only_live[:3]!r};"
        f" replayed only {only_fresh[:3]!r}"
    )
