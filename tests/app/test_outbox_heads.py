"""The deliverer's look for what to send reads each customer's head and the messages new since
its last look, not every message waiting behind a head (``projections.outbox``).

A customer whose first message a receiver keeps refusing holds back only their own messages,
for up to ``LEDGER_WEBHOOK_MAX_AGE_S`` (a day). Meanwhile every other customer's messages are
delivered, and each round used to read every message written since the stuck one: a day of
the ledger's messages, at every round, five a second. Measured here by what PostgreSQL says
its plans read of ``ob_messages`` (``EXPLAIN ANALYZE``), not by time."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from projections import outbox
from projections.outbox import OutboxProjection
from projections.readmodels import open_view
from projections.views import ReadModelView
from tests.conftest import drop_pg_database, make_pg_database, pg_url, store_settings

CUSTOMERS = 100
MESSAGES_EACH = 20
RECEIVER = "http://receiver.example/hook"
FAR = 9e12  # a next try no round reaches


@pytest.fixture
def view() -> Iterator[ReadModelView]:
    name = make_pg_database()
    try:
        opened = open_view(store_settings(pg_url(name)), OutboxProjection)
        try:
            outbox.create_delivery_tables(opened)
            yield opened
        finally:
            opened.datastore.close()
    finally:
        drop_pg_database(name)


def fill(view: ReadModelView) -> None:
    """Customer ``c000``'s first message, then ``MESSAGES_EACH`` for each customer, in turn."""
    outbox.execute(view, "INSERT INTO ob_messages SELECT 'm' || g, g, 'deposit.recorded',"
                         " 'c' || lpad(((g - 1) %% %(n)s)::text, 3, '0'), 'EUR', 100, NULL,"
                         " NULL, NULL, 'a payment', '{}', '2026-12-07T00:00:00Z'"
                         " FROM generate_series(1, %(total)s) g",
                   {"n": CUSTOMERS, "total": CUSTOMERS * MESSAGES_EACH})
    outbox.execute(view, "INSERT INTO ob_seals SELECT id, position, 'seal' FROM ob_messages")
    outbox.execute(view, "ANALYZE ob_messages")


def deliver_all_but_the_first(view: ReadModelView) -> int:
    """Rounds as the deliverer makes them, every message delivered but the very first (its
    receiver refuses it: tried again only far in the future); answers the rounds."""
    for rounds in range(1, 10 * CUSTOMERS * MESSAGES_EACH):
        due = outbox.pending(view, RECEIVER, since=0, now=time.time(), limit=100)
        if not due:
            return rounds
        for row in due:
            stuck = row["position"] == 1
            outbox.settle(view, row["id"], RECEIVER,
                          status=outbox.WAITING if stuck else outbox.DELIVERED, attempts=1,
                          next_at=FAR if stuck else time.time(),
                          delivered_at=None if stuck else "2026-12-07T00:00:01Z",
                          last_error="answered 400" if stuck else None)
    raise AssertionError("the rounds never ended")


def rows_read_of_messages(view: ReadModelView, sql: str, params: dict[str, Any] | None) -> int:
    """What the plan of ``sql`` read of ob_messages, all loops counted."""
    found = view.query("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
    plan = found[0]["QUERY PLAN"]
    plan = json.loads(plan) if isinstance(plan, str) else plan

    def walk(node: dict[str, Any]) -> int:
        own = (int(node["Actual Rows"]) * int(node["Actual Loops"])
               if node.get("Relation Name") == "ob_messages" else 0)
        return own + sum(walk(child) for child in node.get("Plans", []))

    return walk(plan[0]["Plan"])


def test_a_round_reads_the_heads_and_the_new_not_every_message_waiting_behind_a_head(
    view: ReadModelView, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given every customer's messages delivered but the first one of c000, stuck, which holds
    # back the other MESSAGES_EACH - 1 of c000 (and so the subscriber's cursor, at 0)
    fill(view)
    deliver_all_but_the_first(view)
    statuses = view.query("SELECT status, COUNT(*) AS n FROM ob_deliveries GROUP BY status")
    assert {row["status"]: row["n"] for row in statuses} == {
        outbox.DELIVERED: (CUSTOMERS - 1) * MESSAGES_EACH, outbox.WAITING: 1}

    # When a round looks for what to send (nothing is due)
    read = []
    query = view.query

    def explained(sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        if sql.lstrip().upper().startswith("SELECT"):
            read.append(rows_read_of_messages(view, sql, params))
        return query(sql, params)

    monkeypatch.setattr(view, "query", explained)
    assert outbox.pending(view, RECEIVER, since=0, now=time.time(), limit=100) == []

    # Then it read the stuck head, not the messages written since it
    assert sum(read) <= 2, read
