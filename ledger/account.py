"""The customer account: one per user name, in one currency, fixed at opening.

Balances (DOMAIN.md, "Customer accounts"):
    posted     = deposits - purchases + failure credits + return refunds - freight - payouts
    held       = the sum of open balance-refund requests
    available  = posted - held, never below zero: a command that would make it so is refused
    refundable = available

Public methods validate and decide; the private ``@event`` methods only change state, because
their bodies run again on every replay. Every event carries who did it and in which request.
"""

from __future__ import annotations

import functools
from copy import deepcopy
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger import money
from ledger.clock import rfc3339
from ledger.errors import (
    DuplicateOrder,
    DuplicateReference,
    InsufficientFunds,
    InvalidTransition,
    OverRefundable,
    RequestOpenForOrder,
    UnknownOrder,
)
from ledger.idempotency import KeyMarked
from ledger.identity import Actor

ACCOUNT_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledger.import-express/accounts")


@functools.lru_cache(maxsize=16_384)  # asked several times for each command (uuid5 is SHA-1)
def account_id(username: str) -> UUID:
    """The account's id derives from the normalised user name: one account per user name."""
    return uuid5(ACCOUNT_NAMESPACE, username)


class Account(Aggregate):
    TOPIC = "ledger:Account"

    class Event(KeyMarked, Aggregate.Event):
        TOPIC = "ledger:Account.Event"
        actor: str
        correlation_id: str

    class Created(Event, Aggregate.Created):
        TOPIC = "ledger:Account.Created"

    class Opened(Created):
        TOPIC = "ledger:Account.Opened"
        username: str
        currency: str

    class DepositReceived(Event):
        TOPIC = "ledger:Account.DepositReceived"
        amount: int
        reference: str

    class PurchasePaid(Event):
        TOPIC = "ledger:Account.PurchasePaid"
        order_no: str
        amount: int

    class PurchaseFailed(Event):
        TOPIC = "ledger:Account.PurchaseFailed"
        order_no: str
        amount: int
        reason: str

    class BalanceRefundRequested(Event):
        TOPIC = "ledger:Account.BalanceRefundRequested"
        request_id: str
        order_no: str
        amount: int
        reason: str

    class BalanceRefundReleased(Event):
        """A rejected or cancelled request gives its hold back."""

        TOPIC = "ledger:Account.BalanceRefundReleased"
        request_id: str
        amount: int
        outcome: str
        reason: str

    class BalanceRefundPaidOut(Event):
        TOPIC = "ledger:Account.BalanceRefundPaidOut"
        request_id: str
        amount: int
        payout_reference: str

    class ReturnRefundCredited(Event):
        TOPIC = "ledger:Account.ReturnRefundCredited"
        case_id: str
        order_no: str
        amount: int

    class FreightCharged(Event):
        """The customer bears the freight both ways on returns and exchanges."""

        TOPIC = "ledger:Account.FreightCharged"
        case_id: str
        order_no: str
        amount: int

    @staticmethod
    def create_id(username: str) -> UUID:
        return account_id(username)

    @event(Opened)
    def __init__(self, username: str, currency: str, actor: str, correlation_id: str) -> None:
        self.username = username
        self.currency = currency
        self.posted = 0
        # request id -> amount held for it, while the request is open
        self.holds: dict[str, int] = {}
        # payment reference -> (amount, version of the deposit event)
        self.deposits: dict[str, tuple[int, int]] = {}
        # order number -> [paid, credited back]
        self.orders: dict[str, list[int]] = {}
        # order number -> the open refund request on it
        self.open_request_by_order: dict[str, str] = {}

    @classmethod
    def open(cls, username: str, currency: str, *, actor: Actor) -> Account:
        return cls(
            username=username,
            currency=money.currency(currency),
            actor=actor.name,
            correlation_id=actor.request_id,
        )

    # -- balances ---------------------------------------------------------------------------

    @property
    def held(self) -> int:
        return sum(self.holds.values())

    @property
    def available(self) -> int:
        return self.posted - self.held

    @property
    def refundable(self) -> int:
        return self.available

    def order_refundable(self, order_no: str) -> int:
        """Paid for the order minus everything already credited back for it."""
        paid, credited_back = self._order(order_no)
        return paid - credited_back

    def deposit_version(self, reference: str) -> int | None:
        """The version of the event that recorded the deposit with this payment reference."""
        seen = self.deposits.get(reference)
        return None if seen is None else seen[1]

    # -- commands ---------------------------------------------------------------------------

    def receive_deposit(self, amount: int, reference: str, *, actor: Actor) -> bool:
        """Credit a deposit. A payment reference seen before with the same amount is the same
        deposit (returns False, records nothing); with another amount it is a conflict."""
        amount = money.amount(amount)
        seen = self.deposits.get(reference)
        if seen is not None:
            if seen[0] != amount:
                raise DuplicateReference(
                    f"payment reference {reference!r} was received with amount "
                    f"{self.shown(seen[0])}",
                    reference=reference,
                )
            return False
        self._receive_deposit(amount, reference, actor.name, actor.request_id)
        return True

    @event(DepositReceived)
    def _receive_deposit(
        self, amount: int, reference: str, actor: str, correlation_id: str
    ) -> None:
        self.posted += amount
        # the version this event will have once applied (the library bumps it after the body)
        self.deposits[reference] = (amount, self.version + 1)

    def pay_purchase(self, order_no: str, amount: int, *, actor: Actor) -> bool:
        """Pay for an order. An order number paid before with the same amount is the same
        purchase (returns False, records nothing), as a deposit's payment reference is; with
        another amount it is a conflict."""
        amount = money.amount(amount)
        if order_no in self.orders:
            if self.orders[order_no][0] != amount:
                raise DuplicateOrder(
                    f"order {order_no!r} was already paid with amount "
                    f"{self.shown(self.orders[order_no][0])}",
                    order_no=order_no,
                )
            return False
        if amount > self.available:
            raise InsufficientFunds(
                f"available {self.shown(self.available)} is less than {self.shown(amount)}",
                available=self.available,
            )
        self._pay_purchase(order_no, amount, actor.name, actor.request_id)
        return True

    def purchase_version(self, order_no: str) -> int | None:
        """The version of the event that paid for this order."""
        versions: dict[str, int] = self.__dict__.get("order_versions", {})
        return versions.get(order_no)

    @event(PurchasePaid)
    def _pay_purchase(self, order_no: str, amount: int, actor: str, correlation_id: str) -> None:
        self.posted -= amount
        self.orders[order_no] = [amount, 0]
        # the version this event will have once applied (the library bumps it after the body)
        self.__dict__.setdefault("order_versions", {})[order_no] = self.version + 1

    def fail_purchase(self, order_no: str, amount: int | None, reason: str, *, actor: Actor) -> int:
        """Credit back a paid order that failed after payment: by default all of what is still
        uncredited for it, never more. Returns the amount credited."""
        left = self.order_refundable(order_no)
        credit = left if amount is None else money.amount(amount)
        if left == 0 or credit > left:
            raise OverRefundable(
                f"order {order_no!r} has {self.shown(left)} left to credit back",
                refundable=left,
            )
        self._fail_purchase(order_no, credit, reason, actor.name, actor.request_id)
        return credit

    @event(PurchaseFailed)
    def _fail_purchase(
        self, order_no: str, amount: int, reason: str, actor: str, correlation_id: str
    ) -> None:
        self.posted += amount
        self.orders[order_no][1] += amount

    def hold_for_refund_request(
        self, request_id: str, order_no: str, amount: int, reason: str, *, actor: Actor
    ) -> None:
        """Hold the amount of a new balance-refund request. The order number must be one of the
        account's orders or deposit references, with no other request open on it."""
        amount = money.amount(amount)
        if order_no not in self.orders and order_no not in self.deposits:
            raise UnknownOrder(
                f"{order_no!r} is none of the account's orders or deposit references",
                order_no=order_no,
            )
        if order_no in self.open_request_by_order:
            raise RequestOpenForOrder(
                f"refund request {self.open_request_by_order[order_no]} is open for {order_no!r}",
                order_no=order_no,
            )
        if amount > self.refundable:
            raise InsufficientFunds(
                f"refundable {self.shown(self.refundable)} is less than {self.shown(amount)}",
                available=self.available,
            )
        self._hold(request_id, order_no, amount, reason, actor.name, actor.request_id)

    @event(BalanceRefundRequested)
    def _hold(
        self,
        request_id: str,
        order_no: str,
        amount: int,
        reason: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.holds[request_id] = amount
        self.open_request_by_order[order_no] = request_id

    def release_refund_hold(
        self, request_id: str, outcome: str, reason: str, *, actor: Actor
    ) -> None:
        amount = self._require_hold(request_id)
        self._release(request_id, amount, outcome, reason, actor.name, actor.request_id)

    @event(BalanceRefundReleased)
    def _release(
        self,
        request_id: str,
        amount: int,
        outcome: str,
        reason: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self._close_request(request_id)

    def pay_out_refund(self, request_id: str, payout_reference: str, *, actor: Actor) -> int:
        amount = self._require_hold(request_id)
        # The hold kept available >= 0 while it stood; paying it out leaves available unchanged.
        self._pay_out(request_id, amount, payout_reference, actor.name, actor.request_id)
        return amount

    @event(BalanceRefundPaidOut)
    def _pay_out(
        self, request_id: str, amount: int, payout_reference: str, actor: str, correlation_id: str
    ) -> None:
        self.posted -= amount
        self._close_request(request_id)

    def credit_return_refund(
        self, case_id: str, order_no: str, amount: int | None, *, actor: Actor
    ) -> int:
        """Credit a return case's refund: by default all the order has left to credit back,
        never more. Returns the amount credited."""
        left = self.order_refundable(order_no)
        credit = left if amount is None else money.amount(amount)
        if left == 0 or credit > left:
            raise OverRefundable(
                f"order {order_no!r} has {self.shown(left)} left to credit back",
                refundable=left,
            )
        self._credit_return_refund(case_id, order_no, credit, actor.name, actor.request_id)
        return credit

    @event(ReturnRefundCredited)
    def _credit_return_refund(
        self, case_id: str, order_no: str, amount: int, actor: str, correlation_id: str
    ) -> None:
        self.posted += amount
        self.orders[order_no][1] += amount

    def charge_freight(self, case_id: str, order_no: str, amount: int, *, actor: Actor) -> None:
        amount = money.amount(amount, field="freight_amount")
        if amount > self.available:
            # A refund resolution credits before it charges, and is refused whole: name the
            # balance the customer has and the refund apart, not their sum as "available".
            refund = self._refund_pending_for(case_id)
            had = self.available - refund
            weighed = (
                f"available {self.shown(had)} and this case's refund of {self.shown(refund)} do"
                if refund
                else f"available {self.shown(had)} does"
            )
            raise InsufficientFunds(
                f"{weighed} not cover freight of {self.shown(amount)}: charge less, or waive the "
                "freight (freight_waiver_reason)",
                available=had,
            )
        self._charge_freight(case_id, order_no, amount, actor.name, actor.request_id)

    @event(FreightCharged)
    def _charge_freight(
        self, case_id: str, order_no: str, amount: int, actor: str, correlation_id: str
    ) -> None:
        self.posted -= amount

    # -- internals --------------------------------------------------------------------------

    def __deepcopy__(self, memo: dict[int, Any]) -> Account:
        """The copy eventsourcing's cache hands a command, as deep as ``copy.deepcopy``'s at a
        fraction of its cost, which grew with the account's history (an entry per deposit
        reference) and was half the time of a decision. Every field is an immutable value or
        a dict of them (deposits: tuples), except the orders' [paid, credited back] lists."""
        copy = object.__new__(type(self))
        state = self.__dict__.copy()
        for name in ("holds", "deposits", "open_request_by_order"):
            state[name] = state[name].copy()
        state["orders"] = {order_no: list(sums) for order_no, sums in self.orders.items()}
        if "order_versions" in state:  # a dict a purchase adds to: the copy's own
            state["order_versions"] = state["order_versions"].copy()
        if "_key_marks" in state:  # a dict a command under a key adds to: the copy's own
            state["_key_marks"] = state["_key_marks"].copy()
        state["_pending_events"] = [deepcopy(e, memo) for e in self._pending_events]
        copy.__dict__.update(state)
        return copy

    def shown(self, amount: int) -> str:
        """An amount in this account's currency as people read it: ``USD 12.50`` (the
        refusals' words; their context keeps minor units, for programs)."""
        return f"{self.currency} {money.decimal_text(amount, self.currency)}"

    def _refund_pending_for(self, case_id: str) -> int:
        """What this command has credited for the case so far (not yet recorded)."""
        return sum(
            e.amount
            for e in self._pending_events
            if isinstance(e, Account.ReturnRefundCredited) and e.case_id == case_id
        )

    def _order(self, order_no: str) -> list[int]:
        try:
            return self.orders[order_no]
        except KeyError:
            raise UnknownOrder(
                f"no order {order_no!r} on this account", order_no=order_no
            ) from None

    def _require_hold(self, request_id: str) -> int:
        if request_id not in self.holds:
            raise InvalidTransition(f"refund request {request_id} holds nothing on this account")
        return self.holds[request_id]

    def _close_request(self, request_id: str) -> None:
        del self.holds[request_id]
        for order_no, open_request in list(self.open_request_by_order.items()):
            if open_request == request_id:
                del self.open_request_by_order[order_no]

    def snapshot(self) -> dict[str, Any]:
        """The account as the API shows it."""
        return {
            "username": self.username,
            "currency": self.currency,
            "posted": self.posted,
            "held": self.held,
            "available": self.available,
            "refundable": self.refundable,
            "opened_at": rfc3339(self.created_on),
            "version": self.version,
        }
