"""Random histories of the ledger's use cases, beside a plain-Python model of their money.

A ``History`` drives the application through its public use cases (accounts, deposits,
purchases, purchase failures, balance-refund requests and their steps, return cases resolved by
a refund or an exchange). Before each command the model says whether the policy must refuse it,
with which error, and which account events it must record; the driver checks that the
application agrees. ``Figures`` then places the model's money on the log: the account events a
command recorded land at the positions it wrote, so finance's figures are known at every position.

Choices come from a ``Chooser``: a plan of numbers hypothesis draws in property tests, a seeded
``random.Random`` where a test needs one fixed history.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, TypeVar
from uuid import UUID

from hypothesis import strategies as st

from ledger.application import CaseApplication, LedgerApplication
from ledger.errors import (
    DuplicateOrder,
    DuplicateReference,
    InsufficientFunds,
    InvalidTransition,
    LedgerError,
    OverRefundable,
    RequestOpenForOrder,
    UnknownOrder,
)
from ledger.identity import Actor
from projections.chain import all_notifications

T = TypeVar("T")

SYSTEM = Actor("system:0a1b2c3d", "req-system")
CS = Actor("cs:4e5f6a7b", "req-cs")
FINANCE = Actor("finance:8c9d0e1f", "req-finance")
# Four eyes: a second finance person pays what FINANCE approved.
PAYER = Actor.of_person("bea", "finance", "req-payer")

CURRENCIES = ("USD", "JPY")
# User names as the shop spells them: with '.', '_' and '-' inside.
NAMES = ("ann.lee", "bob_smith", "chen-wei", "dora.k_2")

# Each account event that moves money or a hold, by the figure it moves.
KIND_OF_TOPIC = {
    "ledger:Account.DepositReceived": "deposits",
    "ledger:Account.PurchasePaid": "purchases",
    "ledger:Account.PurchaseFailed": "failure_credits",
    "ledger:Account.ReturnRefundCredited": "return_refunds",
    "ledger:Account.FreightCharged": "freight",
    "ledger:Account.BalanceRefundPaidOut": "payouts",
    "ledger:Account.BalanceRefundRequested": "hold",
    "ledger:Account.BalanceRefundReleased": "release",
}
FLOWS = ("deposits", "purchases", "failure_credits", "return_refunds", "freight", "payouts")
# The invariants reconciliation must report (at least these), each one holding.
INVARIANTS = (
    "available_never_negative",
    "customer_balances_equal_flows",
    "journal_equals_account_balances",
    "trial_balance_zero",
    "refunds_within_paid",
)

OPEN = ("requested", "approved")  # a balance-refund request's open statuses

# How often each command comes up (a weighted draw).
COMMANDS = (
    *["deposit"] * 5,
    *["purchase"] * 5,
    *["fail_purchase"] * 2,
    *["request_refund"] * 3,
    *["refund_step"] * 6,
    "return_case",
    "open_account",
)


class Chooser(Protocol):
    def integer(self, low: int, high: int) -> int: ...

    def pick(self, options: Sequence[T]) -> T: ...


class RandomChooser:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def pick(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)


class PlanChooser:
    """Choices read off a plan of numbers drawn in full before the ledger starts: hypothesis
    shrinks the plan, and never draws while the keeper's threads run (they use ``random``)."""

    def __init__(self, plan: Sequence[int]) -> None:
        self.plan = iter(plan)

    def integer(self, low: int, high: int) -> int:
        return low + next(self.plan, 0) % (high - low + 1)

    def pick(self, options: Sequence[T]) -> T:
        return options[next(self.plan, 0) % len(options)]


# Plans long enough for 30-60 commands (a few numbers each); an exhausted plan picks the first.
PLANS = st.lists(st.integers(0, 2**16), min_size=150, max_size=400)


@dataclass(frozen=True)
class Effect:
    kind: str  # a key of KIND_OF_TOPIC's values
    currency: str
    amount: int


@dataclass(frozen=True)
class Step:
    """A command the application took: the last position it wrote, the account events the
    model expects it to have recorded there (in order)."""

    command: str
    position: int
    effects: tuple[Effect, ...]


@dataclass
class Customer:
    username: str
    currency: str
    posted: int = 0
    held: int = 0
    deposits: dict[str, int] = field(default_factory=dict)
    orders: dict[str, list[int]] = field(default_factory=dict)  # order -> [paid, credited]
    open_request_on: dict[str, UUID] = field(default_factory=dict)

    @property
    def available(self) -> int:
        return self.posted - self.held

    def left_on(self, order_no: str) -> int:
        paid, credited = self.orders[order_no]
        return paid - credited


@dataclass
class Request:
    customer: Customer
    target: str
    amount: int
    status: str = "requested"


class History:
    """The application and the model, driven together one command at a time."""

    def __init__(self, app: LedgerApplication, chooser: Chooser) -> None:
        self.app = app
        self.choose = chooser
        self.customers: dict[str, Customer] = {}
        self.requests: dict[UUID, Request] = {}
        self.steps: list[Step] = []
        self.refused: Counter[str] = Counter()
        self._serial = 0

    # -- driving -------------------------------------------------------------------------------

    def run(self, commands: int) -> History:
        """``commands`` more commands (the first run opens two accounts before)."""
        while len(self.customers) < 2:
            self.open_account()
        for _ in range(commands):
            getattr(self, self.choose.pick(COMMANDS))()
        return self

    def _take(
        self, command: str, call: Any, refusal: type[LedgerError] | None, *effects: Effect
    ) -> Any:
        """Run a command the model expects to be refused with ``refusal`` (or taken, recording
        ``effects``), and check the application agrees."""
        try:
            outcome = call()
        except LedgerError as error:
            assert type(error) is refusal, f"{command}: refused with {error!r}, model: {refusal}"
            self.refused[f"{command}: {refusal.__name__}"] += 1
            return None
        assert refusal is None, f"{command}: taken, the model expected {refusal.__name__}"
        self.steps.append(Step(command, outcome.position, effects))
        return outcome

    def _next(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}-{self._serial}"

    def _amount_up_to(self, limit: int) -> int:
        """Mostly an amount within the limit; now and then one just beyond it."""
        if limit >= 1 and self.choose.integer(1, 6) > 1:
            return self.choose.integer(1, limit)
        return limit + self.choose.integer(1, 100)

    def _mostly(self, options: Sequence[T], fitting: Sequence[T]) -> T:
        """Mostly one of the fitting options (if any); now and then any option at all."""
        if fitting and self.choose.integer(1, 6) > 1:
            return self.choose.pick(fitting)
        return self.choose.pick(options)

    def _customer(self, fits: Callable[[Customer], bool] = lambda c: True) -> Customer:
        everyone = [self.customers[name] for name in sorted(self.customers)]
        return self._mostly(everyone, [c for c in everyone if fits(c)])

    # -- accounts and money --------------------------------------------------------------------

    def open_account(self) -> None:
        if len(self.customers) >= 2 * len(NAMES):
            return self.deposit()
        n = len(self.customers)
        username = NAMES[n % len(NAMES)] + ("" if n < len(NAMES) else f"-{n}")
        currency = CURRENCIES[n % len(CURRENCIES)] if n < 2 else self.choose.pick(CURRENCIES)
        self._take(
            "open_account", lambda: self.app.open_account(username, currency, actor=SYSTEM), None
        )
        self.customers[username] = Customer(username, currency)
        return None

    def deposit(self) -> None:
        c = self._customer()
        amount = self.choose.integer(1, 5_000)
        reference = self._next("PAY")
        if c.deposits and self.choose.integer(1, 10) == 1:  # a payment reported again
            reference = self.choose.pick(sorted(c.deposits))
            amount = self.choose.pick([c.deposits[reference], amount])

        def call() -> Any:
            return self.app.deposit(c.username, amount, reference, actor=SYSTEM)

        seen = c.deposits.get(reference)
        if seen == amount:  # the same deposit: answered, nothing recorded
            assert call().outcome == "existing"
            return
        if seen is not None:
            self._take("deposit", call, DuplicateReference)
            return
        if self._take("deposit", call, None, Effect("deposits", c.currency, amount)):
            c.posted += amount
            c.deposits[reference] = amount

    def purchase(self) -> None:
        c = self._customer(lambda c: c.available > 0)
        order_no = self._next("ORD")
        if c.orders and self.choose.integer(1, 10) == 1:
            order_no = self.choose.pick(sorted(c.orders))
        amount = self._amount_up_to(c.available)
        if order_no in c.orders and amount == c.orders[order_no][0]:
            amount += 1  # the same order and amount is the same purchase, not a refusal
        refusal: type[LedgerError] | None = None
        if order_no in c.orders:
            refusal = DuplicateOrder
        elif amount > c.available:
            refusal = InsufficientFunds
        taken = self._take(
            "purchase",
            lambda: self.app.purchase(c.username, order_no, amount, actor=SYSTEM),
            refusal,
            Effect("purchases", c.currency, amount),
        )
        if taken:
            c.posted -= amount
            c.orders[order_no] = [amount, 0]

    def fail_purchase(self) -> None:
        c = self._customer(lambda c: any(c.left_on(o) for o in c.orders))
        orders = sorted(c.orders)
        order_no = self._mostly([*orders, "ORD-UNKNOWN"], [o for o in orders if c.left_on(o)])
        left = c.left_on(order_no) if order_no in c.orders else 0
        amount = self.choose.pick([None, self.choose.integer(1, left + 100)])
        credit = left if amount is None else amount
        refusal: type[LedgerError] | None = None
        if order_no not in c.orders:
            refusal = UnknownOrder
        elif left == 0 or credit > left:
            refusal = OverRefundable
        taken = self._take(
            "fail_purchase",
            lambda: self.app.fail_purchase(c.username, order_no, amount, "lost", actor=CS),
            refusal,
            Effect("failure_credits", c.currency, credit),
        )
        if taken:
            c.posted += credit
            c.orders[order_no][1] += credit

    # -- balance refunds -----------------------------------------------------------------------

    def request_refund(self) -> None:
        c = self._customer(lambda c: c.available > 0)
        targets = [*sorted(c.orders), *sorted(c.deposits)]
        target = self._mostly(
            [*targets, "ORD-UNKNOWN"], [t for t in targets if t not in c.open_request_on]
        )
        amount = self._amount_up_to(c.available)
        refusal: type[LedgerError] | None = None
        if target not in c.orders and target not in c.deposits:
            refusal = UnknownOrder
        elif target in c.open_request_on:
            refusal = RequestOpenForOrder
        elif amount > c.available:
            refusal = InsufficientFunds
        taken = self._take(
            "request_refund",
            lambda: self.app.request_refund(c.username, target, amount, "moving", actor=CS),
            refusal,
            Effect("hold", c.currency, amount),
        )
        if taken:
            request_id = UUID(taken.body["id"])
            c.held += amount
            c.open_request_on[target] = request_id
            self.requests[request_id] = Request(c, target, amount)

    def refund_step(self) -> None:
        if not self.requests:
            return self.deposit()
        ids = sorted(self.requests)
        request_id = self._mostly(ids, [i for i in ids if self.requests[i].status in OPEN])
        r = self.requests[request_id]
        c = r.customer
        likely = {"requested": ["approve", "approve", "reject", "cancel"], "approved": ["pay"]}
        step = self._mostly(["approve", "reject", "cancel", "pay"], likely.get(r.status, []))
        is_open = r.status in OPEN
        allowed = {
            "approve": r.status == "requested",
            "reject": is_open,
            "cancel": is_open,
            "pay": r.status == "approved",
        }[step]
        calls = {
            "approve": lambda: self.app.approve_refund(request_id, "ok", actor=FINANCE),
            "reject": lambda: self.app.reject_refund(request_id, "no", actor=FINANCE),
            "cancel": lambda: self.app.cancel_refund(request_id, "changed mind", actor=CS),
            "pay": lambda: self.app.pay_refund(request_id, self._next("BANK"), actor=PAYER),
        }
        effects = {
            "approve": (),
            "reject": (Effect("release", c.currency, r.amount),),
            "cancel": (Effect("release", c.currency, r.amount),),
            "pay": (Effect("payouts", c.currency, r.amount),),
        }[step]
        refusal = None if allowed else InvalidTransition
        if self._take(f"{step}_refund", calls[step], refusal, *effects):
            r.status = {"approve": "approved", "reject": "rejected", "cancel": "cancelled"}.get(
                step, "paid"
            )
            if step != "approve":
                c.held -= r.amount
                del c.open_request_on[r.target]
            if step == "pay":
                c.posted -= r.amount
        return None

    # -- return cases --------------------------------------------------------------------------

    def return_case(self) -> None:
        """A case walked from opening to its resolution: a refund or an exchange."""
        c = self._customer(lambda c: bool(c.orders))
        if not c.orders:
            return self.purchase()
        order_no = self.choose.pick(sorted(c.orders))
        outcome = self.choose.pick(["refund", "refund", "exchange"])
        left = c.left_on(order_no)
        amount = None
        if outcome == "refund":
            amount = self.choose.pick([None, self.choose.integer(1, left + 50)])
        freight = self.choose.pick([0, self.choose.integer(1, 400)])
        case_id = self.walk_to_supplier(c, order_no)
        credit = 0 if outcome == "exchange" else (left if amount is None else amount)
        refusal: type[LedgerError] | None = None
        if outcome == "refund" and (left == 0 or credit > left):
            refusal = OverRefundable
        elif freight > c.available + credit:
            refusal = InsufficientFunds
        effects = [Effect("return_refunds", c.currency, credit)] if credit else []
        effects += [Effect("freight", c.currency, freight)] if freight else []
        tracking = None if outcome == "refund" else self._next("TRK")
        taken = self._take(
            f"resolve_{outcome}",
            lambda: self.app.resolve_return_case(
                case_id, outcome, amount, freight, tracking, actor=CS
            ),
            refusal,
            *effects,
        )
        if taken:
            c.posted += credit - freight
            c.orders[order_no][1] += credit
        return None

    def walk_to_supplier(self, c: Customer, order_no: str) -> UUID:
        today = self.app.today()
        application = CaseApplication(
            username=c.username,
            order_no=order_no,
            kind="defective",
            shipped_on=today - timedelta(days=3),
            items=[{"description": "kettle", "quantity": 1}],
            goods_photos=["goods-1.jpg"],
            package_photos=["box-1.jpg"],
            replaced_or_modified=False,
            parts_missing=False,
            opened_media=False,
            has_quality_assurance=True,
        )
        opened = self._take(
            "open_return_case", lambda: self.app.open_return_case(application, actor=CS), None
        )
        case_id = UUID(opened.body["id"])
        app = self.app
        for command, call in (
            ("supplier_review", lambda: app.start_supplier_review(case_id, "asked", actor=CS)),
            (
                "accept",
                lambda: app.accept_return_case(
                    case_id, today + timedelta(days=20), "Supplier, Shenzhen", "RMA", actor=CS
                ),
            ),
            ("receive", lambda: app.receive_return(case_id, today, True, True, True, actor=CS)),
            ("forward", lambda: app.forward_to_supplier(case_id, "sent on", actor=CS)),
        ):
            self._take(command, call, None)
        return case_id

    # -- what the model says -------------------------------------------------------------------

    def posted(self) -> dict[str, int]:
        return {c.username: c.posted for c in self.customers.values()}

    def currencies(self) -> list[str]:
        return sorted({c.currency for c in self.customers.values()})


class Figures:
    """Finance's figures per currency at every position of the log, from the model's steps."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.last_position = history.app.recorder.max_notification_id() or 0
        self.effects_at = self._place(history)

    def _place(self, history: History) -> dict[int, list[Effect]]:
        """Each step's expected account events onto the positions it wrote, checking that the
        log holds exactly those account events, in that order, and no other."""
        placed: dict[int, list[Effect]] = defaultdict(list)
        notifications = iter(all_notifications(history.app.recorder))
        previous = 0
        for step in [*history.steps, Step("(after the last command)", self.last_position, ())]:
            moved = []
            for notification in notifications:
                assert notification.id > previous
                if notification.topic in KIND_OF_TOPIC:
                    moved.append(notification)
                if notification.id == step.position:
                    break
            kinds = [KIND_OF_TOPIC[n.topic] for n in moved]
            assert kinds == [e.kind for e in step.effects], f"{step.command}: logged {kinds}"
            for notification, effect in zip(moved, step.effects, strict=True):
                placed[notification.id].append(effect)
            previous = step.position
        return placed

    def at_every_position(self, currency: str) -> Iterator[dict[str, Any]]:
        """The reconciliation finance must see at positions 0, 1, ... the last (but its
        ``invariants``: all of ``INVARIANTS`` and any others, each true)."""
        totals = dict.fromkeys(FLOWS, 0)
        held = 0
        for position in range(self.last_position + 1):
            for effect in self.effects_at.get(position, []):
                if effect.currency != currency:
                    continue
                if effect.kind in FLOWS:
                    totals[effect.kind] += effect.amount
                held += {"hold": effect.amount, "release": -effect.amount}.get(effect.kind, 0)
                held -= effect.amount if effect.kind == "payouts" else 0
            posted = (
                totals["deposits"]
                - totals["purchases"]
                + totals["failure_credits"]
                + totals["return_refunds"]
                - totals["freight"]
                - totals["payouts"]
            )
            yield {
                "currency": currency,
                "position": position,
                "totals": {**totals, "held": held},
                "customer_balances": {"posted": posted, "held": held, "available": posted - held},
                "journal_customer_balances": posted,
                "trial_balance": 0,
                "ok": True,
            }
