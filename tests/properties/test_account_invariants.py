"""The account's invariants hold over any sequence of commands (DOMAIN.md, "Invariants").

A hypothesis state machine drives an Account and its RefundRequests exactly as the application
does, beside a plain-Python model of the policy. After every step:

- available is never negative;
- posted = deposits - purchases + failure credits + return refunds - freight - payouts;
- held = the sum of the open refund requests (as the requests themselves say);
- per order, credited back <= paid;
- a refused command changes nothing (same version, no new event), and it is refused exactly
  when the model says it must be, with the error the model names.

At the end, the account rebuilt from all its events equals the live one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ledger.account import Account
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
from ledger.refund_request import RefundRequest

SYSTEM = Actor("system:0a1b2c3d", "req-system")
CS = Actor("cs:4e5f6a7b", "req-cs")
FINANCE = Actor("finance:8c9d0e1f", "req-finance")
# Four eyes: a second finance person pays what FINANCE approved.
PAYER = Actor.of_person("bea", "finance", "req-payer")

REFERENCES = st.sampled_from(["PAY-0", "PAY-1", "PAY-2", "PAY-3"])
ORDERS = st.sampled_from(["ORD-0", "ORD-1", "ORD-2", "ORD-3", "ORD-4", "ORD-NONE"])
AMOUNTS = st.one_of(st.integers(1, 2_500), st.sampled_from([1, 10**12]))
REFUND_TARGETS = st.one_of(ORDERS, REFERENCES)
SMALL_AMOUNTS = st.integers(1, 600)
REFUND_AMOUNTS = st.one_of(SMALL_AMOUNTS, AMOUNTS)
ALLOWED = {
    "approve": {"requested"},
    "reject": {"requested", "approved"},
    "cancel": {"requested", "approved"},
    "pay": {"approved"},
}
ARRIVES_AT = {"approve": "approved", "reject": "rejected", "cancel": "cancelled", "pay": "paid"}


@dataclass
class Model:
    """The policy in plain Python: what every command should do to the account."""

    deposits: dict[str, int] = field(default_factory=dict)
    orders: dict[str, list[int]] = field(default_factory=dict)  # order -> [paid, credited back]
    requests: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (order, amount)
    status: dict[str, str] = field(default_factory=dict)  # request id -> status
    total_deposits: int = 0
    total_purchases: int = 0
    total_credits: int = 0
    total_freight: int = 0
    total_payouts: int = 0

    @property
    def posted(self) -> int:
        return (self.total_deposits - self.total_purchases + self.total_credits
                - self.total_freight - self.total_payouts)

    @property
    def held(self) -> int:
        return sum(a for rid, (_, a) in self.requests.items()
                   if self.status[rid] in ("requested", "approved"))

    @property
    def available(self) -> int:
        return self.posted - self.held

    def open_request_on(self, order_no: str) -> bool:
        return any(o == order_no and self.status[rid] in ("requested", "approved")
                   for rid, (o, _) in self.requests.items())


class AccountMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.account = Account.open("alice", "USD", actor=SYSTEM)
        self.requests: dict[str, RefundRequest] = {}
        self.model = Model()
        self.events: list[Any] = list(self.account.collect_events())
        self.counter = 0

    # -- running a command against the model's prediction ----------------------------------

    def expect(self, refusal: type[LedgerError] | None, command: Callable[[], object]) -> None:
        """Run the command; it must be refused with ``refusal`` (changing nothing), or
        succeed when ``refusal`` is None."""
        version = self.account.version
        request_versions = {rid: r.version for rid, r in self.requests.items()}
        if refusal is None:
            command()
        else:
            try:
                command()
            except refusal:
                pass
            else:
                raise AssertionError(f"expected {refusal.__name__}, the command succeeded")
            assert self.account.version == version
            assert {rid: r.version for rid, r in self.requests.items()} == request_versions
        self.events.extend(self.account.collect_events())
        for request in self.requests.values():
            request.collect_events()

    def _order(self, data: st.DataObject) -> str:
        """Mostly one of the account's paid orders; sometimes any order number at all."""
        paid = sorted(self.model.orders)
        if paid and data.draw(st.integers(0, 3)) != 3:
            return data.draw(st.sampled_from(paid))
        return data.draw(ORDERS)

    # -- money in and out --------------------------------------------------------------------

    @initialize(amount=st.one_of(st.just(0), st.integers(1, 5_000)))
    def opening_deposit(self, amount: int) -> None:
        """Most accounts start with some money on them, so that the other rules can spend it."""
        if amount:
            self.deposit("PAY-OPENING", amount)

    @rule(reference=REFERENCES, amount=AMOUNTS)
    def deposit(self, reference: str, amount: int) -> None:
        m = self.model
        seen = m.deposits.get(reference)
        if seen is not None and seen != amount:
            self.expect(DuplicateReference,
                        lambda: self.account.receive_deposit(amount, reference, actor=SYSTEM))
            return
        version = self.account.version
        credited = self.account.receive_deposit(amount, reference, actor=SYSTEM)
        assert credited is (seen is None)
        if seen is None:
            m.deposits[reference] = amount
            m.total_deposits += amount
            assert self.account.deposit_version(reference) == self.account.version
        else:
            assert self.account.version == version
        self.events.extend(self.account.collect_events())

    @rule(order_no=ORDERS, amount=st.one_of(SMALL_AMOUNTS, AMOUNTS))
    def purchase(self, order_no: str, amount: int) -> None:
        m = self.model
        refusal: type[LedgerError] | None = None
        if order_no in m.orders:
            if m.orders[order_no][0] == amount:  # the same purchase again: nothing changes
                version = self.account.version
                assert self.account.pay_purchase(order_no, amount, actor=SYSTEM) is False
                assert self.account.version == version
                return
            refusal = DuplicateOrder
        elif amount > m.available:
            refusal = InsufficientFunds
        self.expect(refusal, lambda: self.account.pay_purchase(order_no, amount, actor=SYSTEM))
        if refusal is None:
            m.orders[order_no] = [amount, 0]
            m.total_purchases += amount

    def _credit_back(
        self, order_no: str, amount: int | None
    ) -> tuple[type[LedgerError] | None, int]:
        m = self.model
        if order_no not in m.orders:
            return UnknownOrder, 0
        paid, credited = m.orders[order_no]
        left = paid - credited
        credit = left if amount is None else amount
        if left == 0 or credit > left:
            return OverRefundable, 0
        return None, credit

    @rule(data=st.data(), amount=st.one_of(st.none(), SMALL_AMOUNTS, AMOUNTS))
    def fail_purchase(self, data: st.DataObject, amount: int | None) -> None:
        order_no = self._order(data)
        refusal, credit = self._credit_back(order_no, amount)
        result: list[int] = []
        self.expect(refusal, lambda: result.append(
            self.account.fail_purchase(order_no, amount, "failed", actor=CS)))
        if refusal is None:
            assert result == [credit]
            self.model.orders[order_no][1] += credit
            self.model.total_credits += credit

    @rule(data=st.data(), amount=st.one_of(st.none(), SMALL_AMOUNTS, AMOUNTS))
    def credit_return_refund(self, data: st.DataObject, amount: int | None) -> None:
        order_no = self._order(data)
        refusal, credit = self._credit_back(order_no, amount)
        self.expect(refusal, lambda: self.account.credit_return_refund(
            "case-1", order_no, amount, actor=CS))
        if refusal is None:
            self.model.orders[order_no][1] += credit
            self.model.total_credits += credit

    @rule(data=st.data(), amount=st.one_of(SMALL_AMOUNTS, AMOUNTS))
    def charge_freight(self, data: st.DataObject, amount: int) -> None:
        order_no = self._order(data)
        refusal = InsufficientFunds if amount > self.model.available else None
        self.expect(refusal, lambda: self.account.charge_freight(
            "case-1", order_no, amount, actor=CS))
        if refusal is None:
            self.model.total_freight += amount

    # -- balance refunds, as the application runs them ---------------------------------------

    @rule(data=st.data(), amount=REFUND_AMOUNTS)
    def request_refund(self, data: st.DataObject, amount: int) -> None:
        m = self.model
        # mostly one of the account's orders or deposit references; sometimes anything at all
        known = sorted(m.orders) + sorted(m.deposits)
        use_known = known and data.draw(st.integers(0, 3)) != 3
        order_no = data.draw(st.sampled_from(known) if use_known else REFUND_TARGETS)
        self.counter += 1
        request = RefundRequest.request(
            id=UUID(int=self.counter), username="alice", currency="USD", order_no=order_no,
            amount=amount, reason="wants it back", actor=CS,
        )
        rid = str(request.id)
        refusal: type[LedgerError] | None = None
        if order_no not in m.orders and order_no not in m.deposits:
            refusal = UnknownOrder
        elif m.open_request_on(order_no):
            refusal = RequestOpenForOrder
        elif amount > m.available:
            refusal = InsufficientFunds
        self.expect(refusal, lambda: self.account.hold_for_refund_request(
            rid, order_no, amount, "wants it back", actor=CS))
        if refusal is None:
            # the application saves the request only together with its hold
            request.collect_events()
            self.requests[rid] = request
            m.requests[rid] = (order_no, amount)
            m.status[rid] = "requested"

    def _step(self, rid: str, step: str) -> None:
        request = self.requests[rid]
        allowed = ALLOWED[step]
        status = self.model.status[rid]

        def run() -> None:
            if step == "approve":
                request.approve("ok", actor=FINANCE)
            elif step == "pay":
                request.pay("WIRE", actor=PAYER)
                self.account.pay_out_refund(rid, "WIRE", actor=PAYER)
            else:
                getattr(request, step)("no", actor=FINANCE)
                self.account.release_refund_hold(rid, request.status, "no", actor=FINANCE)

        self.expect(None if status in allowed else InvalidTransition, run)
        if status in allowed:
            self.model.status[rid] = ARRIVES_AT[step]
            if step == "pay":
                self.model.total_payouts += self.model.requests[rid][1]

    def _pick(self, data: st.DataObject, step: str) -> str:
        """Mostly a request the step is allowed on; sometimes any request at all."""
        allowed = sorted(rid for rid, st_ in self.model.status.items() if st_ in ALLOWED[step])
        if allowed and data.draw(st.integers(0, 3)) != 3:
            return data.draw(st.sampled_from(allowed))
        return data.draw(st.sampled_from(sorted(self.requests)))

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def approve(self, data: st.DataObject) -> None:
        self._step(self._pick(data, "approve"), "approve")

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def reject(self, data: st.DataObject) -> None:
        self._step(self._pick(data, "reject"), "reject")

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        self._step(self._pick(data, "cancel"), "cancel")

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def pay(self, data: st.DataObject) -> None:
        self._step(self._pick(data, "pay"), "pay")

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def available_is_never_negative(self) -> None:
        assert self.account.available >= 0
        assert self.account.refundable == self.account.available

    @invariant()
    def posted_is_what_came_in_minus_what_went_out(self) -> None:
        assert self.account.posted == self.model.posted

    @invariant()
    def held_is_the_sum_of_the_open_requests(self) -> None:
        open_requests = {rid: r.amount for rid, r in self.requests.items() if r.is_open}
        assert self.account.holds == open_requests
        assert self.account.held == self.model.held == sum(open_requests.values())
        assert self.account.available == self.model.available

    @invariant()
    def no_order_is_credited_back_more_than_was_paid(self) -> None:
        assert self.account.orders == self.model.orders
        for paid, credited_back in self.account.orders.values():
            assert 0 <= credited_back <= paid

    @invariant()
    def an_order_has_at_most_one_open_request(self) -> None:
        open_orders = [r.order_no for r in self.requests.values() if r.is_open]
        assert len(open_orders) == len(set(open_orders))
        assert set(self.account.open_request_by_order) == set(open_orders)

    def teardown(self) -> None:
        rebuilt = None
        for domain_event in self.events:
            rebuilt = domain_event.mutate(rebuilt)
        assert isinstance(rebuilt, Account)
        assert rebuilt.snapshot() == self.account.snapshot()
        assert (rebuilt.deposits, rebuilt.orders, rebuilt.holds) == (
            self.account.deposits, self.account.orders, self.account.holds,
        )
        assert rebuilt.version == self.account.version == len(self.events)


AccountMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAccountInvariantsOverAnyCommandSequence = AccountMachine.TestCase
