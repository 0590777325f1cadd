"""The ledger's policy as plain Python: what every command of the application must do.

The model knows nothing of eventsourcing or SQL, and of the ledger only its public face (the use
cases' names and answers, the error classes); it is DOMAIN.md and API.md ("Idempotency") written
again, small enough to read in one sitting. For each command it
predicts a ``Prediction``: the refusal (the exact ``LedgerError`` class, and whether it comes
before the idempotency key is looked at), or the outcome, the events the command records (by
topic) and what it changes.

It models one example's customers only: their accounts, orders, balance-refund requests, return
cases and the idempotency keys their commands carried.

Order of the checks, as the application makes them (a refusal names the first that fails):
1. the input itself (``InvalidInput``) and the refund request or case stepped on (``NotFound``);
   but a date the shop's day rules out (``dated``: a case's ``return_by`` before today, a
   shipping or postmark date after it) is weighed only after a live key record of the same
   request, which answers first (a step sent before midnight and retried after it);
2. the idempotency key: a live record of the same request answers it again (its answer, or its
   refusal), of another request refuses it (``IdempotencyKeyReused``); an expired record is
   renewed by the new request;
3. the state of the accounts, requests and cases the command touches. A key records a refusal
   made here (a conflict, the policy's refusal, something not found) as its first response.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from ledger.application import CaseApplication, LedgerApplication, Outcome
from ledger.errors import (
    AccountExists,
    CaseRefused,
    Conflict,
    DuplicateOrder,
    DuplicateReference,
    IdempotencyKeyReused,
    InsufficientFunds,
    InvalidInput,
    InvalidTransition,
    LedgerError,
    NotFound,
    OverRefundable,
    Refused,
    RequestOpenForOrder,
    UnknownOrder,
)
from ledger.identity import Actor

KEY_LIFETIME = timedelta(hours=24)  # API.md: "same caller, key and body within 24 h"
MAX_AMOUNT = 10**12  # DOMAIN.md: "Amounts of commands are > 0 and at most 10^12"

PART_A = frozenset({"delivery_error", "defective", "damaged"})
PART_B = frozenset({"quality_problem"})
KINDS = tuple(sorted(PART_A | PART_B))
OPEN_STATES = frozenset(
    {"opened", "supplier_review", "accepted", "goods_in_transit", "received", "with_supplier"}
)
# Notes are history the customer is told: every state takes them (issue 12)
NOTE_STATES = OPEN_STATES | {"resolved", "closed", "rejected", "expired", "late", "cancelled"}
OPEN_REQUESTS = frozenset({"requested", "approved"})
FLOWS = ("deposits", "purchases", "failure_credits", "return_refunds", "freight", "payouts")
# Fields of a command that the application normalises before it fingerprints the request.
_USERNAME_FIELDS = frozenset({"username"})
_TEXT_FIELDS = frozenset({"reason", "note", "text", "instructions", "return_address"})
# The refusals a key records as its first response (the 404s, 409s and 422s of a decision).
RECORDED_REFUSALS = (Conflict, Refused, NotFound)


# -- the commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One call of a use case: ``LedgerApplication.<name>(**params, actor=, idempotency_key=)``."""

    name: str
    params: dict[str, Any]
    actor: Actor
    key: str | None = None

    def run(self, app: LedgerApplication) -> Outcome:
        method: Callable[..., Outcome] = getattr(app, self.name)
        return method(**self.params, actor=self.actor, idempotency_key=self.key)

    @property
    def request(self) -> str:
        """What the request asked for, spelled as the application normalises it: two commands
        with the same ``request`` are the same request (a retry), any other is another one."""
        return json.dumps([self.name, _normalised(self.params)], sort_keys=True, default=str)

    @property
    def username(self) -> str | None:
        if "username" in self.params:
            return str(self.params["username"]).strip().lower()
        if "case" in self.params:
            return str(self.params["case"].username).strip().lower()
        return None

    def __repr__(self) -> str:  # what hypothesis prints for a failing example's steps
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({params}, actor={self.actor.name!r}, key={self.key!r})"


def _normalised(params: dict[str, Any], *, texts: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in params.items():
        if is_dataclass(value) and not isinstance(value, type):
            # a case application is fingerprinted with its user name normalised, the rest as is
            value = _normalised(asdict(value), texts=False)
        elif name in _USERNAME_FIELDS and isinstance(value, str):
            value = value.strip().lower()
        elif texts and name in _TEXT_FIELDS and isinstance(value, str):
            value = value.strip()
        out[name] = value
    return out


# -- what the model predicts -------------------------------------------------------------------


@dataclass
class Prediction:
    """What a command must do. ``refusal`` set: it is refused with exactly that class (and, for
    ``CaseRefused``, that ``reason``), changing nothing but ``events`` (a case the policy
    refuses is recorded, refused: ``apply`` is then told the refusal); ``early``: before the
    key is looked at. Otherwise it answers ``outcome``, records ``events`` (topics, any order)
    besides its key's record, and ``apply`` changes the model with the application's answer."""

    refusal: type[LedgerError] | None = None
    early: bool = False
    dated: bool = False  # early, for a date the shop's day rules out: a live key answers first
    reason: str | None = None
    outcome: str = "ok"
    events: tuple[str, ...] = ()
    apply: Callable[[Any], None] = lambda outcome: None  # told the answer (or the refusal)
    original_position: int | None = None  # a natural duplicate answers where the original is

    @classmethod
    def refused(cls, error: type[LedgerError], *, early: bool = False, reason: str | None = None,
                dated: bool = False) -> Prediction:
        return cls(refusal=error, early=early or dated, reason=reason, dated=dated)


# -- the state ---------------------------------------------------------------------------------


@dataclass
class AccountModel:
    username: str
    currency: str
    deposits: dict[str, int] = field(default_factory=dict)  # payment reference -> amount
    deposit_positions: dict[str, int] = field(default_factory=dict)
    order_positions: dict[str, int] = field(default_factory=dict)  # order -> its payment
    orders: dict[str, list[int]] = field(default_factory=dict)  # order -> [paid, credited back]
    holds: dict[UUID, int] = field(default_factory=dict)  # open request -> amount held
    open_request_by_order: dict[str, UUID] = field(default_factory=dict)
    flows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FLOWS, 0))
    cases_by_order: dict[str, list[UUID]] = field(default_factory=dict)
    # (log position, posted, held) after each command that changed the account
    balances_at: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def posted(self) -> int:
        f = self.flows
        return (f["deposits"] - f["purchases"] + f["failure_credits"] + f["return_refunds"]
                - f["freight"] - f["payouts"])

    @property
    def held(self) -> int:
        return sum(self.holds.values())

    @property
    def available(self) -> int:
        return self.posted - self.held

    def left_to_credit(self, order_no: str) -> int:
        paid, credited_back = self.orders[order_no]
        return paid - credited_back


@dataclass
class RequestModel:
    username: str
    order_no: str
    amount: int
    status: str = "requested"
    steps: list[str] = field(default_factory=lambda: ["requested"])


# The states a case ends in (DOMAIN.md's lifecycle: nothing but notes follows them; a resolved
# case is closed next).
FINAL_CASE_STATES = frozenset({"closed", "rejected", "expired", "late", "cancelled"})


@dataclass
class CaseModel:
    username: str
    order_no: str
    kind: str
    shipped_on: date
    opened_on: date
    state: str = "opened"
    return_by: date | None = None
    postmark: date | None = None
    received_on: date | None = None
    outcome: str | None = None
    refund_amount: int = 0
    freight_amount: int = 0
    steps: list[str] = field(default_factory=lambda: ["opened"])
    ended_on: date | None = None  # the day it reached a final state

    def status(self, today: date, unresolved_after_days: int) -> dict[str, Any]:
        """What the case view shows for the day (DOMAIN.md, "Status views"): overdue is past a
        deadline — nothing sent back by ``return_by``, or goods received and the case not
        resolved within ``unresolved_after_days`` — and the 30-day full return counts from the
        shipping day to the postmark of the goods coming back (to today until they do). A
        case's days stop at the day it ended, the goods' age does not."""
        until = today if self.ended_on is None else min(today, self.ended_on)
        past_return_by = (
            self.state == "accepted" and self.return_by is not None and today > self.return_by
        )
        unresolved = (
            self.state in ("received", "with_supplier")
            and self.received_on is not None
            and (today - self.received_on).days > unresolved_after_days
        )
        days_used = ((self.postmark or until) - self.shipped_on).days
        return {
            "days_open": (until - self.opened_on).days,
            "days_since_shipping": (today - self.shipped_on).days,
            "overdue": past_return_by or unresolved,
            "thirty_day_guarantee": (days_used <= 30, days_used),
        }


@dataclass
class KeyRecord:
    """The first response to a request carrying a key — an answer, or a refusal (its class and
    what it said) — and when it was recorded."""

    request: str
    answer: Outcome | None
    recorded_at: datetime
    refusal: LedgerError | None = None


@dataclass
class LedgerModel:
    today_at: Callable[[], datetime]
    accounts: dict[str, AccountModel] = field(default_factory=dict)
    requests: dict[UUID, RequestModel] = field(default_factory=dict)
    cases: dict[UUID, CaseModel] = field(default_factory=dict)
    keys: dict[tuple[str, str], KeyRecord] = field(default_factory=dict)

    @property
    def today(self) -> date:
        return self.today_at().date()

    def live_key(self, command: Command) -> KeyRecord | None:
        if command.key is None:
            return None
        record = self.keys.get((command.actor.person, command.key))
        if record is None or self.today_at() - record.recorded_at >= KEY_LIFETIME:
            return None
        return record

    def takes_a_lapsed_key(self, command: Command) -> bool:
        """The command's key was used before, and has lapsed: the key starts afresh."""
        return command.key is not None and (command.actor.person, command.key) in self.keys

    def remember_key(self, command: Command, answer: Outcome | LedgerError) -> None:
        if command.key is None:
            return
        record = KeyRecord(command.request, None, self.today_at())
        if isinstance(answer, LedgerError):
            record.refusal = answer
        else:
            record.answer = answer
        # a key is the caller's (its person: a role token's is its role), not its token's;
        # it is no event of the log
        self.keys[(command.actor.person, command.key)] = record

    def records_refusal(self, command: Command, prediction: Prediction) -> bool:
        """A key records the refusal of a decision (what the state of the ledger refused: a
        conflict, a refusal by the policy, something not found while deciding), so that a
        retry hears it again; a refusal of the input itself, or of the key, records nothing."""
        return (
            command.key is not None
            and prediction.refusal is not None
            and not prediction.early
            and prediction.refusal is not IdempotencyKeyReused
            and issubclass(prediction.refusal, RECORDED_REFUSALS)
        )

    def totals(self, currency: str) -> dict[str, int]:
        """This example's money in one currency, as reconciliation counts it."""
        out = dict.fromkeys((*FLOWS, "posted", "held"), 0)
        for account in self.accounts.values():
            if account.currency == currency:
                for flow in FLOWS:
                    out[flow] += account.flows[flow]
                out["posted"] += account.posted
                out["held"] += account.held
        return out

    # -- predictions -----------------------------------------------------------------------

    def predict(self, command: Command) -> Prediction:
        for name in ("amount", "refund_amount", "freight_amount"):
            amount = command.params.get(name)
            if name == "freight_amount" and amount == 0:
                continue  # no freight is no amount at all
            if amount is not None and not 0 < amount <= MAX_AMOUNT:
                return Prediction.refused(InvalidInput, early=True)
        predictor: Callable[..., Prediction] = getattr(self, f"_{command.name}")
        return predictor(**command.params)

    def _account(self, username: str) -> AccountModel | None:
        return self.accounts.get(username.strip().lower())

    # accounts and money

    def _open_account(self, username: str, currency: str) -> Prediction:
        name = username.strip().lower()
        if name in self.accounts:
            return Prediction.refused(AccountExists)

        def apply(outcome: Outcome) -> None:
            self.accounts[name] = AccountModel(name, currency)

        return Prediction(outcome="created", events=("Account.Opened",), apply=apply)

    def _deposit(self, username: str, amount: int, reference: str) -> Prediction:
        account = self._account(username)
        if account is None:
            return Prediction.refused(NotFound)
        seen = account.deposits.get(reference)
        if seen is not None:
            if seen != amount:
                return Prediction.refused(DuplicateReference)
            return Prediction(
                outcome="existing", original_position=account.deposit_positions[reference]
            )

        def apply(outcome: Outcome) -> None:
            assert account is not None
            account.deposits[reference] = amount
            account.flows["deposits"] += amount

        return Prediction(outcome="created", events=("Account.DepositReceived",), apply=apply)

    def _purchase(self, username: str, order_no: str, amount: int) -> Prediction:
        account = self._account(username)
        if account is None:
            return Prediction.refused(NotFound)
        if order_no in account.orders:
            if account.orders[order_no][0] != amount:
                return Prediction.refused(DuplicateOrder)
            return Prediction(
                outcome="existing", original_position=account.order_positions[order_no]
            )
        if amount > account.available:
            return Prediction.refused(InsufficientFunds)

        def apply(outcome: Outcome) -> None:
            assert account is not None
            account.orders[order_no] = [amount, 0]
            account.flows["purchases"] += amount

        return Prediction(outcome="created", events=("Account.PurchasePaid",), apply=apply)

    def _fail_purchase(
        self, username: str, order_no: str, amount: int | None, reason: str
    ) -> Prediction:
        account = self._account(username)
        if account is None:
            return Prediction.refused(NotFound)
        if order_no not in account.orders:
            return Prediction.refused(UnknownOrder)
        left = account.left_to_credit(order_no)
        credit = left if amount is None else amount
        if left == 0 or credit > left:
            return Prediction.refused(OverRefundable)

        def apply(outcome: Outcome) -> None:
            assert account is not None
            account.orders[order_no][1] += credit
            account.flows["failure_credits"] += credit

        return Prediction(outcome="created", events=("Account.PurchaseFailed",), apply=apply)

    # balance refunds

    def _request_refund(self, username: str, order_no: str, amount: int, reason: str
                        ) -> Prediction:
        account = self._account(username)
        if account is None:
            return Prediction.refused(NotFound)
        if order_no not in account.orders and order_no not in account.deposits:
            return Prediction.refused(UnknownOrder)
        if order_no in account.open_request_by_order:
            return Prediction.refused(RequestOpenForOrder)
        if amount > account.available:
            return Prediction.refused(InsufficientFunds)

        def apply(outcome: Outcome) -> None:
            assert account is not None
            request_id = UUID(outcome.body["id"])
            account.holds[request_id] = amount
            account.open_request_by_order[order_no] = request_id
            self.requests[request_id] = RequestModel(account.username, order_no, amount)

        events = ("Account.BalanceRefundRequested", "RefundRequest.Requested")
        return Prediction(outcome="created", events=events, apply=apply)

    def _refund_step(self, request_id: UUID, allowed: frozenset[str], status: str,
                     events: tuple[str, ...]) -> Prediction:
        request = self.requests.get(request_id)
        if request is None:
            return Prediction.refused(NotFound, early=True)
        if request.status not in allowed:
            return Prediction.refused(InvalidTransition)
        account = self.accounts[request.username]

        def apply(outcome: Outcome) -> None:
            assert request is not None
            request.status = status
            request.steps.append(status)
            if status == "approved":
                return
            del account.holds[request_id]
            del account.open_request_by_order[request.order_no]
            if status == "paid":
                account.flows["payouts"] += request.amount

        return Prediction(events=events, apply=apply)

    def _approve_refund(self, request_id: UUID, note: str) -> Prediction:
        return self._refund_step(
            request_id, frozenset({"requested"}), "approved", ("RefundRequest.Approved",)
        )

    def _reject_refund(self, request_id: UUID, reason: str) -> Prediction:
        events = ("RefundRequest.Rejected", "Account.BalanceRefundReleased")
        return self._refund_step(request_id, OPEN_REQUESTS, "rejected", events)

    def _cancel_refund(self, request_id: UUID, reason: str) -> Prediction:
        events = ("RefundRequest.Cancelled", "Account.BalanceRefundReleased")
        return self._refund_step(request_id, OPEN_REQUESTS, "cancelled", events)

    def _pay_refund(self, request_id: UUID, payout_reference: str) -> Prediction:
        events = ("RefundRequest.PaidOut", "Account.BalanceRefundPaidOut")
        return self._refund_step(request_id, frozenset({"approved"}), "paid", events)

    # return cases

    def _open_return_case(self, case: CaseApplication) -> Prediction:
        if case.kind not in KINDS:
            return Prediction.refused(InvalidInput, early=True)
        if case.shipped_on > self.today:
            return Prediction.refused(InvalidInput, dated=True)
        account = self._account(case.username)
        if account is None:
            return Prediction.refused(NotFound)
        if case.order_no not in account.orders:
            return Prediction.refused(CaseRefused, reason="unknown_order")
        reason = self.refusal_reason(case)

        def apply(answer: Outcome | CaseRefused) -> None:
            # the case is recorded, opened or (refused by the policy) refused; the refusal
            # names it
            assert account is not None
            refused = isinstance(answer, CaseRefused)
            case_id = UUID(str(answer.case_id) if refused else answer.body["id"])
            state = "refused" if refused else "opened"
            self.cases[case_id] = CaseModel(
                account.username, case.order_no, case.kind, case.shipped_on, self.today,
                state=state, steps=[state], ended_on=self.today if refused else None,
            )
            account.cases_by_order.setdefault(case.order_no, []).append(case_id)

        if reason is not None:
            return Prediction(refusal=CaseRefused, reason=reason,
                              events=("ReturnCase.Refused",), apply=apply)
        return Prediction(outcome="created", events=("ReturnCase.Opened",), apply=apply)

    def refusal_reason(self, case: CaseApplication) -> str | None:
        """The shop's policy, in its order (DOMAIN.md, "Refused at opening")."""
        if case.replaced_or_modified:
            return "item_replaced_or_modified"
        if case.parts_missing:
            return "parts_missing"
        if case.opened_media:
            return "opened_media"
        has_photos = any(p.strip() for p in case.goods_photos) and any(
            p.strip() for p in case.package_photos
        )
        if case.kind in PART_A and not has_photos:
            return "missing_evidence"
        if case.kind in PART_B:
            if not case.has_quality_assurance or case.guarantee_until is None:
                return "no_quality_assurance"
            if self.today > case.guarantee_until:
                return "guarantee_expired"
        return None

    def _case_step(
        self,
        case_id: UUID,
        allowed: frozenset[str] | set[str],
        state: str | None,
        step: str,
        *,
        check: Callable[[CaseModel], Prediction | None] = lambda case: None,
        change: Callable[[CaseModel], None] = lambda case: None,
        outcome: str = "ok",
    ) -> Prediction:
        case = self.cases.get(case_id)
        if case is None:
            return Prediction.refused(NotFound, early=True)
        refused = check(case)
        if refused is not None:
            return refused
        if case.state not in allowed:
            return Prediction.refused(InvalidTransition)

        def apply(answer: Outcome) -> None:
            assert case is not None
            change(case)
            if state is not None:
                case.state = state
            if case.state in FINAL_CASE_STATES and case.ended_on is None:
                case.ended_on = self.today
            case.steps.append(step)

        topic = "ReturnCase." + "".join(part.title() for part in step.split("_"))
        return Prediction(outcome=outcome, events=(topic,), apply=apply)

    def _start_supplier_review(self, case_id: UUID, note: str) -> Prediction:
        return self._case_step(
            case_id, {"opened"}, "supplier_review", "supplier_review_started"
        )

    def _accept_return_case(
        self, case_id: UUID, return_by: date, return_address: str, instructions: str
    ) -> Prediction:
        if not return_address.strip():
            return Prediction.refused(InvalidInput, early=True)
        if return_by < self.today:
            return Prediction.refused(InvalidInput, dated=True)

        def change(case: CaseModel) -> None:
            case.return_by = return_by

        return self._case_step(case_id, {"supplier_review"}, "accepted", "accepted",
                               change=change)

    def _reject_return_case(self, case_id: UUID, reason: str) -> Prediction:
        return self._case_step(case_id, {"supplier_review"}, "rejected", "rejected")

    def _ship_back(self, case_id: UUID, tracking: str) -> Prediction:
        return self._case_step(case_id, {"accepted"}, "goods_in_transit", "shipped_back")

    def _receive_return(
        self,
        case_id: UUID,
        postmark_date: date,
        goods: bool,
        original_packaging: bool,
        acceptance_copy: bool,
    ) -> Prediction:
        if postmark_date > self.today:
            return Prediction.refused(InvalidInput, dated=True)
        case = self.cases.get(case_id)
        late = (case is not None and case.return_by is not None
                and postmark_date > case.return_by)

        def check(case: CaseModel) -> Prediction | None:
            # the postmark is checked against the shipping date before the case's state
            if postmark_date < case.shipped_on:
                return Prediction.refused(InvalidInput)
            return None

        def change(case: CaseModel) -> None:
            case.postmark, case.received_on = postmark_date, self.today

        return self._case_step(
            case_id, {"accepted", "goods_in_transit"}, "late" if late else "received",
            "received", check=check, change=change,
        )

    def _expire_return_case(self, case_id: UUID, note: str) -> Prediction:
        def check(case: CaseModel) -> Prediction | None:
            if case.return_by is not None and self.today <= case.return_by:
                return Prediction.refused(InvalidTransition)
            return None

        return self._case_step(case_id, {"accepted"}, "expired", "expired", check=check)

    def _forward_to_supplier(self, case_id: UUID, note: str) -> Prediction:
        return self._case_step(case_id, {"received"}, "with_supplier", "forwarded")

    def _resolve_return_case(
        self,
        case_id: UUID,
        outcome: str,
        refund_amount: int | None,
        freight_amount: int,
        tracking: str | None,
    ) -> Prediction:
        if outcome not in ("refund", "exchange", "repair"):
            return Prediction.refused(InvalidInput, early=True)
        if outcome != "refund" and (refund_amount is not None or not tracking):
            return Prediction.refused(InvalidInput, early=True)
        case = self.cases.get(case_id)
        if case is None:
            return Prediction.refused(NotFound, early=True)
        if case.state != "with_supplier":
            return Prediction.refused(InvalidTransition)
        account = self.accounts[case.username]
        credit = 0
        if outcome == "refund":
            left = account.left_to_credit(case.order_no)
            credit = left if refund_amount is None else refund_amount
            if left == 0 or credit > left:
                return Prediction.refused(OverRefundable)
        if freight_amount > account.available + credit:
            return Prediction.refused(InsufficientFunds)

        def apply(answer: Outcome) -> None:
            assert case is not None
            if credit:
                account.orders[case.order_no][1] += credit
                account.flows["return_refunds"] += credit
            account.flows["freight"] += freight_amount
            case.state, case.outcome = "resolved", outcome
            case.refund_amount, case.freight_amount = credit, freight_amount
            case.steps.append("resolved")

        events = ["ReturnCase.Resolved"]
        if credit:
            events.append("Account.ReturnRefundCredited")
        if freight_amount:
            events.append("Account.FreightCharged")
        return Prediction(events=tuple(events), apply=apply)

    def _close_return_case(self, case_id: UUID, note: str) -> Prediction:
        return self._case_step(case_id, {"resolved"}, "closed", "closed")

    def _cancel_return_case(self, case_id: UUID, reason: str) -> Prediction:
        return self._case_step(case_id, OPEN_STATES, "cancelled", "cancelled")

    def _add_case_note(self, case_id: UUID, text: str) -> Prediction:
        if not text.strip():
            return Prediction.refused(InvalidInput, early=True)
        return self._case_step(case_id, NOTE_STATES, None, "note_added", outcome="created")

    # -- keys ------------------------------------------------------------------------------

    def expect(self, command: Command) -> Prediction | KeyRecord:
        """The whole prediction: a refusal, the first answer again (a live key of the same
        request), or the command's effect."""
        prediction = self.predict(command)
        if prediction.refusal is not None and prediction.early and not (
            prediction.dated and self.live_key(command) is not None
        ):
            return prediction
        record = self.live_key(command)
        if record is not None:
            if record.request == command.request:
                return record
            return Prediction.refused(IdempotencyKeyReused)
        return prediction
