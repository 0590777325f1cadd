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
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from eventsourcing.postgres import PostgresFactory
from eventsourcing.utils import Environment, EnvType
from psycopg import Pipeline
from psycopg.pq import TransactionStatus

from ledger.settings import LOCK_WAIT_OPTION, StoreSettings

CONNECT_TIMEOUT_S = 5


def connect(settings: StoreSettings, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection to the store of ``settings`` (PostgreSQL) of its own, outside any pool:
    for a session's advisory lock, LISTEN, or a transaction that must not share one."""
    pg = settings.postgres
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
