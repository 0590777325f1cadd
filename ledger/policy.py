"""The shop's return and exchange policy as pure rules (../shared/policy, DOMAIN.md).

Part A — delivery errors, defective or damaged goods: the customer sends photos of the goods and
of the outer package. Part B — quality problems after a while: only while the goods' quality
guarantee period runs, and the shop may refuse goods without quality assurance. Never returned:
goods replaced or changed, goods with parts missing, opened media (software, CD, DVD …).
Recommended suppliers commit to a 30-day full return, counted from the shipping date to the
postmark of the goods coming back.

Each rule answers a refusal reason code (the API returns it) or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

PART_A_KINDS = frozenset({"delivery_error", "defective", "damaged"})
PART_B_KINDS = frozenset({"quality_problem"})
CASE_KINDS = PART_A_KINDS | PART_B_KINDS
FULL_RETURN_DAYS = 30
DEFAULT_UNRESOLVED_AFTER_DAYS = 60


@dataclass(frozen=True)
class Conditions:
    """What CS found about the goods when the customer applied."""

    replaced_or_modified: bool
    parts_missing: bool
    opened_media: bool
    has_quality_assurance: bool


@dataclass(frozen=True)
class Application:
    """A customer's application for a return or exchange, as CS records it."""

    kind: str
    conditions: Conditions
    goods_photos: tuple[str, ...]
    package_photos: tuple[str, ...]
    guarantee_until: date | None


def item_replaced_or_modified(application: Application) -> str | None:
    return "item_replaced_or_modified" if application.conditions.replaced_or_modified else None


def parts_missing(application: Application) -> str | None:
    return "parts_missing" if application.conditions.parts_missing else None


def opened_media(application: Application) -> str | None:
    return "opened_media" if application.conditions.opened_media else None


def missing_evidence(application: Application) -> str | None:
    """Part A needs at least one photo of the goods and one of the outer package."""
    if application.kind not in PART_A_KINDS:
        return None
    if any(p.strip() for p in application.goods_photos) and any(
        p.strip() for p in application.package_photos
    ):
        return None
    return "missing_evidence"


def no_quality_assurance(application: Application) -> str | None:
    """Part B: the shop refuses goods without a quality guarantee."""
    if application.kind not in PART_B_KINDS:
        return None
    if application.conditions.has_quality_assurance and application.guarantee_until is not None:
        return None
    return "no_quality_assurance"


def guarantee_expired(application: Application, today: date) -> str | None:
    """Part B: only while the goods' quality guarantee period runs."""
    if application.kind not in PART_B_KINDS or application.guarantee_until is None:
        return None
    return "guarantee_expired" if today > application.guarantee_until else None


# What each reason means, for the person told (the code stays the policy's).
REFUSAL_WORDS = {
    "item_replaced_or_modified": "the goods were replaced or modified",
    "parts_missing": "parts of the goods are missing",
    "opened_media": "software, CDs, DVDs and similar cannot be returned once opened",
    "no_quality_assurance": "the goods have no quality guarantee",
    "guarantee_expired": "the goods' quality guarantee has expired",
    "missing_evidence": "delivery errors, defective and damaged goods need at least one photo "
    "of the goods and one of the outer package",
    "unknown_order": "the order is not one of the customer's",
}


def refusal_words(application: Application, reason: str) -> str:
    """Why the policy refuses, in words; a guarantee said to exist but not dated is named as
    the missing field it is."""
    if (
        reason == "no_quality_assurance"
        and application.conditions.has_quality_assurance
        and application.guarantee_until is None
    ):
        return (
            "guarantee_until is missing: a quality problem needs the date the goods' quality "
            "guarantee runs until"
        )
    return REFUSAL_WORDS.get(reason, reason)


def refusal_reason(application: Application, today: date) -> str | None:
    """The first rule the application breaks, in the policy's order; None when eligible."""
    for reason in (
        item_replaced_or_modified(application),
        parts_missing(application),
        opened_media(application),
        missing_evidence(application),
        no_quality_assurance(application),
        guarantee_expired(application, today),
    ):
        if reason is not None:
            return reason
    return None


# -- deadlines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FullReturn:
    """The recommended suppliers' 30-day full return: days used from shipping to the postmark of
    the goods coming back (or to today while they have not come back)."""

    days_used: int
    holds: bool
    last_postmark: date


def thirty_day_full_return(shipped_on: date, postmark: date | None, today: date) -> FullReturn:
    until = postmark if postmark is not None else today
    days_used = (until - shipped_on).days
    last = date.fromordinal(shipped_on.toordinal() + FULL_RETURN_DAYS)
    return FullReturn(days_used=days_used, holds=days_used <= FULL_RETURN_DAYS, last_postmark=last)


def is_late(postmark: date, return_by: date) -> bool:
    """Goods posted after the supplier's last accepted postmark date are late."""
    return postmark > return_by


def past_return_by(state: str, return_by: date | None, today: date) -> bool:
    """Accepted, nothing sent back yet, and the last postmark date has passed. Goods already in
    transit are not overdue: their postmark decides, once they arrive."""
    return state == "accepted" and return_by is not None and today > return_by


def unresolved_too_long(state: str, received_on: date | None, today: date, after_days: int) -> bool:
    """Goods received but the case not resolved after ``after_days`` days."""
    return (
        state in ("received", "with_supplier")
        and received_on is not None
        and (today - received_on).days > after_days
    )
