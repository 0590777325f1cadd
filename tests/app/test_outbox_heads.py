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
from pathlib import Path
from typing import Any

import pytest

from projections import outbox
from projections.views import ReadModelView
from tests.http.outboxes import add_message as add
from tests.http.outboxes import outbox_view

CUSTOMERS = 100
MESSAGES_EACH = 20
RECEIVER = "http://receiver.example/hook"
FAR = 9e12  # a next try no round reaches


@pytest.fixture
def view(tmp_path: Path) -> Iterator[ReadModelView]:
    with outbox_view("postgres", tmp_path) as opened:
        yield opened


@pytest.fixture(params=["sqlite", "postgres"])
def any_view(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReadModelView]:
    with outbox_view(request.param, tmp_path) as opened:
        yield opened


def delivered(view: ReadModelView, message: str) -> None:
    outbox.settle(view, message, RECEIVER, status=outbox.DELIVERED, attempts=1, next_at=0,
                  delivered_at="2026-12-07T00:00:01Z", last_error=None)


def sent_now(view: ReadModelView) -> list[str]:
    return [row["id"] for row in outbox.pending(view, RECEIVER, since=0, now=FAR, limit=100)]


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


def test_a_head_settled_while_another_deliverer_looks_makes_the_next_message_its_head(
    any_view: ReadModelView, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A leadership change: the old leader's delivery lands while the new leader looks at the
    new messages, between its read of who has a head and its mark of how far it looked. The
    customer's next message is still made their head, and sent."""
    add(any_view, 1, "ann")
    [first] = outbox.pending(any_view, RECEIVER, since=0, now=FAR, limit=10)  # the old leader's
    add(any_view, 2, "ann")  # ann's next message, new to the new leader's look

    query = any_view.query

    def landing_midway(sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        rows = query(sql, params)
        if "SELECT DISTINCT username FROM ob_deliveries" in sql:  # who has a head: ann
            delivered(any_view, first["id"])  # the old leader's POST lands now
        return rows

    monkeypatch.setattr(any_view, "query", landing_midway)
    assert sent_now(any_view) == ["m2"]  # made ann's head as m1 landed
    monkeypatch.setattr(any_view, "query", query)
    delivered(any_view, "m2")
    assert sent_now(any_view) == []
    assert outbox.backlog(any_view, [(RECEIVER, 0)])["waiting"] == 0


def test_a_deliverer_that_begins_looks_again_for_heads_another_did_not_make(
    any_view: ReadModelView,
) -> None:
    """A deliverer of an earlier version settles without making the next head, and marks no
    look: a deliverer that begins to lead looks again from the cursor (``look_again``), so no
    message stays without its row."""
    for position in (1, 2, 3):
        add(any_view, position, "ann")
    assert sent_now(any_view) == ["m1"]
    # An earlier version's deliverer leads a while, and settles m1 as it did: no next head
    outbox.execute(any_view, "UPDATE ob_deliveries SET status = 'delivered'"
                             " WHERE message_id = 'm1'")
    # This one leads again: it looks again before its first round
    outbox.look_again(any_view)
    assert sent_now(any_view) == ["m2"]
    delivered(any_view, "m2")
    assert sent_now(any_view) == ["m3"]
