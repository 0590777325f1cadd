"""PostgreSQL connections handed out checked, cheaply; and a transaction in two round trips.

eventsourcing's pre-ping (``POSTGRES_PRE_PING``) sends an empty statement on every connection the
pool hands out: a round trip before each transaction, about 0.4 ms of a commit's 2.6 ms and a
sixth of the model tests' time. ``PostgresFactory`` here checks a connection the same way only
when its socket says something happened while it sat idle. An idle connection in autocommit
receives nothing unless the server has spoken to it: the message a server sends as it ends a
session (a restart, a terminated backend) or the end of the stream when the process died. So a
connection with nothing to read is handed out as it is; one with something to read is pinged,
and the pool replaces it when the ping fails, as before. A connection that breaks after the
check fails its statement as it did under pre-ping too, and the recorders' bounded retry asks
again on another connection.

``pipelined_transaction``: psycopg's ``conn.transaction()`` inside a pipeline syncs as it begins
and twice as it ends, each sync a round trip of its own (five for one commit of events, seen
with strace). Sending BEGIN and COMMIT as statements of the pipeline makes it two: the first
sync (whose results the block reads) carries BEGIN, and the pipeline's end carries COMMIT.

``connect``: a connection of its own, outside any pool (an advisory lock, LISTEN, a swap).

``StoreOutage``: while no server answers (it is down or restarting), a pool waits its whole
timeout for a connection that cannot come, and a write retried within its bound waited the
request's whole deadline (30 s) to answer 503 ``deadline_exceeded``, holding its account's lock
so the next write to it answered ``busy`` 10 s later. Each pool's connection attempts (its own,
in the background, and those a request waits for) say whether the store answers; while the last
one failed for want of a server (no answer, the connection refused or cut, the server shutting
down or starting: not a full house nor a refused password, which a waiting request may outlive),
a request for a connection is refused at once (``StoreRefusesConnections``: 503
``store_unavailable``) unless its pool holds an idle one. One request a second first tries a
connection of its own, and the first that is made ends the outage. One ERROR line says when it
began, one WARNING when it ended; nothing per request.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from eventsourcing.postgres import PostgresFactory
from eventsourcing.utils import Environment, EnvType
from psycopg import Pipeline
from psycopg.pq import TransactionStatus
from psycopg_pool import PoolTimeout

from ledger.settings import LOCK_WAIT_OPTION, StoreSettings

CONNECT_TIMEOUT_S = 5
# While the store refuses connections, one request a while first tries a connection of its own
# (the first made ends the outage); the others are refused at once.
TRY_AGAIN_EVERY_S = 1.0
TRY_WAIT_S = 1.0  # how long that one's try may take (a store that is back connects at once)

log = logging.getLogger(__name__)


class StoreRefusesConnections(PoolTimeout):
    """A connection asked for while the store is known to refuse them: refused at once."""


def unreachable(error: BaseException) -> bool:
    """Whether a failure to connect (or a connection's failure) says no server is there to
    answer: no answer at all, a connection exception (SQLSTATE class 08), or the server going
    or not yet ready (57P). A full house (53300) or a refused password (28) is an answer."""
    if isinstance(error, PoolTimeout):
        return True
    if not isinstance(error, psycopg.OperationalError):
        return False
    state = error.sqlstate
    return state is None or state.startswith(("08", "57P"))


class StoreOutage:
    """Whether the store at one address refuses connections, as this process's pools last
    found it (see the module docstring). Shared by every pool of the address."""

    def __init__(self, address: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.address = address
        self._clock = clock
        self._lock = threading.Lock()
        self.down_since: float | None = None  # when the first failed attempt of this outage was
        self._reason = ""
        self._next_try = 0.0
        self._answered_at = float("-inf")  # the last successful attempt's end

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """Around a connection attempt: what it came to, told."""
        started = self._clock()
        try:
            yield
        except Exception as error:
            self.failed(error, started=started)
            raise
        self.answered()

    def failed(self, error: BaseException, *, started: float | None = None) -> None:
        """A connection attempt (begun at ``started``) failed: an outage when ``unreachable``,
        unless another attempt succeeded since it began (a slow one failing late says nothing
        of the store now)."""
        if not unreachable(error):
            return
        with self._lock:
            if started is not None and self._answered_at > started:
                return
            self._reason = _said(error)
            if self.down_since is not None:
                return
            self.down_since = self._next_try = self._clock()
        log.error("the store at %s refuses connections (%s): requests needing it answer 503 "
                  "store_unavailable at once until it answers again", self.address, self._reason)

    def answered(self) -> None:
        """A connection attempt succeeded."""
        with self._lock:
            self._answered_at = self._clock()
            if self.down_since is None:
                return
            lasted, self.down_since = self._clock() - self.down_since, None
        log.warning("the store at %s answers again, after refusing connections for %.1f s",
                    self.address, lasted)

    def admit(self, *, idle: bool) -> bool:
        """Whether the caller, about to ask its pool for a connection, is to try one of its own
        first: the one caller a ``TRY_AGAIN_EVERY_S`` while the store refuses connections. The
        others are refused (``StoreRefusesConnections``), except a caller whose pool holds an
        ``idle`` connection: a failed connect says nothing of the connections a pool has."""
        with self._lock:
            if self.down_since is None or idle:
                return False
            now = self._clock()
            if now >= self._next_try:
                self._next_try = now + TRY_AGAIN_EVERY_S
                return True
            since, reason = now - self.down_since, self._reason
        raise StoreRefusesConnections(
            f"the store has refused connections for {since:.0f} s ({reason})")

    def tried(self, error: BaseException) -> StoreRefusesConnections:
        """The refusal of the one caller whose own try (``admit``) failed."""
        with self._lock:
            since = 0.0 if self.down_since is None else self._clock() - self.down_since
        return StoreRefusesConnections(
            f"the store has refused connections for {since:.0f} s ({_said(error)})")


def _said(error: BaseException) -> str:
    """An error's words on one line, bounded (a server's message may run over lines)."""
    return " ".join(str(error).split())[:300] or type(error).__name__


_OUTAGES: dict[str, StoreOutage] = {}
_OUTAGES_LOCK = threading.Lock()


def outage_of(host: str, port: str | int, dbname: str) -> StoreOutage:
    """The outage record of the store at this address, shared by this process's pools."""
    address = f"{host}:{port}/{dbname}"
    with _OUTAGES_LOCK:
        return _OUTAGES.setdefault(address, StoreOutage(address))


def refused_in_outage(error: BaseException) -> bool:
    """Whether ``error`` is (or was caused by) a failure to reach the store (``unreachable``)
    while this process knows it refuses connections: the outage's own ERROR line has said so,
    so a background loop trying again each second, or a refused request, need not repeat it."""
    with _OUTAGES_LOCK:
        if all(outage.down_since is None for outage in _OUTAGES.values()):
            return False
    seen: BaseException | None = error
    for _ in range(8):  # a chain of causes, bounded
        if seen is None:
            return False
        if unreachable(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def watch_outages(pool: Any, outage: StoreOutage) -> None:
    """Let a pool of eventsourcing's (made by it, not by us) tell ``outage`` what its
    connection attempts find, and refuse at once while the store refuses them: its own
    ``_connect`` (every attempt, the background's and a request's) and ``getconn`` (what
    ``connection()`` calls) wrapped on the instance."""
    connect, getconn = pool._connect, pool.getconn

    def _connect(timeout: float | None = None) -> Any:
        with outage.attempt():
            return connect(timeout)

    def _getconn(timeout: float | None = None) -> Any:
        if outage.admit(idle=bool(pool._pool)):  # this caller's own try, bounded
            try:
                _connect(TRY_WAIT_S).close()
            except Exception as error:
                raise outage.tried(error) from None
        elif outage.down_since is not None:
            # Let in for the pool's idle connections, which may be as gone as the server: when
            # they are, a new one is waited for no longer than the one caller's own try.
            timeout = TRY_WAIT_S if timeout is None else min(timeout, TRY_WAIT_S)
        return getconn(timeout)

    pool._connect, pool.getconn = _connect, _getconn


def connect(settings: StoreSettings, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection to the store of ``settings`` (PostgreSQL) of its own, outside any pool:
    for a session's advisory lock, LISTEN, or a transaction that must not share one."""
    pg = settings.postgres
    outage = outage_of(pg["POSTGRES_HOST"], pg["POSTGRES_PORT"], pg["POSTGRES_DBNAME"])
    with outage.attempt():  # the keeper's try each second tells the outage too
        return psycopg.connect(
            dbname=pg["POSTGRES_DBNAME"], host=pg["POSTGRES_HOST"], port=pg["POSTGRES_PORT"],
            user=pg["POSTGRES_USER"], password=pg["POSTGRES_PASSWORD"] or None,
            autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S,
            options=settings.pg_options() or "",
        )


def check_if_disturbed(connection: Any) -> None:
    """The pool's check: raises when a connection the server spoke to while idle is broken."""
    if connection.closed or connection.broken:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([connection.fileno()], [], [], 0)
    if readable:  # the server said something (or hung up) while no one was asking: ping
        connection.execute("")


class CheckedPostgresFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory, its pool checking connections only when disturbed."""

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        # The pool is made closed (eventsourcing opens it at first use): set its check now.
        self.datastore.pool._check = check_if_disturbed
        pg: Any = self.datastore.pool.kwargs
        watch_outages(self.datastore.pool, outage_of(pg["host"], pg["port"], pg["dbname"]))
        lock_wait_s = self.env.get(LOCK_WAIT_OPTION)
        if lock_wait_s:  # every connection's lock waits bounded (StoreSettings.lock_wait_s)
            kwargs: Any = self.datastore.pool.kwargs
            kwargs["options"] = f"-c lock_timeout={int(lock_wait_s)}s"


@contextmanager
def pipelined_transaction(connection: psycopg.Connection[Any]) -> Iterator[Pipeline]:
    """A transaction in one pipeline: BEGIN is sent with the block's first sync (or with
    COMMIT), COMMIT as the pipeline ends. The block may ``sync()`` the pipeline to read what it
    sent. Any failure, the block's or the commit's, rolls the transaction back and raises."""
    assert connection.autocommit, "BEGIN is ours to send: psycopg sends none in autocommit"
    failure: BaseException | None = None
    try:
        with connection.pipeline() as pipeline:
            try:
                connection.execute("BEGIN")
                yield pipeline
                connection.execute("COMMIT")
            except BaseException as error:  # raised once the pipeline is left (no warning)
                failure = error
    except BaseException as error:  # the commit's own failure, as the pipeline syncs
        failure = failure or error
    if failure is not None:
        if connection.info.transaction_status != TransactionStatus.IDLE:
            with suppress(psycopg.Error):  # a broken connection: the pool drops it
                connection.rollback()
        raise failure
