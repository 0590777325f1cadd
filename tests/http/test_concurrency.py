"""No available balance below zero, whatever the concurrency (invariant 1), over HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.http.conftest import Api, assert_problem


async def test_sixty_parallel_purchases_of_100_against_2000_pay_exactly_twenty(api: Api) -> None:
    username = await api.funded_account(2_000)
    replies = await asyncio.gather(*(
        api.post(f"/v1/accounts/{username}/purchases", {"order_no": f"race-{n}", "amount": 100})
        for n in range(60)
    ))
    statuses = Counter(reply.status for reply in replies)
    assert statuses == {201: 20, 422: 40}, statuses
    for reply in replies:
        if reply.status == 422:
            assert_problem(reply, 422, "insufficient_funds")
    account = await api.account(username)
    assert (account["posted"], account["available"]) == (0, 0)
    orders = (await api.get(f"/v1/accounts/{username}/orders?limit=100")).json["items"]
    assert len(orders) == 20
    assert sum(order["paid"] for order in orders) == 2_000


async def test_parallel_deposits_on_many_accounts_all_land(api: Api) -> None:
    usernames = [await api.open_account() for _ in range(5)]
    replies = await asyncio.gather(*(
        api.post(f"/v1/accounts/{name}/deposits", {"amount": 10, "reference": f"d{n}"})
        for name in usernames for n in range(8)
    ))
    assert {reply.status for reply in replies} == {201}
    for name in usernames:
        assert (await api.account(name))["posted"] == 80
