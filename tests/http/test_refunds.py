"""Balance refunds over HTTP: request (holds), approve, pay (pays out), reject/cancel (release)."""

from __future__ import annotations

from typing import Any

from tests.http.conftest import Api, assert_problem


async def _requested(api: Api, amount: int = 300) -> tuple[str, dict[str, Any]]:
    username = await api.funded_account(1_000)
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "ORD-9", "amount": 400})
    reply = await api.post(f"/v1/accounts/{username}/refund-requests",
                           {"order_no": "ORD-9", "amount": amount, "reason": "wants it back"},
                           role="cs")
    assert reply.status == 201, reply.text
    return username, reply.json


async def test_a_refund_request_holds_its_amount(api: Api) -> None:
    username, request = await _requested(api, 250)
    assert request["status"] == "requested"
    assert (request["username"], request["order_no"], request["amount"]) == (username, "ORD-9",
                                                                             250)
    assert isinstance(request["position"], int)
    account = await api.account(username)
    assert (account["posted"], account["held"], account["available"]) == (600, 250, 350)


async def test_a_request_is_listed_and_read_with_its_steps(api: Api) -> None:
    username, request = await _requested(api)
    listed = await api.get(f"/v1/refund-requests?username={username}", role="finance")
    assert listed.status == 200, listed.text
    assert [item["id"] for item in listed.json["items"]] == [request["id"]]
    assert listed.json["next"] is None
    one = await api.get(f"/v1/refund-requests/{request['id']}", role="auditor")
    assert one.status == 200, one.text
    assert one.json["status"] == "requested"
    assert [step["status"] for step in one.json["steps"]] == ["requested"]
    assert one.json["steps"][0]["actor"].startswith("cs:")


async def test_approve_then_pay_pays_the_amount_out_and_releases_the_hold(api: Api) -> None:
    username, request = await _requested(api, 300)
    approved = await api.post(f"/v1/refund-requests/{request['id']}/approve",
                              {"note": "checked"}, role="finance")
    assert approved.status == 200, approved.text
    assert approved.json["status"] == "approved"
    paid = await api.post(f"/v1/refund-requests/{request['id']}/pay",
                          {"payout_reference": "BANK-77"}, role="payer")
    assert paid.status == 200, paid.text
    assert paid.json["status"] == "paid"
    assert paid.json["position"] > approved.json["position"]
    account = await api.account(username)
    assert (account["posted"], account["held"], account["available"]) == (300, 0, 300)
    steps = (await api.get(f"/v1/refund-requests/{request['id']}", role="cs")).json["steps"]
    assert [s["status"] for s in steps] == ["requested", "approved", "paid"]


async def test_approving_with_no_body_at_all_is_accepted(api: Api) -> None:
    _, request = await _requested(api)
    reply = await api.call("POST", f"/v1/refund-requests/{request['id']}/approve",
                           role="finance")
    assert reply.status == 200, reply.text
    assert reply.json["status"] == "approved"


async def test_paying_before_approval_is_an_invalid_transition(api: Api) -> None:
    username, request = await _requested(api)
    before = await api.state(username)
    reply = await api.post(f"/v1/refund-requests/{request['id']}/pay",
                           {"payout_reference": "too-early"}, role="finance")
    assert_problem(reply, 409, "invalid_transition")
    assert await api.state(username) == before


async def test_rejecting_releases_the_hold(api: Api) -> None:
    username, request = await _requested(api, 300)
    reply = await api.post(f"/v1/refund-requests/{request['id']}/reject",
                           {"reason": "order still in transit"}, role="finance")
    assert reply.status == 200, reply.text
    assert reply.json["status"] == "rejected"
    account = await api.account(username)
    assert (account["held"], account["available"]) == (0, 600)
    again = await api.post(f"/v1/refund-requests/{request['id']}/approve", {}, role="finance")
    assert_problem(again, 409, "invalid_transition")


async def test_cancelling_releases_the_hold(api: Api) -> None:
    username, request = await _requested(api, 300)
    reply = await api.post(f"/v1/refund-requests/{request['id']}/cancel",
                           {"reason": "customer changed mind"}, role="cs")
    assert reply.status == 200, reply.text
    assert reply.json["status"] == "cancelled"
    assert (await api.account(username))["held"] == 0
    listed = await api.get(f"/v1/refund-requests?status=cancelled&username={username}",
                           role="cs")
    assert [item["status"] for item in listed.json["items"]] == ["cancelled"]


async def test_a_second_open_request_for_the_same_order_is_a_conflict(api: Api) -> None:
    username, _ = await _requested(api, 100)
    reply = await api.post(f"/v1/accounts/{username}/refund-requests",
                           {"order_no": "ORD-9", "amount": 100}, role="cs")
    assert_problem(reply, 409, "request_open_for_order")


async def test_a_request_for_an_unknown_order_is_refused(api: Api) -> None:
    username = await api.funded_account(1_000)
    before = await api.state(username)
    reply = await api.post(f"/v1/accounts/{username}/refund-requests",
                           {"order_no": "NEVER-BOUGHT", "amount": 100}, role="cs")
    assert_problem(reply, 422, "unknown_order")
    assert await api.state(username) == before


async def test_a_request_for_more_than_is_available_is_refused(api: Api) -> None:
    username = await api.funded_account(1_000)
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "O", "amount": 900})
    reply = await api.post(f"/v1/accounts/{username}/refund-requests",
                           {"order_no": "O", "amount": 101}, role="cs")
    assert_problem(reply, 422, "insufficient_funds")


async def test_a_request_id_that_does_not_exist_is_not_found(api: Api) -> None:
    missing = "7b0c3c8e-0000-4000-8000-000000000001"
    assert_problem(await api.get(f"/v1/refund-requests/{missing}", role="cs"), 404, "not_found")
    reply = await api.post(f"/v1/refund-requests/{missing}/approve", {}, role="finance")
    assert_problem(reply, 404, "not_found")
    assert_problem(await api.get("/v1/refund-requests/not-a-uuid", role="cs"), 404, "not_found")


async def test_a_bad_status_filter_is_a_validation_error(api: Api) -> None:
    reply = await api.get("/v1/refund-requests?status=lost", role="finance")
    assert_problem(reply, 422, "validation_error")
