"""The bodies the API reads and writes, as pydantic models; /openapi.json is generated from them.

Request bodies are strict: an unknown field, a string or a float or a boolean where an integer
belongs is refused (422 ``validation_error``), never coerced. Amounts are integers of minor
units in 1..10^12. The domain checks the rest (user names, references, ISO 4217 membership) and
answers the same ``validation_error``. Query strings are parsed in lax mode (everything in a URL
is text) but unknown parameters are refused, so a misspelt ``?at_postion=`` never silently
answers "now".
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic.config import JsonDict

from ledger.money import ISO_4217, MAX_AMOUNT_MINOR
from ledger.policy import CASE_KINDS
from ledger.return_case import OUTCOMES, STEP_FROM
from projections.outbox import MESSAGE_TYPES

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_POSITION = 2**63 - 1

Amount = Annotated[
    StrictInt,
    Field(gt=0, le=MAX_AMOUNT_MINOR,
          description="An integer count of minor units (cents), written without a fraction "
                      "or exponent: 100.0 is refused."),
]
Currency = Annotated[
    StrictStr,
    Field(pattern=r"^[A-Z]{3}$", description="An ISO 4217 code, e.g. USD.",
          json_schema_extra={"enum": sorted(ISO_4217)}),
]
# What Python's str.strip() removes (the domain trims names and texts), spelt out because \s
# means other characters in Python, in JSON Schema (ECMA 262) and in pydantic's regex engine.
_STRIPPED = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Text that is not blank: one character the trimming keeps.
NOT_BLANK_PATTERN = rf"[^{_STRIPPED}]"
# A user name as given over HTTP: ASCII letters in either case, digits, '.', '_', '-', with
# spaces around it if you like; the domain trims and lower-cases it (Alice is alice). The
# domain alone would also take a few non-ASCII letters that lower-case to ASCII (the Kelvin
# sign): the API takes exactly what its document says.
USERNAME_PATTERN = rf"^[{_STRIPPED}]*[A-Za-z0-9._-]{{3,64}}[{_STRIPPED}]*$"
USERNAME_DESCRIPTION = (
    "The shop's login: 3-64 of A-Z, a-z, 0-9, '.', '_', '-', trimmed and lower-cased "
    "(' Alice ' is alice)."
)
# A page cursor is the ``next`` of a previous page: digits, always below 2^63.
CURSOR_PATTERN = r"^[0-9]{1,18}$"
# The Idempotency-Key header: 1-255 printable ASCII (HTTP drops spaces around a header value).
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$"
# ledger.identity.reference: printable ASCII, no space at either end.
REFERENCE_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]{0,126}[\x21-\x7e])?$"
Username = Annotated[
    StrictStr, Field(pattern=USERNAME_PATTERN, description=USERNAME_DESCRIPTION)
]
Reference = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=128,
        pattern=REFERENCE_PATTERN,
        description="1-128 printable ASCII characters without surrounding spaces.",
    ),
]
Text = Annotated[StrictStr, Field(max_length=2000, description="Free text, trimmed.")]
NonBlankText = Annotated[
    StrictStr, Field(min_length=1, max_length=2000, pattern=NOT_BLANK_PATTERN)
]
Status = Literal["requested", "approved", "rejected", "cancelled", "paid"]
CaseKind = Literal["delivery_error", "defective", "damaged", "quality_problem"]
CaseState = Literal[
    "opened", "supplier_review", "accepted", "rejected", "goods_in_transit", "received", "late",
    "expired", "with_supplier", "resolved", "closed", "cancelled", "refused",
]
CaseAction = Literal[
    "supplier-review", "accept", "reject", "ship-back", "receive", "expire", "forward",
    "resolve", "close", "cancel", "notes", "evidence",
]
StateFilter = Literal[
    "opened", "supplier_review", "accepted", "rejected", "goods_in_transit", "received", "late",
    "expired", "with_supplier", "resolved", "closed", "cancelled", "refused", "open",
]
CaseOutcome = Literal["refund", "exchange", "repair"]
# The domain's lists, spelt out for the document; they must not drift apart.
if (set(get_args(CaseKind)) != CASE_KINDS or set(get_args(CaseOutcome)) != OUTCOMES
        or set(get_args(CaseAction)) != set(STEP_FROM)):
    raise RuntimeError("api.models' case kinds or outcomes differ from the domain's")
MAX_CASE_ITEMS = 100
MAX_PHOTOS = 20
MAX_QUANTITY = 1_000_000
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# The dates a case can have: none before the shop's first day on any calendar, 2000-01-01 (so
# 0001-01-01 is a typing slip, refused). Only a lower bound: how far ahead a date may be is
# relative to the shop's clock, which the domain knows (shipped_on and postmark_date not after
# today, return_by not before it) and a model does not. Written as the document's pattern.
FIRST_DAY = "2000-01-01"
DAY_PATTERN = r"^[2-9][0-9]{3}-"
_DAY = re.compile(DAY_PATTERN)


def _iso_date(value: Any) -> Any:
    # JSON has no dates: a date is YYYY-MM-DD text, never a number or a time.
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError("must be a date written YYYY-MM-DD (text, not a number or a time)")
    if not _DAY.match(value):
        raise ValueError(f"must be {FIRST_DAY} or later: no earlier date is one of the shop's")
    return value


Day = Annotated[
    date, BeforeValidator(_iso_date),
    Field(strict=False, description=f"A date, YYYY-MM-DD, from {FIRST_DAY} on.",
          json_schema_extra={"pattern": DAY_PATTERN}),
]


# -- requests -----------------------------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class OpenAccount(Body):
    username: Username
    currency: Currency


class Deposit(Body):
    amount: Amount
    reference: Reference = Field(description="The payment reference, unique per account.")


class Purchase(Body):
    order_no: Reference
    amount: Amount


class PurchaseFailure(Body):
    amount: Amount | None = Field(
        default=None, description="Default: all that is still uncredited for the order."
    )
    reason: Text


class RefundRequestCreate(Body):
    order_no: Reference = Field(description="One of the account's orders or deposit references.")
    amount: Amount
    reason: Text = ""


class Approve(Body):
    note: Text = ""


class Reject(Body):
    reason: Text


class Cancel(Body):
    reason: Text


class Pay(Body):
    payout_reference: Reference


class CaseItem(Body):
    sku: Reference | None = None
    description: Annotated[
        StrictStr, Field(min_length=1, max_length=500, pattern=NOT_BLANK_PATTERN)
    ]
    quantity: Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY)]


PhotoRefs = Annotated[
    list[Reference],
    Field(max_length=MAX_PHOTOS, description="References to stored photos."),
]


class Evidence(Body):
    goods_photos: PhotoRefs = Field(default_factory=list)
    package_photos: PhotoRefs = Field(default_factory=list)


class Conditions(Body):
    """What CS found about the goods: each one is stated, none is assumed."""

    replaced_or_modified: StrictBool
    parts_missing: StrictBool
    opened_media: StrictBool = Field(description="Software, CD, DVD and similar, once opened.")
    has_quality_assurance: StrictBool


class CaseOpen(Body):
    username: Username
    order_no: Reference = Field(description="One of the account's orders.")
    kind: CaseKind
    shipped_on: Day
    items: list[CaseItem] = Field(min_length=1, max_length=MAX_CASE_ITEMS)
    evidence: Evidence = Field(
        default_factory=Evidence,
        description="Delivery errors, defective and damaged goods need at least one photo of "
        "the goods and one of the outer package.",
    )
    guarantee_until: Day | None = Field(
        default=None, description="The end of the goods' quality guarantee (quality problems)."
    )
    conditions: Conditions
    note: Text = ""


class StepNote(Body):
    note: Text = ""


class Accept(Body):
    return_by: Day = Field(description="The last postmark date the supplier accepts.")
    return_address: Annotated[
        StrictStr, Field(min_length=1, max_length=2000, pattern=NOT_BLANK_PATTERN)
    ]
    instructions: Text = ""


class ShipBack(Body):
    tracking: Reference


class Receive(Body):
    postmark_date: Day
    goods: StrictBool
    original_packaging: StrictBool
    acceptance_copy: StrictBool = Field(description="A copy of the acceptance notice came too.")


# A refund may name its amount; an exchange or a repair names its outbound tracking and no
# refund amount (ledger.commands.ResolveReturnCase): stated in the document too.
# A freight waiver waives some freight: with a reason, freight_amount is at least 1.
_RESOLVE_RULES: JsonDict = {
    "allOf": [
        {
            "anyOf": [
                {"properties": {"outcome": {"const": "refund"}}},
                {
                    "properties": {
                        "outcome": {"enum": ["exchange", "repair"]},
                        "refund_amount": {"type": "null"},
                        "tracking": {"type": "string"},
                    },
                    "required": ["tracking"],
                },
            ]
        },
        {
            "anyOf": [
                {"not": {"required": ["freight_waiver_reason"]}},
                {"properties": {"freight_waiver_reason": {"type": "null"}}},
                {"properties": {"freight_amount": {"minimum": 1}}},
            ]
        },
    ]
}


class Resolve(Body):
    model_config = ConfigDict(json_schema_extra=_RESOLVE_RULES)

    outcome: CaseOutcome
    refund_amount: Amount | None = Field(
        default=None,
        description="A refund's amount (default: all the order has left to credit back); "
        "none for an exchange or repair.",
    )
    freight_amount: Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT_MINOR)] = Field(
        description="Freight both ways, charged to the customer's account (0: none)."
    )
    tracking: Reference | None = Field(
        default=None, description="The outbound tracking of an exchange or repair."
    )
    freight_waiver_reason: NonBlankText | None = Field(
        default=None,
        description="Waive the freight_amount for this reason: it is recorded on the case "
        "(a freight_waived step) and not charged (e.g. it exceeds what the customer has "
        "available, which would refuse the resolution).",
    )


class EvidenceAdd(Body):
    # At least one photo reference, in either list: stated in the document too.
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["goods_photos"], "properties": {"goods_photos": {"minItems": 1}}},
        {"required": ["package_photos"], "properties": {"package_photos": {"minItems": 1}}},
    ]})

    goods_photos: PhotoRefs = Field(default_factory=list)
    package_photos: PhotoRefs = Field(default_factory=list)


class CaseNoteAdd(Body):
    text: NonBlankText
    for_customer: bool = Field(
        default=False, description="Meant for the customer: sent to them as a "
        "`return_case.note` message (webhooks); otherwise kept inside the shop.")


# -- query strings ------------------------------------------------------------------------------


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


_WHOLE_NUMBER = re.compile(r"-?[0-9]+")


def _plain_digits(value: Any) -> Any:
    # Python's int() (and so pydantic's lax mode) also reads "1_0", "+5", " 5 " and "5.0": a
    # number in a URL is written in the digits 0-9 only (a minus is left to the bound to refuse).
    if isinstance(value, str) and not _WHOLE_NUMBER.fullmatch(value):
        raise ValueError("must be a whole number written with the digits 0-9 only")
    return value


# An integer of a query string, and one that may be left out. (The optional one is not
# ``QueryInt | None``: pydantic then writes its bounds into the document as "ge" and "le",
# which no client reads, rather than "minimum" and "maximum".)
QueryInt = Annotated[int, BeforeValidator(_plain_digits)]
OptionalQueryInt = Annotated[int | None, BeforeValidator(_plain_digits)]


class PageQuery(Query):
    limit: QueryInt = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    after: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="The `next` of the previous page."
    )


StatusFilter = Literal["requested", "approved", "rejected", "cancelled", "paid", "open"]


class RefundRequestQuery(PageQuery):
    status: StatusFilter | None = Field(
        default=None, description="A status, or open: requested or approved (still held)."
    )
    username: Username | None = None
    currency: Currency | None = Field(default=None, description="Only this currency's.")


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)


def _rfc3339(value: Any) -> Any:
    # Lax datetime parsing would also take "1700000000" as a Unix time: RFC 3339 text only.
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 time with its offset, e.g. 2026-11-26T09:00:00Z")
    if isinstance(value, str):
        _in_range(value)
    return value


# The times the ledger can have seen: none before 1971 nor at the far end of the calendar (where
# converting to UTC overflows). The rule is the written year, 1971-9998, so the document can
# state it as a pattern, and whatever the offset such a time converts to UTC.
MOMENT_PATTERN = r"^(197[1-9]|19[89][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"
_MOMENT = re.compile(MOMENT_PATTERN)


def _in_range(value: str) -> None:
    if not _MOMENT.match(value):
        raise ValueError("must be a time in the years 1971 to 9998")


Moment = Annotated[AwareDatetime, BeforeValidator(_rfc3339),
                   Field(json_schema_extra={"pattern": MOMENT_PATTERN})]


class BalanceQuery(Query):
    as_of: Moment | None = Field(
        default=None, description="RFC 3339 time: the balances as they stood then."
    )
    at_position: OptionalQueryInt = Field(
        default=None, ge=0, le=MAX_POSITION, description="The balances after this log position."
    )

    @model_validator(mode="after")
    def _one_point_in_time(self) -> BalanceQuery:
        if self.as_of is not None and self.at_position is not None:
            raise ValueError("give as_of or at_position, not both")
        return self


class NoQuery(Query):
    pass


def _true_or_false(value: Any) -> Any:
    if isinstance(value, str) and value not in ("true", "false"):
        raise ValueError("must be true or false")
    return value


DEFAULT_CASE_STEPS = 100


class CaseViewQuery(Query):
    """A case's steps come a page at a time (oldest first)."""

    steps_limit: QueryInt = Field(default=DEFAULT_CASE_STEPS, ge=1, le=MAX_PAGE,
                             description="How many steps the view gives at most.")
    steps_after: str | None = Field(
        default=None, pattern=CURSOR_PATTERN,
        description="The `steps_next` of the previous view: the steps after it.")


class CaseQuery(PageQuery):
    state: StateFilter | None = Field(
        default=None, description="A state, or open: every case still in progress."
    )
    username: Username | None = None
    overdue: Annotated[bool, BeforeValidator(_true_or_false)] | None = Field(
        default=None, description="true: only cases past a deadline; false: only the others."
    )


CHART_ACCOUNT_PATTERN = r"^[a-z]+:[a-z0-9._-]+$"
CHART_ACCOUNT_DESCRIPTION = (
    "A chart account: customer:<user name>, clearing:deposits, "
    "clearing:payouts, orders:paid, suppliers:receivable or revenue:freight."
)


class AccountListQuery(Query):
    limit: QueryInt = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    after: str | None = Field(
        default=None, pattern=r"^[a-z0-9._-]{3,64}$",
        description="The `next` of the previous page (the last user name it showed).",
    )
    prefix: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="Only user names that begin so (case does not matter).",
    )
    currency: Currency | None = Field(default=None, description="Only accounts in it.")
    with_balance: Annotated[bool, BeforeValidator(_true_or_false)] | None = Field(
        default=None,
        description="true: only accounts with something available; false: only empty ones.",
    )


ChartAccount = Annotated[
    str,
    Field(max_length=80, pattern=CHART_ACCOUNT_PATTERN, description=CHART_ACCOUNT_DESCRIPTION),
]


class EventQuery(PageQuery):
    stream: str | None = Field(
        default=None, max_length=64,
        pattern=r"^([0-9a-fA-F-]{32,36}|[A-Za-z0-9._-]{3,64})$",
        description="Only this stream's events: an aggregate's id, or a user name (their "
        "account's events).",
    )
    type: str | None = Field(
        default=None, max_length=100, pattern=r"^[A-Za-z0-9_.:]{1,100}$",
        description="Only events of this name (purchase_paid, as history and the journal "
        "name them) or topic (ledger:Account.PurchasePaid).",
    )
    since: Moment | None = Field(
        default=None, description="RFC 3339 time: only events recorded at or after it."
    )
    until: Moment | None = Field(
        default=None, description="RFC 3339 time: only events recorded before it."
    )


class JournalQuery(PageQuery):
    account: ChartAccount | None = None
    currency: Currency | None = Field(default=None, description="Only entries in it.")
    since: Moment | None = Field(
        default=None, description="RFC 3339 time: only entries recorded at or after it."
    )
    until: Moment | None = Field(
        default=None, description="RFC 3339 time: only entries recorded before it."
    )


class ReconciliationQuery(Query):
    currency: Currency | None = Field(
        default=None, description="An ISO 4217 code, e.g. USD (default: every currency in use)."
    )
    at_position: OptionalQueryInt = Field(
        default=None, ge=0, le=MAX_POSITION,
        description="Reconcile as the log stood after this position (default: now).",
    )
    as_of: Moment | None = Field(
        default=None, description="RFC 3339 time: reconcile as the ledger stood then."
    )

    @model_validator(mode="after")
    def _one_point_in_time(self) -> ReconciliationQuery:
        if self.as_of is not None and self.at_position is not None:
            raise ValueError("give as_of or at_position, not both")
        return self


class UnmatchedQuery(Query):
    currency: Currency | None = Field(
        default=None,
        description="Only this currency's (default: every currency; a section's sums are then "
        "null, and by_currency gives each currency's).",
    )
    idle_days: OptionalQueryInt = Field(
        default=None, ge=1, le=3650,
        description="A balance is idle when its account's last event is older than this many "
        "days on the shop's clock (default 90). Not with idle_before.",
    )
    idle_before: Moment | None = Field(
        default=None,
        description="RFC 3339 time: a balance is idle when its account's last event is before "
        "it (instead of idle_days; both is 422).",
    )
    limit: QueryInt = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE,
                       description="The most items listed in each section.")

    @model_validator(mode="after")
    def _one_cut_off(self) -> UnmatchedQuery:
        if self.idle_days is not None and self.idle_before is not None:
            raise ValueError("give idle_days or idle_before, not both")
        return self


class ExportQuery(Query):
    currency: Currency | None = Field(default=None, description="Only this currency's entries.")


# -- answers ------------------------------------------------------------------------------------


class Answer(BaseModel):
    # additionalProperties: false in the document: it lists every field served.
    model_config = ConfigDict(extra="forbid")


class Account(Answer):
    username: str
    currency: str
    posted: int
    held: int
    available: int
    refundable: int
    opened_at: datetime
    version: int


class AccountPage(Answer):
    items: list[Account]
    next: str | None = Field(description="Give it as ?after= for the next page; null at the end.")


class OpenedAccount(Account):
    position: int = Field(description="Log position of the last event the write recorded.")


class AccountWritten(Answer):
    account: Account
    position: int


class Balance(Answer):
    username: str
    currency: str
    posted: int
    held: int
    available: int
    refundable: int
    position: int = Field(description="Log position of the account's last event at that point.")
    at: datetime = Field(description="When that event was recorded.")


class HistoryItem(Answer):
    position: int
    type: str
    amount: int = Field(description="The event's amount, unsigned (see signed_amount).")
    signed_amount: int = Field(
        description="How the event moved the posted balance: + in (deposit, failure credit, "
        "return refund), - out (purchase, freight, payout), 0 for holds and their release."
    )
    available_change: int = Field(
        description="How it moved the available balance (a hold takes it down, a release "
        "gives it back, a payout of a held amount leaves it)."
    )
    posted_after: int
    available_after: int
    at: datetime
    actor: str
    correlation_id: str = Field(description="The request id of the request that wrote it.")
    data: dict[str, Any] = Field(description="The event's own fields.")


class HistoryPage(Answer):
    items: list[HistoryItem]
    next: str | None


class CaseBrief(Answer):
    id: UUID
    kind: CaseKind
    state: CaseState
    opened_on: date


class Order(Answer):
    order_no: str
    paid: int
    credited_back: int
    refundable: int = Field(description="The order's refundable: paid - credited back (also "
                            "order_refundable).")
    order_refundable: int = Field(description="paid - credited back: what return refunds "
                                  "and failure credits may still give back on this order.")
    cases: list[str] = Field(description="The ids of the order's return cases.")
    case_details: list[CaseBrief] = Field(description="The same cases: kind, state, opened.")


class OrderPage(Answer):
    items: list[Order]
    next: str | None


class Refundable(Answer):
    username: str
    currency: str
    available: int
    held: int
    refundable: int = Field(description="What a balance-refund application may ask for now "
                            "(= available; also balance_refundable). Not the orders' own.")
    balance_refundable: int = Field(description="What a balance-refund application may ask "
                                    "for now: the available balance.")
    orders: list[Order] = Field(description="A page of the account's orders (?limit, ?after).")
    next: str | None


class RefundRequestWritten(Answer):
    id: UUID
    username: str
    currency: str
    order_no: str
    amount: int
    reason: str = Field(description="The customer's reason, given with the request.")
    status: Status
    decision_reason: str | None = Field(
        default=None,
        description="Why the request was rejected or cancelled (the reason sent with that "
        "step); null while it is neither.",
    )
    position: int
    approvers: list[str] = Field(
        default_factory=list,
        description="The people who approved the request so far (four eyes: none of them may "
        "pay it).",
    )


class RefundRequestItem(Answer):
    id: UUID
    username: str
    currency: str
    order_no: str
    amount: int
    reason: str
    status: Status
    requested_at: datetime
    updated_at: datetime
    age_days: int = Field(description="Whole days since it was requested, on the shop's clock.")


class RefundStep(Answer):
    status: Status
    at: datetime
    actor: str
    position: int
    data: dict[str, Any]


class RefundRequestDetail(RefundRequestItem):
    steps: list[RefundStep]
    messages: list[OutboxMessage] = Field(
        default_factory=list, description="What the customer was told, and when (webhooks).")


class RefundTotal(Answer):
    currency: str
    count: int = Field(description="How many requests the filters keep, on every page.")
    amount: int = Field(description="Their amounts summed, in minor units.")
    oldest_requested_at: datetime = Field(description="When the oldest of them was requested.")


class RefundRequestPage(Answer):
    items: list[RefundRequestItem]
    next: str | None
    totals: list[RefundTotal] = Field(
        description="Per currency, what the filters keep over all pages: count and sum."
    )


class CaseWritten(Answer):
    id: UUID
    username: str
    order_no: str
    kind: CaseKind
    state: CaseState
    opened_on: date
    shipped_on: date
    return_by: date | None
    position: int = Field(description="Log position of the last event the write recorded.")
    refund_amount: int | None = Field(
        default=None, description="resolve only: the refund credited to the account."
    )
    freight_amount: int | None = Field(
        default=None, description="resolve only: the freight charged to the account."
    )
    freight_waived: int | None = Field(
        default=None, description="resolve only: the freight waived (not charged)."
    )
    account: Account | None = Field(
        default=None, description="resolve only: the account's balances after it."
    )


class ThirtyDayGuarantee(Answer):
    """The recommended suppliers' 30-day full return, from shipping to the return's postmark."""

    holds: bool
    days_used: int
    last_postmark: date


class CaseItemAnswer(Answer):
    sku: str | None
    description: str
    quantity: int


class CaseSummary(Answer):
    id: UUID
    username: str
    currency: str
    order_no: str
    kind: CaseKind
    state: CaseState
    opened_at: datetime
    opened_on: date
    shipped_on: date
    guarantee_until: date | None
    return_by: date | None
    postmark_date: date | None
    outcome: CaseOutcome | None
    refund_amount: int
    freight_amount: int
    items: list[CaseItemAnswer]
    days_open: int
    days_since_shipping: int
    thirty_day_guarantee: ThirtyDayGuarantee
    overdue: bool = Field(description="Past a deadline (see overdue_reasons), not merely slow.")
    overdue_reasons: list[Literal["past_return_by", "unresolved_after_receipt"]]
    allowed_actions: list[CaseAction] = Field(
        description="The steps CS may take on the case today (POST /v1/return-cases/{id}/"
        "<action>), in lifecycle order."
    )
    refusal_reason: str | None = Field(
        default=None, description="refused only: the policy's reason code (its words are in "
        "the refused step's data)."
    )


class CaseStep(Answer):
    step: str = Field(description="What happened: opened, accepted, note_added, ...")
    state: CaseState = Field(description="The case's state after the step.")
    on: date = Field(description="The shop's date of the step.")
    at: datetime
    actor: str
    position: int
    data: dict[str, Any] = Field(description="The step's own fields.")


class CaseEvidence(Answer):
    """A case's photos so far: each sending holds at most 20 of a kind, the case all of them."""

    goods_photos: list[str] = Field(description="References to photos of the goods.")
    package_photos: list[str] = Field(description="References to photos of the package.")


class CaseDetail(CaseSummary):
    steps: list[CaseStep]
    messages: list[OutboxMessage] = Field(
        default_factory=list, description="What the customer was told, and when (webhooks).")
    evidence: CaseEvidence = Field(description="Every photo reference of the case: those given "
                                   "at opening and those added since (evidence_added steps).")
    steps_next: str | None = Field(
        default=None, description="Give it as ?steps_after= for the next steps; null when "
        "these are the last.")


class CaseCount(Answer):
    state: CaseState
    count: int = Field(description="How many cases in this state the filters keep, on every "
                       "page.")


class CasePage(Answer):
    items: list[CaseSummary]
    next: str | None
    counts: list[CaseCount] = Field(
        description="Per state, how many cases the filters keep over all pages (finance "
        "counts refusals with ?state=refused)."
    )


class LogEvent(Answer):
    position: int
    stream: UUID = Field(description="The id of the aggregate the event belongs to.")
    version: int
    type: str = Field(description="The event's topic, e.g. ledger:Account.DepositReceived.")
    name: str = Field(description="The event's name as history and the journal give it, "
                      "e.g. deposit_received.")
    aggregate: str = Field(description="What the stream is: account, refund_request or "
                           "return_case.")
    at: datetime
    actor: str | None
    data: dict[str, Any] = Field(description="The event's own fields.")
    leaf_index: int | None = Field(
        default=None, description="The event's leaf index in the log's Merkle tree (null "
        "until the notary reaches it).")
    leaf_hash: str | None = Field(
        default=None, description="SHA-256(0x00 ‖ leaf bytes), base64 (api/README.md).")


class EventPage(Answer):
    items: list[LogEvent]
    next: str | None


class Posting(Answer):
    account: str
    amount: int = Field(description="Minor units: a debit is positive, a credit negative.")


class JournalEntry(Answer):
    position: int
    type: str
    event_id: str
    username: str
    order_no: str | None
    at: datetime
    currency: str
    postings: list[Posting] = Field(description="They sum to zero.")
    payment_reference: str | None = Field(
        default=None, description="A deposit's payment reference (as the bank statement "
        "names it).")
    payout_reference: str | None = Field(
        default=None, description="A balance refund paid out: the payout's reference.")
    case_id: str | None = Field(
        default=None, description="A return refund or freight: the return case.")
    request_id: str | None = Field(
        default=None, description="A balance refund paid out: its refund request.")
    actor: str | None = Field(
        default=None, description="Who did it: role:person (role and a token fingerprint for "
        "a shared role token), as the event log says.")


class JournalPage(Answer):
    items: list[JournalEntry]
    next: str | None


class Totals(Answer):
    deposits: int
    purchases: int
    failure_credits: int
    return_refunds: int
    freight: int
    payouts: int
    held: int = Field(description="Held by open balance-refund requests.")


class CustomerBalances(Answer):
    posted: int
    held: int
    available: int


class Reconciliation(Answer):
    currency: str
    position: int
    totals: Totals
    customer_balances: CustomerBalances = Field(description="Summed from the accounts.")
    journal_customer_balances: int = Field(description="The same sum, from the journal.")
    trial_balance: int
    invariants: dict[str, bool] = Field(
        description="Whether each invariant holds, by name: available_never_negative, "
        "customer_balances_equal_flows, journal_equals_account_balances, trial_balance_zero, "
        "refunds_within_paid, and any the ledger adds."
    )
    ok: bool = Field(description="Every invariant holds.")
    chart_balances: dict[str, int] = Field(
        description="Each chart account's balance at the position, debits positive and "
        "credits negative (clearing:deposits, orders:paid, revenue:freight, ...; the customers' "
        "accounts summed as customer:*). They sum to the trial balance."
    )


class ReconciliationReport(Answer):
    """Every currency in use, reconciled at one position (no ?currency= given)."""

    position: int
    currencies: list[Reconciliation] = Field(description="One per currency in use, by code.")
    ok: bool = Field(description="Every invariant holds in every currency.")


class ReconciliationAnswer(RootModel[Reconciliation | ReconciliationReport]):
    """One currency's reconciliation (?currency=), or every currency's."""


class NeverSpent(Answer):
    username: str
    currency: str
    deposited: int
    available: int
    first_deposit_at: datetime


class IdleBalance(Answer):
    username: str
    currency: str
    available: int
    last_event_at: datetime


class WaitingRequest(Answer):
    id: UUID
    username: str
    currency: str
    order_no: str
    amount: int
    requested_at: datetime
    updated_at: datetime


SECTION_COUNT = "How many it finds, all of them (items lists at most ?limit)."
SECTION_ITEMS = "The first ?limit of them, oldest first."
SECTION_ONE_CURRENCY = (" Given when the report keeps to one currency (?currency=); null "
                        "without it, since minor units of two currencies do not add up: see "
                        "by_currency.")


class SectionSum(Answer):
    """One currency's part of a section."""

    currency: str
    count: int = Field(description="How many of the section's are in this currency.")
    amount: int = Field(description="Their amount summed (as the section's amount says), in "
                        "minor units of this currency.")


class NeverSpentSum(SectionSum):
    deposited: int = Field(description="What they deposited, summed, in minor units.")


class NeverSpentSection(Answer):
    count: int = Field(description=SECTION_COUNT)
    amount: int | None = Field(description="The money still unmatched: their available "
                               "balances (posted less held) summed, over all of them, in minor "
                               "units. Not what they deposited (see deposited): payouts and money "
                               "held for refund requests are not in it." + SECTION_ONE_CURRENCY)
    deposited: int | None = Field(description="What they deposited, all of them summed, in "
                                  "minor units: amount is less when part was paid out or is "
                                  "held." + SECTION_ONE_CURRENCY)
    by_currency: list[NeverSpentSum] = Field(description="Count and sums per currency.")
    items: list[NeverSpent] = Field(description=SECTION_ITEMS + " (by first_deposit_at)")


class IdleSection(Answer):
    count: int = Field(description=SECTION_COUNT)
    amount: int | None = Field(description="Their available balances (posted less held) "
                               "summed, over all of them, in minor units." + SECTION_ONE_CURRENCY)
    by_currency: list[SectionSum] = Field(description="Count and sum per currency.")
    items: list[IdleBalance] = Field(description=SECTION_ITEMS + " (by last_event_at)")


class RequestSection(Answer):
    count: int = Field(description=SECTION_COUNT)
    amount: int | None = Field(description="The requests' amounts summed (the money they "
                               "hold), over all of them, in minor units." + SECTION_ONE_CURRENCY)
    by_currency: list[SectionSum] = Field(description="Count and sum per currency.")
    items: list[WaitingRequest] = Field(description=SECTION_ITEMS + " (by requested_at)")


class Unmatched(Answer):
    """Money that stands out (DOMAIN.md): oldest first in each section."""

    currency: str | None
    idle_before: datetime = Field(description="Balances untouched since before this are idle.")
    deposits_never_spent: NeverSpentSection = Field(
        description="Accounts that received deposits and never paid for anything."
    )
    idle_balances: IdleSection = Field(
        description="Accounts with money available and no event since idle_before."
    )
    refunds_waiting: RequestSection = Field(
        description="Balance-refund requests waiting for finance's decision (requested)."
    )
    payouts_not_paid: RequestSection = Field(description="Requests approved, not paid out.")


class ChainDamage(Answer):
    position: int = Field(description="The log position.")
    what: Literal["unsealed", "content", "order", "missing", "digest", "checkpoint", "leaf"] = (
        Field(description="unsealed: an event with no seal (written behind the service's back); "
              "content: the seal does not match the event; order: the seal does not follow the "
              "one before it (events removed or moved); missing: a sealed event is gone; "
              "digest: a digest kept outside the database does not match; checkpoint: a signed "
              "checkpoint does not match the log up to here (or its signature does not verify); "
              "leaf: the stored leaf hash does not match the event.")
    )


class VerifyReport(Answer):
    ok: bool
    events_checked: int
    first_bad_position: int | None
    problems: list[str]
    damage: list[ChainDamage] = Field(
        description="Every damaged position of the chain, in log order, and what is wrong there."
    )
    unchecked_signatures: int = Field(
        0, description="Checkpoints checked against the log with no verifier key: their roots "
        "were checked, their signatures not (0: every signature was checked)."
    )


class ChainDigest(Answer):
    position: int = Field(description="The last position bound into the hash chain (0: none).")
    hash: str = Field(description="The chain's link at that position (HMAC-SHA-256, hex).")


class Health(Answer):
    status: Literal["ok"]


class Ready(Answer):
    status: Literal["ready"]
    log_position: int
    read_models: dict[str, int] = Field(description="Position each read model has reached.")
    lag: int = Field(description="How many positions the furthest-behind read model lags.")
    lag_seconds: float | None = Field(
        default=None, description="How long ago the oldest event the furthest-behind read model "
        "has not applied was recorded, in seconds (0: current; under a steady stream of writes "
        "the read models are rarely at the head at any one moment, but never far behind it).")
    privilege: str | None = Field(
        default=None, description="Said when the service's login could rewrite history (a "
        "superuser, or the tables' owner): see ledger migrate --grant-to.")


class FieldError(Answer):
    field: str
    message: str


class Problem(Answer):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = None
    errors: list[FieldError] | None = None
    reason: str | None = None
    case_id: UUID | None = Field(
        default=None, description="case_refused by the policy: the refused case recorded."
    )


class Me(Answer):
    """Who the bearer is (``GET /v1/me``)."""

    person: str = Field(description="The person: a member of staff, the identity provider's "
                        "subject, or the role of a shared role token.")
    role: str = Field(description="The role they act in.")
    actor: str = Field(description="What events record of them: role:person, or role and a "
                       "token fingerprint for a shared role token.")


# -- the outbox and its webhooks (projections.outbox, api.webhooks) ------------------------------

OutboxStatus = Literal["waiting", "delivered", "failed"]


class OutboxQuery(PageQuery):
    status: OutboxStatus | None = Field(
        default=None, description="waiting: a delivery still to send or to try again; "
        "failed: a delivery parked past its age; delivered: every subscriber had it.")


class OutboxDelivery(Answer):
    subscriber: str = Field(description="The receiving URL (without credentials or query).")
    status: OutboxStatus
    attempts: int = Field(description="POSTs made so far.")
    delivered_at: datetime | None = Field(description="When a 2xx answer came.")
    last_error: str | None = Field(description="What the last failed try met, in words.")


class WebhookMessage(Answer):
    """A message as a webhook POSTs it (``projections.outbox.body``)."""

    id: UUID = Field(description="Derived from the event: the same on every delivery "
                     "(Ledger-Delivery-Id).")
    # The outbox's own list is the one source of the types (api/README.md lists the same).
    type: str = Field(description="What the message tells (api/README.md lists the types).",
                      json_schema_extra={"enum": list(MESSAGE_TYPES)})
    position: int = Field(description="The event's log position.")
    created_at: datetime = Field(description="When the event was recorded.")
    username: str
    currency: str
    amount: int | None = Field(description="The money the message is about, in minor units.")
    case_id: UUID | None
    request_id: UUID | None
    order_no: str | None
    customer_message: str = Field(description="Words the shop's mailer can send as they are.")
    details: dict[str, Any] = Field(description="The type's other facts (return_address, "
                                    "return_by, refund_amount, freight_amount, reason ...).")


class OutboxMessage(WebhookMessage):
    """A message as the outbox shows it: with what became of each delivery."""

    deliveries: list[OutboxDelivery] = Field(description="One per subscriber tried.")


class OutboxPage(Answer):
    items: list[OutboxMessage]
    next: str | None


# The case and request views name the outbox's message before it is defined.
CaseDetail.model_rebuild()
RefundRequestDetail.model_rebuild()


# -- the auditor's kit (issue 10) ----------------------------------------------------------------


class ProofQuery(Query):
    position: QueryInt = Field(ge=1, le=2**62, description="The event's log position.")
    tree_size: OptionalQueryInt = Field(
        default=None, ge=1, le=2**62,
        description="The size of the tree to prove it in (default: the latest checkpoint's).")


class ConsistencyQuery(Query):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: QueryInt = Field(alias="from", ge=1, le=2**62, description="The older tree size.")
    to: QueryInt = Field(ge=1, le=2**62, description="The newer tree size.")


class InclusionProof(Answer):
    leaf_index: int = Field(description="The event's index among the tree's leaves (from 0).")
    tree_size: int = Field(description="The size of the tree the proof is in.")
    leaf_hash: str = Field(description="SHA-256(0x00 ‖ leaf bytes), base64.")
    path: list[str] = Field(description="RFC 9162 inclusion proof, leaf to root, base64.")


class ConsistencyProof(Answer):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: int = Field(alias="from", description="The older tree size.")
    to: int = Field(description="The newer tree size.")
    path: list[str] = Field(description="RFC 9162 consistency proof, base64.")
