"""The pipeline of a command: decide → queue → commit → answer.

``Pipeline.run`` carries out one command on its caller's thread: it takes the command's account
lock, lets the application decide (load aggregates, run the domain, collect the aggregates whose
new events must be recorded together, and the answer), hands the decision to the committer, and
answers. The ``Committer`` records many decided commands in one transaction, then answers each.

Concurrency: aggregates are versioned; a decision that cannot be recorded because its state
moved on (another command of the batch, another process) is decided again from fresh state, at
most ``max_attempts`` times, then ``Contention``. Within one process, writers of one account
queue on a striped lock first (held until their commit is answered), so they rarely race.
Aggregates come from this process's cache as it last recorded them; a decision that records
nothing (a refusal, a natural duplicate) is decided again from the store before it is answered,
so another process's writes are never missed. A decision made again reads every aggregate it
loads from the store, none from the cache (``Pipeline.fresh``): its refusal is final.

Idempotency: with a caller's key, the key's record is written in the same transaction as the
events it guards; a repeat answers the first response (see ``ledger.idempotency``). A refusal
that is recorded (``Decision.recorded_refusal``: a case the policy refuses) is committed like
any decision, its key holding the refusal, then raised: a retry hears the same refusal, naming
the same case, and records nothing.

Group commit: a handler decides on its own thread (under its account's lock), hands the
committer the new events of its aggregates and its key's record, and waits for the answer. The
committer takes whatever is queued (at most ``MAX_BATCH``; a batch forms while the previous
one is being written) and records it with one ``insert_events``: one transaction, where the
store also places and seals each event and writes the keys (on PostgreSQL one statement while
no other process writes; ``projections.store``). An idle ledger commits a lone command at
once, on the handler's own thread: when nothing is queued and no batch is being written, the
handler writes its command as a batch of one, sparing the hand-off to the committer's thread
and back (two thread wake-ups, the largest part of a lone write's latency).

- A command whose aggregate another command of the same batch already changed was decided on
  state that is no longer current: it is not recorded, and its handler decides again
  (``Conflicted``), never applied on stale state.
- One command's failure never fails the rest of its batch: a batch the store refuses (a
  version another process took first, a key taken meanwhile) wrote nothing, and is recorded
  again one command at a time; only the commands that fail alone fail. A batch the store
  could not confirm (its connection failed, ``CommitUnconfirmed``) may have been committed:
  nothing of it is recorded again.
- Nothing is applied twice by the ledger's own retries: a commit whose acknowledgement is lost
  (its connection failed after it was sent) is recorded again only once the store has found
  it was not committed; if it was (its events stored at their versions, with the very state
  sent), each of its commands is answered as recorded, not decided again (``projections.store``).
  When the store cannot tell within its bounded retries, the batch's commands hear
  ``CommitUnconfirmed`` (the store not answering: send it again, under its key).
- Every wait is bounded: a full queue refuses at once (``Contention``), a handler waits at most
  ``lock_timeout_s`` for its account's lock and ``ANSWER_TIMEOUT_S`` for its answer. A
  command still queued when its handler gives up is withdrawn (never written after its
  caller heard it was not); one already being written stays unknown (a retry under its key).

On the event loop (a server on PostgreSQL): the committer is a ``LoopCommitter``, a task of
the event loop that records its batches through an async connection. A command on an account
whose aggregates this process holds is then decided and committed on the event loop itself
(``Pipeline.run_on_loop``): no thread, no hand-off. Everything else, a command that must read
the store, a decision made again, a key's replay, runs on a thread as above, and its commit
goes to the same ``LoopCommitter``: one writer per process still. A command whose account's
lock another command of the loop holds waits on the loop for it to be answered. The loop's try
gives up, having recorded nothing, and the thread starts over when a thread holds its account's
lock, when an aggregate is not held here (``NotCached``), when the decision records nothing or
is a refusal, and when its commit conflicts. Handing each write to a thread and back made
the event loop and the threads take turns on the interpreter's lock at every step.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    Recording,
    StoredEvent,
)

from ledger import errors
from ledger.errors import (
    Conflict,
    Contention,
    IdempotencyKeyReused,
    LedgerError,
    NotFound,
    NotReady,
    Refused,
)
from ledger.idempotency import (
    KeyBook,
    KeyRecord,
    KeyWrite,
    mark_events,
    record_id,
    took_effect,
)
from ledger.identity import Actor
from ledger.timers import FixedDelayTimers

if TYPE_CHECKING:
    from ledger.commands import Command

DEFAULT_MAX_ATTEMPTS = 40
DEFAULT_LOCK_TIMEOUT_S = 10.0
LOCK_STRIPES = 4096
# How many times a command on the event loop waits for another of the loop on its account's
# lock before it goes to a thread to wait in line there.
MAX_LOOP_WAITS = 8
MAX_BATCH = 256
MAX_QUEUED = 4096
ANSWER_TIMEOUT_S = 60.0
NOT_WRITTEN = ("the ledger had too many writes waiting to write this one in time: nothing was "
               "written; send it again")
IDLE_WAIT_S = 0.2
# Housekeeping (pruning idempotency keys past their lifetime) runs this often, between batches.
HOUSEKEEPING_EVERY_S = 300.0

log = logging.getLogger(__name__)


class Conflicted(Exception):
    """The command was decided on state that changed before it was recorded: decide again."""


class NotCached(Exception):
    """A decision on the event loop needs an aggregate this process does not hold: it is made
    on a thread instead, which may read the store."""


class LoopUnbound(Exception):
    """The event loop's committer has handed the commits back to the threads (the server is
    stopping): a command that still reached it is committed on a thread instead, having
    recorded nothing on the loop."""


class WritersLockBusy(OperationalError):
    """The writers' lock was not had within the store's lock timeout: another writer holds it
    (stalled in its transaction, in another process). The batch wrote nothing, surely: each of
    its commands' callers hears it as the store not answering (503), to send it again."""


class CommitUnconfirmed(OperationalError):
    """The store cannot tell whether a batch was committed: its acknowledgement was lost, and
    the store answered neither a try again nor the writer's look for it (bounded retries).
    Nothing of the batch is decided or recorded again: each of its commands' callers hears
    it as the store not answering (503; the client may send it again, safely under its key)."""


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
        # Held while a batch is being recorded, by the committer's thread or by a handler
        # writing its lone command itself: one batch at a time in this process.
        self._writing = threading.Lock()
        # Set while the committer's thread holds a command and waits for ``_writing``: a handler
        # then queues rather than writing its own, so no run of lone commands keeps it waiting.
        self._committer_waiting = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0
        self.commands = 0
        # Set while an event loop commits for this process (``LoopCommitter.bind``).
        self.on_loop: LoopCommitter | None = None

    # -- the handler's side ---------------------------------------------------------------------

    def commit(self, aggregates: Sequence[Aggregate], key: KeyWrite | None) -> Committed:
        """Record the new events of ``aggregates`` and ``key`` together; answers where the
        events landed. Raises ``Conflicted`` (decide again), ``Contention`` (queue full), or
        what the store raised for this command alone."""
        on_loop = self.on_loop
        if on_loop is not None:
            try:
                return on_loop.commit_from_thread(aggregates, key)
            except LoopUnbound:
                pass  # handed back meanwhile: committed here, as after the loop's unbinding
        self._ensure_started()
        events: list[DomainEventProtocol[UUID]] = []
        for aggregate in aggregates:
            events.extend(aggregate.collect_events())
        decided = _Decided(tuple(aggregates), events, key)
        if (not self._committer_waiting and self._queue.empty()
                and self._writing.acquire(blocking=False)):
            # An idle ledger (nothing queued, no batch being written): the handler records its
            # command itself, sparing two thread hand-offs (to the committer and back).
            try:
                self._write([decided])
            finally:
                self._writing.release()
            assert decided.answer.done(), "a written batch answers every command in it"
            return decided.answer.result()
        try:
            self._queue.put_nowait(decided)
        except queue.Full:
            raise Contention("the ledger has too many writes waiting; try again shortly") from None
        try:
            return decided.answer.result(timeout=ANSWER_TIMEOUT_S)
        except FutureTimeout:
            if decided.answer.cancel():
                # Still queued: withdrawn, so the committer never writes it (it takes a
                # command into a batch only if it was not withdrawn first). A 503 the client
                # may send again with or without a key; it never lands after its answer.
                raise Contention(NOT_WRITTEN) from None
            if decided.answer.done():  # answered meanwhile
                return decided.answer.result()
            # Being written: its outcome is unknown to this handler, which is what a lost
            # answer is to a client (it retries with its key).
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
            self._committer_waiting = True
            with self._writing:  # what queues while a handler writes joins this batch
                self._committer_waiting = False
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                self._write(batch)
            # When due, busy or not: a committer that always finds a command waiting never
            # times out on its queue, and would never prune the keys past their lifetime.
            self._keep_house()

    def _write(self, batch: list[_Decided]) -> None:
        assert self._writing.locked()
        try:
            self._commit_batch(batch)
        except BaseException as error:  # never leave a handler waiting on a failed batch
            log.exception("the committer failed")
            for decided in batch:
                if not decided.answer.done():
                    decided.answer.set_exception(error)

    def _keep_house(self) -> None:
        if time.monotonic() - self._housekept_at < HOUSEKEEPING_EVERY_S:
            return
        self._housekept_at = time.monotonic()
        try:
            with self._writing:
                more = self.housekeeping()
        except Exception:  # housekeeping never stops the committer; it runs again later
            log.exception("committer housekeeping failed")
            return
        if more:  # one bounded step done: the next one between the next batches
            self._housekept_at = 0.0

    def _commit_batch(self, batch: list[_Decided]) -> None:
        touched: set[UUID] = set()
        ready: list[_Decided] = []
        for decided in batch:
            if not decided.answer.set_running_or_notify_cancel():
                continue  # withdrawn by its handler, which gave up waiting: never written
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
        except (OperationalError, InterfaceError) as error:
            # perhaps committed (the store could not confirm it): nothing is recorded again
            for decided in ready:
                self._fail(decided, error)
            return
        except Exception as error:  # refused whole (a version or a key taken): wrote nothing
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
        _evict(self.app, decided.aggregates)
        decided.answer.set_exception(_as_refusal(error))


def _evict(app: Application[UUID], aggregates: Sequence[Aggregate]) -> None:
    """Whatever a failed command decided did not happen; the aggregates it changed are not the
    stored ones, so none of them may be handed out again from the cache."""
    cache: Any = app.repository.cache
    if cache is not None:
        for aggregate in aggregates:
            try:
                cache.get(aggregate.id, evict=True)
            except KeyError:
                pass


def _as_refusal(error: Exception) -> Exception:
    """What a command's handler hears of its failed commit: a version or a key taken first is
    a conflict (decide again); anything else (``CommitUnconfirmed`` too), as it was.

    A version taken by this very batch's own earlier try (its acknowledgement lost) is never
    a conflict: the store finds that try committed and answers it as recorded
    (``projections.store``), so an IntegrityError here is another writer's."""
    return Conflicted() if isinstance(error, IntegrityError) else error


RecordBatch = Callable[[list[StoredEvent], list[KeyWrite]], Awaitable[Sequence[int]]]


@dataclass(eq=False)  # each its own: a key of the answer timers
class _DecidedOnLoop:
    aggregates: tuple[Aggregate, ...]
    stored: list[StoredEvent]
    key: KeyWrite | None
    answer: asyncio.Future[Committed]


class LoopCommitter:
    """The one writer of an application's events in a process that serves from an event loop.

    Commands come from the event loop (``commit``) or from threads (``commit_from_thread``);
    while a batch is being recorded the next one forms, and a task of the loop records it with
    one ``record`` (the events, their keys; it answers the events' positions). The same rules
    as ``Committer``'s: a command whose aggregate its batch already changed is sent back
    (``Conflicted``), one command's failure fails no other, the queue is bounded."""

    def __init__(self, app: Application[UUID], loop: asyncio.AbstractEventLoop,
                 record: RecordBatch, *, max_batch: int = MAX_BATCH,
                 max_queued: int = MAX_QUEUED) -> None:
        assert 1 <= max_batch <= 10_000 and 1 <= max_queued <= 1_000_000
        self.app = app
        self.loop = loop
        self.record = record
        self.max_batch = max_batch
        self.max_queued = max_queued
        self._waiting: list[_DecidedOnLoop] = []
        self._writer: asyncio.Task[None] | None = None
        # Each command's ANSWER_TIMEOUT_S, on one timer of the loop (ledger.timers).
        self._answer_timers: FixedDelayTimers[_DecidedOnLoop] = FixedDelayTimers(ANSWER_TIMEOUT_S)
        self.batches = 0
        self.commands = 0
        # Set as the commits are handed back: nothing reaches the loop's recorder after it.
        self.unbound = False

    def bind(self, committer: Committer) -> None:
        """Make this the committer of ``committer``'s process (its threads' commits too)."""
        assert committer.on_loop is None, "one committer on the loop at a time"
        committer._ensure_started()  # its thread still keeps house (prunes expired keys)
        committer.on_loop = self

    async def unbind(self, committer: Committer) -> None:
        """Hand the commits back to ``committer``'s threads, once what is queued is recorded."""
        assert committer.on_loop is self
        committer.on_loop = None
        self.unbound = True  # a command that read ``on_loop`` just before is refused below
        if self._writer is not None:
            await asyncio.shield(self._writer)

    async def commit(self, aggregates: Sequence[Aggregate], key: KeyWrite | None) -> Committed:
        """On the event loop: record the new events of ``aggregates`` and ``key`` together;
        raises ``Conflicted`` (decide again), ``Contention`` (queue full), or what the store
        raised for this command alone; ``LoopUnbound`` (before anything of the command was
        taken) once the commits were handed back."""
        if self.unbound:
            raise LoopUnbound()
        if len(self._waiting) >= self.max_queued:
            raise Contention("the ledger has too many writes waiting; try again shortly")
        events: list[DomainEventProtocol[UUID]] = []
        for aggregate in aggregates:
            events.extend(aggregate.collect_events())
        to_stored = self.app.mapper.to_stored_event
        decided = _DecidedOnLoop(tuple(aggregates), [to_stored(event) for event in events], key,
                                 self.loop.create_future())
        self._waiting.append(decided)
        if self._writer is None:
            self._writer = self.loop.create_task(self._write())
        self._answer_timers.set(decided, self._not_confirmed)
        try:
            return await decided.answer
        except asyncio.CancelledError:
            # Its waiter gave up (a thread's handler timed out): still queued, it is withdrawn,
            # so that it never lands after its handler answered that it was not confirmed.
            self._withdraw(decided)
            raise
        finally:
            self._answer_timers.cancel(decided)

    def _withdraw(self, decided: _DecidedOnLoop) -> bool:
        """Take ``decided`` out of the queue if it is still there (not yet in a batch)."""
        for index, waiting in enumerate(self._waiting):
            if waiting is decided:
                del self._waiting[index]
                return True
        return False

    def _not_confirmed(self, decided: _DecidedOnLoop) -> None:
        if decided.answer.done():
            return
        if self._withdraw(decided):  # still queued: never written
            decided.answer.set_exception(Contention(NOT_WRITTEN))
            return
        # Being written: its outcome is unknown to its handler, which is what a lost answer
        # is to a client (it retries with its key).
        decided.answer.set_exception(
            Contention("the write was not confirmed in time; send it again"))

    def commit_from_thread(self, aggregates: Sequence[Aggregate], key: KeyWrite | None
                           ) -> Committed:
        """``commit``, for a handler on a thread (never the loop's own)."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no loop runs on this thread: as it should be
            running = None
        if running is self.loop:
            raise RuntimeError("a handler on the event loop awaits LoopCommitter.commit")
        if self.unbound or self.loop.is_closed():
            raise LoopUnbound()
        future = asyncio.run_coroutine_threadsafe(self.commit(aggregates, key), self.loop)
        try:
            return future.result(timeout=ANSWER_TIMEOUT_S + 1)
        except FutureTimeout:
            future.cancel()
            raise Contention("the write was not confirmed in time; send it again") from None

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:self.max_batch]
                del self._waiting[:self.max_batch]
                await self._commit_batch(batch)
        finally:
            self._writer = None

    async def _commit_batch(self, batch: list[_DecidedOnLoop]) -> None:
        touched: set[UUID] = set()
        ready: list[_DecidedOnLoop] = []
        for decided in batch:
            ids = {aggregate.id for aggregate in decided.aggregates}
            if ids & touched:
                self._fail(decided, Conflicted())
                continue
            touched |= ids
            ready.append(decided)
        if not ready:
            return
        try:
            answers = await self._record(ready)
        except (OperationalError, InterfaceError) as error:
            # perhaps committed (the store could not confirm it): nothing is recorded again
            for decided in ready:
                self._fail(decided, error)
            return
        except Exception as error:  # refused whole (a version or a key taken): wrote nothing
            if len(ready) == 1:
                self._fail(ready[0], error)
                return
            for decided in ready:  # one command's failure never fails the rest
                try:
                    (answer,) = await self._record([decided])
                except Exception as alone:
                    self._fail(decided, alone)
                else:
                    _answer(decided.answer, answer)
            return
        for decided, answer in zip(ready, answers, strict=True):
            _answer(decided.answer, answer)

    async def _record(self, batch: list[_DecidedOnLoop]) -> list[Committed]:
        stored: list[StoredEvent] = []
        keys: list[KeyWrite] = []
        for decided in batch:
            stored.extend(decided.stored)
            if decided.key is not None:
                keys.append(_at_event(decided.key, len(stored)))
        positions = await self.record(stored, keys)
        assert len(positions) == len(stored), "every event recorded has its position"
        cache: Any = self.app.repository.cache
        answers, start = [], 0
        for decided in batch:
            if cache is not None:  # as eventsourcing's Application._record does
                for aggregate in decided.aggregates:
                    cache.put(aggregate.id, aggregate)
            end = start + len(decided.stored)
            answers.append(Committed(tuple(positions[start:end])))
            start = end
        self.batches += 1
        self.commands += len(batch)
        return answers

    def _fail(self, decided: _DecidedOnLoop, error: Exception) -> None:
        _evict(self.app, decided.aggregates)
        if not decided.answer.done():
            decided.answer.set_exception(_as_refusal(error))


def _answer(answer: asyncio.Future[Committed], committed: Committed) -> None:
    if not answer.done():  # its waiter may have given up (a timeout): nothing to tell
        answer.set_result(committed)


def _at_event(key: KeyWrite, events_so_far: int) -> KeyWrite:
    """The key's record, told which event of the whole batch its position is (the 1-based
    index of the command's last event; 0 when the command records none)."""
    if not key.at_last_event:
        return key
    return replace(key, event_index=events_so_far)


# -- one command: decide, commit, answer --------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What a use case decided: aggregates to save together, and the answer.

    No aggregates means nothing changes (a natural duplicate): ``position`` then says where the
    original was recorded."""

    aggregates: tuple[Aggregate, ...]
    body: dict[str, Any]
    outcome: str = "created"
    original: tuple[UUID, int] | None = None
    # A refusal that is recorded (a case the policy refuses): its aggregates are saved, and
    # the refusal, not an answer, is what the caller hears (and what a key replays).
    refusal: LedgerError | None = None

    @classmethod
    def recorded_refusal(cls, aggregates: tuple[Aggregate, ...], refusal: LedgerError
                         ) -> Decision:
        return cls(aggregates, refusal_body(refusal), REFUSED, refusal=refusal)


@dataclass(frozen=True)
class Outcome:
    """The answer of a command: ``created``, ``ok`` (a step on something existing) or
    ``existing`` (a natural duplicate); ``replayed`` when an idempotency key answered it."""

    outcome: str
    body: dict[str, Any]
    position: int
    replayed: bool = False


REFUSED = "refused"


class EventPositions(Protocol):
    """Where a stored event stands in the global log (the store knows; the domain asks)."""

    def position_of(self, originator_id: UUID, version: int) -> int: ...


class Ledger(Protocol):
    """What the pipeline asks of the application it carries commands out for (its keys and
    positions are wired to the store after it is made, so they are read when needed)."""

    keys: KeyBook
    positions: EventPositions
    clock: Callable[[], datetime]
    committer: Committer

    def forget(self, ids: set[UUID]) -> None:
        """Drop aggregates from the cache: the next load reads them from the store."""


@dataclass
class _StripedLocks:
    stripes: list[threading.Lock] = field(
        default_factory=lambda: [threading.Lock() for _ in range(LOCK_STRIPES)]
    )

    def for_key(self, key: UUID) -> threading.Lock:
        return self.stripes[self.index_of(key)]

    def index_of(self, key: UUID) -> int:
        return key.int % len(self.stripes)


class Pipeline:
    """Carries out commands for one application (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> None:
        assert max_attempts >= 1
        self.ledger = ledger
        self.max_attempts = max_attempts
        self.lock_timeout_s = lock_timeout_s
        self._locks = _StripedLocks()
        self._reads = threading.local()  # the aggregates the current decision loaded
        # The stripes held by a command on the event loop, each with what its release sets:
        # another command of the loop waits for that rather than going to a thread.
        self._held_on_loop: dict[int, asyncio.Future[None]] = {}

    def reads(self) -> set[UUID] | None:
        """The aggregates the decision being made on this thread has loaded so far (to add to);
        None outside a decision."""
        reads: set[UUID] | None = getattr(self._reads, "ids", None)
        return reads

    def cache_only(self) -> bool:
        """Whether the decision being made on this thread is made on the event loop, where an
        aggregate this process does not hold is not read from the store (``NotCached``)."""
        return bool(getattr(self._reads, "cache_only", False))

    def fresh(self) -> bool:
        """Whether the decision being made on this thread is made again from the store: every
        aggregate it loads is read from the store, none from the cache (another process may
        have changed any of them, not only those the first decision read)."""
        return bool(getattr(self._reads, "fresh", False))

    async def run_on_loop(
        self,
        command: Command,
        decide: Callable[[], Decision],
        *,
        actor: Actor,
        key: str | None,
        lock: UUID,
    ) -> Outcome | None:
        """``run``, on the event loop, for a command whose first decision is recorded as it is
        made: answers its outcome, or None when it must run on a thread instead (before
        anything is recorded; see the module docstring). Waits only on the loop: for another
        command of the loop holding its account's lock, and for its commit."""
        ledger = self.ledger
        on_loop = ledger.committer.on_loop
        if on_loop is None:
            return None
        index = self._locks.index_of(lock)
        if not await self._take_on_loop(index):
            return None
        released = asyncio.get_running_loop().create_future()
        self._held_on_loop[index] = released
        try:
            reads: set[UUID] = set()
            self._reads.ids, self._reads.cache_only = reads, True
            try:
                decision = decide()
            except (Refused, Conflict, NotFound, NotCached):
                return None  # perhaps on what another process changed: the thread decides
            finally:
                self._reads.ids, self._reads.cache_only = None, False
            if not decision.aggregates or decision.refusal is not None:
                return None  # a natural duplicate or a recorded refusal: the thread looks
            write = None
            if key is not None:
                guard = KeyGuard(ledger, actor, key, command.fingerprint())
                if guard.took_effect(decision):
                    return None  # a retry (or a record deleted): the thread looks its key up
                write = guard.record(decision, None)
                mark_events(decision.aggregates, write.record)
            try:
                committed = await on_loop.commit(decision.aggregates, write)
            except (Conflicted, LoopUnbound):  # lost a race, its key was taken, or the loop
                ledger.forget(reads)  # handed the commits back: the thread decides again
                return None
            assert committed.last is not None, "a recorded decision has a position"
            return Outcome(decision.outcome, decision.body, committed.last)
        finally:
            del self._held_on_loop[index]
            self._locks.stripes[index].release()
            released.set_result(None)

    async def _take_on_loop(self, index: int) -> bool:
        """Take the stripe ``index`` on the event loop: at once, or once the command of the
        loop holding it is answered (at most ``MAX_LOOP_WAITS`` times: others may take it
        first). False when a thread holds it: the command then waits in line on a thread."""
        stripe = self._locks.stripes[index]
        for _ in range(MAX_LOOP_WAITS):
            if stripe.acquire(blocking=False):
                return True
            holder = self._held_on_loop.get(index)
            if holder is None:
                return False
            try:
                async with asyncio.timeout(self.lock_timeout_s):
                    await asyncio.shield(holder)  # a waiter that gives up cancels no one else
            except TimeoutError:
                raise Contention("the account is busy; try again shortly") from None
        return False

    def replay(self, command: Command, *, actor: Actor, key: str) -> Outcome | None:
        """The first response ``key`` recorded for this very request (raised again when it
        was a refusal; ``IdempotencyKeyReused`` when the key answered another), or None."""
        return KeyGuard(self.ledger, actor, key, command.fingerprint()).replay()

    def run(
        self,
        command: Command,
        decide: Callable[[], Decision],
        *,
        actor: Actor,
        key: str | None,
        lock: UUID,
    ) -> Outcome:
        """Decide ``command`` (again, when it lost a race) and commit it under ``key``, holding
        the lock named ``lock``; answers the outcome, or raises the refusal."""
        ledger = self.ledger
        guard = KeyGuard(ledger, actor, key, command.fingerprint()) if key else None
        # The key is looked up only when it may matter, once a round: before a decision made
        # again from the store (a conflict, a refusal or a duplicate may be this very request,
        # committed). A first attempt goes straight to the commit, where a key already taken is
        # a conflict like any other; so is a first try another process commits after the look.
        check_key, fresh, conflicts = False, False, 0
        # Bounded: each round either answers, or is the one decision made again from the store
        # (``fresh``, once), or is a conflict (at most ``max_attempts``).
        while conflicts < self.max_attempts:
            stripe = self._locks.for_key(lock)
            if not stripe.acquire(timeout=self.lock_timeout_s):
                raise Contention("the account is busy; try again shortly")
            try:
                if guard is not None and check_key and (replay := guard.replay()) is not None:
                    return replay
                first_refusal = None
                reads: set[UUID] = set()
                self._reads.ids, self._reads.fresh = reads, fresh
                try:
                    decision = decide()
                except (Refused, Conflict, NotFound) as refusal:
                    # What a refused decision read is not kept: the next one reads the store.
                    ledger.forget(reads)
                    if not fresh:  # perhaps decided on what another process changed since
                        check_key = fresh = True
                        continue
                    if guard is None:
                        raise
                    # Its key was looked up as this round began (``fresh`` rounds check it): a
                    # first try committed since then takes the key, and this commit conflicts.
                    assert check_key
                    decision, first_refusal = guard.refusal(refusal), refusal
                finally:
                    self._reads.ids, self._reads.fresh = None, False
                original = None
                if not decision.aggregates and decision.outcome != REFUSED:
                    # a natural duplicate: it answers the original
                    if not fresh:
                        ledger.forget(reads)
                        check_key = fresh = True
                        continue
                    assert decision.original is not None
                    original = ledger.positions.position_of(*decision.original)
                    if guard is None:
                        return Outcome(decision.outcome, decision.body, original)
                    assert check_key  # looked up as this round began, as above
                if guard is not None and guard.took_effect(decision):
                    # The key's events are on an aggregate this decision changes: its record
                    # answers them (a retry, perhaps its first try committed by another process
                    # since this round looked), or was deleted behind the service's back. An
                    # expired record is not theirs (a live mark's own record is live): an
                    # older one of the same key, put back.
                    if not check_key:
                        ledger.forget(reads)
                        check_key = fresh = True
                        continue
                    if (replay := guard.replay()) is not None:
                        return replay
                    raise guard.missing()
                write = guard.record(decision, original) if guard is not None else None
                if write is not None:
                    mark_events(decision.aggregates, write.record)
                try:
                    committed = ledger.committer.commit(decision.aggregates, write)
                except Conflicted:
                    # lost a race, or the key was taken (by this request's first try, sent
                    # again): decide again from the store. Never this very commit's own
                    # first try, its acknowledgement lost: the store finds that out first.
                    ledger.forget(reads)
                    check_key = fresh = True
                    conflicts += 1
                else:
                    if first_refusal is not None:
                        raise first_refusal  # recorded; not a replay the first time
                    if decision.refusal is not None:
                        raise decision.refusal  # its aggregates recorded, its key's answer
                    position = committed.last if original is None else original
                    assert position is not None, "a recorded decision has a position"
                    return Outcome(decision.outcome, decision.body, position)
            finally:
                stripe.release()
            if conflicts > 1:
                # The first conflict of a request under a key is most often its own key, taken
                # by its first try (a retry): the key is looked up at once. Races back off.
                _back_off(conflicts - 1)
        raise Contention(
            f"{command.name} lost {self.max_attempts} races in a row; try again shortly"
        )


class KeyGuard:
    """The idempotency key of one command: replays what it did, or records what it does.

    A key belongs to the caller (the person; a shared role token's person is its role), not to
    the token it came with."""

    def __init__(self, ledger: Ledger, actor: Actor, key: str, fingerprint: str) -> None:
        self.ledger = ledger
        self.caller = actor.person
        self.request_id = actor.request_id
        self.id = record_id(self.caller, key)
        self.fingerprint = fingerprint
        self.expired: KeyRecord | None = None

    def replay(self) -> Outcome | None:
        record = self.ledger.keys.get(self.id)
        self.expired = None
        if record is None:
            return None
        if not record.is_live(self.ledger.clock()):
            self.expired = record
            return None
        if record.fingerprint != self.fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for another request", key_fingerprint=self.id
            )
        if record.outcome == REFUSED:
            raise refusal_from(record.body)
        assert record.position is not None, "a key's recorded answer names its position"
        return Outcome(record.outcome, record.body, record.position, replayed=True)

    def took_effect(self, decision: Decision) -> bool:
        """Whether an aggregate ``decision`` changes holds an event recorded under this key
        within its lifetime (``ledger.idempotency.took_effect``)."""
        return took_effect(decision.aggregates, self.id, self.ledger.clock())

    def missing(self) -> NotReady:
        """The refusal of a request whose key took effect (its events hold its live mark) but
        whose record is gone: deleted behind the service's back. Carried out again, a command
        with no natural key (a partial failure credit, a refund request) would take effect
        twice."""
        log.error("the record of idempotency key %s is gone while events recorded under it "
                  "are within its lifetime: it was deleted behind the service's back; its "
                  "requests are refused until its lifetime is over", self.id)
        return NotReady(
            "the record of this Idempotency-Key was deleted behind the service's back, and the "
            "log shows the request already took effect: it is not carried out again. The "
            "event log shows what it did"
        )

    def refusal(self, refusal: LedgerError) -> Decision:
        """A decision that records nothing but this key's refused first response."""
        return Decision((), refusal_body(refusal), REFUSED, original=None)

    def record(self, decision: Decision, original: int | None) -> KeyWrite:
        """The record of this key's first response; ``original`` is the position it names
        when it wrote nothing else (otherwise: its last event's)."""
        body = decision.body
        if decision.outcome == REFUSED:  # its answer names the request: the same when replayed
            body = {**body, "request_id": self.request_id}
        record = KeyRecord(
            id=self.id,
            caller=self.caller,
            fingerprint=self.fingerprint,
            outcome=decision.outcome,
            body=body,
            position=original,
            recorded_at=self.ledger.clock(),
        )
        replaces = None if self.expired is None else self.expired.recorded_at
        at_last_event = original is None and decision.outcome != REFUSED
        return KeyWrite(record, at_last_event=at_last_event, replaces=replaces)


def refusal_body(refusal: LedgerError) -> dict[str, Any]:
    """A refusal as a key's record holds it (``refusal_from`` raises it again)."""
    return {
        "error": type(refusal).__name__,
        "detail": refusal.detail,
        "context": {k: _plain(v) for k, v in refusal.context.items()},
    }


def _plain(value: object) -> object:
    return value if isinstance(value, str | int | bool | type(None)) else str(value)


def refusal_from(body: dict[str, Any]) -> LedgerError:
    """The refusal a key's record holds, raised again (marked ``replayed``)."""
    cls = getattr(errors, body["error"])
    assert isinstance(cls, type) and issubclass(cls, LedgerError), body
    refusal = cls.__new__(cls)
    LedgerError.__init__(refusal, body["detail"], **body["context"])
    for name, value in body["context"].items():  # e.g. CaseRefused.reason, InvalidInput.field
        setattr(refusal, name, value)
    refusal.replayed = True
    refusal.first_request_id = body.get("request_id")  # None in a record made before
    return refusal


def _back_off(attempt: int) -> None:
    """Jittered, capped sleep between optimistic retries (at most ~50 ms each)."""
    time.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))  # noqa: S311
