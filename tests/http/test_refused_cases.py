"""A refused case leaves its trace, over HTTP on both stores (issue 12: "A refused case leaves
no trace"): read as the day of the customer-service person who refuses an application, and is
asked about it a week later; and of finance, who counts the refusals.

The answer stays 422 ``case_refused`` with ``reason``, now naming the recorded case
(``case_id``); the case is listed in state ``refused`` with its reason and allows nothing; a
retry with its Idempotency-Key hears the same refusal and the same case, and records nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.http.conftest import Api, assert_problem, case_body, days_from_today

CS = "cs"
OPENED_MEDIA = {"replaced_or_modified": False, "parts_missing": False, "opened_media": True,
                "has_quality_assurance": True}


async def _refused(api: Api, username: str, *, key: str | None = None, **changes: Any
                   ) -> dict[str, Any]:
    headers = None if key is None else {"Idempotency-Key": key}
    reply = await api.call("POST", "/v1/return-cases", role=CS, headers=headers,
                           json_body=case_body(username, **changes))
    problem = assert_problem(reply, 422, "case_refused")
    return problem


async def _log_end(api: Api) -> int:
    reply = await api.get("/ready")
    assert reply.status == 200, reply.text
    position: int = reply.json["log_position"]
    return position


async def test_cs_refuses_opened_media_and_can_show_the_customer_why_a_week_later(
    api: Api,
) -> None:
    # Morning: a customer wants to return a DVD they opened; CS records the application
    username = await api.customer_with_order()
    before = await api.state(username)
    problem = await _refused(api, username, conditions=OPENED_MEDIA,
                             note="customer opened the DVD")
    # The answer says no, why, and which case was recorded
    assert problem["reason"] == "opened_media"
    assert "opened" in problem["detail"]
    case_id = problem["case_id"]
    assert uuid.UUID(case_id)

    # A week later the customer calls: CS finds the case on the customer's list, refused
    listed = await api.get(f"/v1/return-cases?username={username}", role=CS)
    assert listed.status == 200, listed.text
    assert [(c["id"], c["state"], c["refusal_reason"]) for c in listed.json["items"]] == [
        (case_id, "refused", "opened_media")]

    # and its view says what was applied for, why it was refused, and that nothing can follow
    view = await api.case(case_id)
    assert (view["state"], view["refusal_reason"], view["order_no"]) == (
        "refused", "opened_media", "ORD-1")
    assert view["allowed_actions"] == []
    (step,) = view["steps"]
    assert (step["step"], step["state"]) == ("refused", "refused")
    assert step["actor"].startswith(f"{CS}:")  # the person who refused it
    assert step["data"]["reason"] == "opened_media"
    assert step["data"]["words"] in problem["detail"]
    assert step["data"]["note"] == "customer opened the DVD"
    assert step["data"]["conditions"]["opened_media"] is True
    assert view["evidence"] == {"goods_photos": ["photo-goods-1"],
                                "package_photos": ["photo-box-1"]}

    # the order shows the refused case beside its others
    orders = await api.get(f"/v1/accounts/{username}/orders", role=CS)
    (order,) = orders.json["items"]
    assert order["cases"] == [case_id]
    assert [(c["id"], c["state"]) for c in order["case_details"]] == [(case_id, "refused")]

    # and no money moved: the account and its history are as they were
    assert await api.state(username) == before


async def test_a_refused_case_takes_no_step_not_even_a_note(api: Api) -> None:
    username = await api.customer_with_order()
    case_id = (await _refused(api, username, evidence={}))["case_id"]
    for step, body in (("supplier-review", {}), ("cancel", {"reason": "customer asked"}),
                       ("notes", {"text": "customer told"}),
                       ("evidence", {"goods_photos": ["g2"], "package_photos": ["b2"]})):
        reply = await api.post(f"/v1/return-cases/{case_id}/{step}", body, role=CS)
        problem = assert_problem(reply, 409, "invalid_transition")
        assert "refused" in problem["detail"], step
    assert len((await api.case(case_id))["steps"]) == 1


async def test_after_a_refusal_cs_opens_the_case_again_with_the_photos(api: Api) -> None:
    username = await api.customer_with_order()
    refused = await _refused(api, username, evidence={"goods_photos": ["g.jpg"],
                                                      "package_photos": []})
    assert refused["reason"] == "missing_evidence"
    opened = await api.open_case(username)
    listed = await api.get(f"/v1/return-cases?username={username}", role=CS)
    assert [(c["id"], c["state"]) for c in listed.json["items"]] == [
        (refused["case_id"], "refused"), (opened["id"], "opened")]
    # the work queue of open cases leaves the refused one out
    queue = await api.get(f"/v1/return-cases?username={username}&state=open", role=CS)
    assert [c["id"] for c in queue.json["items"]] == [opened["id"]]


async def test_a_refusal_retried_with_its_key_names_the_same_case_and_records_nothing(
    api: Api,
) -> None:
    username = await api.customer_with_order()
    key = f"refuse-{uuid.uuid4()}"
    first = await _refused(api, username, key=key, conditions=OPENED_MEDIA)
    end = await _log_end(api)
    # the answer was lost; the order system sends the same request with the same key
    reply = await api.call("POST", "/v1/return-cases", role=CS, headers={"Idempotency-Key": key},
                           json_body=case_body(username, conditions=OPENED_MEDIA))
    again = assert_problem(reply, 422, "case_refused")
    assert reply.headers["Idempotent-Replayed"] == "true"
    assert (again["reason"], again["case_id"], again["detail"]) == (
        first["reason"], first["case_id"], first["detail"])
    assert await _log_end(api) == end  # nothing recorded
    listed = await api.get(f"/v1/return-cases?username={username}", role=CS)
    assert [c["id"] for c in listed.json["items"]] == [first["case_id"]]
    # the same key for another application is refused as reused, recording nothing
    other = await api.call("POST", "/v1/return-cases", role=CS, headers={"Idempotency-Key": key},
                           json_body=case_body(username, evidence={}))
    assert_problem(other, 422, "idempotency_key_reused")
    assert await _log_end(api) == end


async def test_an_unknown_order_is_refused_and_records_no_case(api: Api) -> None:
    username = await api.customer_with_order()
    end = await _log_end(api)
    problem = await _refused(api, username, order_no="NEVER-BOUGHT")
    assert problem["reason"] == "unknown_order"
    assert "case_id" not in problem
    assert await _log_end(api) == end
    listed = await api.get(f"/v1/return-cases?username={username}", role=CS)
    assert listed.json["items"] == []


async def test_finance_counts_the_refusals(api: Api) -> None:
    # Given two customers: one refused twice (opened media, then an expired guarantee), one
    # case opened
    ann = await api.customer_with_order()
    bob = await api.customer_with_order()
    await _refused(api, ann, conditions=OPENED_MEDIA)
    await api.post(f"/v1/accounts/{ann}/purchases", {"order_no": "ORD-2", "amount": 100})
    await _refused(api, ann, order_no="ORD-2", kind="quality_problem", evidence={},
                   guarantee_until=days_from_today(-1))
    await api.open_case(bob)

    # Finance asks for the refused cases of a customer: the count covers every page
    one = await api.get(f"/v1/return-cases?username={ann}&state=refused&limit=1",
                        role="finance")
    assert one.status == 200, one.text
    assert len(one.json["items"]) == 1 and one.json["next"] is not None
    assert one.json["counts"] == [{"state": "refused", "count": 2}]
    second = await api.get(f"/v1/return-cases?username={ann}&state=refused&limit=1"
                           f"&after={one.json['next']}", role="finance")
    reasons = [c["refusal_reason"] for c in one.json["items"] + second.json["items"]]
    assert reasons == ["opened_media", "guarantee_expired"]

    # and without a state filter, the counts are per state
    everyone = await api.get(f"/v1/return-cases?username={bob}", role="finance")
    assert everyone.json["counts"] == [{"state": "opened", "count": 1}]
    assert everyone.json["items"][0]["refusal_reason"] is None
    # the whole shop's refusals: at least these two (other tests share the server)
    shop = await api.get("/v1/return-cases?state=refused&limit=1", role="finance")
    (refused,) = shop.json["counts"]
    assert refused["state"] == "refused" and refused["count"] >= 2


async def test_the_event_log_shows_the_refusal_as_the_case_s_one_event(api: Api) -> None:
    username = await api.customer_with_order()
    case_id = (await _refused(api, username, conditions=OPENED_MEDIA))["case_id"]
    reply = await api.get(f"/v1/events?stream={case_id}", role="auditor")
    assert reply.status == 200, reply.text
    (event,) = reply.json["items"]
    assert (event["type"], event["name"], event["aggregate"]) == (
        "ledger:ReturnCase.Refused", "refused", "return_case")
    assert (event["data"]["reason"], event["data"]["username"]) == ("opened_media", username)
