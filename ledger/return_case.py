"""A return or exchange case for one order of one customer (DOMAIN.md, "Return / exchange cases").

    opened ─► supplier_review ─► accepted ─► goods_in_transit ─► received ─► with_supplier
      └─ refused   └─ rejected       └─ expired              └─ late      resolved ◄─┘
    any open state ─► cancelled                                            closed ◄──┘

expired: no goods by return_by; late: postmark after return_by; resolved: refund, exchange or
repair.

A case the policy refuses at opening is recorded too, born ``refused`` (a ``Refused`` event with
the application and the policy's reason), so CS can show the customer later why and finance can
count refusals; the application still answers the refusal (with the case's id). A refused case
takes no step, not even a note: it never began. Every step
is an event with actor, date and note (the case-status read model shows them as its steps);
progress notes may be added at any step, an ended case's included. The money of a
refund resolution (the credit and the freight) is recorded on the Account in the same save.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.errors import InvalidTransition, NotesFull
from ledger.idempotency import KeyMarked
from ledger.identity import Actor

OPEN_STATES = frozenset(
    {"opened", "supplier_review", "accepted", "goods_in_transit", "received", "with_supplier"}
)
ENDED_STATES = frozenset({"resolved", "closed", "rejected", "expired", "late", "cancelled"})
# A note is history the customer is told: it may be written in every state, an ended case's
# included ("customer told of the rejection").
NOTE_STATES = OPEN_STATES | ENDED_STATES
# The state of a case the policy refused at opening: it takes no step.
REFUSED = "refused"
OUTCOMES = frozenset({"refund", "exchange", "repair"})
# Notes a case takes (2,000 characters each at most): its history stays a bounded read.
MAX_NOTES_PER_CASE = 200
# Photos sent after opening, at most 20 of each kind a sending: the case view stays bounded.
MAX_EVIDENCE_PER_CASE = 50
# Each step (as the API names it) and the states it may be taken from.
STEP_FROM: dict[str, frozenset[str]] = {
    "supplier-review": frozenset({"opened"}),
    "accept": frozenset({"supplier_review"}),
    "reject": frozenset({"supplier_review"}),
    "ship-back": frozenset({"accepted"}),
    "receive": frozenset({"accepted", "goods_in_transit"}),
    "expire": frozenset({"accepted"}),  # and only once past return_by
    "forward": frozenset({"received"}),
    "resolve": frozenset({"with_supplier"}),
    "close": frozenset({"resolved"}),
    "cancel": OPEN_STATES,
    "notes": NOTE_STATES,
    "evidence": OPEN_STATES,
}


def allowed_actions(state: str, *, return_by: str | None, today: str) -> list[str]:
    """The steps CS may take on a case in ``state`` today (ISO dates), in lifecycle order."""
    return [
        step
        for step, states in STEP_FROM.items()
        if state in states and (step != "expire" or (return_by is not None and today > return_by))
    ]


class ReturnCase(Aggregate):
    TOPIC = "ledger:ReturnCase"

    class Event(KeyMarked, Aggregate.Event):
        TOPIC = "ledger:ReturnCase.Event"
        actor: str
        correlation_id: str
        on: str  # the shop's date of the step, YYYY-MM-DD

    class Created(Event, Aggregate.Created):
        TOPIC = "ledger:ReturnCase.Created"

    class Opened(Created):
        TOPIC = "ledger:ReturnCase.Opened"
        username: str
        currency: str
        order_no: str
        kind: str
        shipped_on: str
        items: list[dict[str, Any]]
        evidence: dict[str, list[str]]
        guarantee_until: str | None
        conditions: dict[str, bool]
        note: str

    class Refused(Created):
        """A case the policy refused at opening: the application as CS recorded it, and why."""

        TOPIC = "ledger:ReturnCase.Refused"
        username: str
        currency: str
        order_no: str
        kind: str
        shipped_on: str
        items: list[dict[str, Any]]
        evidence: dict[str, list[str]]
        guarantee_until: str | None
        conditions: dict[str, bool]
        note: str
        reason: str  # the policy's code (DOMAIN.md, "Refused at opening")
        words: str  # what it means, as the customer was told

        def apply(self, aggregate: Any) -> None:
            aggregate.state = REFUSED
            aggregate.refusal_reason = self.reason

    class SupplierReviewStarted(Event):
        TOPIC = "ledger:ReturnCase.SupplierReviewStarted"
        note: str

    class Accepted(Event):
        TOPIC = "ledger:ReturnCase.Accepted"
        return_by: str
        return_address: str
        instructions: str

    class Rejected(Event):
        TOPIC = "ledger:ReturnCase.Rejected"
        reason: str

    class ShippedBack(Event):
        TOPIC = "ledger:ReturnCase.ShippedBack"
        tracking: str

    class Received(Event):
        TOPIC = "ledger:ReturnCase.Received"
        postmark_date: str
        goods: bool
        original_packaging: bool
        acceptance_copy: bool
        late: bool

    class Expired(Event):
        TOPIC = "ledger:ReturnCase.Expired"
        note: str

    class Forwarded(Event):
        TOPIC = "ledger:ReturnCase.Forwarded"
        note: str

    class Resolved(Event):
        TOPIC = "ledger:ReturnCase.Resolved"
        outcome: str
        refund_amount: int
        freight_amount: int
        tracking: str

    class Closed(Event):
        TOPIC = "ledger:ReturnCase.Closed"
        note: str

    class EvidenceAdded(Event):
        TOPIC = "ledger:ReturnCase.EvidenceAdded"
        goods_photos: list[str]
        package_photos: list[str]

    class FreightWaived(Event):
        TOPIC = "ledger:ReturnCase.FreightWaived"
        amount: int
        reason: str

    class Cancelled(Event):
        TOPIC = "ledger:ReturnCase.Cancelled"
        reason: str

    class NoteAdded(Event):
        TOPIC = "ledger:ReturnCase.NoteAdded"
        text: str
        # Meant for the customer (the outbox sends it as a message); False for notes kept
        # inside the shop, and for every note recorded before the flag existed.
        for_customer: bool = False

    @event(Opened)
    def __init__(
        self,
        username: str,
        currency: str,
        order_no: str,
        kind: str,
        shipped_on: str,
        items: list[dict[str, Any]],
        evidence: dict[str, list[str]],
        guarantee_until: str | None,
        conditions: dict[str, bool],
        note: str,
        actor: str,
        correlation_id: str,
        on: str,
    ) -> None:
        self.username = username
        self.currency = currency
        self.order_no = order_no
        self.kind = kind
        self.shipped_on = shipped_on
        self.opened_on = on
        self.state = "opened"
        self.return_by: str | None = None
        self.postmark_date: str | None = None
        self.received_on: str | None = None
        self.refusal_reason: str | None = None

    @classmethod
    def open(
        cls,
        *,
        id: UUID,
        username: str,
        currency: str,
        order_no: str,
        kind: str,
        shipped_on: str,
        items: list[dict[str, Any]],
        evidence: dict[str, list[str]],
        guarantee_until: str | None,
        conditions: dict[str, bool],
        note: str,
        actor: Actor,
        on: str,
    ) -> ReturnCase:
        return cls._create(
            cls.Opened,
            id=id,
            username=username,
            currency=currency,
            order_no=order_no,
            kind=kind,
            shipped_on=shipped_on,
            items=items,
            evidence=evidence,
            guarantee_until=guarantee_until,
            conditions=conditions,
            note=note,
            actor=actor.name,
            correlation_id=actor.request_id,
            on=on,
        )

    @classmethod
    def refuse(
        cls,
        *,
        id: UUID,
        username: str,
        currency: str,
        order_no: str,
        kind: str,
        shipped_on: str,
        items: list[dict[str, Any]],
        evidence: dict[str, list[str]],
        guarantee_until: str | None,
        conditions: dict[str, bool],
        note: str,
        reason: str,
        words: str,
        actor: Actor,
        on: str,
    ) -> ReturnCase:
        """The case of an application the policy refuses (``reason``): recorded as refused."""
        assert reason and words, (reason, words)
        return cls._create(
            cls.Refused,
            id=id,
            username=username,
            currency=currency,
            order_no=order_no,
            kind=kind,
            shipped_on=shipped_on,
            items=items,
            evidence=evidence,
            guarantee_until=guarantee_until,
            conditions=conditions,
            note=note,
            reason=reason,
            words=words,
            actor=actor.name,
            correlation_id=actor.request_id,
            on=on,
        )

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    # -- steps ------------------------------------------------------------------------------

    def start_supplier_review(self, note: str, *, actor: Actor, on: str) -> None:
        self._require("supplier-review", STEP_FROM["supplier-review"])
        self._start_supplier_review(note, actor.name, actor.request_id, on)

    @event(SupplierReviewStarted)
    def _start_supplier_review(self, note: str, actor: str, correlation_id: str, on: str) -> None:
        self.state = "supplier_review"

    def accept(
        self, return_by: str, return_address: str, instructions: str, *, actor: Actor, on: str
    ) -> None:
        self._require("accept", STEP_FROM["accept"])
        self._accept(return_by, return_address, instructions, actor.name, actor.request_id, on)

    @event(Accepted)
    def _accept(
        self,
        return_by: str,
        return_address: str,
        instructions: str,
        actor: str,
        correlation_id: str,
        on: str,
    ) -> None:
        self.return_by = return_by
        self.state = "accepted"

    def reject(self, reason: str, *, actor: Actor, on: str) -> None:
        self._require("reject", STEP_FROM["reject"])
        self._reject(reason, actor.name, actor.request_id, on)

    @event(Rejected)
    def _reject(self, reason: str, actor: str, correlation_id: str, on: str) -> None:
        self.state = "rejected"

    def ship_back(self, tracking: str, *, actor: Actor, on: str) -> None:
        self._require("ship-back", STEP_FROM["ship-back"])
        self._ship_back(tracking, actor.name, actor.request_id, on)

    @event(ShippedBack)
    def _ship_back(self, tracking: str, actor: str, correlation_id: str, on: str) -> None:
        self.state = "goods_in_transit"

    def receive(
        self,
        postmark_date: str,
        goods: bool,
        original_packaging: bool,
        acceptance_copy: bool,
        *,
        late: bool,
        actor: Actor,
        on: str,
    ) -> None:
        """Goods came back. What came back is recorded as it is, missing pieces included;
        a postmark after ``return_by`` makes the case late."""
        self._require("receive", STEP_FROM["receive"])
        self._receive(
            postmark_date,
            goods,
            original_packaging,
            acceptance_copy,
            late,
            actor.name,
            actor.request_id,
            on,
        )

    @event(Received)
    def _receive(
        self,
        postmark_date: str,
        goods: bool,
        original_packaging: bool,
        acceptance_copy: bool,
        late: bool,
        actor: str,
        correlation_id: str,
        on: str,
    ) -> None:
        self.postmark_date = postmark_date
        self.received_on = on
        self.state = "late" if late else "received"

    def expire(self, note: str, *, actor: Actor, on: str) -> None:
        """No goods by ``return_by``: only once that day has passed (``on``, the shop's day)."""
        if self.return_by is not None and date.fromisoformat(on) <= date.fromisoformat(
            self.return_by
        ):
            raise InvalidTransition(
                f"the case is not past its return_by {self.return_by}", state=self.state
            )
        self._require("expire", STEP_FROM["expire"])
        self._expire(note, actor.name, actor.request_id, on)

    @event(Expired)
    def _expire(self, note: str, actor: str, correlation_id: str, on: str) -> None:
        self.state = "expired"

    def forward(self, note: str, *, actor: Actor, on: str) -> None:
        self._require("forward", STEP_FROM["forward"])
        self._forward(note, actor.name, actor.request_id, on)

    @event(Forwarded)
    def _forward(self, note: str, actor: str, correlation_id: str, on: str) -> None:
        self.state = "with_supplier"

    def require_resolvable(self) -> None:
        self._require("resolve", STEP_FROM["resolve"])

    def resolve(
        self,
        outcome: str,
        refund_amount: int,
        freight_amount: int,
        tracking: str,
        *,
        actor: Actor,
        on: str,
    ) -> None:
        self._require("resolve", STEP_FROM["resolve"])
        assert outcome in OUTCOMES, outcome
        assert (outcome == "refund") == (refund_amount > 0) and freight_amount >= 0
        self._resolve(
            outcome, refund_amount, freight_amount, tracking, actor.name, actor.request_id, on
        )

    @event(Resolved)
    def _resolve(
        self,
        outcome: str,
        refund_amount: int,
        freight_amount: int,
        tracking: str,
        actor: str,
        correlation_id: str,
        on: str,
    ) -> None:
        self.state = "resolved"

    def add_evidence(
        self, goods_photos: list[str], package_photos: list[str], *, actor: Actor, on: str
    ) -> None:
        """Photos sent after the case was opened (the supplier asks for another angle)."""
        self._require("add evidence to", STEP_FROM["evidence"])
        if self.evidence_added >= MAX_EVIDENCE_PER_CASE:
            raise NotesFull(
                f"the case holds {MAX_EVIDENCE_PER_CASE} sendings of photos, the most a case "
                "takes: send the photos that matter in one sending, or open a new case",
                notes=self.evidence_added)
        self._add_evidence(goods_photos, package_photos, actor.name, actor.request_id, on)

    @event(EvidenceAdded)
    def _add_evidence(
        self,
        goods_photos: list[str],
        package_photos: list[str],
        actor: str,
        correlation_id: str,
        on: str,
    ) -> None:
        # The evidence is history (the case view gathers it from its steps); only its count is
        # state, so the view stays bounded.
        self.evidence_added = self.evidence_added + 1

    @property
    def evidence_added(self) -> int:
        return int(self.__dict__.get("_evidence_added", 0))  # none in older snapshots

    @evidence_added.setter
    def evidence_added(self, value: int) -> None:
        self.__dict__["_evidence_added"] = value

    def waive_freight(self, amount: int, reason: str, *, actor: Actor, on: str) -> None:
        """CS waives the freight of a resolution (with its reason): the customer is not
        charged it, and the case says so. Only while the case waits to be resolved."""
        self._require("waive freight on", STEP_FROM["resolve"])
        assert amount > 0 and reason, (amount, reason)
        self._waive_freight(amount, reason, actor.name, actor.request_id, on)

    @event(FreightWaived)
    def _waive_freight(
        self, amount: int, reason: str, actor: str, correlation_id: str, on: str
    ) -> None:
        pass  # the resolution that follows records the freight charged (none)

    def close(self, note: str, *, actor: Actor, on: str) -> None:
        self._require("close", STEP_FROM["close"])
        self._close(note, actor.name, actor.request_id, on)

    @event(Closed)
    def _close(self, note: str, actor: str, correlation_id: str, on: str) -> None:
        self.state = "closed"

    def cancel(self, reason: str, *, actor: Actor, on: str) -> None:
        self._require("cancel", STEP_FROM["cancel"])
        self._cancel(reason, actor.name, actor.request_id, on)

    @event(Cancelled)
    def _cancel(self, reason: str, actor: str, correlation_id: str, on: str) -> None:
        self.state = "cancelled"

    def add_note(
        self, text: str, *, actor: Actor, on: str, for_customer: bool = False
    ) -> None:
        self._require("add a note to", STEP_FROM["notes"])
        if self.notes_added >= MAX_NOTES_PER_CASE:
            raise NotesFull(
                f"the case holds {MAX_NOTES_PER_CASE} notes, the most a case takes: say what "
                "is new in one of its steps, or open a new case for a new matter",
                notes=self.notes_added)
        self._add_note(text, actor.name, actor.request_id, on, for_customer)

    @event(NoteAdded)
    def _add_note(
        self, text: str, actor: str, correlation_id: str, on: str, for_customer: bool = False
    ) -> None:
        # A note changes no state but its count: it is history the customer is told.
        self.notes_added = self.notes_added + 1

    @property
    def notes_added(self) -> int:
        return int(self.__dict__.get("_notes_added", 0))  # none in older snapshots

    @notes_added.setter
    def notes_added(self, value: int) -> None:
        self.__dict__["_notes_added"] = value

    # -- internals --------------------------------------------------------------------------

    def _require(self, step: str, allowed: frozenset[str] | set[str]) -> None:
        if self.state not in allowed:
            raise InvalidTransition(f"cannot {step} a case that is {self.state}", state=self.state)

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.username,
            "order_no": self.order_no,
            "kind": self.kind,
            "state": self.state,
            "opened_on": self.opened_on,
            "shipped_on": self.shipped_on,
            "return_by": self.return_by,
        }
