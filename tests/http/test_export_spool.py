"""An export over HTTP is made whole before it is answered (in the heavy lane, within the request
deadline), into a spool that keeps ``EXPORT_MEMORY_BYTES`` in memory and the rest in an unnamed
temporary file, then answered from it a chunk at a time, with its length. The spool is closed,
its disk given back, once the answer is written, when the client goes away mid-answer, and when
the request gave up (its deadline) while the export was still being made.

In-process, through ``create_app`` with a read side whose journal is made up entry by entry
(the ``read_models`` seam); the temporary files are watched as the process's open descriptors
of deleted files in the temporary folder, and every wait is on that state (``until``), never on
a sleep."""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auditkit import EXPORT_MEMORY_BYTES, SpooledBody
from api.auth import Tokens
from api.keys import ADMISSION
from api.limits import REQUEST_DEADLINE_S, Admission, Lane, Limits
from ledger.settings import StoreSettings
from projections import beancount, exports
from tests.audit.test_exports_stream import synthetic_entries
from tests.conftest import store_settings
from tests.http.conftest import TOKENS, tokens_env, until
from tests.http.test_failures import IdleKeeper
from tests.written import written

AUTH = {"Authorization": f"Bearer {TOKENS['auditor']}"}
ENTRIES = 20_000  # some 5 MB of Beancount: past the spool's memory
BLOCK_S = 10.0  # how long a held journal waits at most: far beyond the deadline under test


class MadeUpJournal:
    """A read side whose journal is ``ENTRIES`` made-up entries; while ``held`` is clear, it
    stops after ``hold_after`` of them until ``held`` is set (at most BLOCK_S)."""

    def __init__(self) -> None:
        self.hold_after: int | None = None
        self.held = threading.Event()
        self.holding = threading.Event()

    def wait_current(self, timeout_s: float = 5.0) -> int:
        return 0

    def one_snapshot(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def journal_entries(self, *, currency: str | None = None) -> Iterator[dict[str, Any]]:
        for entry in synthetic_entries(ENTRIES):
            if entry["position"] == self.hold_after:
                self.holding.set()
                self.held.wait(BLOCK_S)
            yield entry

    def status(self) -> dict[str, Any]:
        return {"log_position": 0, "read_models": {}, "lag": 0, "lag_seconds": 0.0}

    def close(self) -> None:
        self.held.set()


@pytest.fixture
async def exporting(request: pytest.FixtureRequest, tmp_path: Path
                    ) -> AsyncIterator[tuple[TestClient[Any, Any], MadeUpJournal]]:
    """A client of the app over a made-up journal; the request deadline is the default, or
    the parameter given (indirect)."""
    journal = MadeUpJournal()
    deadline_s = getattr(request, "param", REQUEST_DEADLINE_S)

    def read_models(settings: StoreSettings, app: Any) -> Any:
        return journal

    app = create_app(
        store_settings(f"sqlite:///{tmp_path}/ledger.db"), Tokens.parse(tokens_env()),
        executor_workers=3,
        limits=Limits(request_deadline_s=deadline_s, queue_wait_s=deadline_s / 2),
        read_models=read_models, keeper=lambda settings: IdleKeeper(),
    )
    async with TestClient(TestServer(app)) as client:
        try:
            yield client, journal
        finally:
            journal.held.set()


def spooled_files() -> int:
    """How many deleted files in the temporary folder this process holds open (spools on
    disk)."""
    folder = tempfile.gettempdir()
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            target = os.readlink(f"/proc/self/fd/{fd}")
            count += target.startswith(folder) and target.endswith(" (deleted)")
    return count


def no_more_spooled_than(before: int) -> bool:
    gc.collect()  # an answer never written is closed when dropped
    return spooled_files() <= before


async def test_an_export_past_the_spool_s_memory_is_answered_whole_with_its_length(
    exporting: tuple[TestClient[Any, Any], MadeUpJournal],
) -> None:
    client, _ = exporting
    before = spooled_files()
    expected = written(beancount.export, synthetic_entries(ENTRIES)).encode()
    assert len(expected) > 4 * EXPORT_MEMORY_BYTES

    reply = await client.get("/v1/export/beancount", headers=AUTH)

    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reply.headers["Content-Length"] == str(len(expected))
    assert reply.headers["Cache-Control"] == "no-store" and reply.headers["X-Request-Id"]
    assert await reply.read() == expected
    await until(lambda: no_more_spooled_than(before), "the spool was closed")


async def test_the_spool_is_closed_when_the_client_goes_away_mid_answer(
    exporting: tuple[TestClient[Any, Any], MadeUpJournal],
) -> None:
    client, _ = exporting
    before = spooled_files()

    reply = await client.get("/v1/export/csv", headers=AUTH)
    first = await reply.content.readexactly(1_000)
    reply.close()  # the client hangs up with most of the answer unread

    assert first.startswith(",".join(exports.COLUMNS).encode())
    await until(lambda: no_more_spooled_than(before), "the spool was closed")


@pytest.mark.parametrize("exporting", [1.0], indirect=True)
async def test_an_export_whose_request_gave_up_is_closed_once_made(
    exporting: tuple[TestClient[Any, Any], MadeUpJournal],
) -> None:
    # given an export held once it has spooled to disk, past the request deadline
    client, journal = exporting
    journal.hold_after = ENTRIES // 2
    before = spooled_files()

    reply = await client.get("/v1/export/hledger", headers=AUTH)

    # then the request is answered 503, its export still being made; once made, it is closed
    assert reply.status == 503 and (await reply.json())["code"] == "deadline_exceeded"
    assert journal.holding.is_set() and spooled_files() == before + 1
    journal.held.set()
    admission: Admission = client.app[ADMISSION]
    await until(lambda: admission.holding(Lane.HEAVY) == 0, "the export was made")
    await until(lambda: no_more_spooled_than(before), "the spool was closed")


def test_an_export_that_fails_part_way_leaves_no_spool_open() -> None:
    before = spooled_files()

    def write(out: TextIO) -> None:
        out.write("x" * 2 * EXPORT_MEMORY_BYTES)  # on disk by now
        raise RuntimeError("the journal could not be read")

    with pytest.raises(RuntimeError):
        SpooledBody.written(write)
    assert spooled_files() == before
