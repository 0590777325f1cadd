"""The committer keeps house (prunes idempotency keys past their lifetime) when it is
due, busy or not: a ledger whose committer always finds a command waiting must still prune."""

from __future__ import annotations

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
