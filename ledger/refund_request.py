"""A balance-refund request: a customer asks for (part of) their balance back.

    requested ──► approved ──► paid
        │             │
        └──► rejected / cancelled (from requested or approved)

The steps' history (who, when, why) is the request's events; the refund-requests read model
shows it. The money side (the hold, its release, the payout) lives on the Account; every step
that moves money is saved together with the account in one transaction.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.errors import InvalidTransition
from ledger.identity import Actor

OPEN_STATUSES = frozenset({"requested", "approved"})


class RefundRequest(Aggregate):
    TOPIC = "ledger:RefundRequest"

    class Event(Aggregate.Event):
        TOPIC = "ledger:RefundRequest.Event"
        actor: str
        correlation_id: str

    class Created(Event, Aggregate.Created):
        TOPIC = "ledger:RefundRequest.Created"

    class Requested(Created):
        TOPIC = "ledger:RefundRequest.Requested"
        username: str
        currency: str
        order_no: str
        amount: int
        reason: str

    class Approved(Event):
        TOPIC = "ledger:RefundRequest.Approved"
        note: str

    class Rejected(Event):
        TOPIC = "ledger:RefundRequest.Rejected"
        reason: str

    class Cancelled(Event):
        TOPIC = "ledger:RefundRequest.Cancelled"
        reason: str

    class PaidOut(Event):
        TOPIC = "ledger:RefundRequest.PaidOut"
        payout_reference: str

    @event(Requested)
    def __init__(
        self,
        username: str,
        currency: str,
        order_no: str,
        amount: int,
        reason: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.username = username
        self.currency = currency
        self.order_no = order_no
        self.amount = amount
        self.reason = reason
        self.status = "requested"
        self.decision_reason: str | None = None

    @classmethod
    def request(
        cls,
        *,
        id: UUID,
        username: str,
        currency: str,
        order_no: str,
        amount: int,
        reason: str,
        actor: Actor,
    ) -> RefundRequest:
        return cls._create(
            cls.Requested,
            id=id,
            username=username,
            currency=currency,
            order_no=order_no,
            amount=amount,
            reason=reason,
            actor=actor.name,
            correlation_id=actor.request_id,
        )

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def approve(self, note: str, *, actor: Actor) -> None:
        self._require("approve", {"requested"})
        self._approve(note, actor.name, actor.request_id)

    @event(Approved)
    def _approve(self, note: str, actor: str, correlation_id: str) -> None:
        self.status = "approved"

    def reject(self, reason: str, *, actor: Actor) -> None:
        self._require("reject", OPEN_STATUSES)
        self._reject(reason, actor.name, actor.request_id)

    @event(Rejected)
    def _reject(self, reason: str, actor: str, correlation_id: str) -> None:
        self.status = "rejected"
        self.decision_reason = reason

    def cancel(self, reason: str, *, actor: Actor) -> None:
        self._require("cancel", OPEN_STATUSES)
        self._cancel(reason, actor.name, actor.request_id)

    @event(Cancelled)
    def _cancel(self, reason: str, actor: str, correlation_id: str) -> None:
        self.status = "cancelled"
        self.decision_reason = reason

    def pay(self, payout_reference: str, *, actor: Actor) -> None:
        self._require("pay", {"approved"})
        self._pay(payout_reference, actor.name, actor.request_id)

    @event(PaidOut)
    def _pay(self, payout_reference: str, actor: str, correlation_id: str) -> None:
        self.status = "paid"

    def _require(self, step: str, allowed: frozenset[str] | set[str]) -> None:
        if self.status not in allowed:
            raise InvalidTransition(
                f"cannot {step} a refund request that is {self.status}", status=self.status
            )

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.username,
            "currency": self.currency,
            "order_no": self.order_no,
            "amount": self.amount,
            "reason": self.reason,
            "status": self.status,
            # The rejection's or cancellation's own reason (``reason`` is the customer's).
            "decision_reason": getattr(self, "decision_reason", None),
        }
