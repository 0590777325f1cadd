"""The global log (``ReadModels.events``, GET /v1/events), read in small pages while writers keep
appending: an auditor tailing it sees every committed event exactly once, in log order."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ledger.application import LedgerApplication
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.chain import all_notifications
from projections.readmodels import ReadModels, prepare_read_models
from projections.store import open_application

WRITERS = 3
DEPOSITS_EACH = 30
PAGE = 7
MAX_PAGES = 20_000  # bounds the tailing loop: far more than the writers can need


@pytest.fixture
def models(settings: StoreSettings, app: LedgerApplication) -> Iterator[ReadModels]:
    prepare_read_models(settings)
    read_models = ReadModels(settings, app, pool_size=1)
    try:
        yield read_models
    finally:
        read_models.close()


def write(settings: StoreSettings, writer: int, started: threading.Barrier) -> None:
    """One writer process's worth of commands, through an application of its own."""
    app = open_application(settings)
    actor = Actor(f"system:writer{writer}", f"req-{writer}")
    try:
        started.wait(10)
        app.open_account(f"writer-{writer}", "USD", actor=actor)
        for n in range(DEPOSITS_EACH):
            app.deposit(f"writer-{writer}", 1 + n, f"PAY-{n}", actor=actor)
    finally:
        app.close()


def test_paging_the_log_while_writers_append_yields_every_event_once_in_order(
    settings: StoreSettings, app: LedgerApplication, models: ReadModels
) -> None:
    # given writers appending concurrently
    started = threading.Barrier(WRITERS + 1)
    writers = [
        threading.Thread(target=write, args=(settings, n, started), name=f"writer-{n}")
        for n in range(WRITERS)
    ]
    for thread in writers:
        thread.start()
    started.wait(10)

    # when an auditor tails the log a small page at a time until the writers are done and a
    # page comes back empty
    seen: list[dict[str, Any]] = []
    after: str | None = None
    caught_up_while_writing = 0  # pages that reached the log's end before the writers were done
    for _ in range(MAX_PAGES):
        writing = any(thread.is_alive() for thread in writers)
        page = models.events(limit=PAGE, after=after)
        assert len(page.items) <= PAGE
        seen += page.items
        caught_up_while_writing += writing and page.next is None
        if page.items:
            # at the log's end ``next`` is null: a tailing reader goes on after its last item
            after = page.next or str(page.items[-1]["position"])
        elif not writing:
            break
    else:
        pytest.fail("the tail did not end")
    for thread in writers:
        thread.join(10)

    # then it saw exactly the committed log, each event once and in order
    assert caught_up_while_writing > 0, "the reader never met the writers: nothing was shown"
    log = list(all_notifications(app.recorder))
    assert len(log) == WRITERS * (DEPOSITS_EACH + 1)
    assert [item["position"] for item in seen] == [n.id for n in log]
    assert [(i["stream"], i["version"], i["type"]) for i in seen] == [
        (str(n.originator_id), n.originator_version, n.topic) for n in log
    ]
