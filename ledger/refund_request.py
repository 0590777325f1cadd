"""A balance-refund request: a customer asks for (part of) their balance back.

    requested ──► approved ──► paid
        │             │
        └──► rejected / cancelled (from requested or approved)

Four eyes: whoever approved a request cannot pay it (``FourEyes``). A request above the second
approval threshold of its currency (``second_approval_above``; none by default) is approved in
two steps by two different people: the first approval (``FirstApproved``) leaves it requested.

The steps' history (who, when, why) is the request's events; the refund-requests read model
shows it. The money side (the hold, its release, the payout) lives on the Account; every step
that moves money is saved together with the account in one transaction.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger import money
from ledger.errors import FourEyes, InvalidInput, InvalidTransition
from ledger.idempotency import KeyMarked
from ledger.identity import Actor

OPEN_STATUSES = frozenset({"requested", "approved"})


class RefundRequest(Aggregate):
    TOPIC = "ledger:RefundRequest"

    class Event(KeyMarked, Aggregate.Event):
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
        # Who approved (events recorded before people had names have none: their actor's role).
        person: str = ""

    class FirstApproved(Event):
        """The first of two approvals a request above the second-approval threshold needs."""

        TOPIC = "ledger:RefundRequest.FirstApproved"
        note: str
        person: str

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

    @property
    def approvers(self) -> list[str]:
        """The people who approved this request so far."""
        return list(getattr(self, "_approvers", []))

    def _approved_by(self, actor: Actor) -> bool:
        """Whether ``actor``'s person approved, in any case: a person's name is one name
        whatever its case (an identity provider's ``Quin`` is the staff's ``quin``)."""
        person = actor.person.casefold()
        return any(person == approver.casefold() for approver in self.approvers)

    def approve(
        self, note: str, *, actor: Actor, second_approval_above: int | None = None
    ) -> None:
        """Approve; above ``second_approval_above`` (minor units) the first approval is one of
        two, and the second must come from another person."""
        self._require("approve", {"requested"})
        if self._approved_by(actor):
            raise FourEyes(
                "the second approval must come from another person: you gave the first",
                person=actor.person,
            )
        needs_two = second_approval_above is not None and self.amount > second_approval_above
        if needs_two and not self.approvers:
            self._approve_first(note, actor.name, actor.request_id, actor.person)
        else:
            self._approve(note, actor.name, actor.request_id, actor.person)

    @event(FirstApproved)
    def _approve_first(self, note: str, actor: str, correlation_id: str, person: str) -> None:
        self._approvers = [*self.approvers, person]

    @event(Approved)
    def _approve(self, note: str, actor: str, correlation_id: str, person: str = "") -> None:
        self.status = "approved"
        self._approvers = [*self.approvers, person or actor.split(":", 1)[0]]

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
        if self.status == "requested" and self.approvers:
            # One of two approvals given: "requested" alone would read as never approved.
            raise InvalidTransition(
                "cannot pay a refund request that is requested: it has the first of its two "
                f"approvals (by {', '.join(self.approvers)}) and needs a second approval, "
                "from another person, before it is paid",
                status=self.status,
            )
        self._require("pay", {"approved"})
        if self._approved_by(actor):
            raise FourEyes(
                f"{actor.person} approved this refund request, so another person must pay it",
                person=actor.person,
            )
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
            "approvers": self.approvers,
        }


def second_approval_thresholds(text: str | None) -> dict[str, int]:
    """``LEDGER_SECOND_APPROVAL_ABOVE``: ``USD=100000,EUR=90000`` (minor units per currency);
    empty or unset: no request needs a second approval.

    A code that is no ISO 4217 currency (``UDS``), or a currency named twice, is refused: read
    as given, it would leave the meant currency's large refunds to one person, silently."""
    thresholds: dict[str, int] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        currency, sep, amount = item.strip().partition("=")
        currency = currency.strip().upper()
        amount = amount.strip()
        if not sep or len(currency) != 3 or not currency.isalpha() or not (
            amount.isascii() and amount.isdigit()
        ):
            raise InvalidInput(
                "LEDGER_SECOND_APPROVAL_ABOVE is CURRENCY=minor units, comma separated"
                " (USD=100000,EUR=90000)",
                field="LEDGER_SECOND_APPROVAL_ABOVE",
            )
        if currency not in money.ISO_4217:
            raise InvalidInput(
                f"LEDGER_SECOND_APPROVAL_ABOVE names {currency}, which is not an ISO 4217 "
                "currency code (USD=100000,EUR=90000)",
                field="LEDGER_SECOND_APPROVAL_ABOVE",
            )
        if currency in thresholds:
            raise InvalidInput(
                f"LEDGER_SECOND_APPROVAL_ABOVE gives {currency} two thresholds: give it one",
                field="LEDGER_SECOND_APPROVAL_ABOVE",
            )
        thresholds[currency] = int(amount)
    return thresholds
