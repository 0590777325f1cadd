"""The committer keeps house (prunes idempotency keys past their lifetime) when it is
due, busy or not: a ledger whose committer always finds a command waiting must still prune. A
step that says more is due (a bounded prune that was full) is followed by the next at once,
not after the interval."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ledger.pipeline import Committed, Committer
from tests.unit.committing import deposit
from tests.unit.test_group_commit import WAIT_S, CountingQueue, Store, _until


class BusyStore(Store):
    """While it writes the batch holding ``busy``, one more command arrives (the ledger is
    never idle between its batches)."""

    def __init__(self, committer_of: Any, handlers: ThreadPoolExecutor) -> None:
        super().__init__()
        self.committer_of = committer_of
        self.handlers = handlers
        self.log: list[str] = []
        self.more: Future[Committed] | None = None

    def _record(self, processing: Any) -> list[Any]:
        names = [event.name for event in processing.events]
        self.log.append(f"batch {','.join(names)}")
        if "busy" in names:
            committer: Committer = self.committer_of()
            queue = committer._queue
            assert isinstance(queue, CountingQueue)
            before = queue.puts
            self.more = self.handlers.submit(committer.commit, deposit("more"), None)
            _until(lambda: queue.puts > before)
        return super()._record(processing)


def test_a_committer_that_always_finds_a_command_waiting_still_keeps_house() -> None:
    committer: Committer
    with ThreadPoolExecutor(4) as handlers:
        store = BusyStore(lambda: committer, handlers)
        committer = Committer(store,  # type: ignore[arg-type]  # what it calls of a store
                              housekeeping=lambda: store.log.append("housekeeping"))
        committer._queue = CountingQueue()
        committer._housekept_at = time.monotonic() - 1e6  # housekeeping is due
        store.hold()
        first = handlers.submit(committer.commit, deposit("first"), None)
        assert store.held.wait(WAIT_S)
        busy = handlers.submit(committer.commit, deposit("busy"), None)
        _until(lambda: committer._queue.puts == 1)  # type: ignore[attr-defined]
        store.release()
        first.result(WAIT_S)
        busy.result(WAIT_S)
        _until(lambda: store.more is not None)
        assert store.more is not None
        store.more.result(WAIT_S)
    committer.stop()

    # housekeeping came between the busy batch and the next, not only once the queue emptied
    assert store.log.index("housekeeping") < store.log.index("batch more"), store.log


def test_a_housekeeping_step_that_leaves_more_is_followed_by_the_next_without_the_interval(
) -> None:
    # Given housekeeping that is due, and whose first two steps each leave more to do
    steps: list[int] = []
    third = threading.Event()

    def prune_some() -> bool:
        steps.append(len(steps) + 1)
        if len(steps) == 3:
            third.set()
        return len(steps) < 3

    committer = Committer(Store(),  # type: ignore[arg-type]  # what it calls of a store
                          housekeeping=prune_some)
    committer._housekept_at = time.monotonic() - 1e6  # due
    try:
        committer._ensure_started()
        # Then the steps follow each other on the idle committer, and stop once none is left
        assert third.wait(WAIT_S), steps
    finally:
        committer.stop()
    assert steps == [1, 2, 3]
