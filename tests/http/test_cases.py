"""Return and exchange cases over HTTP: opening (or the policy's refusal), every step, the
resolution's money, the case view and its list, and what a step refused changes (nothing).

The server keeps the shop's calendar by the wall clock, which a test cannot move. Cases whose
deadlines have passed are made by writing their early steps into the same store through the
application with a clock set in the past ("backdated"), then taken on over HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest

from ledger.application import CaseApplication, LedgerApplication
from ledger.identity import Actor
from projections.store import open_application
from tests.conftest import store_settings
from tests.http.conftest import (
    Api,
    FromToday,
    Server,
    assert_problem,
    case_body,
    dated,
    days_from_today,
    today,
)

# Every field API.md lists for GET /v1/return-cases/{id}, and what this service adds.
VIEW_FIELDS = {"id", "username", "order_no", "kind", "state", "opened_at", "shipped_on",
               "return_by", "days_open", "days_since_shipping", "thirty_day_guarantee",
               "overdue", "steps"}
ADDED_FIELDS = {"currency", "opened_on", "guarantee_until", "postmark_date", "outcome",
                "refund_amount", "freight_amount", "items", "overdue_reasons",
                "allowed_actions", "evidence", "refusal_reason"}
BACKDATED_ACTOR = Actor("cs:backdate", "test-backdated")


@contextmanager
def backdated(server: Server, day: date) -> Iterator[tuple[LedgerApplication, Callable[[date],
                                                                                        None]]]:
    """The ledger application on the server's store, its clock on ``day`` (movable)."""
    now = [datetime.combine(day, time(10), tzinfo=UTC)]

    def move(to: date) -> None:
        now[0] = datetime.combine(to, time(10), tzinfo=UTC)

    settings = store_settings(server.database_url, pool_size=1)
    app = open_application(settings, clock=lambda: now[0])
    try:
        yield app, move
    finally:
        app.close()


def _accepted_long_ago(server: Server, username: str, order_no: str = "ORD-1") -> str:
    """A case opened 40 days ago (shipped 50 days ago), accepted with return_by 20 days ago."""
    t = today()
    with backdated(server, t - timedelta(days=40)) as (app, _):
        opened = app.open_return_case(
            CaseApplication(username, order_no, "damaged", t - timedelta(days=50),
                            [{"sku": None, "description": "a vase", "quantity": 1}],
                            ["goods.jpg"], ["box.jpg"], False, False, False, False),
            actor=BACKDATED_ACTOR,
        )
        case_id = uuid.UUID(opened.body["id"])
        app.start_supplier_review(case_id, "", actor=BACKDATED_ACTOR)
        app.accept_return_case(case_id, t - timedelta(days=20), "Supplier Ltd", "",
                               actor=BACKDATED_ACTOR)
    return str(case_id)


# -- opening -------------------------------------------------------------------------------------


async def test_a_case_opens_for_an_order_of_the_customer(api: Api) -> None:
    username = await api.customer_with_order()
    reply = await api.post("/v1/return-cases", case_body(username), role="cs")
    assert reply.status == 201, reply.text
    case = reply.json
    assert (case["state"], case["username"], case["order_no"], case["kind"]) == (
        "opened", username, "ORD-1", "defective")
    assert case["opened_on"] == today().isoformat()
    assert case["return_by"] is None
    assert isinstance(case["position"], int)
    uuid.UUID(case["id"])


async def test_the_user_name_of_a_case_is_normalised(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(f"  {username.upper()} ")
    assert case["username"] == username


def _refusals() -> list[tuple[str, dict[str, Any]]]:
    fine = case_body("x")["conditions"]
    guarantee = {"kind": "quality_problem", "evidence": {}}
    return [
        ("item_replaced_or_modified", {"conditions": {**fine, "replaced_or_modified": True}}),
        ("parts_missing", {"conditions": {**fine, "parts_missing": True}}),
        ("opened_media", {"conditions": {**fine, "opened_media": True}}),
        ("missing_evidence", {"evidence": {"goods_photos": ["g.jpg"], "package_photos": []}}),
        ("missing_evidence", {"evidence": {}}),
        ("no_quality_assurance", {**guarantee, "guarantee_until": FromToday(100),
                                  "conditions": {**fine, "has_quality_assurance": False}}),
        ("no_quality_assurance", guarantee),  # no guarantee_until: nothing to run
        ("guarantee_expired", {**guarantee, "guarantee_until": FromToday(-1)}),
        ("unknown_order", {"order_no": "NOT-BOUGHT"}),
    ]


@pytest.mark.parametrize(("reason", "changes"), _refusals(),
                         ids=[f"{r}-{n}" for n, (r, _) in enumerate(_refusals())])
async def test_an_opening_the_policy_refuses_is_422_case_refused_with_its_reason(
    api: Api, reason: str, changes: dict[str, Any]
) -> None:
    username = await api.customer_with_order()
    before = await api.state(username)
    reply = await api.post("/v1/return-cases", case_body(username, **dated(changes)), role="cs")
    problem = assert_problem(reply, 422, "case_refused")
    assert problem["reason"] == reason
    listed = await api.get(f"/v1/return-cases?username={username}", role="cs")
    if reason == "unknown_order":  # no order of the customer's: no case is recorded
        assert "case_id" not in problem
        assert listed.json["items"] == []
    else:  # the refused case is recorded, listed as refused with its reason
        assert [(c["id"], c["state"], c["refusal_reason"]) for c in listed.json["items"]] == [
            (problem["case_id"], "refused", reason)]
    assert await api.state(username) == before  # no money moved


async def test_a_quality_problem_within_its_guarantee_opens(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username, kind="quality_problem", evidence={},
                               guarantee_until=days_from_today(30))
    assert case["kind"] == "quality_problem"
    assert (await api.case(case["id"]))["guarantee_until"] == days_from_today(30)


async def test_a_case_for_an_account_that_does_not_exist_is_not_found(api: Api) -> None:
    reply = await api.post("/v1/return-cases", case_body("nobody-at-all"), role="cs")
    assert_problem(reply, 404, "not_found")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"shipped_on": "2026/11/01"}, "shipped_on"),
        ({"shipped_on": 20261101}, "shipped_on"),
        ({"shipped_on": "2026-11-01T00:00:00Z"}, "shipped_on"),
        ({"shipped_on": FromToday(1)}, "shipped_on"),  # not shipped yet
        ({"kind": "lost_parcel"}, "kind"),
        ({"items": []}, "items"),
        ({"items": [{"description": "a kettle", "quantity": 0}]}, "items.0.quantity"),
        ({"items": [{"description": " ", "quantity": 1}]}, "items.0.description"),
        ({"items": [{"description": "a kettle", "quantity": 1, "colour": "red"}]},
         "items.0.colour"),
        ({"conditions": {"parts_missing": False}}, "conditions.replaced_or_modified"),
        ({"conditions": {"replaced_or_modified": "no", "parts_missing": False,
                         "opened_media": False, "has_quality_assurance": True}},
         "conditions.replaced_or_modified"),
        ({"evidence": {"goods_photos": ["a"] * 21}}, "evidence.goods_photos"),
        ({"guarantee_until": "someday"}, "guarantee_until"),
        ({"priority": "high"}, "priority"),
    ],
)
async def test_an_opening_that_is_not_valid_is_refused_and_changes_nothing(
    api: Api, changes: dict[str, Any], field: str
) -> None:
    username = await api.customer_with_order()
    reply = await api.post("/v1/return-cases", case_body(username, **dated(changes)), role="cs")
    problem = assert_problem(reply, 422, "validation_error")
    assert field in [e["field"] for e in problem["errors"]], problem
    listed = await api.get(f"/v1/return-cases?username={username}", role="cs")
    assert listed.json["items"] == []


async def test_opening_again_with_the_same_idempotency_key_answers_the_first_case(
    api: Api,
) -> None:
    username = await api.customer_with_order()
    headers = {"Idempotency-Key": f"open-{uuid.uuid4()}"}
    first = await api.post("/v1/return-cases", case_body(username), role="cs", headers=headers)
    again = await api.post("/v1/return-cases", case_body(username), role="cs", headers=headers)
    assert (first.status, again.status) == (201, 201)
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await api.post("/v1/return-cases", case_body(username, note="other"), role="cs",
                           headers=headers)
    assert_problem(other, 422, "idempotency_key_reused")
    listed = await api.get(f"/v1/return-cases?username={username}", role="cs")
    assert [c["id"] for c in listed.json["items"]] == [first.json["id"]]


# -- the lifecycle -------------------------------------------------------------------------------


async def test_a_case_walks_its_lifecycle_to_a_refund_that_moves_the_account(api: Api) -> None:
    # given a customer who paid 3,000 for an order and a case on it, with the supplier
    username = await api.customer_with_order(deposit=10_000, paid=3_000)
    case = await api.open_case(username)
    await api.walk(case["id"], "with_supplier")
    before = await api.state(username)

    # when the case is resolved by a refund of 2,500, the customer bearing 400 of freight
    resolved = await api.step(case["id"], "resolve",
                              {"outcome": "refund", "refund_amount": 2_500, "freight_amount": 400})

    # then the account's posted balance moved by 2,100, by two money events of the case
    assert resolved["state"] == "resolved"
    account, history = await api.state(username)
    assert account["posted"] == before[0]["posted"] + 2_100
    assert account["available"] == before[0]["available"] + 2_100
    credit, freight = history[-2:]
    assert (credit["type"], credit["amount"]) == ("return_refund_credited", 2_500)
    assert (freight["type"], freight["amount"]) == ("freight_charged", 400)
    assert credit["data"]["case_id"] == freight["data"]["case_id"] == case["id"]
    assert credit["position"] < freight["position"] < resolved["position"]

    # and the case goes on: a note, then closed, every step in its history
    note = await api.post(f"/v1/return-cases/{case['id']}/notes",
                          {"text": "refund sent to the balance"}, role="cs")
    assert note.status == 201, note.text
    closed = await api.step(case["id"], "close", {"note": "done"})
    assert closed["state"] == "closed"
    view = await api.case(case["id"], role="auditor")
    assert [(s["step"], s["state"]) for s in view["steps"]] == [
        ("opened", "opened"),
        ("supplier_review_started", "supplier_review"),
        ("accepted", "accepted"),
        ("shipped_back", "goods_in_transit"),
        ("received", "received"),
        ("forwarded", "with_supplier"),
        ("resolved", "resolved"),
        ("note_added", "resolved"),
        ("closed", "closed"),
    ]
    assert (view["outcome"], view["refund_amount"], view["freight_amount"]) == ("refund", 2_500,
                                                                                400)
    assert view["postmark_date"] == today().isoformat()
    received = view["steps"][4]
    assert received["data"]["missing"] == ["original_packaging"]  # recorded, not ignored
    assert all(s["actor"].startswith("cs:") for s in view["steps"])
    assert [s["position"] for s in view["steps"]] == sorted(s["position"] for s in view["steps"])


async def test_a_refund_beyond_what_the_order_has_left_is_refused_and_changes_nothing(
    api: Api,
) -> None:
    username = await api.customer_with_order(paid=3_000)
    case = await api.open_case(username)
    await api.walk(case["id"], "with_supplier")
    before = await api.state(username)
    reply = await api.post(f"/v1/return-cases/{case['id']}/resolve",
                           {"outcome": "refund", "refund_amount": 3_001, "freight_amount": 0},
                           role="cs")
    assert_problem(reply, 422, "over_refundable")
    assert await api.state(username) == before
    view = await api.case(case["id"])
    assert (view["state"], view["refund_amount"]) == ("with_supplier", 0)


async def test_a_refund_without_an_amount_credits_what_the_order_has_left(api: Api) -> None:
    # given an order of 3,000 of which a failure already credited 1,000 back
    username = await api.customer_with_order(paid=3_000)
    failed = await api.post(f"/v1/accounts/{username}/purchases/ORD-1/failure",
                            {"amount": 1_000, "reason": "one item out of stock"})
    assert failed.status == 201, failed.text
    case = await api.open_case(username)
    await api.walk(case["id"], "with_supplier")
    posted = (await api.account(username))["posted"]

    resolved = await api.step(case["id"], "resolve", {"outcome": "refund", "freight_amount": 0})

    assert resolved["state"] == "resolved"
    assert (await api.account(username))["posted"] == posted + 2_000
    orders = (await api.get(f"/v1/accounts/{username}/orders", role="cs")).json["items"]
    assert (orders[0]["credited_back"], orders[0]["refundable"]) == (3_000, 0)


async def test_an_exchange_charges_only_freight_and_names_its_tracking(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    await api.walk(case["id"], "with_supplier")
    posted = (await api.account(username))["posted"]
    untracked = await api.post(f"/v1/return-cases/{case['id']}/resolve",
                               {"outcome": "exchange", "freight_amount": 300}, role="cs")
    assert_problem(untracked, 422, "validation_error")
    with_refund = await api.post(f"/v1/return-cases/{case['id']}/resolve",
                                 {"outcome": "exchange", "freight_amount": 300,
                                  "refund_amount": 5, "tracking": "OUT-1"}, role="cs")
    assert_problem(with_refund, 422, "validation_error")
    resolved = await api.step(case["id"], "resolve",
                              {"outcome": "exchange", "freight_amount": 300, "tracking": "OUT-1"})
    assert resolved["state"] == "resolved"
    assert (await api.account(username))["posted"] == posted - 300


async def test_freight_beyond_the_available_balance_is_refused(api: Api) -> None:
    username = await api.customer_with_order(deposit=3_000, paid=3_000)
    case = await api.open_case(username)
    await api.walk(case["id"], "with_supplier")
    before = await api.state(username)
    reply = await api.post(f"/v1/return-cases/{case['id']}/resolve",
                           {"outcome": "repair", "freight_amount": 1, "tracking": "OUT-2"},
                           role="cs")
    assert_problem(reply, 422, "insufficient_funds")
    assert await api.state(username) == before


async def test_the_supplier_may_reject_a_case(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    await api.step(case["id"], "supplier-review")
    rejected = await api.step(case["id"], "reject", {"reason": "damage not covered"})
    assert rejected["state"] == "rejected"
    again = await api.post(f"/v1/return-cases/{case['id']}/accept",
                           {"return_by": days_from_today(3), "return_address": "x"}, role="cs")
    assert_problem(again, 409, "invalid_transition")


async def test_a_step_the_state_does_not_allow_is_409_invalid_transition(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    for step, body in [("ship-back", {"tracking": "T"}), ("forward", {}), ("close", {}),
                       ("resolve", {"outcome": "refund", "freight_amount": 0}),
                       ("receive", {"postmark_date": days_from_today(0), "goods": True,
                                    "original_packaging": True, "acceptance_copy": True}),
                       ("expire", {})]:
        reply = await api.post(f"/v1/return-cases/{case['id']}/{step}", body, role="cs")
        assert_problem(reply, 409, "invalid_transition")
    view = await api.case(case["id"])
    assert view["state"] == "opened"
    assert len(view["steps"]) == 1


async def test_a_case_cannot_expire_before_its_return_by(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    await api.walk(case["id"], "accepted")
    reply = await api.post(f"/v1/return-cases/{case['id']}/expire", {}, role="cs")
    assert_problem(reply, 409, "invalid_transition")


async def test_an_open_case_may_be_cancelled_and_a_cancelled_one_takes_no_step_but_notes(
    api: Api,
) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    await api.walk(case["id"], "goods_in_transit")
    cancelled = await api.step(case["id"], "cancel", {"reason": "customer keeps the goods"})
    assert cancelled["state"] == "cancelled"
    for step, body in [("cancel", {"reason": "again"}), ("forward", {})]:
        reply = await api.post(f"/v1/return-cases/{case['id']}/{step}", body, role="cs")
        assert_problem(reply, 409, "invalid_transition")
    # a note is history the customer is told: it is taken in every state (issue 12)
    told = await api.post(f"/v1/return-cases/{case['id']}/notes", {"text": "customer told"},
                          role="cs")
    assert told.status == 201, told.text


async def test_a_step_replayed_with_its_idempotency_key_happens_once(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    headers = {"Idempotency-Key": f"review-{uuid.uuid4()}"}
    path = f"/v1/return-cases/{case['id']}/supplier-review"
    first = await api.post(path, {"note": "asked"}, role="cs", headers=headers)
    again = await api.post(path, {"note": "asked"}, role="cs", headers=headers)
    assert (first.status, again.status) == (200, 200)
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [s["step"] for s in (await api.case(case["id"]))["steps"]] == [
        "opened", "supplier_review_started"]


async def test_a_case_that_does_not_exist_is_not_found(api: Api) -> None:
    missing = "7b0c3c8e-0000-4000-8000-0000000000c1"
    assert_problem(await api.get(f"/v1/return-cases/{missing}", role="cs"), 404, "not_found")
    assert_problem(await api.get("/v1/return-cases/not-a-uuid", role="cs"), 404, "not_found")
    reply = await api.post(f"/v1/return-cases/{missing}/supplier-review", {}, role="cs")
    assert_problem(reply, 404, "not_found")
    reply = await api.post(f"/v1/return-cases/{missing}/notes", {"text": "x"}, role="cs")
    assert_problem(reply, 404, "not_found")


@pytest.mark.parametrize(("field", "day"), [
    ("shipped_on", "0001-01-01"), ("shipped_on", "1999-12-31"),
    ("guarantee_until", "0001-01-01"),
])
async def test_a_date_before_2000_is_refused_in_words_and_opens_nothing(
    api: Api, field: str, day: str
) -> None:
    username = await api.customer_with_order()
    reply = await api.post("/v1/return-cases", case_body(username, **{field: day}), role="cs")
    problem = assert_problem(reply, 422, "validation_error")
    assert problem["errors"] == [{
        "field": field,
        "message": f"{field} must be 2000-01-01 or later: no earlier date is one of the shop's"}]
    listed = await api.get(f"/v1/return-cases?username={username}", role="cs")
    assert listed.json["items"] == []


async def test_a_case_shipped_on_the_first_day_of_2000_opens(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username, shipped_on="2000-01-01")
    assert case["shipped_on"] == "2000-01-01"


async def test_a_postmark_before_2000_is_refused_and_the_case_stays_where_it_was(
    api: Api,
) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    await api.walk(case["id"], "goods_in_transit")
    reply = await api.post(f"/v1/return-cases/{case['id']}/receive",
                           {"postmark_date": "0001-01-01", "goods": True,
                            "original_packaging": True, "acceptance_copy": True}, role="cs")
    problem = assert_problem(reply, 422, "validation_error")
    # Said by the edge's rule for every date, before the domain's (no postmark before shipping)
    assert problem["errors"] == [{
        "field": "postmark_date",
        "message": "postmark_date must be 2000-01-01 or later: no earlier date is one of the "
                   "shop's"}]
    assert (await api.case(case["id"]))["state"] == "goods_in_transit"


@pytest.mark.parametrize(
    ("step", "body"),
    [
        ("accept", {"return_by": FromToday(5)}),  # no return address
        ("accept", {"return_by": FromToday(-1), "return_address": "x"}),  # in the past
        ("accept", {"return_by": "next week", "return_address": "x"}),
        ("ship-back", {"tracking": ""}),
        ("receive", {"postmark_date": FromToday(0), "goods": "yes",
                     "original_packaging": True, "acceptance_copy": True}),
        ("receive", {"postmark_date": FromToday(1), "goods": True,
                     "original_packaging": True, "acceptance_copy": True}),  # in the future
        ("resolve", {"outcome": "refund", "freight_amount": -1}),
        ("resolve", {"outcome": "refund", "freight_amount": 1.5}),
        ("resolve", {"outcome": "store_credit", "freight_amount": 0}),
        ("notes", {"text": " "}),
        ("reject", {}),
        ("cancel", {"reason": 7}),
    ],
)
async def test_a_step_with_a_body_that_is_not_valid_is_422(
    api: Api, step: str, body: dict[str, Any]
) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    await api.walk(case["id"], "supplier_review")
    reply = await api.post(f"/v1/return-cases/{case['id']}/{step}", dated(body), role="cs")
    assert_problem(reply, 422, "validation_error")
    assert (await api.case(case["id"]))["state"] == "supplier_review"


# -- the view and the list -----------------------------------------------------------------------


async def test_the_case_view_has_every_field_the_contract_lists(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    await api.walk(case["id"], "accepted")
    for role in ("cs", "finance", "auditor"):
        view = await api.case(case["id"], role=role)
        assert set(view) == VIEW_FIELDS | ADDED_FIELDS | {"steps_next", "messages"}
    assert (view["id"], view["username"], view["order_no"]) == (case["id"], username, "ORD-1")
    assert (view["kind"], view["state"], view["currency"]) == ("defective", "accepted", "USD")
    assert view["shipped_on"] == days_from_today(-10)
    assert view["return_by"] == days_from_today(14)
    assert datetime.fromisoformat(view["opened_at"]).tzinfo is not None
    assert isinstance(view["days_open"], int) and view["days_open"] >= 0
    assert isinstance(view["days_since_shipping"], int) and view["days_since_shipping"] >= 10
    guarantee = view["thirty_day_guarantee"]
    assert set(guarantee) == {"holds", "days_used", "last_postmark"}
    assert isinstance(guarantee["holds"], bool) and isinstance(guarantee["days_used"], int)
    date.fromisoformat(guarantee["last_postmark"])
    assert view["overdue"] is False and view["overdue_reasons"] == []
    assert view["items"] == [{"sku": "SKU-1", "description": "an electric kettle", "quantity": 1}]
    assert set(view["steps"][0]) == {"step", "state", "on", "at", "actor", "position", "data"}
    assert view["steps"][0]["data"]["note"] == "the kettle leaks"


async def test_cases_are_listed_by_state_and_user_name_a_page_at_a_time(api: Api) -> None:
    username = await api.customer_with_order()
    opened = await api.open_case(username)
    reviewed = await api.open_case(username)
    await api.step(reviewed["id"], "supplier-review")
    other = await api.customer_with_order()
    await api.open_case(other)

    mine = await api.get(f"/v1/return-cases?username={username}", role="finance")
    assert [c["id"] for c in mine.json["items"]] == [opened["id"], reviewed["id"]]
    assert set(mine.json["items"][0]) == VIEW_FIELDS - {"steps"} | ADDED_FIELDS - {"evidence"}
    by_state = await api.get(f"/v1/return-cases?username={username}&state=supplier_review",
                             role="auditor")
    assert [c["id"] for c in by_state.json["items"]] == [reviewed["id"]]
    first = await api.get(f"/v1/return-cases?username={username}&limit=1", role="cs")
    assert [c["id"] for c in first.json["items"]] == [opened["id"]]
    rest = await api.get(
        f"/v1/return-cases?username={username}&limit=1&after={first.json['next']}", role="cs")
    assert [c["id"] for c in rest.json["items"]] == [reviewed["id"]]
    assert rest.json["next"] is None
    everyone = await api.get("/v1/return-cases?state=opened&limit=1000", role="cs")
    assert all(c["state"] == "opened" for c in everyone.json["items"])
    assert {username, other} <= {c["username"] for c in everyone.json["items"]}


@pytest.mark.parametrize("query", ["state=lost", "overdue=yes", "overdue=1", "username=x",
                                   "limit=0", "after=abc", "colour=red"])
async def test_a_bad_case_list_query_is_refused(api: Api, query: str) -> None:
    reply = await api.get(f"/v1/return-cases?{query}", role="cs")
    assert_problem(reply, 422, "validation_error")


async def test_the_cases_of_an_order_are_listed_with_it(api: Api) -> None:
    username = await api.customer_with_order(order_no="ORD-7")
    first = await api.open_case(username, "ORD-7")
    second = await api.open_case(username, "ORD-7", kind="damaged")
    reply = await api.get(f"/v1/accounts/{username}/orders", role="cs")
    assert reply.status == 200, reply.text
    (order,) = reply.json["items"]
    assert order["order_no"] == "ORD-7"
    assert order["cases"] == [first["id"], second["id"]]


# -- deadlines (early steps backdated through the application) ---------------------------------


async def test_a_case_past_its_return_by_is_overdue_and_may_expire(
    api: Api, server: Server
) -> None:
    # given a case accepted 40 days ago with return_by 20 days ago, and a fresh case
    username = await api.customer_with_order()
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "ORD-2", "amount": 100})
    late_id = _accepted_long_ago(server, username)
    fresh = await api.open_case(username, "ORD-2")

    # then the list's overdue filter tells them apart, with the deadline that passed
    overdue = await api.get(f"/v1/return-cases?username={username}&overdue=true", role="cs")
    assert overdue.status == 200, overdue.text
    (item,) = overdue.json["items"]
    assert (item["id"], item["overdue"], item["overdue_reasons"]) == (
        late_id, True, ["past_return_by"])
    assert (item["days_open"], item["days_since_shipping"]) == (40, 50)
    assert item["thirty_day_guarantee"]["days_used"] == 50
    assert item["thirty_day_guarantee"]["holds"] is False
    on_time = await api.get(f"/v1/return-cases?username={username}&overdue=false", role="cs")
    assert [c["id"] for c in on_time.json["items"]] == [fresh["id"]]

    # when CS records that no goods came by return_by
    expired = await api.step(late_id, "expire", {"note": "nothing arrived"})

    # then the case has expired and is no longer overdue
    assert expired["state"] == "expired"
    view = await api.case(late_id)
    assert (view["state"], view["overdue"]) == ("expired", False)
    assert view["steps"][-1]["step"] == "expired"


async def test_goods_posted_after_return_by_make_the_case_late(api: Api, server: Server) -> None:
    username = await api.customer_with_order()
    case_id = _accepted_long_ago(server, username)
    received = await api.step(case_id, "receive", {"postmark_date": days_from_today(0),
                                                   "goods": True, "original_packaging": True,
                                                   "acceptance_copy": False})
    assert received["state"] == "late"
    view = await api.case(case_id)
    assert view["postmark_date"] == days_from_today(0)
    assert view["steps"][-1]["data"]["missing"] == ["acceptance_copy"]
    forward = await api.post(f"/v1/return-cases/{case_id}/forward", {}, role="cs")
    assert_problem(forward, 409, "invalid_transition")
