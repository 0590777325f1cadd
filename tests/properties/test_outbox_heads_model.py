"""The deliverer's heads against a model: whatever the order of new messages, rounds,
deliveries landing (delivered, parked or failing again) and redeliveries, each round offers
every customer's first message neither delivered nor parked and no other, the subscriber's
cursor never passes one, the backlog's count and the outbox page's ``waiting`` are exactly the
model's, and once every delivery lands, no message was left unsent
(``projections.outbox``: ``pending``, ``settle``, ``redeliver``, ``backlog``, ``outbox``).

Looks go a ``SCAN_BATCH`` at a time: the machine runs with batches of 2 (a look that stops
midway through the new messages) and of 5,000."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from projections import outbox
from projections.seal import ChainKey
from tests.http.outboxes import add_message, outbox_view

RECEIVER = "http://receiver.example/hook"
KEY = ChainKey(bytes(range(32)))  # the receiver is configured: no subscription seal is read
CUSTOMERS = ("ann", "bob", "cy")
FAR = 1e12


def machine(kind: str) -> type[RuleBasedStateMachine]:
    class Heads(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.resources = ExitStack()
            folder = self.resources.enter_context(TemporaryDirectory(prefix="heads-"))
            self.view = self.resources.enter_context(outbox_view(kind, Path(folder)))
            self.position = 0
            self.customer_of: dict[int, str] = {}
            self.settled: set[int] = set()  # delivered or parked, as the model has it
            self.had: set[int] = set()  # ever settled: may be sent again
            self.in_flight: dict[str, dict[str, Any]] = {}
            self.turn = ""
            self.now = 1000.0

        def head(self, customer: str) -> int | None:
            waiting = [p for p, c in self.customer_of.items()
                       if c == customer and p not in self.settled]
            return min(waiting, default=None)

        @rule(customer=st.sampled_from(CUSTOMERS), count=st.integers(1, 4))
        def new_messages(self, customer: str, count: int) -> None:
            for _ in range(count):
                self.position += 1
                add_message(self.view, self.position, customer)
                self.customer_of[self.position] = customer

        @rule(later=st.sampled_from([0.0, 1.0, 100.0]), limit=st.integers(1, 3))
        def a_round(self, later: float, limit: int) -> None:
            self.now += later
            rows = outbox.pending(self.view, RECEIVER, since=0, now=self.now, limit=limit,
                                  after_customer=self.turn)
            if rows:
                self.turn = rows[-1]["username"] if len(rows) == limit else ""
            for row in rows:
                customer, position = row["username"], int(row["position"])
                if customer in self.in_flight:
                    continue  # one at a time per customer, as the deliverer sends
                assert position == self.head(customer), (customer, position)
                self.in_flight[customer] = row

        @precondition(lambda self: self.in_flight)
        @rule(data=st.data(), outcome=st.sampled_from(list(outbox.STATUSES)))
        def a_delivery_lands(self, data: st.DataObject, outcome: str) -> None:
            customer = data.draw(st.sampled_from(sorted(self.in_flight)))
            row = self.in_flight.pop(customer)
            outbox.settle(self.view, row["id"], RECEIVER, status=outcome,
                          attempts=int(row["attempts"]) + 1, next_at=self.now + 50,
                          delivered_at="2026-12-07T00:00:01Z" if outcome == "delivered"
                          else None,
                          last_error=None if outcome == "delivered" else "answered 503")
            if outcome != outbox.WAITING:
                self.settled.add(int(row["position"]))
                self.had.add(int(row["position"]))

        @precondition(lambda self: self.had)
        @rule(data=st.data())
        def sent_again(self, data: st.DataObject) -> None:
            position = data.draw(st.sampled_from(sorted(self.had)))
            changed, _ = outbox.redeliver(self.view, f"m{position}", configured=[RECEIVER],
                                            key=KEY)
            if changed:
                self.settled.discard(position)

        @invariant()
        def what_waits_is_the_models(self) -> None:
            waiting = {p for p in self.customer_of if p not in self.settled}
            found = self.view.query("SELECT upto FROM ob_cursors WHERE subscriber = %(s)s",
                                    {"s": RECEIVER})
            cursor = int(found[0]["upto"]) if found else 0
            assert not {p for p in waiting if p <= cursor}, (cursor, sorted(waiting))
            assert outbox.backlog(self.view, [(RECEIVER, 0)])["waiting"] == len(waiting)
            page = outbox.outbox(self.view, status=outbox.WAITING, limit=200, after=None,
                                 key=KEY, configured=[RECEIVER])
            assert {int(m["position"]) for m in page.items} == waiting

        def teardown(self) -> None:
            try:
                for row in self.in_flight.values():
                    outbox.settle(self.view, row["id"], RECEIVER, status=outbox.DELIVERED,
                                  attempts=1, next_at=0, delivered_at="2026-12-07T00:00:01Z",
                                  last_error=None)
                    self.settled.add(int(row["position"]))
                for _ in range(len(self.customer_of) + 1):  # each round sends at least one
                    rows = outbox.pending(self.view, RECEIVER, since=0, now=FAR, limit=10)
                    if not rows:
                        break
                    for row in rows:
                        position = int(row["position"])
                        assert position == self.head(row["username"])
                        outbox.settle(self.view, row["id"], RECEIVER, status=outbox.DELIVERED,
                                      attempts=1, next_at=0,
                                      delivered_at="2026-12-07T00:00:01Z", last_error=None)
                        self.settled.add(position)
                unsent = sorted(p for p in self.customer_of if p not in self.settled)
                assert not unsent, f"never sent: {unsent}"
            finally:
                self.resources.close()

    return Heads


@pytest.mark.parametrize(("kind", "batch", "examples"), [
    ("sqlite", 2, 150), ("sqlite", 5000, 150), ("postgres", 2, 25),
])
def test_the_heads_are_always_each_customers_first_unsettled_message(
    monkeypatch: pytest.MonkeyPatch, kind: str, batch: int, examples: int,
) -> None:
    monkeypatch.setattr(outbox, "SCAN_BATCH", batch)
    run_state_machine_as_test(machine(kind), settings=settings(
        max_examples=examples, stateful_step_count=40, deadline=None,
        suppress_health_check=list(HealthCheck)))
