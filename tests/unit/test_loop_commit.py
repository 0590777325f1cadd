"""The committer on the event loop (``ledger.pipeline.LoopCommitter``), against a store that
records what it is given: commands that arrive while a batch is being recorded are recorded
together in the next one; a command whose aggregate its batch already changed is sent back to
be decided again; one command's failure fails no other of its batch, and a batch the store
cannot confirm is recorded no more; a handler on a thread commits through it too; and its
queue and its wait are bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError

from ledger.errors import Contention
from ledger.pipeline import Committed, Committer, CommitUnconfirmed, Conflicted, LoopCommitter
from tests.unit.committing import Aggregate, deposit

WAIT_S = 10.0


class Cache:
    """eventsourcing's cache, as the committer uses it."""

    def __init__(self) -> None:
        self.held: dict[UUID, Any] = {}

    def put(self, key: UUID, value: Any) -> None:
        self.held[key] = value

    def get(self, key: UUID, *, evict: bool = False) -> Any:
        return self.held.pop(key) if evict else self.held[key]


class Store:
    """An application and its recorder: ``record`` writes a batch as one transaction, noting
    the events' names and numbering them as the log would. ``hold`` keeps the next batch from
    finishing until ``release``; ``refuse`` names events whose batch the store refuses (as a
    version another process took first); ``unconfirmed`` names events whose batch's outcome
    the store cannot tell (its acknowledgement lost, and the store not answering the look for
    it). ``tries`` counts the batches it was given."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.position = 0
        self.holding = False
        self.held = asyncio.Event()
        self.released = asyncio.Event()
        self.refuse: set[str] = set()
        self.unconfirmed: set[str] = set()
        self.tries = 0
        self.repository = SimpleNamespace(cache=Cache())
        self.mapper = SimpleNamespace(to_stored_event=lambda event: event)

    async def record(self, stored: list[Any], keys: list[Any]) -> Sequence[int]:
        if self.holding:
            self.holding = False
            self.held.set()
            await asyncio.wait_for(self.released.wait(), WAIT_S)
        names = [event.name for event in stored]
        self.tries += 1
        if self.refuse & set(names):
            raise IntegrityError("a version was taken first")
        if self.unconfirmed & set(names):
            raise CommitUnconfirmed("the store cannot tell whether it was committed")
        self.batches.append(names)
        first = self.position + 1
        self.position += len(names)
        return list(range(first, self.position + 1))


def committer_of(store: Store, **options: Any) -> LoopCommitter:
    return LoopCommitter(store, asyncio.get_running_loop(), store.record,  # type: ignore[arg-type]
                         **options)


async def settle() -> None:
    """Let every task that can run, run (bounded)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_command_is_recorded_and_answered_where_its_events_landed() -> None:
    store = Store()
    committer = committer_of(store)
    account = Aggregate()

    committed = await committer.commit(deposit("d1", account), None)

    assert committed == Committed((1,))
    assert store.batches == [["d1"]]
    assert store.repository.cache.held[account.id] is account  # as the store now has it


async def test_commands_arriving_while_a_batch_is_recorded_are_recorded_together_in_one() -> None:
    store = Store()
    committer = committer_of(store)
    store.holding = True
    first = asyncio.ensure_future(committer.commit(deposit("first"), None))
    await asyncio.wait_for(store.held.wait(), WAIT_S)
    waiting = [asyncio.ensure_future(committer.commit(deposit(f"d{n}"), None)) for n in range(5)]
    await settle()
    store.released.set()

    answers = await asyncio.wait_for(asyncio.gather(first, *waiting), WAIT_S)

    assert store.batches == [["first"], [f"d{n}" for n in range(5)]]
    assert [answer.positions for answer in answers] == [(n,) for n in range(1, 7)]


async def test_a_command_whose_aggregate_its_batch_already_changed_is_decided_again() -> None:
    store = Store()
    committer = committer_of(store)
    account = Aggregate()
    store.repository.cache.put(account.id, account)
    store.holding = True
    first = asyncio.ensure_future(committer.commit(deposit("first"), None))
    await asyncio.wait_for(store.held.wait(), WAIT_S)
    one = asyncio.ensure_future(committer.commit(deposit("one", account), None))
    two = asyncio.ensure_future(committer.commit(deposit("two", Aggregate(id=account.id)), None))
    await settle()
    store.released.set()

    assert await asyncio.wait_for(one, WAIT_S) == Committed((2,))
    with pytest.raises(Conflicted):
        await asyncio.wait_for(two, WAIT_S)
    await first
    assert store.batches == [["first"], ["one"]]


async def test_one_commands_failure_fails_no_other_command_of_its_batch() -> None:
    store = Store()
    committer = committer_of(store)
    taken = Aggregate()
    store.repository.cache.put(taken.id, taken)
    store.refuse = {"taken"}
    store.holding = True
    first = asyncio.ensure_future(committer.commit(deposit("first"), None))
    await asyncio.wait_for(store.held.wait(), WAIT_S)
    futures = {name: asyncio.ensure_future(committer.commit(deposit(name, aggregate), None))
               for name, aggregate in (("a", None), ("taken", taken), ("b", None))}
    await settle()
    store.released.set()

    with pytest.raises(Conflicted):  # the store's IntegrityError: decide again
        await asyncio.wait_for(futures["taken"], WAIT_S)
    assert (await futures["a"]).positions and (await futures["b"]).positions
    await first
    assert store.batches == [["first"], ["a"], ["b"]]
    assert taken.id not in store.repository.cache.held  # what it decided did not happen


async def test_a_batch_the_store_cannot_confirm_is_recorded_no_more_and_each_command_told_so(
) -> None:
    store = Store()
    committer = committer_of(store)
    lost = Aggregate()
    store.repository.cache.put(lost.id, lost)
    store.unconfirmed = {"lost"}
    store.holding = True
    first = asyncio.ensure_future(committer.commit(deposit("first"), None))
    await asyncio.wait_for(store.held.wait(), WAIT_S)
    futures = [asyncio.ensure_future(committer.commit(deposit(name, aggregate), None))
               for name, aggregate in (("a", None), ("lost", lost), ("b", None))]
    await settle()
    store.released.set()

    heard = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), WAIT_S)
    await first
    # perhaps committed: none is decided again, nor recorded again
    assert all(isinstance(error, CommitUnconfirmed) for error in heard), heard
    assert store.tries == 2, "the unconfirmed batch was recorded again, command by command"
    assert store.batches == [["first"]]
    assert lost.id not in store.repository.cache.held  # read from the store next time


async def test_a_handler_on_a_thread_commits_through_the_committer_on_the_loop() -> None:
    store = Store()
    loop_committer = committer_of(store)
    threads = Committer(store)  # type: ignore[arg-type]  # what the committer calls of it
    loop_committer.bind(threads)
    try:
        answered = await asyncio.get_running_loop().run_in_executor(
            None, threads.commit, deposit("from a thread"), None)
    finally:
        await loop_committer.unbind(threads)
        threads.stop()

    assert answered == Committed((1,))
    assert store.batches == [["from a thread"]]
    assert threads.on_loop is None and loop_committer.commands == 1


async def test_unbinding_records_what_is_queued_first() -> None:
    store = Store()
    loop_committer = committer_of(store)
    threads = Committer(store)  # type: ignore[arg-type]
    loop_committer.bind(threads)
    store.holding = True
    queued = [asyncio.ensure_future(loop_committer.commit(deposit(f"d{n}"), None))
              for n in range(3)]
    await asyncio.wait_for(store.held.wait(), WAIT_S)
    unbinding = asyncio.ensure_future(loop_committer.unbind(threads))
    await settle()
    assert not unbinding.done()
    store.released.set()

    await asyncio.wait_for(unbinding, WAIT_S)

    assert all(future.done() and future.result().positions for future in queued)
    threads.stop()


async def test_a_full_queue_refuses_at_once() -> None:
    store = Store()
    committer = committer_of(store, max_queued=2)
    store.holding = True
    first = asyncio.ensure_future(committer.commit(deposit("first"), None))
    await asyncio.wait_for(store.held.wait(), WAIT_S)
    queued = [asyncio.ensure_future(committer.commit(deposit(f"d{n}"), None)) for n in range(2)]
    await settle()

    with pytest.raises(Contention):
        await committer.commit(deposit("one too many"), None)

    store.released.set()
    await asyncio.wait_for(asyncio.gather(first, *queued), WAIT_S)
    assert "one too many" not in [name for batch in store.batches for name in batch]


async def test_a_write_not_confirmed_in_time_is_refused_as_contention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("ledger.pipeline.ANSWER_TIMEOUT_S", 0.05)
    store = Store()
    committer = committer_of(store)
    store.holding = True

    with pytest.raises(Contention, match="not confirmed in time"):
        await committer.commit(deposit("slow"), None)

    store.released.set()
    await settle()
    assert store.batches == [["slow"]]  # unconfirmed is not undone: a retry under its key
