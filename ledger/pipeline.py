"""Group commit: decided commands wait in a bounded queue; one committer records many of them
in one transaction, then answers each.

decide → queue → commit → answer. A handler decides on its own thread (under its account's
lock), hands the committer the new events of its aggregates and its key's record, and waits for
the answer. The committer takes whatever is queued (at most ``MAX_BATCH``; an idle ledger
commits a lone command at once, and a batch forms while the previous one is being written) and
records it with one ``insert_events``: one transaction under the events table's lock, where the
store also seals each event and writes the keys (``projections.store``).

- A command whose aggregate another command of the same batch already changed was decided on
  state that is no longer current: it is not recorded, and its handler decides again
  (``Conflicted``), never applied on stale state.
- One command's failure never fails the rest of its batch: a batch the store refuses (a
  version another process took first, a key taken meanwhile) is recorded again one command at a
  time, and only the commands that fail alone fail.
- Every wait is bounded: a full queue refuses at once (``Contention``), and a handler waits at
  most ``ANSWER_TIMEOUT_S`` for its answer.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import IntegrityError, Recording

from ledger.errors import Contention
from ledger.idempotency import KeyWrite

MAX_BATCH = 256
MAX_QUEUED = 4096
ANSWER_TIMEOUT_S = 60.0
IDLE_WAIT_S = 0.2
# Housekeeping (pruning idempotency keys past their lifetime) runs when idle, this often.
HOUSEKEEPING_EVERY_S = 300.0

log = logging.getLogger(__name__)


class Conflicted(Exception):
    """The command was decided on state that changed before it was recorded: decide again."""


@dataclass(frozen=True)
class Committed:
    """Where a command's events landed: their positions in the log, in order."""

    positions: tuple[int, ...]

    @property
    def last(self) -> int | None:
        return self.positions[-1] if self.positions else None


@dataclass
class _Decided:
    aggregates: tuple[Aggregate, ...]
    events: list[DomainEventProtocol[UUID]]
    key: KeyWrite | None
    answer: Future[Committed] = field(default_factory=Future)


class Committer:
    """The one writer of an application's events in this process (see the module docstring)."""

    def __init__(
        self,
        app: Application[UUID],
        *,
        max_batch: int = MAX_BATCH,
        max_queued: int = MAX_QUEUED,
        housekeeping: Callable[[], object] = lambda: None,
    ) -> None:
        assert 1 <= max_batch <= 10_000 and 1 <= max_queued <= 1_000_000
        self.app = app
        self.housekeeping = housekeeping
        self._housekept_at = time.monotonic()
        self.max_batch = max_batch
        self._queue: queue.Queue[_Decided] = queue.Queue(max_queued)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0
        self.commands = 0

    # -- the handler's side ---------------------------------------------------------------------

    def commit(self, aggregates: Sequence[Aggregate], key: KeyWrite | None) -> Committed:
        """Record the new events of ``aggregates`` and ``key`` together; answers where the
        events landed. Raises ``Conflicted`` (decide again), ``Contention`` (queue full), or
        what the store raised for this command alone."""
        self._ensure_started()
        events: list[DomainEventProtocol[UUID]] = []
        for aggregate in aggregates:
            events.extend(aggregate.collect_events())
        decided = _Decided(tuple(aggregates), events, key)
        try:
            self._queue.put_nowait(decided)
        except queue.Full:
            raise Contention("the ledger has too many writes waiting; try again shortly") from None
        try:
            return decided.answer.result(timeout=ANSWER_TIMEOUT_S)
        except FutureTimeout:
            # Still queued or being written: its outcome is unknown to this handler, which is
            # what a lost answer is to a client (it retries with its key).
            raise Contention("the write was not confirmed in time; send it again") from None

    def _ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                assert not self._stopping.is_set(), "the committer was stopped"
                self._thread = threading.Thread(target=self._run, name="committer", daemon=True)
                self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Commit what is queued, then stop."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- the committer's side -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_WAIT_S)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                self._keep_house()
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._commit_batch(batch)
            except BaseException as error:  # never leave a handler waiting on a dead committer
                log.exception("the committer failed")
                for decided in batch:
                    if not decided.answer.done():
                        decided.answer.set_exception(error)

    def _keep_house(self) -> None:
        if time.monotonic() - self._housekept_at < HOUSEKEEPING_EVERY_S:
            return
        self._housekept_at = time.monotonic()
        try:
            self.housekeeping()
        except Exception:  # housekeeping never stops the committer; it runs again later
            log.exception("committer housekeeping failed")

    def _commit_batch(self, batch: list[_Decided]) -> None:
        touched: set[UUID] = set()
        ready: list[_Decided] = []
        for decided in batch:
            ids = {aggregate.id for aggregate in decided.aggregates}
            if ids & touched:
                decided.answer.set_exception(Conflicted())
                continue
            touched |= ids
            ready.append(decided)
        if not ready:
            return
        try:
            answers = self._record(ready)
        except Exception as error:
            if len(ready) == 1:
                self._fail(ready[0], error)
                return
            for decided in ready:  # one command's failure never fails the rest
                try:
                    (answer,) = self._record([decided])
                except Exception as alone:
                    self._fail(decided, alone)
                else:
                    decided.answer.set_result(answer)
            return
        for decided, answer in zip(ready, answers, strict=True):
            decided.answer.set_result(answer)

    def _record(self, batch: list[_Decided]) -> list[Committed]:
        processing: ProcessingEvent[UUID] = ProcessingEvent()
        keys: list[KeyWrite] = []
        for decided in batch:
            processing.events.extend(decided.events)
            for aggregate in decided.aggregates:
                processing.aggregates[aggregate.id] = aggregate
            if decided.key is not None:
                keys.append(_at_event(decided.key, len(processing.events)))
        processing.saved_kwargs["keys"] = keys
        recordings: list[Recording[UUID]] = self.app._record(processing)
        self.batches += 1
        self.commands += len(batch)
        answers, start = [], 0
        for decided in batch:
            end = start + len(decided.events)
            answers.append(Committed(tuple(r.notification.id for r in recordings[start:end])))
            start = end
        assert start == len(recordings), "every recorded event belongs to one command"
        return answers

    def _fail(self, decided: _Decided, error: Exception) -> None:
        # Whatever this command decided did not happen; the aggregates it changed are not the
        # stored ones, so none of them may be handed out again from the cache.
        cache: Any = self.app.repository.cache
        if cache is not None:
            for aggregate in decided.aggregates:
                try:
                    cache.get(aggregate.id, evict=True)
                except KeyError:
                    pass
        if isinstance(error, IntegrityError):
            decided.answer.set_exception(Conflicted())
        else:
            decided.answer.set_exception(error)


def _at_event(key: KeyWrite, events_so_far: int) -> KeyWrite:
    """The key's record, told which event of the whole batch its position is (the 1-based
    index of the command's last event; 0 when the command records none)."""
    if not key.at_last_event:
        return key
    return replace(key, event_index=events_so_far)
