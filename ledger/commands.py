"""Commands: what a caller asks the ledger to do, as frozen values checked once.

A command normalises its fields when it is made (user names trimmed and lower-cased, texts
trimmed, references and amounts checked) and refuses what breaks a rule with the same named
``InvalidInput`` (and ``field``) the ledger always answered. A date the shop's clock rules out
(in the future, a deadline past) is checked by ``check_on(today)``: the application holds the
clock and asks before it decides.

Every command names itself (``name``) and gives the parameters of its idempotency fingerprint
(``fingerprint_params``). Both are exactly what they were before commands were values: stored
keys' fingerprints depend on them, so a retry within a key's lifetime still matches. A command
on an account names the lock its account's writers queue on (``lock_key``); one on a refund
request or a case names the request or case, and the application looks up whose it is.

Commands are in the imperative (``RequestRefund``), as the events are in the past tense.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from datetime import date
from typing import Any, ClassVar
from uuid import UUID

from ledger import idempotency, identity, money, policy
from ledger.account import account_id
from ledger.errors import InvalidInput
from ledger.return_case import OUTCOMES


@dataclass(frozen=True)
class Command(ABC):
    """One request to change the ledger, its fields normalised."""

    # The command's name in its fingerprint: never rename one (stored keys depend on it).
    name: ClassVar[str]

    @abstractmethod
    def fingerprint_params(self) -> dict[str, Any]:
        """What the request asked for, as its idempotency fingerprint records it."""

    def fingerprint(self) -> str:
        """The same for any spelling of the same request (``ledger.idempotency``)."""
        return idempotency.fingerprint(self.name, self.fingerprint_params())

    @property
    def lock_key(self) -> UUID | None:
        """The lock its account's writers queue on, when its own fields name the account; None
        when the application must look up whose request or case it is."""
        return None

    def check_on(self, today: date) -> None:
        """Refuse a date that the shop's day rules out (``InvalidInput``); most have none."""
        return None

    def _normalise(self, **values: object) -> None:
        """Replace fields of this frozen value by their normalised values (once, when made)."""
        for name, value in values.items():
            object.__setattr__(self, name, value)


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


# -- commands on an account ---------------------------------------------------------------------


@dataclass(frozen=True)
class AccountCommand(Command):
    """A command on one customer's account, named by its user name."""

    username: str

    def __post_init__(self) -> None:
        self._normalise(username=identity.username(self.username))

    @property
    def lock_key(self) -> UUID:
        return account_id(self.username)


@dataclass(frozen=True)
class OpenAccount(AccountCommand):
    name = "open_account"
    currency: str

    def __post_init__(self) -> None:
        super().__post_init__()
        self._normalise(currency=money.currency(self.currency))

    def fingerprint_params(self) -> dict[str, Any]:
        return {"username": self.username, "currency": self.currency}


@dataclass(frozen=True)
class Deposit(AccountCommand):
    name = "deposit"
    amount: int
    reference: str

    def __post_init__(self) -> None:
        super().__post_init__()
        self._normalise(amount=money.amount(self.amount))
        self._normalise(reference=identity.reference(self.reference, field="reference"))

    def fingerprint_params(self) -> dict[str, Any]:
        return {"username": self.username, "amount": self.amount, "reference": self.reference}


@dataclass(frozen=True)
class Purchase(AccountCommand):
    name = "purchase"
    order_no: str
    amount: int

    def __post_init__(self) -> None:
        super().__post_init__()
        self._normalise(order_no=identity.reference(self.order_no, field="order_no"))
        self._normalise(amount=money.amount(self.amount))

    def fingerprint_params(self) -> dict[str, Any]:
        return {"username": self.username, "order_no": self.order_no, "amount": self.amount}


@dataclass(frozen=True)
class FailPurchase(AccountCommand):
    """A purchase failed after it was paid; ``amount`` None means all of it."""

    name = "fail_purchase"
    order_no: str
    amount: int | None
    reason: str

    def __post_init__(self) -> None:
        super().__post_init__()
        self._normalise(order_no=identity.reference(self.order_no, field="order_no"))
        if self.amount is not None:
            self._normalise(amount=money.amount(self.amount))
        self._normalise(reason=identity.text(self.reason, field="reason"))

    def fingerprint_params(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "order_no": self.order_no,
            "amount": self.amount,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RequestRefund(AccountCommand):
    """A customer asks for some of their balance back (a refund request)."""

    name = "request_refund"
    order_no: str
    amount: int
    reason: str

    def __post_init__(self) -> None:
        super().__post_init__()
        self._normalise(order_no=identity.reference(self.order_no, field="order_no"))
        self._normalise(amount=money.amount(self.amount))
        self._normalise(reason=identity.text(self.reason, field="reason"))

    def fingerprint_params(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "order_no": self.order_no,
            "amount": self.amount,
            "reason": self.reason,
        }


# -- opening a return or exchange case ----------------------------------------------------------


@dataclass(frozen=True)
class CaseApplication:
    """A customer's application for a return or exchange case, as CS enters it: unchecked
    (``OpenReturnCase.of`` checks it)."""

    username: str
    order_no: str
    kind: str
    shipped_on: date
    items: list[dict[str, Any]]
    goods_photos: list[str]
    package_photos: list[str]
    replaced_or_modified: bool
    parts_missing: bool
    opened_media: bool
    has_quality_assurance: bool
    guarantee_until: date | None = None
    note: str = ""

    @property
    def evidence(self) -> dict[str, list[str]]:
        return {
            "goods_photos": list(self.goods_photos),
            "package_photos": list(self.package_photos),
        }

    @property
    def conditions(self) -> dict[str, bool]:
        return {
            "replaced_or_modified": self.replaced_or_modified,
            "parts_missing": self.parts_missing,
            "opened_media": self.opened_media,
            "has_quality_assurance": self.has_quality_assurance,
        }

    def policy_view(self) -> policy.Application:
        return policy.Application(
            kind=self.kind,
            conditions=policy.Conditions(**self.conditions),
            goods_photos=tuple(self.goods_photos),
            package_photos=tuple(self.package_photos),
            guarantee_until=self.guarantee_until,
        )


@dataclass(frozen=True)
class OpenReturnCase(CaseApplication, AccountCommand):
    """A case application, checked: open a case for one of the customer's orders."""

    name = "open_return_case"
    # The note as it was given: the fingerprint has always recorded it so (stored keys depend
    # on it), while the case records it trimmed.
    note_as_given: str = field(init=False, repr=False, compare=False)

    @classmethod
    def of(cls, case: CaseApplication) -> OpenReturnCase:
        return cls(**{f.name: getattr(case, f.name) for f in fields(CaseApplication)})

    def __post_init__(self) -> None:
        super().__post_init__()
        self._normalise(order_no=identity.reference(self.order_no, field="order_no"))
        self._normalise(note_as_given=self.note, note=identity.text(self.note, field="note"))
        if self.kind not in policy.CASE_KINDS:
            raise InvalidInput(f"kind is one of {sorted(policy.CASE_KINDS)}", field="kind")

    def check_on(self, today: date) -> None:
        if self.shipped_on > today:
            raise InvalidInput(
                f"shipped_on cannot be in the future: the goods left on or before today "
                f"({today.isoformat()})",
                field="shipped_on",
            )

    def fingerprint_params(self) -> dict[str, Any]:
        return {
            "order_no": self.order_no,
            "kind": self.kind,
            "shipped_on": self.shipped_on.isoformat(),
            "items": self.items,
            "evidence": self.evidence,
            "conditions": self.conditions,
            "guarantee_until": _iso(self.guarantee_until),
            "note": self.note_as_given,
            "username": self.username,
        }


# -- steps of a refund request ------------------------------------------------------------------


@dataclass(frozen=True)
class RefundStep(Command):
    """A step on a refund request: the application looks up whose it is."""

    request_id: UUID


@dataclass(frozen=True)
class ApproveRefund(RefundStep):
    name = "approve_refund"
    note: str

    def __post_init__(self) -> None:
        self._normalise(note=identity.text(self.note, field="note"))

    def fingerprint_params(self) -> dict[str, Any]:
        return {"id": str(self.request_id), "note": self.note}


@dataclass(frozen=True)
class _ReleaseRefund(RefundStep):
    """A step that ends a request unpaid, releasing its hold, for a reason."""

    reason: str

    def __post_init__(self) -> None:
        self._normalise(reason=identity.text(self.reason, field="reason"))

    def fingerprint_params(self) -> dict[str, Any]:
        return {"id": str(self.request_id), "reason": self.reason}


@dataclass(frozen=True)
class RejectRefund(_ReleaseRefund):
    name = "reject_refund"


@dataclass(frozen=True)
class CancelRefund(_ReleaseRefund):
    name = "cancel_refund"


@dataclass(frozen=True)
class PayRefund(RefundStep):
    name = "pay_refund"
    payout_reference: str

    def __post_init__(self) -> None:
        reference = identity.reference(self.payout_reference, field="payout_reference")
        self._normalise(payout_reference=reference)

    def fingerprint_params(self) -> dict[str, Any]:
        return {"id": str(self.request_id), "payout_reference": self.payout_reference}


# -- steps of a return case ---------------------------------------------------------------------


@dataclass(frozen=True)
class CaseStep(Command):
    """A step on a return case: the application looks up whose it is."""

    case_id: UUID


@dataclass(frozen=True)
class _NotedCaseStep(CaseStep):
    note: str

    def __post_init__(self) -> None:
        self._normalise(note=identity.text(self.note, field="note"))

    def fingerprint_params(self) -> dict[str, Any]:
        return {"id": str(self.case_id), "note": self.note}


@dataclass(frozen=True)
class _ReasonedCaseStep(CaseStep):
    reason: str

    def __post_init__(self) -> None:
        self._normalise(reason=identity.text(self.reason, field="reason"))

    def fingerprint_params(self) -> dict[str, Any]:
        return {"id": str(self.case_id), "reason": self.reason}


@dataclass(frozen=True)
class StartSupplierReview(_NotedCaseStep):
    name = "return_case.supplier_review"


@dataclass(frozen=True)
class AcceptReturnCase(CaseStep):
    """The supplier accepts the return: the goods go back to ``return_address`` by
    ``return_by`` (not in the past)."""

    name = "return_case.accept"
    return_by: date
    return_address: str
    instructions: str

    def __post_init__(self) -> None:
        address = identity.text(self.return_address, field="return_address")
        if not address:
            raise InvalidInput("return_address is required", field="return_address")
        instructions = identity.text(self.instructions, field="instructions")
        self._normalise(return_address=address, instructions=instructions)

    def check_on(self, today: date) -> None:
        if self.return_by < today:
            raise InvalidInput(
                f"return_by cannot be in the past: give today ({today.isoformat()}) or a "
                "later date",
                field="return_by",
            )

    def fingerprint_params(self) -> dict[str, Any]:
        return {
            "id": str(self.case_id),
            "return_by": self.return_by.isoformat(),
            "return_address": self.return_address,
            "instructions": self.instructions,
        }


@dataclass(frozen=True)
class RejectReturnCase(_ReasonedCaseStep):
    name = "return_case.reject"


@dataclass(frozen=True)
class ShipBack(CaseStep):
    name = "return_case.ship_back"
    tracking: str

    def __post_init__(self) -> None:
        self._normalise(tracking=identity.reference(self.tracking, field="tracking"))

    def fingerprint_params(self) -> dict[str, Any]:
        return {"id": str(self.case_id), "tracking": self.tracking}


@dataclass(frozen=True)
class ReceiveReturn(CaseStep):
    """The goods came back, posted on ``postmark_date`` (not in the future)."""

    name = "return_case.receive"
    postmark_date: date
    goods: bool
    original_packaging: bool
    acceptance_copy: bool

    def check_on(self, today: date) -> None:
        if self.postmark_date > today:
            raise InvalidInput(
                f"postmark_date cannot be in the future: give today ({today.isoformat()}) "
                "or an earlier date",
                field="postmark_date",
            )

    def fingerprint_params(self) -> dict[str, Any]:
        return {
            "id": str(self.case_id),
            "postmark_date": self.postmark_date.isoformat(),
            "goods": self.goods,
            "original_packaging": self.original_packaging,
            "acceptance_copy": self.acceptance_copy,
        }


@dataclass(frozen=True)
class ExpireReturnCase(_NotedCaseStep):
    name = "return_case.expire"


@dataclass(frozen=True)
class ForwardToSupplier(_NotedCaseStep):
    name = "return_case.forward"


# The outcomes that send goods, as a sentence begins with them
_A_OUTCOME = {"exchange": "an exchange", "repair": "a repair"}


@dataclass(frozen=True)
class ResolveReturnCase(CaseStep):
    """Resolve by refund (``refund_amount`` None: all the order has left), exchange or repair
    (they name the outbound ``tracking`` and refund nothing); ``freight_amount`` 0 or more.
    A refund's ``tracking`` is normalised to text (empty when none was given)."""

    name = "resolve"  # not "return_case.resolve": stored fingerprints name it so
    outcome: str
    refund_amount: int | None
    freight_amount: int
    tracking: str | None
    # Given: the freight is waived for this reason (recorded on the case), not charged.
    freight_waiver_reason: str = ""

    def __post_init__(self) -> None:
        reason = identity.text(self.freight_waiver_reason, field="freight_waiver_reason")
        self._normalise(freight_waiver_reason=reason)
        if reason and self.freight_amount == 0:
            raise InvalidInput(
                "freight_waiver_reason waives a freight_amount: give the freight that is "
                "waived", field="freight_waiver_reason",
            )
        if self.outcome not in OUTCOMES:
            raise InvalidInput(f"outcome is one of {sorted(OUTCOMES)}", field="outcome")
        freight = self.freight_amount
        if isinstance(freight, bool) or not isinstance(freight, int):
            raise InvalidInput(
                "freight_amount is an integer of minor units", field="freight_amount"
            )
        if freight != 0:  # no freight is fine; any other amount is a command's amount
            money.amount(freight, field="freight_amount")
        if self.outcome == "refund":
            if self.refund_amount is not None:
                money.amount(self.refund_amount, field="refund_amount")
            self._normalise(tracking=self.tracking or "")
            return
        if self.refund_amount is not None:
            raise InvalidInput(f"{_A_OUTCOME[self.outcome]} refunds nothing",
                               field="refund_amount")
        if not self.tracking:
            raise InvalidInput(f"{_A_OUTCOME[self.outcome]} names the outbound tracking",
                               field="tracking")
        self._normalise(tracking=identity.reference(self.tracking, field="tracking"))

    @property
    def outbound_tracking(self) -> str:
        """The tracking the case records (empty for a refund)."""
        assert self.tracking is not None, "a resolution's tracking is normalised to text"
        return self.tracking

    def fingerprint_params(self) -> dict[str, Any]:
        return {
            "id": str(self.case_id),
            "outcome": self.outcome,
            "refund_amount": self.refund_amount,
            "freight_amount": self.freight_amount,
            "tracking": self.tracking,
            # only when given, so the fingerprints stored before it existed still match
            **({"freight_waiver_reason": self.freight_waiver_reason}
               if self.freight_waiver_reason else {}),
        }


@dataclass(frozen=True)
class CloseReturnCase(_NotedCaseStep):
    name = "return_case.close"


@dataclass(frozen=True)
class CancelReturnCase(_ReasonedCaseStep):
    name = "return_case.cancel"


@dataclass(frozen=True)
class AddCaseEvidence(CaseStep):
    """More photos for an open case (references to stored photos), after it was opened."""

    name = "return_case.evidence"
    goods_photos: tuple[str, ...]
    package_photos: tuple[str, ...]

    def __post_init__(self) -> None:
        goods = tuple(identity.reference(p, field="goods_photos") for p in self.goods_photos)
        package = tuple(
            identity.reference(p, field="package_photos") for p in self.package_photos
        )
        if not goods and not package:
            raise InvalidInput("give at least one photo reference", field="goods_photos")
        self._normalise(goods_photos=goods, package_photos=package)

    def fingerprint_params(self) -> dict[str, Any]:
        return {"id": str(self.case_id), "goods_photos": list(self.goods_photos),
                "package_photos": list(self.package_photos)}


@dataclass(frozen=True)
class AddCaseNote(CaseStep):
    name = "return_case.note"
    text: str
    # A note meant for the customer: the outbox sends it to them (projections.outbox).
    for_customer: bool = False

    def __post_init__(self) -> None:
        text = identity.text(self.text, field="text")
        if not text:
            raise InvalidInput("a note has text", field="text")
        self._normalise(text=text)

    def fingerprint_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"id": str(self.case_id), "text": self.text}
        if self.for_customer:  # only when set: earlier notes keep their fingerprints
            params["for_customer"] = True
        return params
