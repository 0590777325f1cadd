"""Applying the log to read models a batch of events at a time: the keeper's way and the
replay's, one code path.

``BatchApplier`` decodes a batch of notifications once, gives each event to every read model that
has not applied it yet (each knows the position it has reached), and commits the batch: one
transaction per datastore, so read models sharing one (PostgreSQL) commit together, rows and
tracking records of all of them, and read models with a file each (SQLite) commit one by one.
When a batch fails, whatever of it was not committed is dropped and every remembered row is
forgotten, so the next batch starts from what the store holds.

``apply`` prepares and commits a batch in the caller's thread (the keeper). ``pipelined`` commits
each batch in a thread of its own while the next one is decoded and projected (a replay on
PostgreSQL: the database's work then overlaps Python's).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Mapper, Notification

from projections.seal import ChainKey
from projections.views import Changes, Guard, ReadModelProjection, ReadModelView, Rows

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
        key: ChainKey,
        max_remembered_rows: int = MAX_REMEMBERED_ROWS,
        guard: Guard | None = None,
    ) -> None:
        self.mapper = mapper
        self.guard = guard  # run in every batch's write transaction (the keeper's swap fence)
        self.max_remembered_rows = max_remembered_rows
        self.models: list[tuple[ReadModelProjection, Rows]] = []
        for cls, view in projections:
            rows = Rows(view, cls.keys)
            self.models.append((cls(rows, key), rows))
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
            parts = [(rows.view, start, changes) for rows, start, changes in group]
            parts[0][0].write_batch(parts, batch.end, self.guard)
            for rows, _, _ in group:
                rows.committed(batch.end)

    def remembered(self) -> int:
        return sum(rows.remembered() for _, rows in self.models)

    def forget(self) -> None:
        for _, rows in self.models:
            rows.forget()

    @contextmanager
    def pipelined(self) -> Iterator[Callable[[Sequence[Notification]], None]]:
        """``apply``, with each batch committed in a thread of its own while the next one is
        prepared (at most one waits its turn). A failed commit raises from the next ``apply``
        or on leaving; leaving waits until every batch is committed.

        Only where every view's store lets one connection write while another reads
        (PostgreSQL); elsewhere (SQLite, whose shared-cache databases refuse it) batches are
        applied in the caller's thread."""
        if not all(rows.view.concurrent_writes for _, rows in self.models):
            yield self.apply
            return
        committing = _Committer(self.commit)
        try:

            def apply(notifications: Sequence[Notification]) -> None:
                committing.check()
                if self.remembered() > self.max_remembered_rows:
                    committing.wait()  # forgotten only once nothing is left to commit
                    self.forget()
                batch = self.prepare(notifications)
                if batch is not None:
                    committing.submit(batch)

            yield apply
            committing.wait()
        except BaseException:
            committing.close()  # first: nothing may commit while the rows are forgotten
            self.forget()
            raise
        finally:
            committing.close()


class _Committer:
    """A thread committing batches in the order given."""

    def __init__(self, commit: Callable[[Batch], None]) -> None:
        self._commit = commit
        self._batches: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="read-model-commits", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (batch := self._batches.get()) is not None:
            try:
                if self._failure is None:  # after a failure, nothing later may commit
                    self._commit(batch)
            except BaseException as failure:  # raised in the caller's thread, by check()
                self._failure = failure
            finally:
                self._batches.task_done()
        self._batches.task_done()

    def submit(self, batch: Batch) -> None:
        self._batches.put(batch)

    def check(self) -> None:
        if self._failure is not None:
            raise self._failure

    def wait(self) -> None:
        """Until every batch given is committed (or one failed: raises)."""
        self._batches.join()
        self.check()

    def close(self) -> None:
        if self._thread.is_alive():
            self._batches.put(None)
            self._thread.join()
