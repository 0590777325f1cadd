"""The ledger application behaves as its plain-Python model says, over any history, on both
stores (DOMAIN.md "Invariants that must never break"; API.md "Idempotency").

A hypothesis state machine drives ``LedgerApplication`` through its use cases — accounts,
deposits, purchases, purchase failures, balance-refund requests and their steps, return cases
and every step of theirs, time passing on the shop's clock, a command retried with its key, a
key reused for another command — beside ``tests.model.model.LedgerModel``. The real read-model
keeper keeps the read models current meanwhile, as ``ledger serve`` does.

Every command is checked as it runs:
- refused exactly when the model says, with exactly the model's error class (and case reason),
  not marked replayed; it records nothing, unless its key records the refusal (then exactly
  that record), or it is a case the policy refuses (then exactly that refused case, named by
  the refusal);
- otherwise answered with the model's outcome and the position of its last event (a natural
  duplicate: the original's), recording exactly the events the model names, key record included;
- retried with its key while the key lives: the first answer or refusal again, ``replayed``,
  nothing recorded; a key reused for another request: ``IdempotencyKeyReused``, nothing recorded.

After every step that recorded anything (a step that recorded nothing changed nothing: the log
did not move), for what the step touched, the aggregates first, then the read models once
current (``ReadModels.wait_current``):
- the account: posted, held and available equal the model's, available never negative, each
  order's paid and credited back equal the model's and credits never above paid (the orders read
  model also lists the order's cases);
- the refund request or case: status or state and steps; a case's days open, days since
  shipping, 30-day full return and overdue flag for the shop's day;
- reconciliation of the currency, when money or a hold moved: ``ok``, every invariant true, the
  trial balance zero, totals and customer balances those before the example plus the model's.

Once per example (``teardown``): all of that for everything of the example; the customers' lists
of requests and cases (the overdue filter agreeing with each case's flag) and their balances as
they stood after each change; and the read models' rows of the example equal a fresh replay of
the example's events into empty read models. Once per store (every ``EXAMPLES_PER_STORE``
examples, and at the end): ``ledger verify`` of the whole store — hash chain, the invariants at
every position, every read model against a fresh replay of the whole log.

``LEDGER_MODEL_EXAMPLES`` (default 200) examples per kind of store, ``LEDGER_MODEL_STEPS``
(default 16) steps per example. ``LEDGER_MODEL_SHARDS`` (default 1) splits each kind's examples
between that many tests, each with stores and a search of its own, for ``pytest -n``
(pytest-xdist) to run side by side: one example is a chain of round trips between this process,
the keeper's and the database's, which keeps about one core busy (``make chaos`` uses two).
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import Notification
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from api.edge import full_collections_held_back
from ledger.account import account_id
from ledger.application import CaseApplication, Outcome
from ledger.errors import LedgerError, NotReady
from ledger.idempotency import record_id
from ledger.identity import Actor
from tests.model.harness import Harness, example_differences
from tests.model.model import (
    FLOWS,
    KINDS,
    OPEN_STATES,
    Command,
    KeyRecord,
    LedgerModel,
    Prediction,
)

T = TypeVar("T")

EXAMPLES = int(os.environ.get("LEDGER_MODEL_EXAMPLES", "200"))
STEPS = int(os.environ.get("LEDGER_MODEL_STEPS", "16"))
SHARDS = int(os.environ.get("LEDGER_MODEL_SHARDS", "1"))
assert 1 <= SHARDS <= 16 and SHARDS <= EXAMPLES, "1..16 shards, and no more than the examples"

SYSTEM = Actor("system:0a1b2c3d", "req-system")
CS = Actor("cs:4e5f6a7b", "req-cs")
FINANCE = Actor("finance:8c9d0e1f", "req-finance")
# Four eyes: a named finance person pays what the finance role token approved.
PAYER = Actor.of_person("bea", "finance", "req-payer")
CALLERS = {a.person: a for a in (SYSTEM, CS, FINANCE, PAYER)}  # whom a key belongs to

USERS = ("ann", "bob", "cy")
CURRENCIES = ("USD", "EUR", "JPY")
REFERENCES = ("PAY-1", "PAY-2", "PAY-3")
ORDERS = ("ORD-1", "ORD-2", "ORD-3", "ORD-4")


def mostly(common: st.SearchStrategy[T], rare: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``common`` seven times in eight, else ``rare`` (shrinks towards ``common``)."""
    return st.integers(0, 7).flatmap(lambda n: rare if n == 7 else common)


AMOUNTS = mostly(st.integers(1, 3_000), st.sampled_from([1, 10**12]))
WITH_KEY = mostly(st.just(True), st.just(False))
HOURS = st.sampled_from([1, 23, 24, 25, 72, 24 * 20, 24 * 40, 24 * 61])
# The steps of a case most likely next from each state: mostly forward along the lifecycle, so
# that cases get far (every other step, and every other branch, still comes up now and then).
NEXT_STEPS = {
    "opened": ("review", "review", "review", "cancel"),
    "supplier_review": ("accept", "accept", "accept", "reject"),
    "accepted": ("receive", "receive", "ship_back", "expire"),
    "goods_in_transit": ("receive",),
    "received": ("forward",),
    "with_supplier": ("resolve",),
    "resolved": ("close", "note"),
}
CASE_STEPS = ("review", "accept", "reject", "ship_back", "receive", "expire", "forward",
              "resolve", "close", "cancel", "note")
REFUND_NEXT = {
    "requested": ("approve", "approve", "reject", "cancel"),
    "approved": ("pay", "pay", "reject", "cancel"),
}
REFUND_STEPS = ("approve", "reject", "cancel", "pay")


class LedgerMachine(RuleBasedStateMachine):
    harness: Harness  # the stores of one kind, set on a subclass per run

    def __init__(self) -> None:
        super().__init__()
        harness = self.harness
        self.ledger, self.prefix, self.start = harness.begin_example()
        self.app = self.ledger.app
        self.read_models = self.ledger.read_models
        self.clock = harness.clock
        self.model = LedgerModel(self.clock)
        self.position = self.start  # the log's end as the model knows it
        self.baseline: dict[str, dict[str, Any]] = {}
        self.keys = itertools.count(1)
        self.last: Command | None = None
        self.touched: set[tuple[str, Any]] = set()
        self.broken = False
        self.seen = harness.seen

    # -- running a command beside the model ------------------------------------------------------

    def execute(self, command: Command) -> None:
        """Run the command; the application must do what the model expects of it."""
        self.broken = True  # until the command is checked (teardown then skips its checks)
        note(repr(command))
        expected = self.model.expect(command)
        if isinstance(expected, KeyRecord):
            self._replayed(command, expected)
        elif expected.refusal is not None:
            self._refused(command, expected)
        else:
            self._done(command, expected)
        if command.key is not None:
            self.last = command
        self.broken = False

    def _replayed(self, command: Command, record: KeyRecord) -> None:
        """A live key of the same request: the first response again, nothing recorded."""
        if record.refusal is not None:
            first = record.refusal
            error = self._refusal(command, type(first), getattr(first, "reason", None))
            assert str(error) == str(first), f"{command!r} refused with {error}, first {first}"
            assert getattr(error, "case_id", None) == getattr(first, "case_id", None), (
                f"{command!r}: a refusal answered again names another case"
            )
            assert error.replayed, f"{command!r}: a refusal answered again is marked replayed"
        else:
            answer = self._run(command, "the first answer again")
            assert answer.replayed, f"{command!r} took effect again instead of being replayed"
            assert record.answer is not None
            assert (answer.outcome, answer.body, answer.position) == (
                record.answer.outcome, record.answer.body, record.answer.position,
            ), f"{command!r} answered {answer!r}, first {record.answer!r}"
        assert self.ledger.log_position() == self.position, f"{command!r}: a replay recorded"
        self.seen("a retry answered again")

    def _refused(self, command: Command, expected: Prediction) -> None:
        assert expected.refusal is not None
        error = self._refusal(command, expected.refusal, expected.reason)
        assert not error.replayed, f"{command!r}: a first refusal is marked as replayed"
        if expected.events:
            # a refusal that is recorded (a case the policy refuses: recorded refused, the
            # refusal naming it), exactly its events; its key holds the refusal
            recorded = self._recorded(command, expected.events)
            case_id = UUID(str(getattr(error, "case_id", None)))
            assert [n.originator_id for n in recorded] == [case_id], (command, recorded)
            expected.apply(error)
            self.touched.add(("case", case_id))
            self.touched.add(("account", self.model.cases[case_id].username))
            if command.key is not None:
                self._key_holds(command, "refused")
                self.model.remember_key(command, error)
        elif self.model.records_refusal(command, expected):
            # the key holds the refusal now, in the keys' table: nothing is recorded in the log
            self._recorded(command, ())
            self._key_holds(command, "refused")
            self.model.remember_key(command, error)
        else:
            assert self.ledger.log_position() == self.position, (
                f"{command!r} was refused, yet recorded"
            )
        self.seen(f"refused: {expected.refusal.__name__}")

    def _refusal(
        self, command: Command, refusal: type[LedgerError], reason: str | None
    ) -> LedgerError:
        """Run a command that must be refused with exactly ``refusal`` (and ``reason``)."""
        try:
            answer = command.run(self.app)
        except LedgerError as error:
            assert type(error) is refusal, (
                f"{command!r} refused with {type(error).__name__} ({error}), the model expected "
                f"{refusal.__name__}"
            )
            if reason is not None:
                assert getattr(error, "reason", None) == reason, (command, error)
            return error
        raise AssertionError(
            f"{command!r} was expected to be refused with {refusal.__name__}, it answered "
            f"{answer!r}"
        )

    def _recorded(self, command: Command, events: tuple[str, ...]) -> Sequence[Notification]:
        """What the command recorded since the last step must be exactly ``events`` (topics, in
        any order; nothing else writes to the store meanwhile)."""
        recorded = self.app.recorder.select_notifications(
            self.position, 50, inclusive_of_start=False
        )
        topics = sorted(n.topic for n in recorded)
        wanted = sorted(f"ledger:{t}" for t in events)
        assert topics == wanted, f"{command!r} recorded {topics}, the model expected {wanted}"
        if recorded:
            self.position = recorded[-1].id
        return recorded

    def _key_holds(self, command: Command, outcome: str, position: int | None = None) -> None:
        """The store's record of the command's key holds its first answer."""
        if command.key is None:
            return
        record = self.app.keys.get(record_id(command.actor.person, command.key))
        assert record is not None, f"{command!r}: no record of its key"
        assert (record.outcome, record.position) == (outcome, position), (command, record)

    def _done(self, command: Command, expected: Prediction) -> None:
        answer = self._run(command, f"outcome {expected.outcome}")
        assert not answer.replayed, f"{command!r} answered as a replay: {answer!r}"
        assert answer.outcome == expected.outcome, (command, answer, expected.outcome)
        if self.model.takes_a_lapsed_key(command):
            self.seen("a lapsed key taken for a new request")
        recorded = self._recorded(command, expected.events)
        if expected.original_position is not None:
            assert answer.position == expected.original_position, (command, answer)
        else:
            assert answer.position == recorded[-1].id, (command, answer, recorded[-1].id)
        expected.apply(answer)
        self._key_holds(command, answer.outcome, answer.position)
        self.model.remember_key(command, answer)
        owner = self._owner(command, answer)
        streams = {"ledger:Account.": account_id(owner)}
        if "id" in answer.body:  # the request or the case the command made or stepped on
            streams["ledger:RefundRequest."] = streams["ledger:ReturnCase."] = UUID(
                answer.body["id"]
            )
        for notification in recorded:
            for topic, stream in streams.items():
                if notification.topic.startswith(topic):
                    assert notification.originator_id == stream, (command, notification)
            if notification.topic == "ledger:Account.DepositReceived":
                account = self.model.accounts[owner]
                account.deposit_positions[command.params["reference"]] = notification.id
            if notification.topic == "ledger:Account.PurchasePaid":
                account = self.model.accounts[owner]
                account.order_positions[command.params["order_no"]] = notification.id
        if recorded:
            self.touched.add(("account", owner))
            if any(n.topic.startswith("ledger:Account.") for n in recorded):
                account = self.model.accounts[owner]
                self.touched.add(("money", account.currency))
                account.balances_at.append((self.position, account.posted, account.held))
            if "request_id" in command.params or command.name == "request_refund":
                self.touched.add(("request", UUID(answer.body["id"])))
            if "case_id" in command.params or command.name == "open_return_case":
                self.touched.add(("case", UUID(answer.body["id"])))
        self._check_answer(command, answer)
        self.seen(f"{command.name}: {answer.outcome}")

    def _run(self, command: Command, expected: str) -> Outcome:
        try:
            return command.run(self.app)
        except LedgerError as error:
            raise AssertionError(
                f"{command!r} was refused with {type(error).__name__} ({error}); the model "
                f"expected {expected}"
            ) from error

    def _owner(self, command: Command, answer: Outcome) -> str:
        """The user name of the account the command is about."""
        if command.username is not None:
            return command.username
        if "request_id" in command.params:
            return self.model.requests[command.params["request_id"]].username
        return self.model.cases[command.params["case_id"]].username

    def _check_answer(self, command: Command, answer: Outcome) -> None:
        body = answer.body
        if command.name == "open_account":
            self._same_balances(body, command.username)
        elif command.name in ("deposit", "purchase", "fail_purchase"):
            self._same_balances(body["account"], command.username)
        elif "request_id" in command.params or command.name == "request_refund":
            request = self.model.requests[UUID(body["id"])]
            assert (body["status"], body["amount"]) == (request.status, request.amount), body
        else:
            case = self.model.cases[UUID(body["id"])]
            assert (body["state"], body["order_no"]) == (case.state, case.order_no), body

    def _same_balances(self, shown: dict[str, Any], username: str | None) -> None:
        account = self.model.accounts[str(username)]
        assert (shown["posted"], shown["held"], shown["available"]) == (
            account.posted, account.held, account.available,
        ), (shown, account)

    def key(self, with_key: bool) -> str | None:
        return f"{self.prefix}key-{next(self.keys)}" if with_key else None

    def user(self, name: str) -> str:
        return f"{self.prefix}{name}"

    # -- choosing what to act on ---------------------------------------------------------------

    def some_user(self, data: st.DataObject) -> str:
        """Mostly one of the example's customers; now and then anyone."""
        known = sorted(self.model.accounts)
        return data.draw(mostly(st.sampled_from(known), st.sampled_from(USERS).map(self.user)))

    def typed(self, data: st.DataObject, username: str) -> str:
        """The user name mostly as it is, now and then as a person might type it (the ledger
        trims and lower-cases it)."""
        return data.draw(mostly(st.just(username), st.just(f" {username.upper()}")))

    def some_order(self, data: st.DataObject, username: str, *extra: str) -> str:
        """Mostly one of the customer's orders (or ``extra``); now and then any order number."""
        account = self.model.accounts.get(username)
        known = [*sorted(account.orders), *extra] if account else []
        if not known:
            return data.draw(st.sampled_from(ORDERS))
        return data.draw(mostly(st.sampled_from(known), st.sampled_from([*ORDERS, "ORD-9"])))

    def some_request(self, data: st.DataObject) -> UUID:
        known = list(self.model.requests)  # in the order they were made: their ids are random
        return data.draw(mostly(st.sampled_from(known), st.builds(uuid4)))

    def some_case(self, data: st.DataObject) -> UUID:
        """Mostly the latest case still open, so that cases get far; else any, or none."""
        known = list(self.model.cases)
        going = [c for c in known if self.model.cases[c].state in (*OPEN_STATES, "resolved")]
        latest = st.just(going[-1]) if going else st.sampled_from(known)
        return data.draw(mostly(latest, mostly(st.sampled_from(known), st.builds(uuid4))))

    # -- accounts and money ----------------------------------------------------------------------

    @initialize(
        data=st.data(),
        currency=st.sampled_from(CURRENCIES),
        amount=mostly(st.integers(1_000, 5_000), st.just(0)),
        spent=st.integers(0, 100),
        case=mostly(st.just(True), st.just(False)),
    )
    def a_customer_who_paid_an_order(
        self, data: st.DataObject, currency: str, amount: int, spent: int, case: bool
    ) -> None:
        """Most examples begin with a customer who has money and paid an order with some of it
        (``spent`` per cent), most with a case opened on it, so that the steps have
        something to work on (and a case the time to get far)."""
        self.baseline[currency] = self._reconciled(currency)
        ann = self.user("ann")
        self.execute(Command("open_account", {"username": ann, "currency": currency},
                             SYSTEM, self.key(True)))
        if amount:
            params = {"username": ann, "amount": amount, "reference": "PAY-0"}
            self.execute(Command("deposit", params, SYSTEM, self.key(True)))
        if amount * spent // 100:
            params = {"username": ann, "order_no": "ORD-0", "amount": amount * spent // 100}
            self.execute(Command("purchase", params, SYSTEM, self.key(True)))
            if case:
                self.open_case(data, data.draw(st.sampled_from(KINDS)), 20, True)

    @rule(data=st.data(), currency=st.sampled_from(CURRENCIES), with_key=WITH_KEY)
    def open_account(self, data: st.DataObject, currency: str, with_key: bool) -> None:
        """Mostly a customer new to the example; now and then one it has already."""
        new = [n for n in USERS if self.user(n) not in self.model.accounts]
        name = data.draw(mostly(st.sampled_from(new), st.sampled_from(USERS)) if new
                         else st.sampled_from(USERS))
        if currency not in self.baseline:
            self.baseline[currency] = self._reconciled(currency)
        params = {"username": self.user(name), "currency": currency}
        self.execute(Command("open_account", params, SYSTEM, self.key(with_key)))

    @rule(data=st.data(), reference=st.sampled_from(REFERENCES), amount=AMOUNTS,
          with_key=WITH_KEY)
    def deposit(self, data: st.DataObject, reference: str, amount: int, with_key: bool) -> None:
        username = self.some_user(data)
        account = self.model.accounts.get(username)
        if account and reference in account.deposits and data.draw(st.booleans()):
            amount = account.deposits[reference]  # the same payment again: a natural duplicate
        params = {"username": self.typed(data, username), "amount": amount,
                  "reference": reference}
        self.execute(Command("deposit", params, SYSTEM, self.key(with_key)))

    @rule(data=st.data(), order_no=st.sampled_from(ORDERS), amount=AMOUNTS, with_key=WITH_KEY)
    def purchase(self, data: st.DataObject, order_no: str, amount: int, with_key: bool) -> None:
        username = self.typed(data, self.some_user(data))
        params = {"username": username, "order_no": order_no, "amount": amount}
        self.execute(Command("purchase", params, SYSTEM, self.key(with_key)))

    purchase_2 = purchase  # two rules' weight: orders are what failures, refunds, cases need

    @rule(data=st.data(), with_key=WITH_KEY)
    def fail_purchase(self, data: st.DataObject, with_key: bool) -> None:
        username = self.some_user(data)
        order_no = self.some_order(data, username)
        amount = data.draw(st.one_of(st.none(), AMOUNTS, self._left(username, order_no)))
        params = {"username": self.typed(data, username), "order_no": order_no,
                  "amount": amount, "reason": "out of stock at the supplier"}
        self.execute(Command("fail_purchase", params, CS, self.key(with_key)))

    def _left(self, username: str, order_no: str) -> st.SearchStrategy[int]:
        """Exactly what the order has left to credit back (when it has any)."""
        account = self.model.accounts.get(username)
        if account and order_no in account.orders and account.left_to_credit(order_no):
            return st.just(account.left_to_credit(order_no))
        return AMOUNTS

    # -- balance refunds -------------------------------------------------------------------------

    @rule(data=st.data(), with_key=WITH_KEY)
    def request_refund(self, data: st.DataObject, with_key: bool) -> None:
        username = self.some_user(data)
        account = self.model.accounts.get(username)
        target = self.some_order(data, username, *(sorted(account.deposits) if account else []))
        everything = st.just(account.available) if account and account.available else AMOUNTS
        amount = data.draw(st.one_of(AMOUNTS, everything))
        params = {"username": self.typed(data, username), "order_no": target,
                  "amount": amount, "reason": "no more orders planned"}
        self.execute(Command("request_refund", params, CS, self.key(with_key)))

    @precondition(lambda self: self.model.requests)
    @rule(data=st.data(), with_key=WITH_KEY)
    def refund_step(self, data: st.DataObject, with_key: bool) -> None:
        request_id = self.some_request(data)
        request = self.model.requests.get(request_id)
        likely = REFUND_NEXT.get(request.status, REFUND_STEPS) if request else REFUND_STEPS
        step = data.draw(mostly(st.sampled_from(likely), st.sampled_from(REFUND_STEPS)))
        name, params, actor = {
            "approve": ("approve_refund", {"note": "balance checked"}, FINANCE),
            "reject": ("reject_refund", {"reason": "order still in progress"}, FINANCE),
            "cancel": ("cancel_refund", {"reason": "customer changed their mind"}, CS),
            "pay": ("pay_refund", {"payout_reference": f"WIRE-{request_id.hex[:8]}"}, PAYER),
        }[step]
        self.execute(Command(name, {"request_id": request_id, **params}, actor,
                             self.key(with_key)))

    refund_step_2 = refund_step  # two rules' weight: a request has several steps

    # -- return cases ----------------------------------------------------------------------------

    @rule(data=st.data(), kind=st.sampled_from(KINDS), shipped_days_ago=st.integers(-1, 45),
          with_key=WITH_KEY)
    def open_case(self, data: st.DataObject, kind: str, shipped_days_ago: int, with_key: bool
                  ) -> None:
        username = self.some_user(data)
        today = self.model.today
        eligible = CaseApplication(
            username=self.typed(data, username),
            order_no=self.some_order(data, username),
            kind=kind,
            shipped_on=today - timedelta(days=shipped_days_ago),
            items=[{"sku": "SKU-7", "description": "desk lamp", "quantity": 1}],
            goods_photos=["photo://goods-1"],
            package_photos=["photo://box-1"],
            replaced_or_modified=False,
            parts_missing=False,
            opened_media=False,
            has_quality_assurance=True,
            guarantee_until=today + timedelta(days=365) if kind == "quality_problem" else None,
            note="customer wrote in",
        )
        flaw: dict[str, Any] = data.draw(mostly(st.just({}), st.sampled_from([
            {"replaced_or_modified": True},
            {"parts_missing": True},
            {"opened_media": True},
            {"goods_photos": []},
            {"package_photos": ["  "]},
            {"has_quality_assurance": False},
            {"guarantee_until": None},
            {"guarantee_until": today - timedelta(days=1)},
            {"guarantee_until": today},
            {"kind": "lost_in_post"},
        ])))
        case = replace(eligible, **flaw)
        self.execute(Command("open_return_case", {"case": case}, CS, self.key(with_key)))

    open_case_2 = open_case  # two rules' weight

    @precondition(lambda self: self.model.cases)
    @rule(data=st.data(), with_key=WITH_KEY)
    def case_step(self, data: st.DataObject, with_key: bool) -> None:
        case_id = self.some_case(data)
        case = self.model.cases.get(case_id)
        today = self.model.today
        likely = NEXT_STEPS.get(case.state, ("note",)) if case else CASE_STEPS
        if case and case.state == "accepted" and case.return_by and case.return_by < today:
            likely = ("expire", "receive")  # nothing came back in time: it expires, or is late
        step = data.draw(mostly(st.sampled_from(likely), st.sampled_from(CASE_STEPS)))
        name, params = self._case_command(data, step, case)
        self.execute(Command(name, {"case_id": case_id, **params}, CS, self.key(with_key)))

    # Six rules' weight: a case has many steps to walk.
    case_step_2 = case_step_3 = case_step_4 = case_step_5 = case_step_6 = case_step

    def _case_command(
        self, data: st.DataObject, step: str, case: Any
    ) -> tuple[str, dict[str, Any]]:
        today = self.model.today
        if step == "accept":
            # short commitments too, so that time passing can make a case late or expired
            days = data.draw(mostly(st.sampled_from([0, 1, 3, 7, 30]), st.just(-1)))
            address = data.draw(mostly(st.just("Supplier Co, 1 Factory Rd, Yiwu"), st.just(" ")))
            return "accept_return_case", {
                "return_by": today + timedelta(days=days), "return_address": address,
                "instructions": "keep the box",
            }
        if step == "receive":
            # mostly posted between the shipping day and today; now and then before it or later
            since = (today - case.shipped_on).days if case else 10
            days = data.draw(mostly(st.integers(0, max(since, 0)), st.sampled_from(
                [-1, since + 1])))
            missing = data.draw(mostly(st.just(()), st.sampled_from(
                [("goods",), ("original_packaging",), ("acceptance_copy",)])))
            return "receive_return", {
                "postmark_date": today - timedelta(days=days),
                **{part: part not in missing
                   for part in ("goods", "original_packaging", "acceptance_copy")},
            }
        if step == "resolve":
            return "resolve_return_case", self._resolution(data, case)
        if step == "note":
            text = data.draw(mostly(st.just("called the customer"), st.just("   ")))
            return "add_case_note", {"text": text}
        return {
            "review": ("start_supplier_review", {"note": "asked the supplier"}),
            "reject": ("reject_return_case", {"reason": "supplier says misuse"}),
            "ship_back": ("ship_back", {"tracking": "RR123456789CN"}),
            "expire": ("expire_return_case", {"note": "nothing came back"}),
            "forward": ("forward_to_supplier", {"note": "sent on to the supplier"}),
            "close": ("close_return_case", {"note": "customer is content"}),
            "cancel": ("cancel_return_case", {"reason": "customer changed their mind"}),
        }[step]

    def _resolution(self, data: st.DataObject, case: Any) -> dict[str, Any]:
        outcome = data.draw(st.sampled_from(["refund", "refund", "exchange", "repair"]))
        freight = data.draw(st.sampled_from([0, 0, 150, 2_500, 10**12]))
        if outcome == "refund":
            left = None
            if case is not None:
                account = self.model.accounts[case.username]
                left = account.left_to_credit(case.order_no) or None
            amounts = st.one_of(st.none(), AMOUNTS, st.just(left) if left else st.none())
            return {"outcome": outcome, "refund_amount": data.draw(amounts),
                    "freight_amount": freight, "tracking": None}
        tracking = data.draw(mostly(st.just("EX-OUT-1"), st.none()))
        return {"outcome": outcome, "refund_amount": None, "freight_amount": freight,
                "tracking": tracking}

    # -- time, retries and keys ------------------------------------------------------------------

    @rule(hours=HOURS)
    def time_passes(self, hours: int) -> None:
        """The shop's clock moves on: deadlines pass, keys older than 24 hours lapse."""
        self.clock.advance(hours)

    time_passes_2 = time_passes  # two rules' weight: deadlines need time to pass

    @precondition(lambda self: self.last is not None)
    @rule(respelled=st.booleans())
    def retry_the_last_command(self, respelled: bool) -> None:
        """The client sends the last command again with its key (the user name perhaps spelled
        otherwise, which is still the same request)."""
        assert self.last is not None
        command = self.last
        if respelled and "username" in command.params:
            spelled = f" {command.params['username'].upper()} "
            command = replace(command, params={**command.params, "username": spelled})
        self.execute(command)

    @precondition(lambda self: self.model.keys)
    @rule(data=st.data(), other=st.sampled_from(["deposit", "purchase", "note", "open"]),
          another_caller=mostly(st.just(False), st.just(True)))
    def reuse_a_key_for_another_command(
        self, data: st.DataObject, other: str, another_caller: bool
    ) -> None:
        """A client sends another request under a key it used before (or another caller
        happens to send one under the same key: keys are per caller (the person), so that is no
        reuse)."""
        role, key = data.draw(st.sampled_from(sorted(self.model.keys)))
        actor = CALLERS[role]
        if another_caller:
            actor = CALLERS[data.draw(st.sampled_from(sorted(set(CALLERS) - {role})))]
        username = self.some_user(data)
        reused = next(self.keys)
        command = {
            "deposit": Command("deposit", {"username": username, "amount": 1,
                                           "reference": f"PAY-R{reused}"}, actor),
            "purchase": Command("purchase", {"username": username, "order_no": f"ORD-R{reused}",
                                             "amount": 1}, actor),
            "open": Command("open_account", {"username": self.user(f"new{reused}"),
                                             "currency": "USD"}, actor),
            "note": Command("add_case_note", {
                "case_id": self.some_case(data) if self.model.cases else uuid4(),
                "text": f"note {reused}"}, actor),
        }[other]
        if other == "open" and "USD" not in self.baseline:
            self.baseline["USD"] = self._reconciled("USD")
        self.execute(replace(command, key=key))

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def the_ledger_agrees_with_the_model(self) -> None:
        """Checked after every step that recorded anything (see the module docstring)."""
        if not self.touched or self.broken:
            return
        self.broken = True
        self.check(self.touched)
        self.touched.clear()
        self.broken = False

    def check(self, things: set[tuple[str, Any]]) -> None:
        """The aggregates first (what the application itself holds), then, once the read
        models are current, what they show, then finance's reconciliation."""
        ordered = sorted(things, key=str)
        for kind, thing in ordered:
            if kind in ("account", "request", "case"):
                getattr(self, f"check_{kind}_as_recorded")(thing)
        self.settle()
        for kind, thing in ordered:
            if kind in ("account", "request", "case"):
                getattr(self, f"check_{kind}_as_shown")(thing)
        for kind, currency in ordered:
            if kind == "money":
                self.check_reconciliation(currency)

    def settle(self) -> None:
        try:
            self.ledger.settle()
        except NotReady as error:
            raise AssertionError(
                f"the read models did not catch up with the log ({error}): the keeper could "
                "not apply an event; its log says why"
            ) from error

    def check_account_as_recorded(self, username: str) -> None:
        expected = self.model.accounts[username]
        account = self.app.account(username)
        assert (account.posted, account.held, account.available) == (
            expected.posted, expected.held, expected.available,
        ), (username, account.snapshot(), expected)
        assert account.available >= 0 and account.currency == expected.currency
        assert account.orders == expected.orders, (username, account.orders, expected.orders)
        assert all(0 <= credited <= paid for paid, credited in account.orders.values())
        assert {UUID(r): a for r, a in account.holds.items()} == expected.holds

    def check_account_as_shown(self, username: str) -> None:
        expected = self.model.accounts[username]
        shown = self.read_models.account(username)
        assert shown is not None, username
        assert (shown["posted"], shown["held"], shown["available"], shown["refundable"]) == (
            expected.posted, expected.held, expected.available, expected.available,
        ), (shown, expected)
        assert shown["currency"] == expected.currency, shown
        orders = self.read_models.orders(username, limit=100, after=None).items
        assert [
            (o["order_no"], o["paid"], o["credited_back"], o["refundable"], o["cases"])
            for o in orders
        ] == [
            (order_no, paid, credited, paid - credited,
             [str(c) for c in expected.cases_by_order.get(order_no, [])])
            for order_no, (paid, credited) in expected.orders.items()
        ], (username, orders)

    def check_request_as_recorded(self, request_id: UUID) -> None:
        expected = self.model.requests[request_id]
        request = self.app.refund_request(request_id)
        assert (request.status, request.amount, request.order_no) == (
            expected.status, expected.amount, expected.order_no,
        ), request_id

    def check_request_as_shown(self, request_id: UUID) -> None:
        expected = self.model.requests[request_id]
        shown = self.read_models.refund_request(request_id)
        assert shown is not None
        assert (shown["status"], shown["amount"], shown["order_no"]) == (
            expected.status, expected.amount, expected.order_no,
        ), shown
        assert [s["status"] for s in shown["steps"]] == expected.steps, shown

    def check_case_as_recorded(self, case_id: UUID) -> None:
        expected = self.model.cases[case_id]
        case = self.app.return_case(case_id)
        return_by = None if expected.return_by is None else expected.return_by.isoformat()
        assert (case.state, case.return_by, case.order_no) == (
            expected.state, return_by, expected.order_no,
        ), case_id

    def check_case_as_shown(self, case_id: UUID) -> None:
        expected = self.model.cases[case_id]
        shown = self.read_models.return_case(case_id)
        assert shown is not None
        return_by = None if expected.return_by is None else expected.return_by.isoformat()
        assert (
            shown["state"], shown["return_by"], shown["outcome"], shown["refund_amount"],
            shown["freight_amount"],
        ) == (
            expected.state, return_by, expected.outcome, expected.refund_amount,
            expected.freight_amount,
        ), shown
        assert [s["step"] for s in shown["steps"]] == expected.steps, shown
        status = expected.status(self.model.today, self.read_models.unresolved_after_days)
        guarantee = shown["thirty_day_guarantee"]
        assert {
            "days_open": shown["days_open"],
            "days_since_shipping": shown["days_since_shipping"],
            "overdue": shown["overdue"],
            "thirty_day_guarantee": (guarantee["holds"], guarantee["days_used"]),
        } == status, shown

    def check_lists_and_past_balances(self, username: str) -> None:
        """The customer's requests and cases as finance and CS list them (the overdue filter
        agreeing with each case's flag), and the balances as they stood after each change."""
        requests = self.read_models.refund_requests(
            status=None, username=username, limit=100, after=None
        ).items
        assert [(r["id"], r["status"]) for r in requests] == [
            (str(i), r.status) for i, r in self.model.requests.items() if r.username == username
        ], requests
        today, after_days = self.model.today, self.read_models.unresolved_after_days
        cases = [(str(i), c) for i, c in self.model.cases.items() if c.username == username]
        for overdue in (None, True, False):
            listed = self.read_models.return_cases(
                state=None, username=username, overdue=overdue, limit=100, after=None
            ).items
            assert [(c["id"], c["state"]) for c in listed] == [
                (i, c.state) for i, c in cases
                if overdue is None or c.status(today, after_days)["overdue"] == overdue
            ], (overdue, listed)
        for position, posted, held in self.model.accounts[username].balances_at:
            then = self.read_models.balance(username, at_position=position)
            assert then is not None and (then["posted"], then["held"]) == (posted, held), (
                position, then,
            )

    def _reconciled(self, currency: str) -> dict[str, Any]:
        return self.read_models.reconciliation(currency)

    def check_reconciliation(self, currency: str) -> None:
        figures = self._reconciled(currency)
        assert figures["ok"] and all(figures["invariants"].values()), figures
        assert figures["trial_balance"] == 0, figures
        before, ours = self.baseline[currency], self.model.totals(currency)
        for flow in FLOWS:
            assert figures["totals"][flow] == before["totals"][flow] + ours[flow], (flow, figures)
        assert figures["totals"]["held"] == before["totals"]["held"] + ours["held"], figures
        posted = before["customer_balances"]["posted"] + ours["posted"]
        held = before["customer_balances"]["held"] + ours["held"]
        assert (figures["customer_balances"]["posted"], figures["customer_balances"]["held"]) == (
            posted, held,
        ), figures
        assert figures["journal_customer_balances"] == posted, figures

    def teardown(self) -> None:
        """Everything of the example once more, and its read-model rows against a replay."""
        if self.broken:
            return  # a step failed: its error is the report
        everything: set[tuple[str, Any]] = {("account", name) for name in self.model.accounts}
        everything |= {("request", request_id) for request_id in self.model.requests}
        everything |= {("case", case_id) for case_id in self.model.cases}
        everything |= {("money", a.currency) for a in self.model.accounts.values()}
        self.check(everything)
        for username in self.model.accounts:
            self.check_lists_and_past_balances(username)
        for currency, before in self.baseline.items():
            # reconciled as of the position where the example began: as it was then
            then = self.read_models.reconciliation(currency, at_position=self.start)
            assert then["ok"] and then["trial_balance"] == 0, then
            assert (then["totals"], then["customer_balances"]) == (
                before["totals"], before["customer_balances"],
            ), (then, before)
        problems = example_differences(self.ledger, self.start, self.prefix)
        assert not problems, "read models differ from a replay of the example:\n" + "\n".join(
            problems
        )
        today, after_days = self.model.today, self.read_models.unresolved_after_days
        for reached in {c.state for c in self.model.cases.values()}:
            self.seen(f"a case reached {reached}")
        for why in {c.state for c in self.model.cases.values()
                    if c.status(today, after_days)["overdue"]}:
            self.seen(f"a case was overdue: {why}")
        for status in {r.status for r in self.model.requests.values()}:
            self.seen(f"a refund request reached {status}")


MACHINE_SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


@pytest.fixture
def quick_thread_switches() -> Iterator[None]:
    """The keeper's thread shares the GIL with the test's thread; at the default 5 ms switch
    interval each of the test's round trips to the database can wait that long to run again,
    which more than doubles a run on PostgreSQL."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def shards(kind: str, *marks: pytest.MarkDecorator) -> list[Any]:
    """The tests a kind of store's examples are split between: (kind, their examples)."""
    share, more = divmod(EXAMPLES, SHARDS)
    return [
        pytest.param((kind, share + (shard < more)), marks=marks,
                     id=kind if SHARDS == 1 else f"{kind}-{shard + 1}of{SHARDS}")
        for shard in range(SHARDS)
    ]


@pytest.fixture
def full_collections_per_store() -> Iterator[None]:
    """Python's cyclic collector looks at every object once the old ones have grown by a
    quarter: the search's own record and the stores' caches grow all run, and those full
    collections (24 in 1,200 examples, 140 ms each and longer as the heap grows: 3.4 s) took
    5 % of the test's processor. Here they run once per store instead (``Harness._retire``),
    which bounds what cyclic garbage waits for them to a store's examples, and each freezes
    what outlived it, so the next looks only at what is newer (5 in 1,200 examples: 1.2 s)."""
    with full_collections_held_back():
        yield


@pytest.fixture(params=[*shards("sqlite"), *shards("postgres", pytest.mark.postgres)])
def harness(request: pytest.FixtureRequest, quick_thread_switches: None,
            full_collections_per_store: None) -> Iterator[Harness]:
    kind, examples = request.param
    harness = Harness(kind, examples_wanted=examples)
    harness.open()
    try:
        yield harness
    finally:
        harness.close()


def test_the_ledger_does_what_its_model_says_over_any_history(harness: Harness) -> None:
    machine = type(f"LedgerMachineOn{harness.kind.title()}", (LedgerMachine,), {"harness": harness})
    run_state_machine_as_test(
        machine, settings=settings(MACHINE_SETTINGS, max_examples=harness.examples_wanted)
    )
    print(harness.report())  # shown with -rP: what the examples got to do
    problems = harness.close()  # ledger verify of the whole store
    assert not problems, "\n".join(problems)
