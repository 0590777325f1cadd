"""LedgerApplication: one use case per command, each recorded atomically.

``execute(command, actor=...)`` carries out one command (``ledger.commands``: its fields already
normalised) through the pipeline (``ledger.pipeline``: the account's lock, the idempotency key,
decide → queue → commit → answer, decided again after a conflict). What is here is the shop's
side: each command's *use case*, which loads aggregates, runs the domain, and names the
aggregates whose new events are recorded together (one transaction) and the answer. A use case
may be decided more than once, on fresh state, so it changes nothing but its aggregates.

The keyword methods (``deposit(username, amount, reference, actor=...)``, ...) build their
command and execute it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from copy import deepcopy
from datetime import date, datetime
from typing import Any, Required, TypedDict, TypeVar, Unpack
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate

# staff: its events' topics must resolve wherever the log is read (verify, rebuild, export).
from ledger import identity, policy, staff  # noqa: F401
from ledger.account import Account, account_id
from ledger.clock import utc_now
from ledger.commands import (
    AcceptReturnCase,
    AddCaseEvidence,
    AddCaseNote,
    ApproveRefund,
    CancelRefund,
    CancelReturnCase,
    CaseApplication,
    CaseStep,
    CloseReturnCase,
    Command,
    Deposit,
    ExpireReturnCase,
    FailPurchase,
    ForwardToSupplier,
    OpenAccount,
    OpenReturnCase,
    PayRefund,
    Purchase,
    ReceiveReturn,
    RefundStep,
    RejectRefund,
    RejectReturnCase,
    RequestRefund,
    ResolveReturnCase,
    ShipBack,
    StartSupplierReview,
)
from ledger.errors import AccountExists, CaseRefused, InvalidInput, NotFound
from ledger.idempotency import (
    KEY_LIFETIME,
    PRUNE_BATCH,
    KeyBook,
    KeyRecord,
    created_ids,
    record_id,
    took_effect,
)
from ledger.identity import Actor
from ledger.pipeline import (
    DEFAULT_LOCK_TIMEOUT_S,
    DEFAULT_MAX_ATTEMPTS,
    Committer,
    Decision,
    EventPositions,
    NotCached,
    Outcome,
    Pipeline,
)
from ledger.refund_request import RefundRequest
from ledger.return_case import ReturnCase

__all__ = [
    "DEFAULT_LOCK_TIMEOUT_S",
    "DEFAULT_MAX_ATTEMPTS",
    "Caller",
    "CaseApplication",
    "Decision",
    "EventPositions",
    "LedgerApplication",
    "Outcome",
]

C = TypeVar("C", bound=Command)
UseCase = Callable[["LedgerApplication", C, Actor], Decision]
# A use case told the record id of its command's key (None without one): one that creates an
# aggregate no account holds names it by the key, so that a retry finds it (a retry's decision
# on an account finds the key's mark on the account).
KeyedUseCase = Callable[["LedgerApplication", C, Actor, str | None], Decision]
_USE_CASES: dict[type[Command], KeyedUseCase[Any]] = {}


def _decides(kind: type[C]) -> Callable[[UseCase[C]], UseCase[C]]:
    """Registers the decorated method as the use case of commands of ``kind``."""

    def register(use_case: UseCase[C]) -> UseCase[C]:
        _register(kind, lambda app, command, actor, under_key: use_case(app, command, actor))
        return use_case

    return register


def _decides_under_key(kind: type[C]) -> Callable[[KeyedUseCase[C]], KeyedUseCase[C]]:
    """Registers the decorated method as the use case of commands of ``kind``, told its key."""

    def register(use_case: KeyedUseCase[C]) -> KeyedUseCase[C]:
        _register(kind, use_case)
        return use_case

    return register


def _register(kind: type[C], use_case: KeyedUseCase[C]) -> None:
    assert kind not in _USE_CASES, f"{kind.__name__} has a use case already"
    _USE_CASES[kind] = use_case


def _replay(aggregate: Aggregate | None, events: Iterable[Aggregate.Event]) -> Aggregate | None:
    """An aggregate from its stored events: eventsourcing's ``project_aggregate`` without its
    assert that each event can mutate (an isinstance of a runtime-checkable Protocol, about
    10 µs an event on Python 3.11, more than applying one of ours): the mapper decodes only our
    aggregates' events, each an ``Aggregate.Event``."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


def _record_id(actor: Actor, idempotency_key: str | None) -> str | None:
    """The record id of the caller's key (the pipeline's ``KeyGuard`` names it alike)."""
    return None if idempotency_key is None else record_id(actor.person, idempotency_key)


class Caller(TypedDict, total=False):
    """Who calls a keyword method (``actor``), and with which idempotency key, if any."""

    actor: Required[Actor]
    idempotency_key: str | None


class _UnwiredPositions:
    def position_of(self, originator_id: UUID, version: int) -> int:
        raise RuntimeError("LedgerApplication.positions was not wired to the event store")


class _UnwiredKeys:
    def get(self, record_id: str) -> KeyRecord | None:
        raise RuntimeError("LedgerApplication.keys was not wired to the event store")

    def prune(self, up_to: datetime, limit: int = PRUNE_BATCH) -> int:
        raise RuntimeError("LedgerApplication.keys was not wired to the event store")


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
        second_approval_above: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(env)
        self.positions: EventPositions = positions or _UnwiredPositions()
        self.keys: KeyBook = _UnwiredKeys()
        self.clock = clock
        self.committer = Committer(self, housekeeping=self._prune_some_keys)
        self.pipeline = Pipeline(self, max_attempts=max_attempts, lock_timeout_s=lock_timeout_s)
        # Per currency, the amount (minor units) above which a refund needs two approvals
        # (``second_approval_thresholds`` of the configuration's text; none: never).
        self.second_approval_above = dict(second_approval_above or {})

    def close(self) -> None:
        self.committer.stop()
        super().close()

    def prune_keys(self, limit: int = PRUNE_BATCH) -> int:
        """Forget idempotency keys past their lifetime on the shop's clock, the oldest first and
        at most ``limit``; answers how many."""
        assert limit > 0
        if isinstance(self.keys, _UnwiredKeys):
            return 0
        return self.keys.prune(up_to=self.clock() - KEY_LIFETIME, limit=limit)

    def _prune_some_keys(self) -> bool:
        """The committer's housekeeping: one bounded prune; True when more may be due."""
        return self.prune_keys() == PRUNE_BATCH

    def today(self) -> date:
        return self.clock().date()

    def execute(
        self, command: Command, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome:
        """Carry out ``command`` for ``actor``: answers its outcome, or raises its refusal.

        A date the shop's day now rules out is refused, unless ``idempotency_key`` already
        answered this very request (sent before midnight, say): then its first response."""
        refusal = self._refused_today(command, idempotency_key)
        if refusal is not None:
            assert idempotency_key is not None  # raised at once without one
            replay = self.pipeline.replay(command, actor=actor, key=idempotency_key)
            if replay is None:
                raise refusal
            return replay
        use_case, under_key = _USE_CASES[type(command)], _record_id(actor, idempotency_key)
        return self.pipeline.run(
            command,
            lambda: use_case(self, command, actor, under_key),
            actor=actor,
            key=idempotency_key,
            lock=self._lock_of(command),
        )

    async def execute_on_loop(
        self, command: Command, *, actor: Actor, idempotency_key: str | None = None
    ) -> Outcome | None:
        """``execute`` on the event loop, when its account's aggregates are held here and its
        decision is recorded as made; None when it must be executed on a thread instead
        (nothing was recorded). Only a command that names its account's lock itself: a step
        of a refund request or of a case looks its owner up."""
        if command.lock_key is None:
            return None
        if self._refused_today(command, idempotency_key) is not None:
            return None  # its key may answer it: looked up on a thread (``execute``)
        use_case, under_key = _USE_CASES[type(command)], _record_id(actor, idempotency_key)
        return await self.pipeline.run_on_loop(
            command,
            lambda: use_case(self, command, actor, under_key),
            actor=actor,
            key=idempotency_key,
            lock=command.lock_key,
        )

    def _refused_today(self, command: Command, idempotency_key: str | None) -> InvalidInput | None:
        """The refusal of a date the shop's day now rules out, for the caller to try the key
        first; raised at once when there is no key that could answer it."""
        try:
            command.check_on(self.today())
        except InvalidInput as refusal:
            if idempotency_key is None:
                raise
            return refusal
        return None

    @property
    def writes_on_loop(self) -> bool:
        """Whether an event loop commits for this process (``execute_on_loop`` may answer)."""
        return self.committer.on_loop is not None

    def _lock_of(self, command: Command) -> UUID:
        """The lock of the account the command writes to; a refund request or a case is looked
        up to know whose it is (before its key is: an unknown one is not found, key or not)."""
        if command.lock_key is not None:
            return command.lock_key
        if isinstance(command, RefundStep):
            return account_id(self._owner(command.request_id, RefundRequest))
        assert isinstance(command, CaseStep), f"{type(command).__name__} names no lock"
        return account_id(self._owner(command.case_id, ReturnCase))

    # -- accounts and money -----------------------------------------------------------------

    @_decides(OpenAccount)
    def _open_account(self, c: OpenAccount, actor: Actor) -> Decision:
        if self._account_or_none(c.username) is not None:
            raise AccountExists(f"an account for {c.username!r} exists", username=c.username)
        account = Account.open(c.username, c.currency, actor=actor)
        return Decision((account,), account.snapshot())

    @_decides(Deposit)
    def _deposit(self, c: Deposit, actor: Actor) -> Decision:
        account = self.account(c.username)
        if not account.receive_deposit(c.amount, c.reference, actor=actor):
            version = account.deposit_version(c.reference)
            assert version is not None
            return Decision(
                (), {"account": account.snapshot()}, "existing", original=(account.id, version)
            )
        return Decision((account,), {"account": account.snapshot()})

    @_decides(Purchase)
    def _purchase(self, c: Purchase, actor: Actor) -> Decision:
        account = self.account(c.username)
        if not account.pay_purchase(c.order_no, c.amount, actor=actor):
            version = account.purchase_version(c.order_no)
            assert version is not None
            return Decision(
                (), {"account": account.snapshot()}, "existing", original=(account.id, version)
            )
        return Decision((account,), {"account": account.snapshot()})

    @_decides(FailPurchase)
    def _fail_purchase(self, c: FailPurchase, actor: Actor) -> Decision:
        account = self.account(c.username)
        account.fail_purchase(c.order_no, c.amount, c.reason, actor=actor)
        return Decision((account,), {"account": account.snapshot()})

    # -- balance refunds --------------------------------------------------------------------

    @_decides(RequestRefund)
    def _request_refund(self, c: RequestRefund, actor: Actor) -> Decision:
        account = self.account(c.username)
        request = RefundRequest.request(
            id=uuid4(),
            username=c.username,
            currency=account.currency,
            order_no=c.order_no,
            amount=c.amount,
            reason=c.reason,
            actor=actor,
        )
        account.hold_for_refund_request(
            str(request.id), c.order_no, c.amount, c.reason, actor=actor
        )
        return Decision((account, request), request.snapshot())

    @_decides(ApproveRefund)
    def _approve_refund(self, c: ApproveRefund, actor: Actor) -> Decision:
        request = self.refund_request(c.request_id)
        request.approve(c.note, actor=actor,
                        second_approval_above=self.second_approval_above.get(request.currency))
        return Decision((request,), request.snapshot(), "ok")

    @_decides(RejectRefund)
    def _reject_refund(self, c: RejectRefund, actor: Actor) -> Decision:
        request = self.refund_request(c.request_id)
        request.reject(c.reason, actor=actor)
        return self._released(request, c.reason, actor)

    @_decides(CancelRefund)
    def _cancel_refund(self, c: CancelRefund, actor: Actor) -> Decision:
        request = self.refund_request(c.request_id)
        request.cancel(c.reason, actor=actor)
        return self._released(request, c.reason, actor)

    def _released(self, request: RefundRequest, reason: str, actor: Actor) -> Decision:
        """A request ended unpaid: its hold on the account is released."""
        account = self.account(request.username)
        account.release_refund_hold(str(request.id), request.status, reason, actor=actor)
        return Decision((account, request), request.snapshot(), "ok")

    @_decides(PayRefund)
    def _pay_refund(self, c: PayRefund, actor: Actor) -> Decision:
        request = self.refund_request(c.request_id)
        request.pay(c.payout_reference, actor=actor)
        account = self.account(request.username)
        account.pay_out_refund(str(request.id), c.payout_reference, actor=actor)
        return Decision((account, request), request.snapshot(), "ok")

    # -- return and exchange cases ----------------------------------------------------------

    @_decides_under_key(OpenReturnCase)
    def _open_return_case(
        self, c: OpenReturnCase, actor: Actor, under_key: str | None
    ) -> Decision:
        """Open a case for one of the customer's orders. A case the policy refuses is recorded
        as refused, with its reason, and the refusal answered (naming that case); an order
        that is not the customer's is refused with nothing recorded (no order, no case).

        Opening changes no account, so under a key the case is named by the key, and the
        decision holds the cases the key already opened within its lifetime: their mark
        tells a retry, even one whose key's record was deleted, from a new request."""
        account = self.account(c.username)
        if c.order_no not in account.orders:
            raise CaseRefused(f"no order {c.order_no!r} on this account", reason="unknown_order")
        now = self.clock()
        today = now.date()
        opened_before, case_id = self._cases_under_key(under_key, now)
        application = c.policy_view()
        reason = policy.refusal_reason(application, today)
        facts: dict[str, Any] = {
            "id": case_id,
            "username": c.username,
            "currency": account.currency,
            "order_no": c.order_no,
            "kind": c.kind,
            "shipped_on": c.shipped_on.isoformat(),
            "items": c.items,
            "evidence": c.evidence,
            "conditions": c.conditions,
            "note": c.note,
            "actor": actor,
            "guarantee_until": None if c.guarantee_until is None
            else c.guarantee_until.isoformat(),
            "on": today.isoformat(),
        }
        if reason is not None:
            words = policy.refusal_words(application, reason)
            refused = ReturnCase.refuse(**facts, reason=reason, words=words)
            refusal = CaseRefused(
                f"the policy refuses this case ({reason}): {words}",
                reason=reason,
                case_id=str(refused.id),
            )
            return Decision.recorded_refusal((*opened_before, refused), refusal)
        opened = ReturnCase.open(**facts)
        return Decision((*opened_before, opened), opened.snapshot())

    def _cases_under_key(
        self, under_key: str | None, now: datetime
    ) -> tuple[tuple[ReturnCase, ...], UUID]:
        """The cases stored under the key ``under_key`` that hold its live mark (nothing is
        recorded on them: with them in a decision, the pipeline finds the key took effect),
        and the id of the case a command under it opens now (``idempotency.created_ids``; at
        random without a key, or when that id is taken by a case of a lapsed key, the shop's
        clock having gone back). On the event loop a case not held here is ``NotCached``: a
        command under a key is decided on a thread, which reads the store."""
        if under_key is None:
            return (), uuid4()
        ids = created_ids(under_key, now)
        stored = [case for case in map(self._case_or_none, ids) if case is not None]
        live = tuple(case for case in stored if took_effect((case,), under_key, now))
        taken = any(case.id == ids[0] for case in stored)
        return live, uuid4() if taken else ids[0]

    def _case_step(
        self, case_id: UUID, step: Callable[[ReturnCase, str], None], outcome: str = "ok"
    ) -> Decision:
        """One step on a case, taken today (``step`` is told the day as ISO text)."""
        case = self.return_case(case_id)
        step(case, self.today().isoformat())
        return Decision((case,), case.snapshot(), outcome)

    @_decides(StartSupplierReview)
    def _start_supplier_review(self, c: StartSupplierReview, actor: Actor) -> Decision:
        return self._case_step(
            c.case_id, lambda case, on: case.start_supplier_review(c.note, actor=actor, on=on)
        )

    @_decides(AcceptReturnCase)
    def _accept_return_case(self, c: AcceptReturnCase, actor: Actor) -> Decision:
        return_by = c.return_by.isoformat()
        return self._case_step(
            c.case_id,
            lambda case, on: case.accept(
                return_by, c.return_address, c.instructions, actor=actor, on=on
            ),
        )

    @_decides(RejectReturnCase)
    def _reject_return_case(self, c: RejectReturnCase, actor: Actor) -> Decision:
        return self._case_step(
            c.case_id, lambda case, on: case.reject(c.reason, actor=actor, on=on)
        )

    @_decides(ShipBack)
    def _ship_back(self, c: ShipBack, actor: Actor) -> Decision:
        return self._case_step(
            c.case_id, lambda case, on: case.ship_back(c.tracking, actor=actor, on=on)
        )

    @_decides(ReceiveReturn)
    def _receive_return(self, c: ReceiveReturn, actor: Actor) -> Decision:
        """The goods came back; a postmark after return_by makes the case late."""

        def receive(case: ReturnCase, on: str) -> None:
            if c.postmark_date < date.fromisoformat(case.shipped_on):
                raise InvalidInput(
                    "postmark_date is before the order shipped", field="postmark_date"
                )
            late = case.return_by is not None and policy.is_late(
                c.postmark_date, date.fromisoformat(case.return_by)
            )
            case.receive(
                c.postmark_date.isoformat(),
                c.goods,
                c.original_packaging,
                c.acceptance_copy,
                late=late,
                actor=actor,
                on=on,
            )

        return self._case_step(c.case_id, receive)

    @_decides(ExpireReturnCase)
    def _expire_return_case(self, c: ExpireReturnCase, actor: Actor) -> Decision:
        """No goods by return_by: the supplier's commitment period has run out."""
        return self._case_step(c.case_id, lambda case, on: case.expire(c.note, actor=actor, on=on))

    @_decides(ForwardToSupplier)
    def _forward_to_supplier(self, c: ForwardToSupplier, actor: Actor) -> Decision:
        return self._case_step(c.case_id, lambda case, on: case.forward(c.note, actor=actor, on=on))

    @_decides(ResolveReturnCase)
    def _resolve_return_case(self, c: ResolveReturnCase, actor: Actor) -> Decision:
        """Resolve by refund (credits the account: the order's refundable at most), exchange or
        repair (outbound tracking). The freight is charged to the account; all in one save."""
        case = self.return_case(c.case_id)
        case.require_resolvable()  # the state decides before the money does
        account = self.account(case.username)
        credited = 0
        if c.outcome == "refund":
            credited = account.credit_return_refund(
                str(case.id), case.order_no, c.refund_amount, actor=actor
            )
        today = self.today().isoformat()
        charged = c.freight_amount
        if c.freight_waiver_reason:  # CS waives it (e.g. it exceeds what is available)
            case.waive_freight(c.freight_amount, c.freight_waiver_reason, actor=actor, on=today)
            charged = 0
        if charged:
            account.charge_freight(str(case.id), case.order_no, charged, actor=actor)
        case.resolve(c.outcome, credited, charged, c.outbound_tracking, actor=actor, on=today)
        saved: tuple[Aggregate, ...] = (account, case)
        if not account.pending_events:
            # Nothing recorded on the account (an exchange or a repair, no freight charged): its
            # version is not checked at the commit, so the answer (and what a key replays)
            # reads it as the store has it, not as this process last cached it.
            account, saved = self._as_stored(account), (case,)
        answer = {
            **case.snapshot(),
            "refund_amount": credited,
            "freight_amount": charged,
            "freight_waived": c.freight_amount - charged,
            "account": account.snapshot(),
        }
        return Decision(saved, answer, "ok")

    @_decides(CloseReturnCase)
    def _close_return_case(self, c: CloseReturnCase, actor: Actor) -> Decision:
        return self._case_step(c.case_id, lambda case, on: case.close(c.note, actor=actor, on=on))

    @_decides(CancelReturnCase)
    def _cancel_return_case(self, c: CancelReturnCase, actor: Actor) -> Decision:
        return self._case_step(
            c.case_id, lambda case, on: case.cancel(c.reason, actor=actor, on=on)
        )

    @_decides(AddCaseEvidence)
    def _add_case_evidence(self, c: AddCaseEvidence, actor: Actor) -> Decision:
        return self._case_step(
            c.case_id,
            lambda case, on: case.add_evidence(
                list(c.goods_photos), list(c.package_photos), actor=actor, on=on
            ),
            "created",
        )

    @_decides(AddCaseNote)
    def _add_case_note(self, c: AddCaseNote, actor: Actor) -> Decision:
        return self._case_step(
            c.case_id, lambda case, on: case.add_note(
                c.text, actor=actor, on=on, for_customer=c.for_customer), "created"
        )

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

    def _case_or_none(self, case_id: UUID) -> ReturnCase | None:
        try:
            case: object = self._load(case_id)
        except AggregateNotFoundError:
            return None
        return case if isinstance(case, ReturnCase) else None

    def refund_request(self, request_id: UUID) -> RefundRequest:
        try:
            request: object = self._load(request_id)
        except AggregateNotFoundError:
            raise NotFound(f"no refund request {request_id}", id=str(request_id)) from None
        if not isinstance(request, RefundRequest):
            raise NotFound(f"no refund request {request_id}", id=str(request_id))
        return request

    def _load(self, aggregate_id: UUID) -> Aggregate:
        """Within a decision: the aggregate as this process last knew it, remembered as read,
        so that a decision recording nothing can be made again from the store; within a
        decision made again (``Pipeline.fresh``), and outside one (a caller asking how things
        stand): as the store has it now. On the event loop: from the cache only."""
        reads = self.pipeline.reads()
        if self.pipeline.cache_only():
            assert reads is not None, "a decision on the event loop notes what it reads"
            aggregate = self._cached(aggregate_id)
            reads.add(aggregate_id)
            return aggregate
        if reads is None or self.pipeline.fresh():
            self.forget({aggregate_id})  # read from the store (and cached as it is there)
        if reads is not None:
            reads.add(aggregate_id)
        stored: Aggregate = self.repository.get(aggregate_id, projector_func=_replay)
        return stored

    def _as_stored(self, account: Account) -> Account:
        """The account as the store has it now (never on the event loop: ``NotCached``)."""
        if self.pipeline.cache_only():
            raise NotCached(account.id)
        self.forget({account.id})
        stored: object = self.repository.get(account.id, projector_func=_replay)
        assert isinstance(stored, Account)
        return stored

    def _cached(self, aggregate_id: UUID) -> Aggregate:
        """The aggregate as this process holds it, from one look at the cache (another look
        could miss it, evicted meanwhile, and read the store on the event loop): a copy, as
        the repository hands out (``NotCached`` when it is not held)."""
        repository = self.repository
        # A fast-forwarded cache would read the store at every hit (settings.CACHE: off).
        assert not repository.fastforward, "the cache is read as it is, never fast-forwarded"
        cache: Any = repository.cache
        try:
            if cache is None:
                raise KeyError(aggregate_id)
            cached: Aggregate = cache.get(aggregate_id)
        except KeyError:
            raise NotCached(aggregate_id) from None
        return deepcopy(cached) if repository.deepcopy_from_cache else cached

    def _owner(self, aggregate_id: UUID, kind: type[RefundRequest | ReturnCase]) -> str:
        """Whose request or case this is (to take the account's lock): that never changes, so
        the copy this process knows is as good as the store's."""
        try:
            found: object = self.repository.get(aggregate_id, projector_func=_replay)
        except AggregateNotFoundError:
            found = None
        if not isinstance(found, kind):
            what = "refund request" if kind is RefundRequest else "return case"
            raise NotFound(f"no {what} {aggregate_id}", id=str(aggregate_id))
        return found.username

    def forget(self, ids: set[UUID]) -> None:
        """Drop aggregates from the cache: the next load reads them from the store."""
        cache: Any = self.repository.cache
        if cache is None:
            return
        for aggregate_id in ids:
            try:
                cache.get(aggregate_id, evict=True)
            except KeyError:
                pass

    # -- the use cases as keyword calls: each builds its command and executes it -------------

    def open_account(self, username: str, currency: str, **caller: Unpack[Caller]) -> Outcome:
        return self.execute(OpenAccount(username, currency), **caller)

    def deposit(
        self, username: str, amount: int, reference: str, **caller: Unpack[Caller]
    ) -> Outcome:
        return self.execute(Deposit(username, amount, reference), **caller)

    def purchase(
        self, username: str, order_no: str, amount: int, **caller: Unpack[Caller]
    ) -> Outcome:
        return self.execute(Purchase(username, order_no, amount), **caller)

    def fail_purchase(
        self,
        username: str,
        order_no: str,
        amount: int | None,
        reason: str,
        **caller: Unpack[Caller],
    ) -> Outcome:
        return self.execute(FailPurchase(username, order_no, amount, reason), **caller)

    def request_refund(
        self,
        username: str,
        order_no: str,
        amount: int,
        reason: str,
        **caller: Unpack[Caller],
    ) -> Outcome:
        return self.execute(RequestRefund(username, order_no, amount, reason), **caller)

    def approve_refund(self, request_id: UUID, note: str, **caller: Unpack[Caller]) -> Outcome:
        return self.execute(ApproveRefund(request_id, note), **caller)

    def reject_refund(self, request_id: UUID, reason: str, **caller: Unpack[Caller]) -> Outcome:
        return self.execute(RejectRefund(request_id, reason), **caller)

    def cancel_refund(self, request_id: UUID, reason: str, **caller: Unpack[Caller]) -> Outcome:
        return self.execute(CancelRefund(request_id, reason), **caller)

    def pay_refund(
        self, request_id: UUID, payout_reference: str, **caller: Unpack[Caller]
    ) -> Outcome:
        return self.execute(PayRefund(request_id, payout_reference), **caller)

    def open_return_case(self, case: CaseApplication, **caller: Unpack[Caller]) -> Outcome:
        return self.execute(OpenReturnCase.of(case), **caller)

    def start_supplier_review(self, case_id: UUID, note: str, **caller: Unpack[Caller]) -> Outcome:
        return self.execute(StartSupplierReview(case_id, note), **caller)

    def accept_return_case(
        self,
        case_id: UUID,
        return_by: date,
        return_address: str,
        instructions: str,
        **caller: Unpack[Caller],
    ) -> Outcome:
        command = AcceptReturnCase(case_id, return_by, return_address, instructions)
        return self.execute(command, **caller)

    def reject_return_case(self, case_id: UUID, reason: str, **caller: Unpack[Caller]) -> Outcome:
        return self.execute(RejectReturnCase(case_id, reason), **caller)

    def ship_back(self, case_id: UUID, tracking: str, **caller: Unpack[Caller]) -> Outcome:
        return self.execute(ShipBack(case_id, tracking), **caller)

    def receive_return(
        self,
        case_id: UUID,
        postmark_date: date,
        goods: bool,
        original_packaging: bool,
        acceptance_copy: bool,
        **caller: Unpack[Caller],
    ) -> Outcome:
        command = ReceiveReturn(case_id, postmark_date, goods, original_packaging, acceptance_copy)
        return self.execute(command, **caller)

    def expire_return_case(self, case_id: UUID, note: str, **caller: Unpack[Caller]) -> Outcome:
        return self.execute(ExpireReturnCase(case_id, note), **caller)

    def forward_to_supplier(self, case_id: UUID, note: str, **caller: Unpack[Caller]) -> Outcome:
        return self.execute(ForwardToSupplier(case_id, note), **caller)

    def resolve_return_case(
        self,
        case_id: UUID,
        outcome: str,
        refund_amount: int | None,
        freight_amount: int,
        tracking: str | None,
        **caller: Unpack[Caller],
    ) -> Outcome:
        command = ResolveReturnCase(case_id, outcome, refund_amount, freight_amount, tracking)
        return self.execute(command, **caller)

    def close_return_case(self, case_id: UUID, note: str, **caller: Unpack[Caller]) -> Outcome:
        return self.execute(CloseReturnCase(case_id, note), **caller)

    def cancel_return_case(self, case_id: UUID, reason: str, **caller: Unpack[Caller]) -> Outcome:
        return self.execute(CancelReturnCase(case_id, reason), **caller)

    def add_case_evidence(
        self,
        case_id: UUID,
        goods_photos: list[str],
        package_photos: list[str],
        **caller: Unpack[Caller],
    ) -> Outcome:
        command = AddCaseEvidence(case_id, tuple(goods_photos), tuple(package_photos))
        return self.execute(command, **caller)

    def add_case_note(self, case_id: UUID, text: str, **caller: Unpack[Caller]) -> Outcome:
        return self.execute(AddCaseNote(case_id, text), **caller)
