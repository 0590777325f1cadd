"""The committer (``ledger.pipeline.Committer``), against a store that records what it is given:
a lone command on an idle ledger is written at once by its own handler; commands that arrive
while a batch is being written are written together, in one transaction, by the committer's
thread; a command whose aggregate another of the same batch changed is sent back to be decided
again; one command's failure fails no other of its batch; and a batch the store cannot
confirm is recorded no more."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from ledger.pipeline import MAX_QUEUED, Committed, Committer, CommitUnconfirmed, Conflicted
from tests.unit.committing import Aggregate, deposit

WAIT_S = 10.0


class Store:
    """An application whose ``_record`` writes a batch as one transaction: it notes the batch
    (the events' names), the thread that wrote it, and numbers the events as the log would.
    ``hold`` keeps the next batch from finishing until ``release``; ``refuse`` names events
    whose batch the store refuses (as a version another process took first); ``unconfirmed``
    names events whose batch's outcome the store cannot tell (its acknowledgement lost, and
    the store not answering the look for it). ``tries`` counts the batches it was given."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.writers: list[str] = []
        self.position = 0
        self.holding = threading.Event()
        self.held = threading.Event()
        self.released = threading.Event()
        self.refuse: set[str] = set()
        self.unconfirmed: set[str] = set()
        self.tries = 0
        self.repository = SimpleNamespace(cache=None)

    def hold(self) -> None:
        self.holding.set()

    def release(self) -> None:
        self.released.set()

    def _record(self, processing: Any) -> list[Any]:
        names = [event.name for event in processing.events]
        if self.holding.is_set():
            self.holding.clear()
            self.held.set()
            assert self.released.wait(WAIT_S), "the test never released the batch"
        self.tries += 1
        if self.refuse & set(names):
            raise IntegrityError(f"refused {names}")
        if self.unconfirmed & set(names):
            raise CommitUnconfirmed(f"not confirmed {names}")
        self.batches.append(names)
        self.writers.append(threading.current_thread().name)
        recordings = []
        for _ in names:
            self.position += 1
            recordings.append(SimpleNamespace(notification=SimpleNamespace(id=self.position)))
        return recordings


@pytest.fixture
def store() -> Store:
    return Store()


class CountingQueue(queue.Queue[Any]):
    """The committer's queue, counting the commands handed to it (the committer's thread may
    already have taken some out)."""

    def __init__(self) -> None:
        super().__init__(MAX_QUEUED)
        self.puts = 0

    def put_nowait(self, item: Any) -> None:
        super().put_nowait(item)
        self.puts += 1


@pytest.fixture
def committer(store: Store) -> Iterator[Committer]:
    committer = Committer(store)  # type: ignore[arg-type]  # what the committer calls of it
    committer._queue = CountingQueue()
    yield committer
    store.release()
    committer.stop()


def test_a_lone_command_on_an_idle_ledger_is_written_at_once_by_its_own_handler(
    committer: Committer, store: Store
) -> None:
    committed = committer.commit(deposit("d1"), None)

    assert committed == Committed((1,))
    assert store.batches == [["d1"]]
    assert store.writers == [threading.current_thread().name]


def test_commands_arriving_while_a_batch_is_written_are_written_together_in_one(
    committer: Committer, store: Store
) -> None:
    store.hold()
    with ThreadPoolExecutor(8) as handlers:
        first = handlers.submit(committer.commit, deposit("first"), None)
        assert store.held.wait(WAIT_S)
        waiting: list[Future[Committed]] = [
            handlers.submit(committer.commit, deposit(f"d{n}"), None) for n in range(5)
        ]
        _until(lambda: queued(committer) == 5)
        store.release()
        answers = [future.result(WAIT_S) for future in [first, *waiting]]

    assert store.batches[0] == ["first"]
    assert sorted(store.batches[1]) == [f"d{n}" for n in range(5)], store.batches
    assert store.writers[1] == "committer"
    assert sorted(p for answer in answers for p in answer.positions) == [1, 2, 3, 4, 5, 6]


def test_a_command_whose_aggregate_its_batch_already_changed_is_decided_again(
    committer: Committer, store: Store
) -> None:
    account = Aggregate()
    store.hold()
    with ThreadPoolExecutor(4) as handlers:
        first = handlers.submit(committer.commit, deposit("first"), None)
        assert store.held.wait(WAIT_S)
        one = handlers.submit(committer.commit, deposit("one", account), None)
        _until(lambda: queued(committer) == 1)
        two = handlers.submit(committer.commit, deposit("two", account), None)
        _until(lambda: queued(committer) == 2)
        store.release()
        first.result(WAIT_S)
        assert one.result(WAIT_S) == Committed((2,))
        with pytest.raises(Conflicted):
            two.result(WAIT_S)

    assert store.batches == [["first"], ["one"]]


def test_one_commands_failure_fails_no_other_command_of_its_batch(
    committer: Committer, store: Store
) -> None:
    store.refuse = {"taken"}
    store.hold()
    with ThreadPoolExecutor(4) as handlers:
        first = handlers.submit(committer.commit, deposit("first"), None)
        assert store.held.wait(WAIT_S)
        futures = {name: handlers.submit(committer.commit, deposit(name), None)
                   for name in ("a", "taken", "b")}
        _until(lambda: queued(committer) == 3)
        store.release()
        first.result(WAIT_S)
        with pytest.raises(Conflicted):  # the store's IntegrityError: decide again
            futures["taken"].result(WAIT_S)
        assert futures["a"].result(WAIT_S).positions and futures["b"].result(WAIT_S).positions

    assert store.batches[0] == ["first"]
    assert sorted(name for batch in store.batches[1:] for name in batch) == ["a", "b"]


def test_a_batch_the_store_cannot_confirm_is_recorded_no_more_and_each_command_told_so(
    committer: Committer, store: Store
) -> None:
    store.unconfirmed = {"lost"}
    store.hold()
    with ThreadPoolExecutor(4) as handlers:
        first = handlers.submit(committer.commit, deposit("first"), None)
        assert store.held.wait(WAIT_S)
        futures = [handlers.submit(committer.commit, deposit(name), None)
                   for name in ("a", "lost", "b")]
        _until(lambda: queued(committer) == 3)
        store.release()
        first.result(WAIT_S)
        heard = [future.exception(WAIT_S) for future in futures]

    # perhaps committed: none is decided again, nor recorded again
    assert all(isinstance(error, CommitUnconfirmed) for error in heard), heard
    assert store.tries == 2, "the unconfirmed batch was recorded again, command by command"


def queued(committer: Committer) -> int:
    assert isinstance(committer._queue, CountingQueue)
    return committer._queue.puts


def _until(condition: Any, limit: int = 10_000) -> None:
    """Wait (bounded) for another thread to bring ``condition`` about."""
    gate = threading.Event()
    for _ in range(limit):
        if condition():
            return
        gate.wait(0.001)
    raise AssertionError("the condition never came about")
