"""Reads: current right after a write, balances as they stood, and bad query strings."""

from __future__ import annotations

import asyncio

import pytest

from tests.http.conftest import Api, Server, assert_problem, metric


async def test_a_read_right_after_each_write_reflects_it(api: Api) -> None:
    username = await api.open_account()
    for n in range(1, 21):
        reply = await api.post(f"/v1/accounts/{username}/deposits",
                               {"amount": 10, "reference": f"r{n}"})
        assert reply.status == 201
        account = await api.account(username)
        assert account["posted"] == 10 * n
        assert account["version"] == reply.json["account"]["version"]


async def test_a_balance_asked_again_is_answered_as_kept_until_a_write_moves_the_log(
    api: Api, server: Server,
) -> None:
    username = await api.funded_account(300)
    path = f"/v1/accounts/{username}/balance"
    first = await api.get(path)
    before = await metric(api, "ledger_current_reads_answered_kept")

    again = [await api.get(path) for _ in range(3)]
    paid = await api.post(f"/v1/accounts/{username}/purchases",
                          {"order_no": "ORD-KEPT", "amount": 120})
    after_write = await api.get(path)

    assert [a.json for a in again] == [first.json] * 3
    assert paid.status == 201, paid.text
    assert (after_write.json["posted"], after_write.json["position"]) == (
        180, paid.json["position"])
    kept = await metric(api, "ledger_current_reads_answered_kept") - before
    # PostgreSQL reads in the event loop and keeps answers; SQLite reads on the executor
    assert kept == (3 if server.database_url.startswith("postgresql") else 0), kept


async def test_the_balance_at_a_position_is_as_it_stood_then(api: Api) -> None:
    username = await api.funded_account(1_000)
    paid = await api.post(f"/v1/accounts/{username}/purchases",
                          {"order_no": "B-1", "amount": 400})
    await api.post(f"/v1/accounts/{username}/deposits", {"amount": 50, "reference": "later"})
    before_purchase = paid.json["position"] - 1
    then = await api.get(f"/v1/accounts/{username}/balance?at_position={before_purchase}")
    assert then.status == 200, then.text
    assert (then.json["posted"], then.json["available"]) == (1_000, 1_000)
    at_purchase = await api.get(
        f"/v1/accounts/{username}/balance?at_position={paid.json['position']}"
    )
    assert at_purchase.json["posted"] == 600
    assert at_purchase.json["position"] == paid.json["position"]
    now = await api.get(f"/v1/accounts/{username}/balance")
    assert (now.json["posted"], now.json["currency"]) == (650, "USD")


async def test_the_balance_as_of_a_time_is_as_it_stood_then(api: Api) -> None:
    username = await api.funded_account(1_000)
    history = (await api.get(f"/v1/accounts/{username}/history")).json["items"]
    deposited_at = history[-1]["at"]
    await asyncio.sleep(0.01)
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "T-1", "amount": 300})
    then = await api.get(f"/v1/accounts/{username}/balance?as_of={deposited_at}")
    assert then.status == 200, then.text
    assert then.json["posted"] == 1_000
    now = await api.get(f"/v1/accounts/{username}/balance")
    assert now.json["posted"] == 700


async def test_the_balance_before_the_account_was_opened_is_not_found(api: Api) -> None:
    username = await api.open_account()
    reply = await api.get(f"/v1/accounts/{username}/balance?as_of=2000-01-01T00:00:00Z")
    assert_problem(reply, 404, "not_found")


@pytest.mark.parametrize(
    "query",
    [
        "as_of=yesterday",
        "as_of=1700000000",
        "as_of=2026-11-26T09:00:00",  # no offset: ambiguous
        "at_position=-1",
        "at_position=1.5",
        "at_position=abc",
        "at_position=1&as_of=2026-11-26T09:00:00Z",
        "at_postion=1",  # misspelt: never silently "now"
        "at_position=1&at_position=2",
    ],
)
async def test_a_bad_balance_query_is_refused(api: Api, query: str) -> None:
    username = await api.open_account()
    reply = await api.get(f"/v1/accounts/{username}/balance?{query}")
    problem = assert_problem(reply, 422, "validation_error")
    assert problem["errors"] and all({"field", "message"} <= set(e) for e in problem["errors"])


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "limit=ten", "after=not-a-cursor", "after=" + "9" * 70,
              "colour=blue"],
)
async def test_a_bad_page_query_is_refused(api: Api, query: str) -> None:
    username = await api.open_account()
    reply = await api.get(f"/v1/accounts/{username}/history?{query}")
    assert_problem(reply, 422, "validation_error")


@pytest.mark.parametrize(
    "written", ["1_0", "%2B5", "%205", "5%20", "%D9%A3", "5.0", "0x5", "%EF%BC%95"],
    ids=["underscore", "plus", "leading-space", "trailing-space", "arabic-indic-three",
         "fraction", "hexadecimal", "fullwidth-five"],
)
async def test_a_query_number_is_taken_only_as_plain_ascii_digits(api: Api, written: str
                                                                  ) -> None:
    username = await api.funded_account(500)
    for path, name in [("history", "limit"), ("balance", "at_position")]:
        reply = await api.get(f"/v1/accounts/{username}/{path}?{name}={written}")
        problem = assert_problem(reply, 422, "validation_error")
        assert problem["errors"] == [{
            "field": name,
            "message": f"{name} must be a whole number written with the digits 0-9 only"}]


async def test_a_query_number_with_leading_zeros_is_still_its_digits(api: Api) -> None:
    username = await api.funded_account(500)
    reply = await api.get(f"/v1/accounts/{username}/history?limit=001")
    assert reply.status == 200, reply.text
    assert len(reply.json["items"]) == 1


async def test_a_page_of_the_largest_size_is_served(api: Api) -> None:
    username = await api.open_account()
    reply = await api.get(f"/v1/accounts/{username}/orders?limit=1000")
    assert reply.status == 200, reply.text
    assert reply.json == {"items": [], "next": None}
