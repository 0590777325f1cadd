"""Pages of the event log (``/v1/events`` unfiltered), made in a process of their own on
PostgreSQL.

Making a page of 1,000 events is about 45 ms of Python: the rows read, each seal checked, each
event decoded, named, its leaf hashed, the page encoded and, when it can never change, gzipped
(``api.sealed_pages``). Made on a thread of the server, that work holds the interpreter's lock
the event loop needs for every other request: beside 16 auditors reading a growing log, the
order system's deposits fell to 0.7 of their rate alone. So on PostgreSQL a child process
makes them (``PageMaker``): it opens the store with the same settings and chain key, and the
server's thread that asked waits for it without holding the lock. The notary's leaf indexes
are the server's: the thread takes, for each page, where the notary's tree holds the events
after its cursor (``Placed``), and the child puts them in the items. The child makes one page
at a time and ends when the server does (its pipe closes, kill -9 included), or once no page
was asked of it for ``IDLE_STOP_S`` (its memory given back; the next page starts another).

When the child cannot answer (it failed to start, died, or took longer than
``MAKE_TIMEOUT_S``), it is ended, the page is made on the thread as before, and no new child is
started within ``RESTART_AFTER_S``. SQLite makes its pages on the thread (a test's store may be
a file a second process should not open beside it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing import connection as mp_connection
from multiprocessing.process import BaseProcess
from typing import Any

from api.context import Page
from api.handlers import json_body
from api.sealed_pages import pack, unpack
from ledger.application import LedgerApplication
from ledger.errors import HistoryDamaged
from ledger.settings import StoreSettings
from projections import children
from projections.event_log import named
from projections.readmodels import log_page
from projections.seal import read_key
from projections.store import application_env

MAKE_TIMEOUT_S = 60.0  # a page, its child started included
RESTART_AFTER_S = 10.0  # after a child failed, pages are made on the thread this long
# A child asked for no page this long is ended, its memory (about 79 MiB) given back; the next
# page starts another. Looked at this often.
IDLE_STOP_S = 300.0
REAP_EVERY_S = 10.0
STOP_TIMEOUT_S = 5.0
# Pages are bulk work: on a machine short of cores, the server's requests (and PostgreSQL)
# come first, and an auditor's page waits.
NICENESS = 10
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placed:
    """Where the notary's tree holds the events after a cursor: the leaf index of the first
    event after it, and the positions placed from there on (at most a page of them)."""

    first: int
    positions: list[int]

    def leaf_index(self, k: int, position: int) -> int | None:
        """The leaf index of the page's ``k``-th event (at ``position``), None if not placed:
        the page's events follow one another in the log, as the tree's do."""
        placed = k < len(self.positions) and self.positions[k] == position
        return self.first + k if placed else None


@dataclass(frozen=True)
class Made:
    """A page as answered (JSON), and gzipped when it can never change (full, and each of its
    events placed in the tree, or no tree kept at all). A page answered from the kept pages
    (``kept``) has only its gzipped bytes."""

    body: bytes
    packed: bytes | None

    @classmethod
    def kept(cls, packed: bytes) -> Made:
        return cls(b"", packed)  # a made page's JSON is never empty

    @property
    def made_now(self) -> bool:
        return bool(self.body)

    def json(self) -> bytes:
        """The page's JSON: as made, or the kept bytes unzipped."""
        if self.body:
            return self.body
        assert self.packed is not None, "a kept page has its gzipped bytes"
        return unpack(self.packed)


@dataclass(frozen=True)
class Refused:
    """The page would begin with an event whose seal does not hold (``HistoryDamaged``)."""

    detail: str
    position: int


@dataclass(frozen=True)
class Failed:
    """The child could not make the page (the store failed it): the thread tries."""

    error: str


def made(found: Page, placed: Placed | None) -> Made:
    """The page's answer: each event named and given its leaf index (``placed`` None: no notary,
    no indexes)."""
    items = [named(item) for item in found.items]
    for k, item in enumerate(items):
        item["leaf_index"] = None if placed is None else placed.leaf_index(k, item["position"])
    body = json_body({"items": items, "next": found.next})
    whole = placed is None or all(item["leaf_index"] is not None for item in items)
    return Made(body, pack(body) if found.next is not None and whole else None)


class PageMakerFailed(RuntimeError):
    """The child did not answer: the page is made on the thread."""


class PageMaker:
    """The child process that makes the log's pages, started on the first page asked for.
    Called from the heavy lane's threads; one page at a time."""

    def __init__(self, settings: StoreSettings, setup: Callable[[], None] | None = None) -> None:
        assert settings.kind == "postgres"
        self._settings = settings
        self._setup = setup
        self._lock = threading.Lock()
        self._child: BaseProcess | None = None
        self._pipe: mp_connection.Connection | None = None
        self._failed_at: float | None = None
        self._used_at = 0.0  # when the child last answered, or started
        self._closed = threading.Event()
        self._reaper: threading.Thread | None = None
        self.pages = 0
        self.failures = 0

    def make(self, after: str | None, limit: int, placed: Placed | None) -> Made:
        """The page made by the child; HistoryDamaged as the store's page would raise it;
        PageMakerFailed when the child cannot answer now."""
        if not self._lock.acquire(timeout=MAKE_TIMEOUT_S):
            raise PageMakerFailed("another page has been in the making too long")
        try:
            answer = self._ask((after, limit, placed))
        finally:
            self._lock.release()
        if isinstance(answer, Refused):
            raise HistoryDamaged(answer.detail, position=answer.position)
        if isinstance(answer, Failed):
            raise PageMakerFailed(answer.error)
        assert isinstance(answer, Made)
        self.pages += 1
        return answer

    def _ask(self, request: tuple[str | None, int, Placed | None]) -> Any:
        failed = self._failed_at
        if failed is not None and time.monotonic() - failed < RESTART_AFTER_S:
            raise PageMakerFailed("the page maker failed moments ago")
        try:
            pipe = self._started()
            pipe.send(request)
            if not pipe.poll(MAKE_TIMEOUT_S):
                raise TimeoutError(f"no page in {MAKE_TIMEOUT_S:g} s")
            answer = pipe.recv()
        except (OSError, EOFError, TimeoutError) as error:
            self.failures += 1
            self._failed_at = time.monotonic()
            self._stop()
            log.warning("the event log's page maker failed (%s); pages are made on a thread "
                        "for %g s", str(error) or type(error).__name__, RESTART_AFTER_S)
            raise PageMakerFailed(str(error) or type(error).__name__) from error
        self._failed_at = None
        self._used_at = time.monotonic()
        return answer

    def _started(self) -> mp_connection.Connection:
        if self._child is not None and self._child.is_alive():
            assert self._pipe is not None
            return self._pipe
        self._stop()
        child, ours = children.spawn(make_in_child, "event-log-pages",
                                     (self._settings, self._setup))
        self._child, self._pipe = child, ours
        self._used_at = time.monotonic()
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="page-maker-reaper",
                                            daemon=True)
            self._reaper.start()
        return ours

    def _reap(self) -> None:
        """Until closed: end the child once no page was asked of it for ``IDLE_STOP_S``."""
        while not self._closed.wait(min(REAP_EVERY_S, IDLE_STOP_S)):
            with self._lock:
                if self._child is not None and time.monotonic() - self._used_at >= IDLE_STOP_S:
                    log.info("the event log's page maker was idle %g s: ended", IDLE_STOP_S)
                    self._stop()

    def _stop(self) -> None:
        """End the child, if one runs (under the lock): ``child`` is None once it has."""
        child, pipe = self._child, self._pipe
        if child is not None and pipe is not None:
            children.end(child, pipe, STOP_TIMEOUT_S)  # its pipe closed: its cue to end
        self._child = self._pipe = None

    @property
    def child(self) -> BaseProcess | None:
        """The child process, while one runs."""
        return self._child

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._stop()
        if self._reaper is not None:
            self._reaper.join(STOP_TIMEOUT_S)


def make_in_child(settings: StoreSettings, setup: Callable[[], None] | None,
                  parent: mp_connection.Connection) -> None:
    """The child: opens the store (no table made: the server made them), then answers each
    request ``(after, limit, placed)`` with a ``Made``, a ``Refused`` or a ``Failed`` until the
    pipe closes."""
    children.begin(setup)
    os.nice(NICENESS)
    app = LedgerApplication(application_env(replace(settings, pool_size=1), makes_tables=False))
    app.recorder.chain_key = read_key(settings.chain_key_file)  # type: ignore[attr-defined]
    try:
        while True:
            try:
                after, limit, placed = parent.recv()
            except (EOFError, OSError):
                return
            try:
                answer: Made | Refused | Failed = made(log_page(app, limit=limit, after=after),
                                                       placed)
            except HistoryDamaged as damaged:
                answer = Refused(damaged.detail, damaged.position)
            except Exception as error:  # the store's: logged here, the thread tries the page
                log.exception("the event log's page maker could not make a page")
                answer = Failed(type(error).__name__)
            with contextlib.suppress(OSError):
                parent.send(answer)
    finally:
        app.close()
