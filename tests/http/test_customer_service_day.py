"""A day in customer service, over HTTP on both stores: the work queue, what a case allows,
notes after the end, resolving with what it did to the balance, a waived freight, and the
customer's history read without arithmetic (issue 12, "Customer service and return cases")."""

from __future__ import annotations

from typing import Any

from tests.http.conftest import Api, assert_problem, days_from_today

CS = "cs"


async def test_a_case_says_which_steps_cs_may_take_next(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    view = await api.case(case["id"])
    assert view["allowed_actions"] == ["supplier-review", "cancel", "notes", "evidence"]
    await api.walk(case["id"], "accepted")
    # accepted, return_by still ahead: expiring is not yet possible
    assert (await api.case(case["id"]))["allowed_actions"] == [
        "ship-back", "receive", "cancel", "notes", "evidence"]


async def test_every_allowed_action_is_one_the_ledger_takes(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    await api.walk(case["id"], "received")
    view = await api.case(case["id"])
    assert view["allowed_actions"] == ["forward", "cancel", "notes", "evidence"]
    # and a step it does not list is refused
    reply = await api.post(f"/v1/return-cases/{case['id']}/close", {}, role=CS)
    assert_problem(reply, 409, "invalid_transition")
    await api.step(case["id"], "forward")
    assert (await api.case(case["id"]))["allowed_actions"] == [
        "resolve", "cancel", "notes", "evidence"]


async def test_the_work_queue_is_one_call_for_every_open_case(api: Api) -> None:
    username = await api.customer_with_order()
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "ORD-2", "amount": 100})
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "ORD-3", "amount": 100})
    waiting = await api.open_case(username)
    in_transit = await api.open_case(username, "ORD-2")
    await api.walk(in_transit["id"], "goods_in_transit")
    cancelled = await api.open_case(username, "ORD-3")
    await api.step(cancelled["id"], "cancel", {"reason": "customer kept it"})
    reply = await api.get(f"/v1/return-cases?state=open&username={username}", role=CS)
    assert reply.status == 200, reply.text
    assert [c["id"] for c in reply.json["items"]] == [waiting["id"], in_transit["id"]]
    assert all(c["allowed_actions"] for c in reply.json["items"])


async def test_cs_writes_customer_told_on_a_rejected_and_on_a_closed_case(api: Api) -> None:
    username = await api.customer_with_order()
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "ORD-2", "amount": 100})
    rejected = await api.open_case(username)
    await api.step(rejected["id"], "supplier-review")
    await api.step(rejected["id"], "reject", {"reason": "signs of misuse"})
    reply = await api.post(f"/v1/return-cases/{rejected['id']}/notes",
                           {"text": "customer told by phone"}, role=CS)
    assert reply.status == 201, reply.text
    view = await api.case(rejected["id"])
    assert view["state"] == "rejected"
    assert view["steps"][-1]["step"] == "note_added"
    assert view["steps"][-1]["data"]["text"] == "customer told by phone"
    assert view["allowed_actions"] == ["notes"]
    # and on a case exchanged and closed: the customer is told the replacement is on its way
    closed = await api.open_case(username, "ORD-2")
    await api.walk(closed["id"], "with_supplier")
    await api.step(closed["id"], "resolve",
                   {"outcome": "exchange", "freight_amount": 0, "tracking": "EX-2"})
    await api.step(closed["id"], "close", {"note": "replacement sent"})
    reply = await api.post(f"/v1/return-cases/{closed['id']}/notes",
                           {"text": "customer told: replacement on its way"}, role=CS)
    assert reply.status == 201, reply.text
    view = await api.case(closed["id"])
    assert (view["state"], view["steps"][-1]["step"]) == ("closed", "note_added")
    assert view["steps"][-1]["data"]["text"] == "customer told: replacement on its way"
    assert view["allowed_actions"] == ["notes"]


async def _resolvable(api: Api, *, deposit: int, paid: int) -> tuple[str, dict[str, Any]]:
    username = await api.customer_with_order(deposit=deposit, paid=paid)
    case = await api.open_case(username)
    await api.walk(case["id"], "with_supplier")
    return username, case


async def test_resolving_by_refund_answers_the_refund_the_freight_and_the_balance_after(
    api: Api,
) -> None:
    username, case = await _resolvable(api, deposit=10_000, paid=3_000)
    reply = await api.post(f"/v1/return-cases/{case['id']}/resolve",
                           {"outcome": "refund", "freight_amount": 500}, role=CS)
    assert reply.status == 200, reply.text
    answer = reply.json
    assert (answer["state"], answer["refund_amount"], answer["freight_amount"],
            answer["freight_waived"]) == ("resolved", 3_000, 500, 0)
    # 10,000 - 3,000 + 3,000 - 500
    assert answer["account"]["available"] == 9_500
    assert answer["account"] == await api.account(username)


async def test_an_exchange_whose_freight_exceeds_the_balance_is_resolved_with_it_waived(
    api: Api,
) -> None:
    # Given a customer who spent everything, with an exchange waiting at the supplier
    username, case = await _resolvable(api, deposit=3_000, paid=3_000)
    body = {"outcome": "exchange", "freight_amount": 800, "tracking": "EX-1"}
    stuck = await api.post(f"/v1/return-cases/{case['id']}/resolve", body, role=CS)
    assert_problem(stuck, 422, "insufficient_funds")
    # When CS waives the freight, saying why
    reply = await api.post(f"/v1/return-cases/{case['id']}/resolve",
                           {**body, "freight_waiver_reason": "goodwill: the balance is empty"},
                           role=CS)
    # Then the case is resolved, nothing is charged, and the case's history says why
    assert reply.status == 200, reply.text
    assert (reply.json["freight_amount"], reply.json["freight_waived"]) == (0, 800)
    assert reply.json["account"]["posted"] == 0
    view = await api.case(case["id"])
    waived = [s for s in view["steps"] if s["step"] == "freight_waived"]
    assert [s["data"] for s in waived] == [
        {"amount": 800, "on": days_from_today(0), "reason": "goodwill: the balance is empty"}]
    history = (await api.get(f"/v1/accounts/{username}/history")).json["items"]
    assert "freight_charged" not in [h["type"] for h in history]


async def test_a_waiver_without_freight_to_waive_is_refused(api: Api) -> None:
    _, case = await _resolvable(api, deposit=3_000, paid=3_000)
    reply = await api.post(f"/v1/return-cases/{case['id']}/resolve",
                           {"outcome": "refund", "freight_amount": 0,
                            "freight_waiver_reason": "why not"}, role=CS)
    problem = assert_problem(reply, 422, "validation_error")
    assert problem["errors"][0]["field"] == "freight_waiver_reason"


async def test_an_order_shows_its_cases_kind_and_state_beside_their_ids(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    reply = await api.get(f"/v1/accounts/{username}/orders", role=CS)
    assert reply.status == 200, reply.text
    (order,) = reply.json["items"]
    assert order["cases"] == [case["id"]]
    assert order["case_details"] == [{"id": case["id"], "kind": "defective", "state": "opened",
                                      "opened_on": days_from_today(0)}]
    assert order["order_refundable"] == order["refundable"] == 3_000


async def test_refundable_names_the_balance_s_and_the_orders_own_apart(api: Api) -> None:
    username = await api.customer_with_order(deposit=10_000, paid=3_000)
    reply = await api.get(f"/v1/accounts/{username}/refundable", role=CS)
    assert reply.status == 200, reply.text
    assert reply.json["balance_refundable"] == reply.json["refundable"] == 7_000
    assert [o["order_refundable"] for o in reply.json["orders"]] == [3_000]


async def test_history_amounts_carry_their_sign(api: Api) -> None:
    username = await api.customer_with_order(deposit=10_000, paid=3_000)
    reply = await api.post(f"/v1/accounts/{username}/refund-requests",
                           {"order_no": "ORD-1", "amount": 200}, role=CS)
    assert reply.status == 201, reply.text
    items = (await api.get(f"/v1/accounts/{username}/history")).json["items"]
    signed = [(i["type"], i["amount"], i["signed_amount"], i["available_change"])
              for i in items]
    assert signed == [
        ("opened", 0, 0, 0),
        ("deposit_received", 10_000, 10_000, 10_000),
        ("purchase_paid", 3_000, -3_000, -3_000),
        ("balance_refund_requested", 200, 0, -200),
    ]


async def test_photos_sent_after_opening_are_added_to_the_case(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    await api.step(case["id"], "supplier-review")
    # the supplier asks for a photo of the label; the customer sends two
    reply = await api.post(f"/v1/return-cases/{case['id']}/evidence",
                           {"goods_photos": ["photo-label"], "package_photos": ["photo-tape"]},
                           role=CS)
    assert reply.status == 201, reply.text
    view = await api.case(case["id"])
    assert view["evidence"] == {"goods_photos": ["photo-goods-1", "photo-label"],
                                "package_photos": ["photo-box-1", "photo-tape"]}
    assert view["steps"][-1]["step"] == "evidence_added"
    assert view["state"] == "supplier_review"
    assert "evidence" in view["allowed_actions"]


async def test_photos_need_at_least_one_reference_and_an_open_case(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    empty = await api.post(f"/v1/return-cases/{case['id']}/evidence", {}, role=CS)
    assert_problem(empty, 422, "validation_error")
    await api.step(case["id"], "cancel", {"reason": "kept it"})
    late = await api.post(f"/v1/return-cases/{case['id']}/evidence",
                          {"goods_photos": ["p"]}, role=CS)
    assert_problem(late, 409, "invalid_transition")
