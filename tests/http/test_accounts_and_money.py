"""Accounts and money over HTTP: open, deposit, purchase, failure, and every way to read them."""

from __future__ import annotations

import uuid

from tests.http.conftest import Api, assert_problem


async def test_opening_an_account_answers_it_with_its_position(api: Api) -> None:
    username = f"Ann-{uuid.uuid4().hex[:8]}"
    reply = await api.post("/v1/accounts", {"username": f"  {username} ", "currency": "EUR"})
    assert reply.status == 201, reply.text
    body = reply.json
    assert body["username"] == username.lower()  # trimmed and lower-cased by the domain
    assert body["currency"] == "EUR"
    assert (body["posted"], body["held"], body["available"], body["refundable"]) == (0, 0, 0, 0)
    assert body["version"] == 1
    assert isinstance(body["position"], int) and body["position"] >= 1
    assert reply.content_type == "application/json"


async def test_an_account_is_read_back_with_its_balances(api: Api) -> None:
    username = await api.open_account("GBP")
    account = await api.account(username.upper())  # the path name is normalised too
    assert account["username"] == username
    assert account["currency"] == "GBP"
    assert account["available"] == 0
    assert set(account) == {"username", "currency", "posted", "held", "available",
                            "refundable", "opened_at", "version"}


async def test_opening_the_same_user_name_twice_is_a_conflict(api: Api) -> None:
    username = await api.open_account()
    reply = await api.post("/v1/accounts", {"username": username, "currency": "USD"}, role="cs")
    assert_problem(reply, 409, "account_exists")


async def test_reading_an_account_that_does_not_exist_is_not_found(api: Api) -> None:
    reply = await api.get("/v1/accounts/nobody-here-at-all")
    assert_problem(reply, 404, "not_found")


async def test_a_deposit_credits_the_account_and_answers_it(api: Api) -> None:
    username = await api.open_account()
    reply = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": 12_345, "reference": "wire 2026/11/26 #1"})
    assert reply.status == 201, reply.text
    assert reply.json["account"]["posted"] == 12_345
    assert reply.json["account"]["available"] == 12_345
    assert isinstance(reply.json["position"], int)
    assert (await api.account(username))["posted"] == 12_345


async def test_a_deposit_of_the_largest_amount_is_accepted(api: Api) -> None:
    username = await api.open_account()
    reply = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": 10**12, "reference": "big"})
    assert reply.status == 201, reply.text
    assert (await api.account(username))["posted"] == 10**12


async def test_a_purchase_debits_the_balance(api: Api) -> None:
    username = await api.funded_account(1_000)
    reply = await api.post(f"/v1/accounts/{username}/purchases",
                           {"order_no": "ORD-1", "amount": 300})
    assert reply.status == 201, reply.text
    assert reply.json["account"]["available"] == 700
    assert (await api.account(username))["posted"] == 700


async def test_a_purchase_beyond_the_balance_is_refused_and_changes_nothing(api: Api) -> None:
    username = await api.funded_account(100)
    before = await api.state(username)
    reply = await api.post(f"/v1/accounts/{username}/purchases",
                           {"order_no": "ORD-1", "amount": 101})
    assert_problem(reply, 422, "insufficient_funds")
    assert await api.state(username) == before


async def test_paying_the_same_order_twice_with_another_amount_is_a_conflict(api: Api) -> None:
    username = await api.funded_account(1_000)
    first = await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "A", "amount": 1})
    assert first.status == 201
    again = await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "A", "amount": 2})
    assert_problem(again, 409, "duplicate_order")


async def test_a_purchase_retried_with_its_order_number_and_amount_answers_the_original(
    api: Api,
) -> None:
    # The order system lost the answer to a purchase and sends it again, without a key
    username = await api.funded_account(1_000)
    first = await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "A", "amount": 300})
    assert first.status == 201, first.text
    again = await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "A", "amount": 300})
    # it is told the purchase happened (200, its position), and it is paid once only
    assert again.status == 200, again.text
    assert again.json["position"] == first.json["position"]
    assert again.json["account"]["available"] == 700
    assert (await api.account(username))["available"] == 700


async def test_a_failed_purchase_credits_back_what_is_left_by_default(api: Api) -> None:
    username = await api.funded_account(1_000)
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "F-1", "amount": 400})
    partial = await api.post(f"/v1/accounts/{username}/purchases/F-1/failure",
                             {"amount": 150, "reason": "one item out of stock"}, role="cs")
    assert partial.status == 201, partial.text
    assert partial.json["account"]["available"] == 750
    rest = await api.post(f"/v1/accounts/{username}/purchases/F-1/failure",
                          {"reason": "supplier cancelled"})
    assert rest.status == 201, rest.text
    assert rest.json["account"]["available"] == 1_000
    more = await api.post(f"/v1/accounts/{username}/purchases/F-1/failure",
                          {"amount": 1, "reason": "again"})
    assert_problem(more, 422, "over_refundable")


async def test_a_failure_of_an_unknown_order_is_refused(api: Api) -> None:
    username = await api.funded_account(1_000)
    reply = await api.post(f"/v1/accounts/{username}/purchases/NOPE/failure", {"reason": "x"})
    assert_problem(reply, 422, "unknown_order")


async def test_orders_show_paid_credited_back_and_refundable(api: Api) -> None:
    username = await api.funded_account(1_000)
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "O-1", "amount": 300})
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "O-2", "amount": 200})
    await api.post(f"/v1/accounts/{username}/purchases/O-1/failure",
                   {"amount": 100, "reason": "broken"})
    reply = await api.get(f"/v1/accounts/{username}/orders")
    assert reply.status == 200, reply.text
    assert reply.json == {
        "items": [
            {"order_no": "O-1", "paid": 300, "credited_back": 100, "refundable": 200,
             "order_refundable": 200, "cases": [], "case_details": []},
            {"order_no": "O-2", "paid": 200, "credited_back": 0, "refundable": 200,
             "order_refundable": 200, "cases": [], "case_details": []},
        ],
        "next": None,
    }


async def test_refundable_shows_the_balances_and_the_orders(api: Api) -> None:
    username = await api.funded_account(1_000)
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "R-1", "amount": 250})
    reply = await api.get(f"/v1/accounts/{username}/refundable", role="cs")
    assert reply.status == 200, reply.text
    body = reply.json
    assert (body["available"], body["held"], body["refundable"]) == (750, 0, 750)
    assert [order["order_no"] for order in body["orders"]] == ["R-1"]
    assert body["orders"][0]["refundable"] == 250
    assert body["next"] is None


async def test_history_lists_the_money_events_oldest_first(api: Api) -> None:
    username = await api.funded_account(500)
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "H-1", "amount": 200})
    reply = await api.get(f"/v1/accounts/{username}/history", role="auditor")
    assert reply.status == 200, reply.text
    items = reply.json["items"]
    assert [item["type"] for item in items] == ["opened", "deposit_received", "purchase_paid"]
    assert [item["posted_after"] for item in items] == [0, 500, 300]
    assert [item["available_after"] for item in items] == [0, 500, 300]
    assert items[2]["data"]["order_no"] == "H-1"
    assert items[2]["amount"] == 200
    assert items[2]["actor"].startswith("system:")
    positions = [item["position"] for item in items]
    assert positions == sorted(positions)
    assert reply.json["next"] is None


async def test_history_pages_follow_the_cursor_to_the_end(api: Api) -> None:
    username = await api.funded_account(500)
    for n in range(4):
        await api.post(f"/v1/accounts/{username}/purchases", {"order_no": f"P{n}", "amount": 1})
    seen: list[int] = []
    after = None
    for _ in range(10):  # bounded: 6 events in pages of 2
        query = "?limit=2" + (f"&after={after}" if after else "")
        page = (await api.get(f"/v1/accounts/{username}/history{query}")).json
        assert len(page["items"]) <= 2
        seen += [item["position"] for item in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert len(seen) == 6
    assert seen == sorted(set(seen))


async def test_the_request_id_a_caller_sends_is_echoed_and_recorded_with_the_event(
    api: Api,
) -> None:
    username = await api.open_account()
    request_id = f"shop-{uuid.uuid4().hex}"
    reply = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": 5, "reference": "rid"}, headers={"X-Request-Id": request_id})
    assert reply.status == 201
    assert reply.headers["X-Request-Id"] == request_id
    history = (await api.get(f"/v1/accounts/{username}/history")).json["items"]
    assert history[-1]["correlation_id"] == request_id


async def test_an_unusable_request_id_is_replaced_by_a_fresh_one(api: Api) -> None:
    reply = await api.get("/health", headers={"X-Request-Id": "x" * 129})
    assert reply.status == 200
    assert reply.headers["X-Request-Id"] != "x" * 129
    assert len(reply.headers["X-Request-Id"]) == 32


async def test_an_order_number_with_a_slash_or_spaces_is_addressed_percent_encoded(
    api: Api,
) -> None:
    username = await api.funded_account(1_000)
    for order_no, encoded in (("A/1", "A%2F1"), ("B 2#?", "B%202%23%3F")):
        paid = await api.post(f"/v1/accounts/{username}/purchases",
                              {"order_no": order_no, "amount": 100})
        assert paid.status == 201, paid.text
        failed = await api.post(f"/v1/accounts/{username}/purchases/{encoded}/failure",
                                {"reason": "cancelled"})
        assert failed.status == 201, failed.text
    assert (await api.account(username))["posted"] == 1_000
