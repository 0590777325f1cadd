"""Commands: each normalises its fields once, refuses a bad one naming the field, names the lock
of its account, and fingerprints the request as the ledger always has (stored keys depend on
the fingerprints, so each is pinned to the name and parameters it had before commands were
values)."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields
from datetime import date
from typing import Any
from uuid import UUID

import pytest

from ledger.account import account_id
from ledger.commands import (
    AcceptReturnCase,
    AddCaseEvidence,
    AddCaseNote,
    ApproveRefund,
    CancelRefund,
    CancelReturnCase,
    CaseApplication,
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
    RejectRefund,
    RejectReturnCase,
    RequestRefund,
    ResolveReturnCase,
    ShipBack,
    StartSupplierReview,
)
from ledger.errors import InvalidInput
from ledger.idempotency import fingerprint

ID = UUID("00000000-0000-4000-8000-000000000001")
TODAY = date(2026, 3, 10)
ITEMS = [{"sku": "SKU-7", "description": "desk lamp", "quantity": 1}]


def application(**changes: Any) -> CaseApplication:
    fields_: dict[str, Any] = {
        "username": "ann",
        "order_no": "ORD-1",
        "kind": "damaged",
        "shipped_on": date(2026, 3, 1),
        "items": ITEMS,
        "goods_photos": ["photo://goods-1"],
        "package_photos": ["photo://box-1"],
        "replaced_or_modified": False,
        "parts_missing": False,
        "opened_media": False,
        "has_quality_assurance": True,
        "guarantee_until": None,
        "note": "customer wrote in",
    }
    return CaseApplication(**{**fields_, **changes})


# Each command, spelled with the space and case a caller may send, beside the name and the
# parameters the ledger fingerprinted for that same request before commands were values.
FINGERPRINTED: list[tuple[Command, str, dict[str, Any]]] = [
    (OpenAccount(" ANN ", "USD"), "open_account", {"username": "ann", "currency": "USD"}),
    (
        Deposit(" ANN ", 100, "PAY-1"),
        "deposit",
        {"username": "ann", "amount": 100, "reference": "PAY-1"},
    ),
    (
        Purchase(" ANN ", "ORD-1", 100),
        "purchase",
        {"username": "ann", "order_no": "ORD-1", "amount": 100},
    ),
    (
        FailPurchase(" ANN ", "ORD-1", None, " out of stock "),
        "fail_purchase",
        {"username": "ann", "order_no": "ORD-1", "amount": None, "reason": "out of stock"},
    ),
    (
        RequestRefund(" ANN ", "ORD-1", 100, " moving away "),
        "request_refund",
        {"username": "ann", "order_no": "ORD-1", "amount": 100, "reason": "moving away"},
    ),
    (ApproveRefund(ID, " ok "), "approve_refund", {"id": str(ID), "note": "ok"}),
    (RejectRefund(ID, " no "), "reject_refund", {"id": str(ID), "reason": "no"}),
    (CancelRefund(ID, " no "), "cancel_refund", {"id": str(ID), "reason": "no"}),
    (PayRefund(ID, "WIRE-1"), "pay_refund", {"id": str(ID), "payout_reference": "WIRE-1"}),
    (
        OpenReturnCase.of(application(username=" ANN ")),
        "open_return_case",
        {
            "username": "ann",
            "order_no": "ORD-1",
            "kind": "damaged",
            "shipped_on": "2026-03-01",
            "items": ITEMS,
            "evidence": {"goods_photos": ["photo://goods-1"], "package_photos": ["photo://box-1"]},
            "conditions": {
                "replaced_or_modified": False,
                "parts_missing": False,
                "opened_media": False,
                "has_quality_assurance": True,
            },
            "guarantee_until": None,
            "note": "customer wrote in",
        },
    ),
    (
        StartSupplierReview(ID, " sent "),
        "return_case.supplier_review",
        {"id": str(ID), "note": "sent"},
    ),
    (
        AcceptReturnCase(ID, date(2026, 3, 20), " Dock 4 ", " keep the box "),
        "return_case.accept",
        {
            "id": str(ID),
            "return_by": "2026-03-20",
            "return_address": "Dock 4",
            "instructions": "keep the box",
        },
    ),
    (RejectReturnCase(ID, " late "), "return_case.reject", {"id": str(ID), "reason": "late"}),
    (ShipBack(ID, "T-1"), "return_case.ship_back", {"id": str(ID), "tracking": "T-1"}),
    (
        ReceiveReturn(ID, date(2026, 3, 9), True, False, True),
        "return_case.receive",
        {
            "id": str(ID),
            "postmark_date": "2026-03-09",
            "goods": True,
            "original_packaging": False,
            "acceptance_copy": True,
        },
    ),
    (ExpireReturnCase(ID, " gone "), "return_case.expire", {"id": str(ID), "note": "gone"}),
    (ForwardToSupplier(ID, " fwd "), "return_case.forward", {"id": str(ID), "note": "fwd"}),
    (
        ResolveReturnCase(ID, "refund", 2_000, 300, None),
        "resolve",
        {
            "id": str(ID),
            "outcome": "refund",
            "refund_amount": 2_000,
            "freight_amount": 300,
            "tracking": "",
        },
    ),
    (
        ResolveReturnCase(ID, "exchange", None, 0, "OUT-1"),
        "resolve",
        {
            "id": str(ID),
            "outcome": "exchange",
            "refund_amount": None,
            "freight_amount": 0,
            "tracking": "OUT-1",
        },
    ),
    (CloseReturnCase(ID, " done "), "return_case.close", {"id": str(ID), "note": "done"}),
    (CancelReturnCase(ID, " dup "), "return_case.cancel", {"id": str(ID), "reason": "dup"}),
    (AddCaseNote(ID, " called back "), "return_case.note", {"id": str(ID), "text": "called back"}),
    (
        AddCaseEvidence(ID, ("photo://goods-2",), ()),
        "return_case.evidence",
        {"id": str(ID), "goods_photos": ["photo://goods-2"], "package_photos": []},
    ),
]


@pytest.mark.parametrize(
    ("command", "name", "params"), FINGERPRINTED, ids=[f"{n}-{i}" for i, (_, n, _) in
                                                       enumerate(FINGERPRINTED)]
)
def test_a_command_fingerprints_the_request_as_the_ledger_always_has(
    command: Command, name: str, params: dict[str, Any]
) -> None:
    assert command.name == name
    assert command.fingerprint_params() == params
    assert command.fingerprint() == fingerprint(name, params)


def test_every_command_of_the_ledger_is_pinned_here() -> None:
    pinned = {type(command) for command, _, _ in FINGERPRINTED}
    assert pinned == set(_concrete(Command))


def _concrete(base: type[Command]) -> list[type[Command]]:
    found: list[type[Command]] = []
    for sub in base.__subclasses__():
        if "name" in vars(sub):
            found.append(sub)
        found.extend(_concrete(sub))
    return found


# -- normalised once ----------------------------------------------------------------------------


def test_a_command_trims_and_lower_cases_the_user_name() -> None:
    assert Deposit("  Ann.Smith ", 100, "PAY-1").username == "ann.smith"


def test_the_same_request_spelled_differently_has_one_fingerprint() -> None:
    # Given two spellings of one deposit
    spelled = Deposit(" ANN ", 100, "PAY-1")
    plain = Deposit("ann", 100, "PAY-1")

    # Then they are one command, with one fingerprint
    assert spelled == plain
    assert spelled.fingerprint() == plain.fingerprint()


def test_another_request_has_another_fingerprint() -> None:
    base = Deposit("ann", 100, "PAY-1").fingerprint()

    assert Deposit("ann", 101, "PAY-1").fingerprint() != base
    assert Deposit("ann", 100, "PAY-2").fingerprint() != base
    assert Deposit("bob", 100, "PAY-1").fingerprint() != base
    assert Purchase("ann", "PAY-1", 100).fingerprint() != base


def test_texts_are_trimmed() -> None:
    assert RequestRefund("ann", "ORD-1", 100, "  moving away\n").reason == "moving away"
    assert ApproveRefund(ID, "\tchecked ").note == "checked"
    assert AcceptReturnCase(ID, TODAY, " Dock 4 ", " keep ").return_address == "Dock 4"
    assert AddCaseNote(ID, " called back ").text == "called back"


def test_references_are_kept_as_given() -> None:
    assert Deposit("ann", 1, "pay 2026/1").reference == "pay 2026/1"
    assert Purchase("ann", "ord #12/3", 1).order_no == "ord #12/3"


def test_a_case_records_its_note_trimmed_and_fingerprints_it_as_given() -> None:
    # The note has always been fingerprinted as it came: keys stored so still match a retry.
    command = OpenReturnCase.of(application(note="  customer wrote in "))

    assert command.note == "customer wrote in"
    assert command.fingerprint_params()["note"] == "  customer wrote in "


def test_a_case_application_is_checked_only_when_it_becomes_a_command() -> None:
    unchecked = application(username="no such name!", kind="lost_in_post")

    with pytest.raises(InvalidInput) as refused:
        OpenReturnCase.of(unchecked)

    assert refused.value.field == "username"


def test_a_resolution_by_refund_tracks_nothing_and_an_exchange_names_its_tracking() -> None:
    assert ResolveReturnCase(ID, "refund", None, 0, None).outbound_tracking == ""
    assert ResolveReturnCase(ID, "repair", None, 0, "OUT-1").outbound_tracking == "OUT-1"


def test_a_command_is_frozen() -> None:
    command = Deposit("ann", 100, "PAY-1")

    with pytest.raises(FrozenInstanceError):
        command.amount = 5  # type: ignore[misc]


def test_a_command_has_the_fields_of_its_keyword_method_in_their_order() -> None:
    assert [f.name for f in fields(FailPurchase)] == ["username", "order_no", "amount", "reason"]
    assert [f.name for f in fields(ReceiveReturn)] == [
        "case_id", "postmark_date", "goods", "original_packaging", "acceptance_copy",
    ]


# -- refused, naming the field ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: OpenAccount("a b", "USD"), "username"),
        (lambda: OpenAccount("ann", "usd"), "currency"),
        (lambda: Deposit("ann", 0, "PAY-1"), "amount"),
        (lambda: Deposit("ann", True, "PAY-1"), "amount"),
        (lambda: Deposit("ann", 100, " PAY-1"), "reference"),
        (lambda: Purchase("ann", "", 100), "order_no"),
        (lambda: Purchase("ann", "ORD-1", 10**12 + 1), "amount"),
        (lambda: FailPurchase("ann", "ORD-1", -1, "r"), "amount"),
        (lambda: FailPurchase("ann", "ORD-1", None, "r" * 2001), "reason"),
        (lambda: RequestRefund("ann", "ORD-1", 100, "r" * 2001), "reason"),
        (lambda: ApproveRefund(ID, "n" * 2001), "note"),
        (lambda: RejectRefund(ID, "r" * 2001), "reason"),
        (lambda: PayRefund(ID, ""), "payout_reference"),
        (lambda: OpenReturnCase.of(application(order_no=" ORD-1")), "order_no"),
        (lambda: OpenReturnCase.of(application(note="n" * 2001)), "note"),
        (lambda: OpenReturnCase.of(application(kind="lost_in_post")), "kind"),
        (lambda: AcceptReturnCase(ID, TODAY, "  ", ""), "return_address"),
        (lambda: AcceptReturnCase(ID, TODAY, "Dock 4", "i" * 2001), "instructions"),
        (lambda: ShipBack(ID, "T 1 "), "tracking"),
        (lambda: ExpireReturnCase(ID, "n" * 2001), "note"),
        (lambda: ResolveReturnCase(ID, "swap", None, 0, None), "outcome"),
        (lambda: ResolveReturnCase(ID, "refund", None, 1.5, None), "freight_amount"),
        (lambda: ResolveReturnCase(ID, "refund", None, -1, None), "freight_amount"),
        (lambda: ResolveReturnCase(ID, "refund", 0, 0, None), "refund_amount"),
        (lambda: ResolveReturnCase(ID, "exchange", 100, 0, "OUT-1"), "refund_amount"),
        (lambda: ResolveReturnCase(ID, "repair", None, 0, ""), "tracking"),
        (lambda: AddCaseNote(ID, "   "), "text"),
    ],
)
def test_a_field_that_breaks_a_rule_is_refused_naming_it(make: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        make()

    assert refused.value.field == field


def test_the_first_field_in_the_keyword_method_s_order_is_the_one_named() -> None:
    with pytest.raises(InvalidInput) as refused:
        Deposit("a b", 0, " bad ")

    assert refused.value.field == "username"


@pytest.mark.parametrize(
    ("command", "field", "detail"),
    [
        (
            OpenReturnCase.of(application(shipped_on=date(2026, 3, 11))),
            "shipped_on",
            "shipped_on cannot be in the future: the goods left on or before today "
            "(2026-03-10)",
        ),
        (
            AcceptReturnCase(ID, date(2026, 3, 9), "Dock 4", ""),
            "return_by",
            "return_by cannot be in the past: give today (2026-03-10) or a later date",
        ),
        (
            ReceiveReturn(ID, date(2026, 3, 11), True, True, True),
            "postmark_date",
            "postmark_date cannot be in the future: give today (2026-03-10) or an earlier date",
        ),
    ],
)
def test_a_date_the_shop_s_day_rules_out_is_refused_on_that_day(
    command: Command, field: str, detail: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        command.check_on(TODAY)

    assert (refused.value.field, refused.value.detail) == (field, detail)


def test_the_shop_s_day_itself_is_allowed() -> None:
    OpenReturnCase.of(application(shipped_on=TODAY)).check_on(TODAY)
    AcceptReturnCase(ID, TODAY, "Dock 4", "").check_on(TODAY)
    ReceiveReturn(ID, TODAY, True, True, True).check_on(TODAY)


# -- the lock -----------------------------------------------------------------------------------


def test_a_command_on_an_account_names_its_account_s_lock() -> None:
    assert Deposit(" ANN ", 100, "PAY-1").lock_key == account_id("ann")
    assert OpenReturnCase.of(application(username="Ann")).lock_key == account_id("ann")


def test_a_step_on_a_request_or_a_case_leaves_the_lock_to_the_application() -> None:
    # whose request or case it is, only the ledger knows
    assert PayRefund(ID, "WIRE-1").lock_key is None
    assert CloseReturnCase(ID, "").lock_key is None
