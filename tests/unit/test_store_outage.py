"""While the store refuses connections, a request is refused at once rather than waiting out
its pool's timeout, one caller a second still tries (so the pool tries again, and the first
connection made ends the outage), and the outage is said once as it begins and once as it
ends (``projections.pgpool.StoreOutage``)."""

from __future__ import annotations

import logging

import psycopg
import pytest
from eventsourcing.persistence import OperationalError

from projections.pgpool import (
    TRY_AGAIN_EVERY_S,
    TRY_WAIT_S,
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


def refused(outage: StoreOutage) -> bool:
    try:
        outage.admit(5.0)
    except StoreRefusesConnections:
        return True
    return False


def test_a_store_that_answers_lets_every_caller_wait_its_whole_timeout() -> None:
    outage = StoreOutage("db:5432/ledger", clock=Clock())
    assert [outage.admit(5.0) for _ in range(3)] == [5.0, 5.0, 5.0]


def test_while_the_store_refuses_one_caller_a_second_tries_briefly_and_the_rest_are_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = StoreOutage("db:5432/ledger", clock=clock)
    caplog.set_level(logging.INFO, logger="projections.pgpool")

    # When connection attempts fail, again and again
    for _ in range(3):
        outage.failed(psycopg.OperationalError("connection refused"))

    # Then one caller may try, briefly; the others are refused at once, in words
    assert outage.admit(5.0) == TRY_WAIT_S
    with pytest.raises(StoreRefusesConnections, match="refused connections for 0 s"):
        outage.admit(5.0)
    clock.now += TRY_AGAIN_EVERY_S / 2
    assert refused(outage)
    clock.now += TRY_AGAIN_EVERY_S / 2
    assert outage.admit(5.0) == TRY_WAIT_S  # the next one a second on
    assert refused(outage)

    # And once a connection is made, every caller waits as usual again
    clock.now += 2.5
    outage.answered()
    assert [outage.admit(5.0) for _ in range(3)] == [5.0, 5.0, 5.0]

    # The outage was said once as it began, once as it ended
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [
        ("ERROR", "the store at db:5432/ledger refuses connections (connection refused): "
                  "requests needing it answer 503 store_unavailable at once until it answers "
                  "again"),
        ("WARNING", "the store at db:5432/ledger answers again, after refusing connections "
                    "for 3.5 s"),
    ]


def test_background_failures_are_quiet_only_while_an_outage_has_said_them() -> None:
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
