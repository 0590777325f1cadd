"""A command whose handler gave up waiting for its answer (``ANSWER_TIMEOUT_S``, or its
waiter cancelled) while it was still queued is withdrawn, never written after its caller was
told it was not: a 503 a client without a key sends again must not land twice. (A command
already being written when its handler gives up is unknown, and stays so: see
``test_loop_commit``.)"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from ledger.errors import Contention
from ledger.pipeline import Committer
from tests.unit.committing import deposit
from tests.unit.test_group_commit import WAIT_S
from tests.unit.test_group_commit import Store as ThreadStore
from tests.unit.test_loop_commit import Store as LoopStore
from tests.unit.test_loop_commit import committer_of, settle


def written(batches: list[list[str]]) -> list[str]:
    return [name for batch in batches for name in batch]


def test_a_queued_command_whose_handler_gave_up_is_never_written_by_the_committer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = ThreadStore()
    committer = Committer(store)  # type: ignore[arg-type]  # what the committer calls of it
    store.hold()
    with ThreadPoolExecutor(2) as handlers:
        first = handlers.submit(committer.commit, deposit("first"), None)
        assert store.held.wait(WAIT_S)
        # Given a command queued behind a batch the store is slow to write
        monkeypatch.setattr("ledger.pipeline.ANSWER_TIMEOUT_S", 0.05)
        # When its handler gives up waiting: it hears that nothing was written
        with pytest.raises(Contention, match="nothing was written"):
            committer.commit(deposit("gave up"), None)
        store.release()
        first.result(WAIT_S)
    committer.stop()  # writes whatever is still queued, then stops

    # Then it is not written later behind its caller's back
    assert written(store.batches) == ["first"]


async def test_a_queued_command_whose_wait_ran_out_is_never_written_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("ledger.pipeline.ANSWER_TIMEOUT_S", 0.05)
    store = LoopStore()
    committer = committer_of(store)
    store.holding = True
    first = asyncio.ensure_future(committer.commit(deposit("first"), None))
    await asyncio.wait_for(store.held.wait(), WAIT_S)

    with pytest.raises(Contention, match="nothing was written"):
        await committer.commit(deposit("gave up"), None)

    store.released.set()
    with pytest.raises(Contention, match="not confirmed in time"):  # being written: unknown
        await asyncio.wait_for(first, WAIT_S)
    await settle()
    assert written(store.batches) == ["first"]  # what was being written is; the rest is not


async def test_a_queued_command_whose_waiter_was_cancelled_is_never_written_on_the_loop(
) -> None:
    store = LoopStore()
    committer = committer_of(store)
    store.holding = True
    first = asyncio.ensure_future(committer.commit(deposit("first"), None))
    await asyncio.wait_for(store.held.wait(), WAIT_S)
    # A thread's handler whose wait ran out cancels its commit (``commit_from_thread``)
    abandoned = asyncio.ensure_future(committer.commit(deposit("abandoned"), None))
    await settle()
    abandoned.cancel()
    await settle()

    store.released.set()
    await asyncio.wait_for(first, WAIT_S)
    after = await asyncio.wait_for(committer.commit(deposit("after"), None), WAIT_S)
    assert after.positions
    assert written(store.batches) == ["first", "after"]
