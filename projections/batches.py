"""Applying the log to read models a batch of events at a time: the keeper's way and the
replay's, one code path.

``BatchApplier`` decodes a batch of notifications once, gives each event to every read model that
has not applied it yet (each knows the position it has reached), and commits the batch: one
transaction per datastore, so read models sharing one (PostgreSQL) commit together, rows and
tracking records of all of them, and read models with a file each (SQLite) commit one by one.
When a batch fails, whatever of it was not committed is dropped and every remembered row is
forgotten, so the next batch starts from what the store holds.

"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Mapper, Notification

from projections.views import Changes, ReadModelProjection, ReadModelView, Rows

Projections = Sequence[tuple[type[ReadModelProjection], ReadModelView]]
# Rows the read models remember between batches, all together; past it they forget them all
# once nothing is left to commit, and read again what they need.
MAX_REMEMBERED_ROWS = 50_000


@dataclass(frozen=True)
class Batch:
    """What a batch of events changed, per read model, ready to commit."""

    end: int  # the batch's last event
    parts: list[tuple[Rows, int, Changes]]  # each read model's rows, start, changes


class BatchApplier:
    """Read models, their projections and the positions they have reached."""

    def __init__(
        self,
        mapper: Mapper[Any],
        projections: Projections,
        *,
        max_remembered_rows: int = MAX_REMEMBERED_ROWS,
    ) -> None:
        self.mapper = mapper
        self.max_remembered_rows = max_remembered_rows
        self.models: list[tuple[ReadModelProjection, Rows]] = []
        for cls, view in projections:
            rows = Rows(view, cls.keys)
            self.models.append((cls(rows), rows))
        # event type -> the read models it changes (the others only track it)
        self._changed_by: dict[type[Any], list[tuple[ReadModelProjection, Rows]]] = {}

    @property
    def position(self) -> int:
        """Where the read model furthest behind stands: read on from here."""
        return min(rows.applied for _, rows in self.models)

    def apply(self, notifications: Sequence[Notification]) -> None:
        """Apply the notifications (the next ones, in log order) and commit them."""
        try:
            batch = self.prepare(notifications)
            if batch is not None:
                self.commit(batch)
        except BaseException:
            self.forget()
            raise
        if self.remembered() > self.max_remembered_rows:
            self.forget()

    def prepare(self, notifications: Sequence[Notification]) -> Batch | None:
        if not notifications:
            return None
        changed_by = self._changed_by
        for notification in notifications:
            event = self.mapper.to_domain_event(notification)
            kind = type(event)
            if kind not in changed_by:
                changed_by[kind] = [m for m in self.models if kind in m[0].handles]
            for projection, rows in changed_by[kind]:
                if notification.id > rows.applied:
                    projection.process_event(event, notification.id)
        end = notifications[-1].id
        parts = [(rows, *rows.take(end)) for _, rows in self.models if rows.applied < end]
        return Batch(end, parts)

    def commit(self, batch: Batch) -> None:
        by_datastore: dict[int, list[tuple[Rows, int, Changes]]] = {}
        for part in batch.parts:
            by_datastore.setdefault(id(part[0].view.datastore), []).append(part)
        for group in by_datastore.values():
            with group[0][0].view.datastore.transaction(commit=True) as cursor:
                for rows, start, changes in group:
                    rows.view.write(cursor, start, batch.end, changes)
            for rows, _, _ in group:
                rows.committed(batch.end)

    def remembered(self) -> int:
        return sum(rows.remembered() for _, rows in self.models)

    def forget(self) -> None:
        for _, rows in self.models:
            rows.forget()
