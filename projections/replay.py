"""Replaying the log into read models: ``ledger rebuild`` and the read-model check of
``ledger verify``.

A replay drives the very projection code the keeper runs, a batch of events per transaction
(each batch's rows and its tracking record together), so a rebuilt read model is row for row
what the live one holds at the same position.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from ledger.application import LedgerApplication
from ledger.settings import StoreSettings
from projections.leadership import leadership
from projections.readmodels import APP_NAME, PROJECTIONS, open_view
from projections.views import BatchingView, ReadModelView

REPLAY_BATCH = 2000
_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)")


def tables_of(projection: type[Projection[ReadModelView]]) -> list[str]:
    return [m.group(1) for sql in projection.ddl for m in [_TABLE.match(sql)] if m]  # type: ignore[attr-defined]


def replay(
    app: LedgerApplication,
    projections: list[tuple[type[Projection[ReadModelView]], ReadModelView]],
    *,
    upto: int | None = None,
    on_batch: Callable[[int], None] = lambda n: None,
) -> int:
    """Apply every event after each view's tracked position (up to ``upto``) to the views;
    answers the number of events read."""
    start = min((view.max_tracking_id(APP_NAME) or 0) for _, view in projections)
    batches = [(BatchingView(view), view) for _, view in projections]
    runners = [
        (cls(batch), batch, view.max_tracking_id(APP_NAME) or 0)  # type: ignore[arg-type]
        for (cls, _), (batch, view) in zip(projections, batches, strict=True)
    ]
    read = 0
    while True:
        notifications = app.recorder.select_notifications(
            start, REPLAY_BATCH, stop=upto, inclusive_of_start=False
        )
        for notification in notifications:
            event = app.mapper.to_domain_event(notification)
            tracking = Tracking(APP_NAME, notification.id)
            for projection, _, tracked in runners:
                if notification.id > tracked:
                    projection.process_event(event, tracking)
        for _, batch, _ in runners:
            batch.flush()
        read += len(notifications)
        on_batch(len(notifications))
        if len(notifications) < REPLAY_BATCH:
            return read
        start = notifications[-1].id


@contextmanager
def scratch_views(
    projections: tuple[type[Projection[ReadModelView]], ...] = PROJECTIONS,
) -> Iterator[list[tuple[type[Projection[ReadModelView]], ReadModelView]]]:
    """Fresh, empty read models in a temporary SQLite file each (dropped after)."""
    with tempfile.TemporaryDirectory(prefix="ledger-replay-") as folder:
        settings = StoreSettings.from_url(f"sqlite:///{Path(folder) / 'replay.db'}")
        views = [(p, open_view(settings, p)) for p in projections]
        try:
            yield views
        finally:
            for _, view in views:
                view.datastore.close()  # type: ignore[attr-defined]


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
                old.datastore.close()  # type: ignore[attr-defined]
        views = [(p, open_view(settings, p, pool_size=1)) for p in PROJECTIONS]
        try:
            started = time.perf_counter()
            events = replay(app, views, on_batch=on_batch)
            return RebuildReport(events, time.perf_counter() - started)
        finally:
            for _, view in views:
                view.datastore.close()  # type: ignore[attr-defined]
