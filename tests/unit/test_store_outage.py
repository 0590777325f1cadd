"""While the store refuses connections, a request is refused at once rather than waiting out
its pool's timeout, one caller a second still tries (so the pool tries again, and the first
connection made ends the outage), and the outage is said once as it begins and once as it
ends (``projections.pgpool.StoreOutage``)."""

from __future__ import annotations

import logging

import psycopg
import pytest
from eventsourcing.persistence import OperationalError

from projections import pgpool
from projections.pgpool import (
    TRY_AGAIN_EVERY_S,
    StoreOutage,
    StoreRefusesConnections,
    outage_of,
    refused_in_outage,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refused(outage: StoreOutage, *, idle: bool = False) -> bool:
    try:
        outage.admit(idle=idle)
    except StoreRefusesConnections:
        return True
    return False


class ServerSaid(psycopg.OperationalError):
    """A connection failure with the server's SQLSTATE."""

    def __init__(self, message: str, state: str) -> None:
        self._state = state  # first: psycopg's own __init__ reads sqlstate
        super().__init__(message)

    @property
    def sqlstate(self) -> str | None:  # type: ignore[override]
        return self._state


def test_a_store_that_answers_admits_every_caller_to_its_pool() -> None:
    outage = StoreOutage("db:5432/ledger", clock=Clock())
    assert [outage.admit(idle=False) for _ in range(3)] == [False, False, False]


def test_while_the_store_refuses_one_caller_a_second_tries_and_the_rest_are_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = StoreOutage("db:5432/ledger", clock=clock)
    caplog.set_level(logging.INFO, logger="projections.pgpool")

    # When connection attempts fail for want of a server, again and again
    for _ in range(3):
        outage.failed(psycopg.OperationalError("connection refused"))

    # Then one caller tries a connection of its own; the others are refused at once, in words
    assert outage.admit(idle=False) is True
    with pytest.raises(StoreRefusesConnections, match="refused connections for 0 s"):
        outage.admit(idle=False)
    clock.now += TRY_AGAIN_EVERY_S / 2
    assert refused(outage)
    clock.now += TRY_AGAIN_EVERY_S / 2
    assert outage.admit(idle=False) is True  # the next one a second on
    assert refused(outage)
    # but never a caller whose pool holds an idle connection
    assert not refused(outage, idle=True)

    # And once a connection is made, every caller goes to its pool again
    clock.now += 2.5
    outage.answered()
    assert [outage.admit(idle=False) for _ in range(3)] == [False, False, False]

    # The outage was said once as it began, once as it ended
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [
        ("ERROR", "the store at db:5432/ledger refuses connections (connection refused): "
                  "requests needing it answer 503 store_unavailable at once until it answers "
                  "again"),
        ("WARNING", "the store at db:5432/ledger answers again, after refusing connections "
                    "for 3.5 s"),
    ]


@pytest.mark.parametrize(("error", "outage"), [
    (psycopg.OperationalError("connection refused"), True),  # no server answered
    (ServerSaid("the database system is shutting down", "57P03"), True),
    (ServerSaid("terminating connection due to administrator command", "57P01"), True),
    (ServerSaid("connection failure", "08006"), True),
    (ServerSaid("too many connections for role", "53300"), False),  # a full house answers
    (ServerSaid("password authentication failed", "28P01"), False),
    (ServerSaid("canceling statement due to statement timeout", "57014"), False),
    (RuntimeError("a bug"), False),
])
def test_only_a_store_that_is_not_there_makes_an_outage(error: Exception, outage: bool) -> None:
    """A full house or a refused password is the server's answer: a request waiting for a
    connection may outlive the one, and refusing at once would hide the other."""
    record = StoreOutage("db:5432/ledger", clock=Clock())
    record.failed(error)
    assert (record.down_since is not None) is outage


def test_background_failures_are_quiet_only_while_an_outage_has_said_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # This process's stores only (the registry is the process's: other tests in it may have
    # left a store of theirs unreachable)
    monkeypatch.setattr(pgpool, "_OUTAGES", {})
    outage = outage_of("outage-test", 1, "quiet")
    try:
        wrapped = OperationalError("couldn't get a connection")
        wrapped.__cause__ = psycopg.OperationalError("connection refused")
        bug = RuntimeError("a bug")
        assert not refused_in_outage(wrapped)  # no outage: a failure logs its traceback
        outage.failed(psycopg.OperationalError("connection refused"))
        assert refused_in_outage(wrapped)
        assert not refused_in_outage(bug)  # a bug is never an outage's
    finally:
        outage.answered()


def test_a_slow_attempt_failing_after_another_succeeded_makes_no_outage() -> None:
    """Of two attempts at once, one slow: when it fails after the other connected, it says
    nothing of the store now."""
    clock = Clock()
    outage = StoreOutage("db:5432/ledger", clock=clock)
    slow = outage.attempt()
    slow.__enter__()  # begun first
    clock.now += 0.5
    with outage.attempt():  # another connects meanwhile
        pass
    clock.now += 4.5
    late = psycopg.OperationalError("connection timeout expired")
    assert slow.__exit__(type(late), late, None) is False  # the slow one fails after it
    assert outage.down_since is None
    # but a failure begun after the last success is one
    with pytest.raises(psycopg.OperationalError), outage.attempt():
        raise psycopg.OperationalError("connection refused")
    assert outage.down_since == clock.now
