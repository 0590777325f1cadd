"""Replaying the log into read models: ``ledger rebuild`` and the read-model check of
``ledger verify``.

A replay drives the very projection code the keeper runs (``projections.batches``), a batch of
events per transaction (each batch's rows and its tracking record together), so a rebuilt read
model is row for row what the live one holds at the same position. It reads the next batch and
(on PostgreSQL) commits the last one while it decodes and projects this one, each in a thread
of its own.
"""

from __future__ import annotations

import queue
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Notification

from ledger.application import LedgerApplication
from ledger.settings import StoreSettings
from projections.batches import BatchApplier, Projections
from projections.leadership import leadership
from projections.readmodels import (
    PROJECTIONS,
    close_views,
    open_view,
    open_views,
    prepare_read_models,
)
from projections.store import read_log
from projections.views import ReadModelProjection, ReadModelView

REPLAY_BATCH = 2000
READ_AHEAD = 2  # batches read and waiting
_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)")


def tables_of(projection: type[ReadModelProjection]) -> list[str]:
    return [m.group(1) for sql in projection.ddl for m in [_TABLE.match(sql)] if m]


def replay(
    app: LedgerApplication,
    projections: Projections,
    *,
    upto: int | None = None,
    on_batch: Callable[[int], None] = lambda n: None,
) -> int:
    """Apply every event after each view's tracked position (up to ``upto``) to the views;
    answers the number of events read. Batches are read ahead and (on PostgreSQL) committed
    behind, each in a thread of its own, while this one decodes and projects."""
    applier = BatchApplier(app.mapper, projections)
    read = 0
    with applier.pipelined() as apply:
        for notifications in read_ahead(app, applier.position, upto=upto):
            apply(notifications)
            read += len(notifications)
            on_batch(len(notifications))
    return read


def read_ahead(
    app: LedgerApplication, after: int, *, upto: int | None = None
) -> Iterator[Sequence[Notification]]:
    """The log after a position (up to ``upto``) in batches, the next one read while this one
    is used (at most ``READ_AHEAD`` waiting)."""
    batches: queue.Queue[Sequence[Notification] | BaseException | None] = queue.Queue(READ_AHEAD)
    stopping = threading.Event()

    def read() -> None:
        start = after
        try:
            while not stopping.is_set():
                batch = read_log(app.recorder, start, REPLAY_BATCH, upto=upto)
                _put(batches, batch, stopping)
                if len(batch) < REPLAY_BATCH:
                    break
                start = batch[-1].id
            _put(batches, None, stopping)
        except BaseException as failure:  # raised in the reader's thread, below
            _put(batches, failure, stopping)

    reader = threading.Thread(target=read, name="replay-reads", daemon=True)
    reader.start()
    try:
        while (batch := batches.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            yield batch
    finally:
        stopping.set()
        reader.join()


def _put(batches: queue.Queue[Any], item: Any, stopping: threading.Event) -> None:
    while not stopping.is_set():
        try:
            batches.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


@contextmanager
def scratch_views(
    projections: tuple[type[ReadModelProjection], ...] = PROJECTIONS,
) -> Iterator[list[tuple[type[ReadModelProjection], ReadModelView]]]:
    """Fresh, empty read models in a temporary SQLite file each (dropped after)."""
    with tempfile.TemporaryDirectory(prefix="ledger-replay-") as folder:
        settings = StoreSettings.from_url(f"sqlite:///{Path(folder) / 'replay.db'}")
        views = [(p, open_view(settings, p)) for p in projections]
        try:
            yield views
        finally:
            for _, view in views:
                view.datastore.close()


def differences(
    live: dict[str, list[tuple[Any, ...]]], fresh: dict[str, list[tuple[Any, ...]]]
) -> list[str]:
    """Where two dumps of a read model differ: the table and the first differing row."""
    found = []
    for table in live:
        a, b = live[table], fresh.get(table, [])
        if a != b:
            first = next(
                (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)),
            )
            found.append(
                f"{table}: {len(a)} live rows, {len(b)} replayed; first difference at row "
                f"{first}: live {a[first] if first < len(a) else None!r}, "
                f"replayed {b[first] if first < len(b) else None!r}"
            )
    return found


@dataclass(frozen=True)
class RebuildReport:
    events: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


def rebuild(
    settings: StoreSettings,
    app: LedgerApplication,
    *,
    on_batch: Callable[[int], None] = lambda n: None,
    lock_timeout_s: float = 5.0,
) -> RebuildReport:
    """Drop every read model and replay the whole log into it, holding the keepers' lock so
    no keeper writes meanwhile (LeadershipBusy while a ``ledger serve`` keeps them)."""
    with leadership(settings, timeout_s=lock_timeout_s):
        for projection in PROJECTIONS:
            old = open_view(settings, projection, pool_size=1)
            try:
                old.drop(tables_of(projection))
            finally:
                old.datastore.close()
        prepare_read_models(settings)  # anew, empty
        # On PostgreSQL the views share one datastore: each batch is one transaction for all.
        views = open_views(settings, pool_size=2)
        try:
            started = time.perf_counter()
            events = replay(app, [(p, views[p.name]) for p in PROJECTIONS], on_batch=on_batch)
            return RebuildReport(events, time.perf_counter() - started)
        finally:
            close_views(views)
