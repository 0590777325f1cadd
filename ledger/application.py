"""LedgerApplication: one method per use case, each recorded atomically.

A use case has two halves kept apart: *decide* (load aggregates, run the domain, collect the
aggregates whose new events must be recorded together, and the answer) and *commit* (hand them
to the committer, ``ledger.pipeline``, which records many decided commands in one transaction).

Concurrency: aggregates are versioned; a decision that cannot be recorded because its state
moved on (another command of the batch, another process) is decided again from fresh state, at
most ``max_attempts`` times, then ``Contention``. Within one process, writers of one account
queue on a striped lock first (held until their commit is answered), so they rarely race.
Aggregates come from this process's cache as it last recorded them; a decision that records
nothing (a refusal, a natural duplicate) is decided again from the store before it is answered,
so another process's writes are never missed.

Idempotency: with a caller's key, the key's record is written in the same transaction as the
events it guards; a repeat answers the first response (see ``ledger.idempotency``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate

from ledger import errors, identity, money, policy
from ledger.account import Account, account_id
from ledger.clock import utc_now
from ledger.errors import (
    AccountExists,
    CaseRefused,
    Conflict,
    Contention,
    IdempotencyKeyReused,
    InvalidInput,
    InvalidTransition,
    LedgerError,
    NotFound,
    Refused,
)
from ledger.idempotency import (
    KEY_LIFETIME,
    KeyBook,
    KeyRecord,
    KeyWrite,
    fingerprint,
    record_id,
)
from ledger.identity import Actor
from ledger.pipeline import Committer, Conflicted
from ledger.refund_request import RefundRequest
from ledger.return_case import OUTCOMES, ReturnCase

DEFAULT_MAX_ATTEMPTS = 40
DEFAULT_LOCK_TIMEOUT_S = 10.0
LOCK_STRIPES = 256


class EventPositions(Protocol):
    """Where a stored event stands in the global log (the store knows; the domain asks)."""

    def position_of(self, originator_id: UUID, version: int) -> int: ...


class _UnwiredPositions:
    def position_of(self, originator_id: UUID, version: int) -> int:
        raise RuntimeError("LedgerApplication.positions was not wired to the event store")


class _UnwiredKeys:
    def get(self, record_id: str) -> KeyRecord | None:
        raise RuntimeError("LedgerApplication.keys was not wired to the event store")

    def prune(self, up_to: datetime) -> int:
        raise RuntimeError("LedgerApplication.keys was not wired to the event store")


@dataclass(frozen=True)
class Decision:
    """What a use case decided: aggregates to save together, and the answer.

    No aggregates means nothing changes (a natural duplicate): ``position`` then says where the
    original was recorded."""

    aggregates: tuple[Aggregate, ...]
    body: dict[str, Any]
    outcome: str = "created"
    original: tuple[UUID, int] | None = None


@dataclass(frozen=True)
class Outcome:
    """The answer of a command: ``created``, ``ok`` (a step on something existing) or
    ``existing`` (a natural duplicate); ``replayed`` when an idempotency key answered it."""

    outcome: str
    body: dict[str, Any]
    position: int
    replayed: bool = False


@dataclass
class _StripedLocks:
    stripes: list[threading.Lock] = field(
        default_factory=lambda: [threading.Lock() for _ in range(LOCK_STRIPES)]
    )

    def for_key(self, key: UUID) -> threading.Lock:
        return self.stripes[key.int % len(self.stripes)]


class LedgerApplication(Application[UUID]):
    name = "ledger"

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        positions: EventPositions | None = None,
        clock: Callable[[], datetime] = utc_now,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> None:
        super().__init__(env)
        assert max_attempts >= 1
        self.positions: EventPositions = positions or _UnwiredPositions()
        self.keys: KeyBook = _UnwiredKeys()
        self.clock = clock
        self.max_attempts = max_attempts
        self.lock_timeout_s = lock_timeout_s
        self._locks = _StripedLocks()
        self.committer = Committer(self, housekeeping=self.prune_keys)
        self._reads = threading.local()  # the aggregates the current decision loaded

    def close(self) -> None:
        self.committer.stop()
        super().close()

    def prune_keys(self) -> int:
        """Forget idempotency keys past their lifetime on the shop's clock; answers how many."""
        if isinstance(self.keys, _UnwiredKeys):
            return 0
        return self.keys.prune(up_to=self.clock() - KEY_LIFETIME)

    # -- accounts and money -----------------------------------------------------------------

    def open_account(
        self, username: str, currency: str, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome:
        name = identity.username(username)
        code = money.currency(currency)

        def decide() -> Decision:
            if self._account_or_none(name) is not None:
                raise AccountExists(f"an account for {name!r} exists", username=name)
            account = Account.open(name, code, actor=actor)
            return Decision((account,), account.snapshot())

        params = {"username": name, "currency": code}
        return self._execute(
            "open_account", params, decide, actor, idempotency_key, lock=account_id(name)
        )

    def deposit(
        self,
        username: str,
        amount: int,
        reference: str,
        *,
        actor: Actor,
        idempotency_key: str | None = None,
    ) -> Outcome:
        name = identity.username(username)
        amount = money.amount(amount)
        reference = identity.reference(reference, field="reference")

        def decide() -> Decision:
            account = self.account(name)
            if not account.receive_deposit(amount, reference, actor=actor):
                version = account.deposit_version(reference)
                assert version is not None
                return Decision(
                    (), {"account": account.snapshot()}, "existing", original=(account.id, version)
                )
            return Decision((account,), {"account": account.snapshot()})

        params = {"username": name, "amount": amount, "reference": reference}
        return self._execute(
            "deposit", params, decide, actor, idempotency_key, lock=account_id(name)
        )

    def purchase(
        self,
        username: str,
        order_no: str,
        amount: int,
        *,
        actor: Actor,
        idempotency_key: str | None = None,
    ) -> Outcome:
        name = identity.username(username)
        order_no = identity.reference(order_no, field="order_no")
        amount = money.amount(amount)

        def decide() -> Decision:
            account = self.account(name)
            account.pay_purchase(order_no, amount, actor=actor)
            return Decision((account,), {"account": account.snapshot()})

        params = {"username": name, "order_no": order_no, "amount": amount}
        return self._execute(
            "purchase", params, decide, actor, idempotency_key, lock=account_id(name)
        )

    def fail_purchase(
        self,
        username: str,
        order_no: str,
        amount: int | None,
        reason: str,
        *,
        actor: Actor,
        idempotency_key: str | None = None,
    ) -> Outcome:
        name = identity.username(username)
        order_no = identity.reference(order_no, field="order_no")
        if amount is not None:
            amount = money.amount(amount)
        reason = identity.text(reason, field="reason")

        def decide() -> Decision:
            account = self.account(name)
            account.fail_purchase(order_no, amount, reason, actor=actor)
            return Decision((account,), {"account": account.snapshot()})

        params = {"username": name, "order_no": order_no, "amount": amount, "reason": reason}
        return self._execute(
            "fail_purchase", params, decide, actor, idempotency_key, lock=account_id(name)
        )

    # -- balance refunds --------------------------------------------------------------------

    def request_refund(
        self,
        username: str,
        order_no: str,
        amount: int,
        reason: str,
        *,
        actor: Actor,
        idempotency_key: str | None = None,
    ) -> Outcome:
        name = identity.username(username)
        order_no = identity.reference(order_no, field="order_no")
        amount = money.amount(amount)
        reason = identity.text(reason, field="reason")

        def decide() -> Decision:
            account = self.account(name)
            request = RefundRequest.request(
                id=uuid4(),
                username=name,
                currency=account.currency,
                order_no=order_no,
                amount=amount,
                reason=reason,
                actor=actor,
            )
            account.hold_for_refund_request(str(request.id), order_no, amount, reason, actor=actor)
            return Decision((account, request), request.snapshot())

        params = {"username": name, "order_no": order_no, "amount": amount, "reason": reason}
        return self._execute(
            "request_refund", params, decide, actor, idempotency_key, lock=account_id(name)
        )

    def approve_refund(
        self, request_id: UUID, note: str, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome:
        note = identity.text(note, field="note")

        def decide() -> Decision:
            request = self.refund_request(request_id)
            request.approve(note, actor=actor)
            return Decision((request,), request.snapshot(), "ok")

        return self._refund_step(
            "approve_refund", request_id, {"note": note}, decide, actor, idempotency_key
        )

    def reject_refund(
        self, request_id: UUID, reason: str, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome:
        return self._release_refund("reject", request_id, reason, actor, idempotency_key)

    def cancel_refund(
        self, request_id: UUID, reason: str, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome:
        return self._release_refund("cancel", request_id, reason, actor, idempotency_key)

    def pay_refund(
        self,
        request_id: UUID,
        payout_reference: str,
        *,
        actor: Actor,
        idempotency_key: str | None = None,
    ) -> Outcome:
        payout_reference = identity.reference(payout_reference, field="payout_reference")

        def decide() -> Decision:
            request = self.refund_request(request_id)
            request.pay(payout_reference, actor=actor)
            account = self.account(request.username)
            account.pay_out_refund(str(request.id), payout_reference, actor=actor)
            return Decision((account, request), request.snapshot(), "ok")

        params = {"payout_reference": payout_reference}
        return self._refund_step("pay_refund", request_id, params, decide, actor, idempotency_key)

    def _release_refund(
        self, step: str, request_id: UUID, reason: str, actor: Actor, key: str | None
    ) -> Outcome:
        reason = identity.text(reason, field="reason")

        def decide() -> Decision:
            request = self.refund_request(request_id)
            if step == "reject":
                request.reject(reason, actor=actor)
            else:
                request.cancel(reason, actor=actor)
            account = self.account(request.username)
            account.release_refund_hold(str(request.id), request.status, reason, actor=actor)
            return Decision((account, request), request.snapshot(), "ok")

        return self._refund_step(
            f"{step}_refund", request_id, {"reason": reason}, decide, actor, key
        )

    def _refund_step(
        self,
        command: str,
        request_id: UUID,
        params: dict[str, Any],
        decide: Callable[[], Decision],
        actor: Actor,
        key: str | None,
    ) -> Outcome:
        username = self._owner(request_id, RefundRequest)
        return self._execute(
            command,
            {"id": str(request_id), **params},
            decide,
            actor,
            key,
            lock=account_id(username),
        )

    # -- return and exchange cases ----------------------------------------------------------

    def open_return_case(
        self, case: CaseApplication, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome:
        """Open a case for one of the customer's orders, unless the policy refuses it."""
        name = identity.username(case.username)
        order_no = identity.reference(case.order_no, field="order_no")
        note = identity.text(case.note, field="note")
        if case.kind not in policy.CASE_KINDS:
            raise InvalidInput(f"kind is one of {sorted(policy.CASE_KINDS)}", field="kind")
        today = self.today()
        if case.shipped_on > today:
            raise InvalidInput("shipped_on is not in the future", field="shipped_on")

        def decide() -> Decision:
            account = self.account(name)
            if order_no not in account.orders:
                raise CaseRefused(f"no order {order_no!r} on this account", reason="unknown_order")
            reason = policy.refusal_reason(case.policy_view(), today)
            if reason is not None:
                raise CaseRefused(f"the policy refuses this case: {reason}", reason=reason)
            opened = ReturnCase.open(
                id=uuid4(),
                username=name,
                currency=account.currency,
                order_no=order_no,
                kind=case.kind,
                shipped_on=case.shipped_on.isoformat(),
                items=case.items,
                evidence=case.evidence,
                conditions=case.conditions,
                note=note,
                actor=actor,
                guarantee_until=_iso(case.guarantee_until),
                on=today.isoformat(),
            )
            return Decision((opened,), opened.snapshot())

        params = {**case.fingerprint_params(), "username": name}
        return self._execute(
            "open_return_case", params, decide, actor, idempotency_key, lock=account_id(name)
        )

    def start_supplier_review(
        self, case_id: UUID, note: str, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome:
        note = identity.text(note, field="note")
        return self._case_step(
            "supplier_review",
            case_id,
            {"note": note},
            actor,
            idempotency_key,
            lambda c, on: c.start_supplier_review(note, actor=actor, on=on),
        )

    def accept_return_case(
        self,
        case_id: UUID,
        return_by: date,
        return_address: str,
        instructions: str,
        *,
        actor: Actor,
        idempotency_key: str | None = None,
    ) -> Outcome:
        address = identity.text(return_address, field="return_address")
        if not address:
            raise InvalidInput("return_address is required", field="return_address")
        instructions = identity.text(instructions, field="instructions")
        if return_by < self.today():
            raise InvalidInput("return_by is not in the past", field="return_by")
        params = {
            "return_by": return_by.isoformat(),
            "return_address": address,
            "instructions": instructions,
        }
        return self._case_step(
            "accept",
            case_id,
            params,
            actor,
            idempotency_key,
            lambda c, on: c.accept(
                return_by.isoformat(), address, instructions, actor=actor, on=on
            ),
        )

    def reject_return_case(
        self, case_id: UUID, reason: str, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome:
        reason = identity.text(reason, field="reason")
        return self._case_step(
            "reject",
            case_id,
            {"reason": reason},
            actor,
            idempotency_key,
            lambda c, on: c.reject(reason, actor=actor, on=on),
        )

    def ship_back(
        self, case_id: UUID, tracking: str, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome:
        tracking = identity.reference(tracking, field="tracking")
        return self._case_step(
            "ship_back",
            case_id,
            {"tracking": tracking},
            actor,
            idempotency_key,
            lambda c, on: c.ship_back(tracking, actor=actor, on=on),
        )

    def receive_return(
        self,
        case_id: UUID,
        postmark_date: date,
        goods: bool,
        original_packaging: bool,
        acceptance_copy: bool,
        *,
        actor: Actor,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """The goods came back; a postmark after return_by makes the case late."""
        if postmark_date > self.today():
            raise InvalidInput("postmark_date is not in the future", field="postmark_date")

        def step(case: ReturnCase, on: str) -> None:
            if postmark_date < date.fromisoformat(case.shipped_on):
                raise InvalidInput(
                    "postmark_date is before the order shipped", field="postmark_date"
                )
            late = case.return_by is not None and policy.is_late(
                postmark_date, date.fromisoformat(case.return_by)
            )
            case.receive(
                postmark_date.isoformat(),
                goods,
                original_packaging,
                acceptance_copy,
                late=late,
                actor=actor,
                on=on,
            )

        params = {
            "postmark_date": postmark_date.isoformat(),
            "goods": goods,
            "original_packaging": original_packaging,
            "acceptance_copy": acceptance_copy,
        }
        return self._case_step("receive", case_id, params, actor, idempotency_key, step)

    def expire_return_case(
        self, case_id: UUID, note: str, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome:
        """No goods by return_by: the supplier's commitment period has run out."""
        note = identity.text(note, field="note")
        today = self.today()

        def step(case: ReturnCase, on: str) -> None:
            if case.return_by is not None and today <= date.fromisoformat(case.return_by):
                raise InvalidTransition(
                    f"the case is not past its return_by {case.return_by}", state=case.state
                )
            case.expire(note, actor=actor, on=on)

        return self._case_step("expire", case_id, {"note": note}, actor, idempotency_key, step)

    def forward_to_supplier(
        self, case_id: UUID, note: str, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome:
        note = identity.text(note, field="note")
        return self._case_step(
            "forward",
            case_id,
            {"note": note},
            actor,
            idempotency_key,
            lambda c, on: c.forward(note, actor=actor, on=on),
        )

    def resolve_return_case(
        self,
        case_id: UUID,
        outcome: str,
        refund_amount: int | None,
        freight_amount: int,
        tracking: str | None,
        *,
        actor: Actor,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Resolve by refund (credits the account: the order's refundable at most), exchange or
        repair (outbound tracking). The freight is charged to the account; all in one save."""
        outcome, refund_amount, freight_amount, tracking = _resolution(
            outcome, refund_amount, freight_amount, tracking
        )

        def decide() -> Decision:
            case = self.return_case(case_id)
            case.require_resolvable()  # the state decides before the money does
            account = self.account(case.username)
            credited = 0
            if outcome == "refund":
                credited = account.credit_return_refund(
                    str(case.id), case.order_no, refund_amount, actor=actor
                )
            if freight_amount:
                account.charge_freight(str(case.id), case.order_no, freight_amount, actor=actor)
            case.resolve(
                outcome,
                credited,
                freight_amount,
                tracking,
                actor=actor,
                on=self.today().isoformat(),
            )
            return Decision((account, case), case.snapshot(), "ok")

        params = {
            "id": str(case_id),
            "outcome": outcome,
            "refund_amount": refund_amount,
            "freight_amount": freight_amount,
            "tracking": tracking,
        }
        return self._execute(
            "resolve",
            params,
            decide,
            actor,
            idempotency_key,
            lock=account_id(self._owner(case_id, ReturnCase)),
        )

    def close_return_case(
        self, case_id: UUID, note: str, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome:
        note = identity.text(note, field="note")
        return self._case_step(
            "close",
            case_id,
            {"note": note},
            actor,
            idempotency_key,
            lambda c, on: c.close(note, actor=actor, on=on),
        )

    def cancel_return_case(
        self, case_id: UUID, reason: str, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome:
        reason = identity.text(reason, field="reason")
        return self._case_step(
            "cancel",
            case_id,
            {"reason": reason},
            actor,
            idempotency_key,
            lambda c, on: c.cancel(reason, actor=actor, on=on),
        )

    def add_case_note(
        self, case_id: UUID, text: str, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome:
        text = identity.text(text, field="text")
        if not text:
            raise InvalidInput("a note has text", field="text")
        return self._case_step(
            "note",
            case_id,
            {"text": text},
            actor,
            idempotency_key,
            lambda c, on: c.add_note(text, actor=actor, on=on),
            outcome="created",
        )

    def _case_step(
        self,
        command: str,
        case_id: UUID,
        params: dict[str, Any],
        actor: Actor,
        key: str | None,
        step: Callable[[ReturnCase, str], None],
        *,
        outcome: str = "ok",
    ) -> Outcome:
        def decide() -> Decision:
            case = self.return_case(case_id)
            step(case, self.today().isoformat())
            return Decision((case,), case.snapshot(), outcome)

        username = self._owner(case_id, ReturnCase)
        return self._execute(
            f"return_case.{command}",
            {"id": str(case_id), **params},
            decide,
            actor,
            key,
            lock=account_id(username),
        )

    def today(self) -> date:
        return self.clock().date()

    # -- loading ----------------------------------------------------------------------------

    def account(self, username: str) -> Account:
        found = self._account_or_none(identity.username(username))
        if found is None:
            raise NotFound(f"no account for {username!r}", username=username)
        return found

    def _account_or_none(self, username: str) -> Account | None:
        try:
            account: object = self._load(account_id(username))
        except AggregateNotFoundError:
            return None
        assert isinstance(account, Account)
        return account

    def return_case(self, case_id: UUID) -> ReturnCase:
        try:
            case: object = self._load(case_id)
        except AggregateNotFoundError:
            raise NotFound(f"no return case {case_id}", id=str(case_id)) from None
        if not isinstance(case, ReturnCase):
            raise NotFound(f"no return case {case_id}", id=str(case_id))
        return case

    def _load(self, aggregate_id: UUID) -> Aggregate:
        """Within a decision: the aggregate as this process last knew it, remembered as read,
        so that a decision recording nothing can be made again from the store. Outside one (a
        caller asking how things stand): as the store has it now."""
        reads: set[UUID] | None = getattr(self._reads, "ids", None)
        if reads is None:
            self._forget({aggregate_id})
        else:
            reads.add(aggregate_id)
        aggregate: Aggregate = self.repository.get(aggregate_id)
        return aggregate

    def _owner(self, aggregate_id: UUID, kind: type[RefundRequest | ReturnCase]) -> str:
        """Whose request or case this is (to take the account's lock): that never changes, so
        the copy this process knows is as good as the store's."""
        try:
            found: object = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            found = None
        if not isinstance(found, kind):
            what = "refund request" if kind is RefundRequest else "return case"
            raise NotFound(f"no {what} {aggregate_id}", id=str(aggregate_id))
        return found.username

    def _forget(self, ids: set[UUID]) -> None:
        """Drop aggregates from the cache: the next load reads them from the store."""
        cache: Any = self.repository.cache
        if cache is None:
            return
        for aggregate_id in ids:
            try:
                cache.get(aggregate_id, evict=True)
            except KeyError:
                pass

    def refund_request(self, request_id: UUID) -> RefundRequest:
        try:
            request: object = self._load(request_id)
        except AggregateNotFoundError:
            raise NotFound(f"no refund request {request_id}", id=str(request_id)) from None
        if not isinstance(request, RefundRequest):
            raise NotFound(f"no refund request {request_id}", id=str(request_id))
        return request

    # -- deciding and committing ------------------------------------------------------------

    def _execute(
        self,
        command: str,
        params: dict[str, Any],
        decide: Callable[[], Decision],
        actor: Actor,
        key: str | None,
        *,
        lock: UUID,
    ) -> Outcome:
        guard = _KeyGuard(self, actor, key, fingerprint(command, params)) if key else None
        # The key is looked up only when it may matter: before a decision made again (a
        # conflict may have been this very request, committed), and before any answer that
        # records nothing. A first attempt that records goes straight to the commit, where a
        # key already taken is a conflict like any other.
        check_key, fresh, conflicts = False, False, 0
        # Bounded: each round either answers, or is the one decision made again from the store
        # (``fresh``, once), or is a conflict (at most ``max_attempts``).
        while conflicts < self.max_attempts:
            stripe = self._locks.for_key(lock)
            if not stripe.acquire(timeout=self.lock_timeout_s):
                raise Contention("the account is busy; try again shortly")
            try:
                if guard is not None and check_key and (replay := guard.replay()) is not None:
                    return replay
                first_refusal = None
                reads: set[UUID] = set()
                self._reads.ids = reads
                try:
                    decision = decide()
                except (Refused, Conflict, NotFound) as refusal:
                    if not fresh:  # perhaps decided on what another process changed since
                        self._forget(reads)
                        check_key = fresh = True
                        continue
                    if guard is None:
                        raise
                    if (replay := guard.replay()) is not None:
                        return replay
                    decision, first_refusal = guard.refusal(refusal), refusal
                finally:
                    self._reads.ids = None
                original = None
                if not decision.aggregates and decision.outcome != REFUSED:
                    # a natural duplicate: it answers the original
                    if not fresh:
                        self._forget(reads)
                        check_key = fresh = True
                        continue
                    assert decision.original is not None
                    original = self.positions.position_of(*decision.original)
                    if guard is None:
                        return Outcome(decision.outcome, decision.body, original)
                    if (replay := guard.replay()) is not None:
                        return replay
                write = guard.record(decision, original) if guard is not None else None
                try:
                    committed = self.committer.commit(decision.aggregates, write)
                except Conflicted:
                    # lost a race (or the first try committed, or the key was taken): decide
                    # again from the store
                    self._forget(reads)
                    check_key = fresh = True
                    conflicts += 1
                else:
                    if first_refusal is not None:
                        raise first_refusal  # recorded; not a replay the first time
                    position = committed.last if original is None else original
                    assert position is not None, "a recorded decision has a position"
                    return Outcome(decision.outcome, decision.body, position)
            finally:
                stripe.release()
            _back_off(conflicts)
        raise Contention(f"{command} lost {self.max_attempts} races in a row; try again shortly")


@dataclass(frozen=True)
class CaseApplication:
    """A customer's application for a return or exchange case, as CS enters it."""

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

    def fingerprint_params(self) -> dict[str, Any]:
        return {
            "order_no": self.order_no,
            "kind": self.kind,
            "shipped_on": self.shipped_on.isoformat(),
            "items": self.items,
            "evidence": self.evidence,
            "conditions": self.conditions,
            "guarantee_until": _iso(self.guarantee_until),
            "note": self.note,
        }


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _resolution(
    outcome: str, refund_amount: int | None, freight_amount: int, tracking: str | None
) -> tuple[str, int | None, int, str]:
    """A resolution's fields, checked: a refund may name its amount (default: all the order has
    left); an exchange or repair names its outbound tracking and no refund."""
    if outcome not in OUTCOMES:
        raise InvalidInput(f"outcome is one of {sorted(OUTCOMES)}", field="outcome")
    if isinstance(freight_amount, bool) or not isinstance(freight_amount, int):
        raise InvalidInput("freight_amount is an integer of minor units", field="freight_amount")
    if freight_amount != 0:  # no freight is fine; any other amount is a command's amount
        money.amount(freight_amount, field="freight_amount")
    if outcome == "refund":
        if refund_amount is not None:
            money.amount(refund_amount, field="refund_amount")
        return outcome, refund_amount, freight_amount, tracking or ""
    if refund_amount is not None:
        raise InvalidInput(f"an {outcome} refunds nothing", field="refund_amount")
    if not tracking:
        raise InvalidInput(f"an {outcome} names the outbound tracking", field="tracking")
    return outcome, None, freight_amount, identity.reference(tracking, field="tracking")


class _KeyGuard:
    """The idempotency key of one command: replays what it did, or records what it does.

    A key belongs to the caller (the role), not to the token it came with."""

    def __init__(self, app: LedgerApplication, actor: Actor, key: str, fingerprint: str) -> None:
        self.app = app
        self.caller = actor.role
        self.id = record_id(self.caller, key)
        self.fingerprint = fingerprint
        self.expired: KeyRecord | None = None

    def replay(self) -> Outcome | None:
        record = self.app.keys.get(self.id)
        self.expired = None
        if record is None:
            return None
        if not record.is_live(self.app.clock()):
            self.expired = record
            return None
        if record.fingerprint != self.fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for another request", key_fingerprint=self.id
            )
        if record.outcome == REFUSED:
            raise refusal_from(record.body)
        assert record.position is not None, "a key's recorded answer names its position"
        return Outcome(record.outcome, record.body, record.position, replayed=True)

    def refusal(self, refusal: LedgerError) -> Decision:
        """A decision that records nothing but this key's refused first response."""
        body = {
            "error": type(refusal).__name__,
            "detail": refusal.detail,
            "context": {k: _plain(v) for k, v in refusal.context.items()},
        }
        return Decision((), body, REFUSED, original=None)

    def record(self, decision: Decision, original: int | None) -> KeyWrite:
        """The record of this key's first response; ``original`` is the position it names
        when it wrote nothing else (otherwise: its last event's)."""
        record = KeyRecord(
            id=self.id,
            caller=self.caller,
            fingerprint=self.fingerprint,
            outcome=decision.outcome,
            body=decision.body,
            position=original,
            recorded_at=self.app.clock(),
        )
        replaces = None if self.expired is None else self.expired.recorded_at
        at_last_event = original is None and decision.outcome != REFUSED
        return KeyWrite(record, at_last_event=at_last_event, replaces=replaces)


REFUSED = "refused"


def _plain(value: object) -> object:
    return value if isinstance(value, str | int | bool | type(None)) else str(value)


def refusal_from(body: dict[str, Any]) -> LedgerError:
    """The refusal a key's record holds, raised again (marked ``replayed``)."""
    cls = getattr(errors, body["error"])
    assert isinstance(cls, type) and issubclass(cls, LedgerError), body
    refusal = cls.__new__(cls)
    LedgerError.__init__(refusal, body["detail"], **body["context"])
    for name, value in body["context"].items():  # e.g. CaseRefused.reason, InvalidInput.field
        setattr(refusal, name, value)
    refusal.replayed = True
    return refusal


def _back_off(attempt: int) -> None:
    """Jittered, capped sleep between optimistic retries (at most ~50 ms each)."""
    time.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))  # noqa: S311
