"""Idempotency: a retried POST takes effect once; natural keys (payment references) too."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.http.conftest import Api, assert_problem


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"key-{uuid.uuid4()}"}


async def test_a_retried_deposit_answers_the_first_response_and_takes_effect_once(
    api: Api,
) -> None:
    username = await api.open_account()
    key = _key()
    body = {"amount": 700, "reference": "retry-1"}
    first = await api.post(f"/v1/accounts/{username}/deposits", body, headers=key)
    assert first.status == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = await api.post(f"/v1/accounts/{username}/deposits", body, headers=key)
    assert again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    account, history = await api.state(username)
    assert account["posted"] == 700
    assert [item["type"] for item in history] == ["opened", "deposit_received"]


async def test_a_retried_purchase_takes_effect_once_even_when_sent_concurrently(
    api: Api,
) -> None:
    username = await api.funded_account(1_000)
    key = _key()
    replies = await asyncio.gather(*(
        api.post(f"/v1/accounts/{username}/purchases", {"order_no": "same", "amount": 100},
                 headers=key)
        for _ in range(8)
    ))
    assert [r.status for r in replies] == [201] * 8
    assert len({r.text for r in replies}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in replies) == 7
    assert (await api.account(username))["posted"] == 900


async def test_a_retried_account_opening_answers_201_again(api: Api) -> None:
    key = _key()
    body = {"username": f"idem-{uuid.uuid4().hex[:10]}", "currency": "USD"}
    first = await api.post("/v1/accounts", body, headers=key)
    again = await api.post("/v1/accounts", body, headers=key)
    assert (first.status, again.status) == (201, 201)
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_a_retried_refund_step_answers_200_again(api: Api) -> None:
    username = await api.funded_account(1_000)
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "K", "amount": 100})
    request = (await api.post(f"/v1/accounts/{username}/refund-requests",
                              {"order_no": "K", "amount": 50}, role="cs")).json
    key = _key()
    first = await api.post(f"/v1/refund-requests/{request['id']}/approve", {}, role="finance",
                           headers=key)
    again = await api.post(f"/v1/refund-requests/{request['id']}/approve", {}, role="finance",
                           headers=key)
    assert (first.status, again.status) == (200, 200)
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_the_same_key_with_another_body_is_refused_and_changes_nothing(api: Api) -> None:
    username = await api.open_account()
    key = _key()
    first = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": 100, "reference": "k1"}, headers=key)
    assert first.status == 201
    before = await api.state(username)
    other = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": 101, "reference": "k1"}, headers=key)
    assert_problem(other, 422, "idempotency_key_reused")
    assert await api.state(username) == before


async def test_a_refusal_answered_again_under_its_key_is_the_first_answer_whole(
    api: Api,
) -> None:
    # Given a purchase refused for want of money, under a key
    username = await api.open_account()
    key = _key()
    body = {"order_no": "O-BIG", "amount": 10_000}
    first = await api.post(f"/v1/accounts/{username}/purchases", body, headers=key)
    assert_problem(first, 422, "insufficient_funds")
    # When it is sent again with the same key, after the money came
    deposit = await api.post(f"/v1/accounts/{username}/deposits",
                             {"amount": 20_000, "reference": "later"})
    assert deposit.status == 201, deposit.text
    again = await api.post(f"/v1/accounts/{username}/purchases", body, headers=key)
    # Then it is the first response again, body and all (the request it names is the first;
    # X-Request-Id names this one), marked replayed
    assert again.status == 422
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    assert again.headers["X-Request-Id"] != first.headers["X-Request-Id"]


async def test_a_key_belongs_to_its_caller(api: Api) -> None:
    key = _key()
    system = await api.post("/v1/accounts", {"username": f"a-{uuid.uuid4().hex[:8]}",
                                             "currency": "USD"}, headers=key)
    cs = await api.post("/v1/accounts", {"username": f"b-{uuid.uuid4().hex[:8]}",
                                         "currency": "USD"}, headers=key, role="cs")
    assert (system.status, cs.status) == (201, 201)
    assert "Idempotent-Replayed" not in cs.headers


@pytest.mark.parametrize("key", ["", "k" * 256, "caf\u00e9"], ids=["empty", "256", "non-ascii"])
async def test_an_unusable_idempotency_key_is_refused_and_changes_nothing(
    api: Api, key: str
) -> None:
    username = await api.funded_account(100)
    before = await api.state(username)
    reply = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": 5, "reference": "bad-key"},
                           headers={"Idempotency-Key": key})
    problem = assert_problem(reply, 422, "validation_error")
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert await api.state(username) == before


async def test_a_key_of_255_printable_characters_is_accepted(api: Api) -> None:
    username = await api.open_account()
    reply = await api.post(f"/v1/accounts/{username}/deposits", {"amount": 5, "reference": "k"},
                           headers={"Idempotency-Key": "~" * 255})
    assert reply.status == 201, reply.text


async def test_a_deposit_with_a_seen_reference_and_amount_answers_the_original(
    api: Api,
) -> None:
    username = await api.open_account()
    body = {"amount": 2_500, "reference": "PAYPAL-123"}
    first = await api.post(f"/v1/accounts/{username}/deposits", body)
    assert first.status == 201
    again = await api.post(f"/v1/accounts/{username}/deposits", body)
    assert again.status == 200, again.text
    assert again.json["position"] == first.json["position"]
    assert again.json["account"]["posted"] == 2_500
    account, history = await api.state(username)
    assert account["posted"] == 2_500
    assert len(history) == 2


async def test_a_deposit_with_a_seen_reference_and_another_amount_is_a_conflict(
    api: Api,
) -> None:
    username = await api.open_account()
    await api.post(f"/v1/accounts/{username}/deposits", {"amount": 2_500, "reference": "P-9"})
    before = await api.state(username)
    reply = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": 2_501, "reference": "P-9"})
    assert_problem(reply, 409, "duplicate_reference")
    assert await api.state(username) == before
