"""Every refusal the ledger can answer, as a named error.

The tree::

    LedgerError                      an expected refusal; changes nothing
    ├── InvalidInput                 validation_error       a value breaks a rule of the domain
    ├── NotFound                     not_found              no such account, order or request
    ├── Conflict                     (409)
    │   ├── AccountExists            account_exists
    │   ├── DuplicateOrder           duplicate_order
    │   ├── DuplicateReference       duplicate_reference    same payment reference, other amount
    │   ├── InvalidTransition        invalid_transition     the step is not allowed from this state
    │   └── RequestOpenForOrder      request_open_for_order
    ├── Refused                      (422)
    │   ├── InsufficientFunds        insufficient_funds     available would go below zero
    │   ├── OverRefundable           over_refundable        more than the order has left to credit
    │   ├── UnknownOrder             unknown_order
    │   ├── CaseRefused              case_refused (+ reason, case_id) the policy refuses the case
    │   └── IdempotencyKeyReused     idempotency_key_reused same key, another request
    └── Unavailable                  (503)
        ├── Contention               busy                   optimistic retries exhausted
        └── NotReady                 not_ready              read models did not catch up in time
            └── HistoryDamaged       not_ready              a stored event has no valid seal

Programmer errors (a broken invariant) are not LedgerErrors: they raise and crash loudly.
"""

from __future__ import annotations


class LedgerError(Exception):
    """An expected refusal of a command. Nothing was changed."""

    code = "ledger_error"
    # True when an Idempotency-Key answered it: the first response to that key, again
    replayed = False
    # When replayed: the request that was first answered so (its answer named it)
    first_request_id: str | None = None

    def __init__(self, detail: str, **context: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context


class InvalidInput(LedgerError):
    code = "validation_error"

    def __init__(self, detail: str, *, field: str) -> None:
        super().__init__(detail, field=field)
        self.field = field


class NotFound(LedgerError):
    code = "not_found"


class Conflict(LedgerError):
    code = "conflict"


class AccountExists(Conflict):
    code = "account_exists"


class DuplicateOrder(Conflict):
    code = "duplicate_order"


class DuplicateReference(Conflict):
    code = "duplicate_reference"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class FourEyes(Conflict):
    """A payout needs a second person: whoever approved a refund request cannot pay it."""

    code = "four_eyes"


class RequestOpenForOrder(Conflict):
    code = "request_open_for_order"


class NotesFull(Conflict):
    """A case holds its most notes (``return_case.MAX_NOTES_PER_CASE``): its view stays
    bounded."""

    code = "notes_full"


class Refused(LedgerError):
    code = "refused"


class InsufficientFunds(Refused):
    code = "insufficient_funds"


class OverRefundable(Refused):
    code = "over_refundable"


class UnknownOrder(Refused):
    code = "unknown_order"


class CaseRefused(Refused):
    """The policy refuses a return or exchange case; ``reason`` is its code (DOMAIN.md)."""

    code = "case_refused"
    case_id: str | None = None

    def __init__(self, detail: str, *, reason: str, case_id: str | None = None) -> None:
        """``case_id``: the refused case recorded (a refusal by the policy); None when there
        is nothing to record a case for (``unknown_order``)."""
        if case_id is None:
            super().__init__(detail, reason=reason)
        else:
            super().__init__(detail, reason=reason, case_id=case_id)
        self.reason = reason
        self.case_id = case_id


class IdempotencyKeyReused(Refused):
    code = "idempotency_key_reused"


class Unavailable(LedgerError):
    code = "unavailable"


class Contention(Unavailable):
    """Too many concurrent writers on the same aggregate: try again shortly."""

    code = "busy"


class NotReady(Unavailable):
    code = "not_ready"


class HistoryDamaged(NotReady):
    """A stored event without a valid seal (written, changed or moved behind the service's
    back): the service refuses to use it. ``position`` names it."""

    def __init__(self, detail: str, *, position: int) -> None:
        super().__init__(detail, position=position)
        self.position = position
