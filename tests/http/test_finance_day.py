"""A day in finance, over HTTP on both stores: the refund queue, customers, the journal and
reconciliation answer what finance asks without computing by hand (issue 12, "Finance")."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from api.app import create_app
from api.auth import Tokens
from tests.conftest import store_settings
from tests.http.conftest import Api, assert_problem, store, tokens_env

FINANCE = "finance"


async def _customer(api: Api, currency: str, deposit: int, paid: int = 0) -> str:
    username = await api.open_account(currency)
    reply = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": deposit, "reference": f"PAY-{uuid.uuid4().hex[:6]}"})
    assert reply.status == 201, reply.text
    for order in range(1, 5 if paid else 1):  # one open refund request per order at a time
        reply = await api.post(f"/v1/accounts/{username}/purchases",
                               {"order_no": f"ORD-{order}", "amount": paid})
        assert reply.status == 201, reply.text
    return username


async def _returned_for_a_refund_with_freight(api: Api, username: str) -> dict[str, Any]:
    """A return case on the customer's ORD-1, walked to the supplier and resolved by a refund
    of 1,000 with 300 of freight charged; the case as opened."""
    case = await api.open_case(username)
    await api.walk(case["id"], "with_supplier")
    resolved = await api.post(f"/v1/return-cases/{case['id']}/resolve",
                              {"outcome": "refund", "refund_amount": 1_000,
                               "freight_amount": 300}, role="cs")
    assert resolved.status == 200, resolved.text
    return case


_orders: dict[str, int] = {}


async def _request(api: Api, username: str, amount: int, reason: str = "moving abroad"
                   ) -> dict[str, Any]:
    _orders[username] = _orders.get(username, 0) + 1
    order_no = f"ORD-{_orders[username]}"
    reply = await api.post(f"/v1/accounts/{username}/refund-requests",
                           {"order_no": order_no, "amount": amount, "reason": reason}, role="cs")
    assert reply.status == 201, reply.text
    answer: dict[str, Any] = reply.json
    return answer


# -- the refund queue ---------------------------------------------------------------------------


async def test_finance_s_open_queue_holds_requested_and_approved_requests_with_their_total(
    api: Api,
) -> None:
    # Given one customer with a requested, an approved and a rejected request
    username = await _customer(api, "USD", 5_000, paid=1_000)
    requested = await _request(api, username, 100)
    approved = await _request(api, username, 200)
    rejected = await _request(api, username, 400)
    await api.post(f"/v1/refund-requests/{approved['id']}/approve", {}, role=FINANCE)
    await api.post(f"/v1/refund-requests/{rejected['id']}/reject", {"reason": "duplicate"},
                   role=FINANCE)
    # When finance asks for the open ones
    reply = await api.get(f"/v1/refund-requests?status=open&username={username}", role=FINANCE)
    # Then both still holding money are listed, aged, and totalled
    assert reply.status == 200, reply.text
    items = reply.json["items"]
    assert [i["id"] for i in items] == [requested["id"], approved["id"]]
    assert [i["status"] for i in items] == ["requested", "approved"]
    assert all(i["age_days"] == 0 for i in items)
    (total,) = reply.json["totals"]
    assert (total["currency"], total["count"], total["amount"]) == ("USD", 2, 300)
    assert total["oldest_requested_at"] == items[0]["requested_at"]


class ShopClock:
    """The shop's clock of an in-process service, moved forward by whole days."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def move_days(self, days: int) -> None:
        self.now += timedelta(days=days)


@pytest.fixture(params=["sqlite", "postgres"])
async def shop_day(request: pytest.FixtureRequest, tmp_path: Path
                   ) -> AsyncIterator[tuple[Api, ShopClock]]:
    """The service in this process on a fresh store, its shop clock movable; a real server's
    clock is the wall clock, which a test cannot move."""
    clock = ShopClock()
    with store(request.param, tmp_path) as url:
        app = create_app(store_settings(url), Tokens.parse(tokens_env()), clock=clock)
        async with TestServer(app) as server, aiohttp.ClientSession(
            base_url=str(server.make_url(""))
        ) as session:
            yield Api(session), clock


async def test_finance_sees_how_many_days_each_request_has_waited(
    shop_day: tuple[Api, ShopClock],
) -> None:
    api, clock = shop_day
    # Given a customer who asked for a balance refund, which finance saw come in that day
    waited_days = 6
    username = await _customer(api, "USD", 5_000, paid=1_000)
    asked = await _request(api, username, 300)
    queue = f"/v1/refund-requests?status=open&username={username}"
    (today_s,) = (await api.get(queue, role=FINANCE)).json["items"]
    assert today_s["age_days"] == 0
    # When finance reads the queue six days later
    clock.move_days(waited_days)
    reply = await api.get(queue, role=FINANCE)
    # Then the request has waited six whole days, in the list and read alone
    assert reply.status == 200, reply.text
    (item,) = reply.json["items"]
    assert (item["id"], item["age_days"]) == (asked["id"], waited_days)
    (total,) = reply.json["totals"]
    assert total["oldest_requested_at"] == item["requested_at"] == today_s["requested_at"]
    one = await api.get(f"/v1/refund-requests/{asked['id']}", role=FINANCE)
    assert one.status == 200, one.text
    assert one.json["age_days"] == waited_days


async def test_the_queue_can_be_kept_to_one_currency_and_its_total_spans_every_page(
    api: Api,
) -> None:
    euro = await _customer(api, "EUR", 5_000, paid=1_000)
    dollar = await _customer(api, "USD", 5_000, paid=1_000)
    for amount in (10, 20, 30):
        await _request(api, euro, amount)
    await _request(api, dollar, 999)
    reply = await api.get(f"/v1/refund-requests?username={euro}&currency=EUR&limit=1",
                          role=FINANCE)
    assert reply.status == 200, reply.text
    assert len(reply.json["items"]) == 1 and reply.json["next"] is not None
    assert [(t["currency"], t["count"], t["amount"]) for t in reply.json["totals"]] == [
        ("EUR", 3, 60)]
    other = await api.get(f"/v1/refund-requests?username={dollar}&currency=EUR", role=FINANCE)
    assert other.json["items"] == [] and other.json["totals"] == []


async def test_a_status_that_does_not_exist_names_the_ones_that_do(api: Api) -> None:
    reply = await api.get("/v1/refund-requests?status=pending", role=FINANCE)
    problem = assert_problem(reply, 422, "validation_error")
    assert "open" in problem["errors"][0]["message"]
    assert "requested" in problem["errors"][0]["message"]


async def test_the_reject_answer_carries_the_rejection_reason_beside_the_customer_s(
    api: Api,
) -> None:
    username = await _customer(api, "USD", 5_000, paid=1_000)
    request = await _request(api, username, 100, reason="moving abroad")
    assert request["decision_reason"] is None
    reply = await api.post(f"/v1/refund-requests/{request['id']}/reject",
                           {"reason": "the order is still in transit"}, role=FINANCE)
    assert reply.status == 200, reply.text
    assert reply.json["reason"] == "moving abroad"
    assert reply.json["decision_reason"] == "the order is still in transit"
    cancelled = await _request(api, username, 50)
    reply = await api.post(f"/v1/refund-requests/{cancelled['id']}/cancel",
                           {"reason": "customer changed their mind"}, role="cs")
    assert reply.json["decision_reason"] == "customer changed their mind"


# -- customers ----------------------------------------------------------------------------------


async def test_customers_are_listed_by_name_prefix_currency_and_balance(api: Api) -> None:
    # Given three customers whose names share a prefix: two in EUR (one emptied), one in USD
    stem = f"cust-{uuid.uuid4().hex[:8]}"
    for suffix, currency in (("anna", "EUR"), ("bert", "EUR"), ("cora", "USD")):
        reply = await api.post("/v1/accounts", {"username": f"{stem}-{suffix}",
                                                "currency": currency})
        assert reply.status == 201, reply.text
    await api.post(f"/v1/accounts/{stem}-anna/deposits", {"amount": 700, "reference": "P-1"})
    # When finance searches by the prefix (in capitals, as a person types it)
    reply = await api.get(f"/v1/accounts?prefix={stem.upper()}", role=FINANCE)
    assert reply.status == 200, reply.text
    assert [a["username"] for a in reply.json["items"]] == [
        f"{stem}-anna", f"{stem}-bert", f"{stem}-cora"]
    assert reply.json["items"][0]["available"] == 700
    # Then it can keep to one currency, and to those with money available
    euro = await api.get(f"/v1/accounts?prefix={stem}&currency=EUR&with_balance=true",
                         role="cs")
    assert [a["username"] for a in euro.json["items"]] == [f"{stem}-anna"]
    empty = await api.get(f"/v1/accounts?prefix={stem}&with_balance=false", role="auditor")
    assert [a["username"] for a in empty.json["items"]] == [f"{stem}-bert", f"{stem}-cora"]


async def test_the_customer_list_is_paged_by_user_name(api: Api) -> None:
    stem = f"page-{uuid.uuid4().hex[:8]}"
    for n in range(3):
        await api.post("/v1/accounts", {"username": f"{stem}-{n}", "currency": "USD"})
    seen: list[str] = []
    after = ""
    for _ in range(5):
        reply = await api.get(f"/v1/accounts?prefix={stem}&limit=2{after}", role=FINANCE)
        assert reply.status == 200, reply.text
        seen += [a["username"] for a in reply.json["items"]]
        if reply.json["next"] is None:
            break
        after = f"&after={reply.json['next']}"
    assert seen == [f"{stem}-0", f"{stem}-1", f"{stem}-2"]


async def test_the_order_system_does_not_list_customers(api: Api) -> None:
    assert_problem(await api.get("/v1/accounts", role="system"), 403, "forbidden")


# -- the journal --------------------------------------------------------------------------------


async def _entries(api: Api, query: str) -> list[dict[str, Any]]:
    reply = await api.get(f"/v1/journal?limit=1000&{query}", role=FINANCE)
    assert reply.status == 200, reply.text
    items: list[dict[str, Any]] = reply.json["items"]
    return items


async def test_the_freight_revenue_of_one_currency_is_one_query(api: Api) -> None:
    # Given deposits in USD and EUR
    dollar = await _customer(api, "USD", 1_111)
    euro = await _customer(api, "EUR", 2_222)
    # When finance asks for the deposits clearing account in EUR only
    entries = await _entries(api, "account=clearing:deposits&currency=EUR")
    # Then no USD entry is mixed in, and the EUR deposit is there
    assert entries and {e["currency"] for e in entries} == {"EUR"}
    assert euro in {e["username"] for e in entries}
    assert dollar not in {e["username"] for e in entries}


async def test_the_journal_takes_a_time_range(api: Api) -> None:
    username = await _customer(api, "USD", 500)
    (deposit,) = [e for e in await _entries(api, "currency=USD") if e["username"] == username]
    at = deposit["at"]
    encoded = at.replace("+", "%2B")
    from_it = await _entries(api, f"since={encoded}")
    assert from_it[0]["position"] == deposit["position"]
    before_it = await _entries(api, f"until={encoded}")
    assert all(e["position"] < deposit["position"] for e in before_it)
    nothing = await _entries(api, "since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z")
    assert nothing == []


async def test_a_deposit_debits_clearing_and_credits_the_customer_as_documented(
    api: Api,
) -> None:
    username = await _customer(api, "USD", 750)
    (entry,) = [e for e in await _entries(api, "account=clearing:deposits&currency=USD")
                if e["username"] == username]
    assert {p["account"]: p["amount"] for p in entry["postings"]} == {
        "clearing:deposits": 750, f"customer:{username}": -750}


# -- reconciliation -----------------------------------------------------------------------------


async def test_reconciliation_without_a_currency_covers_every_currency_in_use(api: Api) -> None:
    await _customer(api, "USD", 1_000, paid=100)
    await _customer(api, "JPY", 5_000)
    reply = await api.get("/v1/reconciliation", role=FINANCE)
    assert reply.status == 200, reply.text
    report = reply.json
    codes = [c["currency"] for c in report["currencies"]]
    assert {"USD", "JPY"} <= set(codes) and codes == sorted(codes)
    assert report["ok"] is True
    assert all(c["position"] == report["position"] for c in report["currencies"])


async def test_reconciliation_shows_each_chart_account_s_balance(api: Api) -> None:
    await _customer(api, "USD", 1_000, paid=100)
    before = await api.get("/v1/reconciliation?currency=USD", role=FINANCE)
    assert before.status == 200, before.text
    freight_before = before.json["chart_balances"].get("revenue:freight", 0)
    # a return refunded with 300 of freight charged to the customer
    username = await api.customer_with_order()
    await _returned_for_a_refund_with_freight(api, username)
    reply = await api.get("/v1/reconciliation?currency=USD", role=FINANCE)
    assert reply.status == 200, reply.text
    charts = reply.json["chart_balances"]
    assert charts["clearing:deposits"] == reply.json["totals"]["deposits"]
    assert -charts["customer:*"] == reply.json["customer_balances"]["posted"]
    assert charts["revenue:freight"] == freight_before - 300  # revenue: a credit, negative
    assert sum(charts.values()) == reply.json["trial_balance"] == 0


async def test_reconciliation_as_of_a_moment_is_the_position_then(api: Api) -> None:
    username = await _customer(api, "GBP", 300)
    (deposit,) = [e for e in await _entries(api, "currency=GBP") if e["username"] == username]
    later = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": 5, "reference": "PAY-later"})
    assert later.status == 201
    then = await api.get(f"/v1/reconciliation?currency=GBP&as_of={deposit['at']}",
                         role=FINANCE)
    assert then.status == 200, then.text
    assert then.json["position"] < later.json["position"]
    assert then.json["position"] >= deposit["position"]
    before_all = await api.get("/v1/reconciliation?as_of=2000-01-01T00:00:00Z", role="auditor")
    assert before_all.json == {"position": 0, "currencies": [], "ok": True}
    both = await api.get("/v1/reconciliation?as_of=2000-01-01T00:00:00Z&at_position=1",
                         role=FINANCE)
    assert_problem(both, 422, "validation_error")


# -- the event log ------------------------------------------------------------------------------


async def _events(api: Api, query: str) -> dict[str, Any]:
    reply = await api.get(f"/v1/events?{query}", role="auditor")
    assert reply.status == 200, reply.text
    answer: dict[str, Any] = reply.json
    return answer


async def test_the_event_log_names_events_as_history_does(api: Api) -> None:
    username = await _customer(api, "USD", 900, paid=100)
    history = (await api.get(f"/v1/accounts/{username}/history")).json["items"]
    page = await _events(api, f"stream={username}&limit=1000")
    assert [e["name"] for e in page["items"]] == [h["type"] for h in history]
    assert {e["aggregate"] for e in page["items"]} == {"account"}
    assert [e["position"] for e in page["items"]] == [h["position"] for h in history]


async def test_the_event_log_is_kept_to_one_type_and_a_time_range(api: Api) -> None:
    username = await _customer(api, "USD", 900, paid=100)
    mine = (await _events(api, f"stream={username}"))["items"]
    paid = await _events(api, f"stream={username}&type=purchase_paid")
    assert [e["name"] for e in paid["items"]] == ["purchase_paid"] * 4
    by_topic = await _events(api, f"stream={username}&type=ledger:Account.PurchasePaid")
    assert by_topic["items"] == paid["items"]
    deposit = next(e for e in mine if e["name"] == "deposit_received")
    since = await _events(api, f"stream={username}&since={deposit['at']}")
    assert since["items"][0]["position"] == deposit["position"]
    until = await _events(api, f"stream={username}&until={deposit['at']}")
    assert [e["name"] for e in until["items"]] == ["opened"]


async def test_a_filtered_log_pages_on_with_next(api: Api) -> None:
    username = await _customer(api, "USD", 900, paid=100)
    seen: list[int] = []
    after = ""
    for _ in range(10):
        page = await _events(api, f"stream={username}&limit=2{after}")
        seen += [e["position"] for e in page["items"]]
        if page["next"] is None:
            break
        after = f"&after={page['next']}"
    everything = await _events(api, f"stream={username}&limit=1000")
    assert seen == [e["position"] for e in everything["items"]]
    assert len(seen) == 6  # opened, deposit, four purchases


async def test_the_event_log_holds_the_shop_s_events_and_no_idempotency_records(
    api: Api,
) -> None:
    # Given a deposit sent under an Idempotency-Key, and retried with it
    username = await api.open_account("USD")
    mine = (await _events(api, f"stream={username}"))["items"]
    before = mine[-1]["position"]
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    body = {"amount": 250, "reference": f"PAY-{uuid.uuid4().hex[:6]}"}
    for status in (201, 201):
        reply = await api.call("POST", f"/v1/accounts/{username}/deposits", json_body=body,
                               headers=key)
        assert reply.status == status, reply.text
    # When the auditor reads the log from there on
    after = await _events(api, f"after={before}&limit=1000")
    # Then it holds the deposit once, and only the shop's own events: no key's record
    assert {e["aggregate"] for e in after["items"]} <= {"account", "refund_request",
                                                         "return_case"}
    assert not [e for e in after["items"] if "dempot" in e["type"] + e["name"]]
    assert [e["name"] for e in after["items"] if e["stream"] == mine[0]["stream"]] == [
        "deposit_received"]


# -- unmatched money ----------------------------------------------------------------------------


async def test_unmatched_money_stands_out_in_one_report(api: Api) -> None:
    # Given, in a currency of its own: a customer who deposited and never bought, one who
    # bought, a request waiting and one approved but not paid
    currency = "CHF"
    idle = await _customer(api, currency, 400)
    buyer = await _customer(api, currency, 1_000, paid=100)
    waiting = await _request(api, buyer, 30)
    approved = await _request(api, buyer, 20)
    await api.post(f"/v1/refund-requests/{approved['id']}/approve", {}, role=FINANCE)
    # When finance asks what stands out (everything before a minute from now is "idle")
    later = await api.get(f"/v1/reconciliation/unmatched?currency={currency}"
                          "&idle_before=2999-01-01T00:00:00Z", role=FINANCE)
    assert later.status == 200, later.text
    report = later.json
    # Then each kind of unmatched money is listed, counted and summed
    never = report["deposits_never_spent"]
    assert [i["username"] for i in never["items"]] == [idle]
    assert (never["count"], never["amount"], never["items"][0]["deposited"]) == (1, 400, 400)
    assert {i["username"] for i in report["idle_balances"]["items"]} == {idle, buyer}
    assert [i["id"] for i in report["refunds_waiting"]["items"]] == [waiting["id"]]
    assert report["refunds_waiting"]["amount"] == 30
    assert [i["id"] for i in report["payouts_not_paid"]["items"]] == [approved["id"]]
    # and balances touched within the last day are not idle
    today = await api.get(f"/v1/reconciliation/unmatched?currency={currency}&idle_days=1",
                          role="auditor")
    assert today.json["idle_balances"] == {"count": 0, "amount": 0, "by_currency": [],
                                           "items": []}


async def test_without_a_currency_each_currency_is_summed_apart(api: Api) -> None:
    # Given customers who never spent anything, in yen and in Danish kroner
    for currency, amount in (("JPY", 1_200), ("JPY", 800), ("DKK", 5_000)):
        await _customer(api, currency, amount)
    # When finance asks what stands out in every currency
    reply = await api.get("/v1/reconciliation/unmatched", role=FINANCE)
    assert reply.status == 200, reply.text
    never = reply.json["deposits_never_spent"]
    # Then yen and kroner are never added together: the section gives no sum of its own,
    # and each currency has its count and sums
    assert (never["amount"], never["deposited"]) == (None, None)
    sums = {c["currency"]: c for c in never["by_currency"]}
    assert sums["JPY"]["count"] >= 2 and sums["DKK"]["count"] >= 1
    assert never["count"] == sum(c["count"] for c in never["by_currency"])
    # and one currency's sums are those of the report kept to that currency
    for currency in ("JPY", "DKK"):
        alone = await api.get(f"/v1/reconciliation/unmatched?currency={currency}", role=FINANCE)
        kept = alone.json["deposits_never_spent"]
        assert (kept["count"], kept["amount"], kept["deposited"]) == (
            sums[currency]["count"], sums[currency]["amount"], sums[currency]["deposited"])
        assert kept["by_currency"] == [sums[currency]]


async def test_money_never_spent_is_summed_as_what_is_still_there_beside_what_came_in(
    api: Api,
) -> None:
    # Given, in a currency of its own, a customer who paid in twice, never bought anything and
    # had part of it paid back out (the refund's order number is a deposit reference), and
    # another who paid in and has a refund request still holding part of it
    currency = "NOK"
    username = await api.open_account(currency)
    first = f"PAY-{uuid.uuid4().hex[:6]}"
    for amount, reference in ((400, first), (100, f"PAY-{uuid.uuid4().hex[:6]}")):
        reply = await api.post(f"/v1/accounts/{username}/deposits",
                               {"amount": amount, "reference": reference})
        assert reply.status == 201, reply.text
    asked = await api.post(f"/v1/accounts/{username}/refund-requests",
                           {"order_no": first, "amount": 150, "reason": "moving abroad"},
                           role="cs")
    assert asked.status == 201, asked.text
    await api.post(f"/v1/refund-requests/{asked.json['id']}/approve", {}, role=FINANCE)
    paid = await api.post(f"/v1/refund-requests/{asked.json['id']}/pay",
                          {"payout_reference": "BANK-1"}, role="payer")
    assert paid.status == 200, paid.text
    holding = await api.open_account(currency)
    reference = f"PAY-{uuid.uuid4().hex[:6]}"
    reply = await api.post(f"/v1/accounts/{holding}/deposits",
                           {"amount": 200, "reference": reference})
    assert reply.status == 201, reply.text
    held = await api.post(f"/v1/accounts/{holding}/refund-requests",
                          {"order_no": reference, "amount": 50, "reason": "moving abroad"},
                          role="cs")
    assert held.status == 201, held.text
    # When finance asks what stands out in that currency
    reply = await api.get(f"/v1/reconciliation/unmatched?currency={currency}", role=FINANCE)
    assert reply.status == 200, reply.text
    never = reply.json["deposits_never_spent"]
    # Then each shows what came in and what is still there; the section sums both
    assert [(i["username"], i["deposited"], i["available"]) for i in never["items"]] == [
        (username, 500, 350), (holding, 200, 150)]
    assert (never["count"], never["deposited"], never["amount"]) == (2, 700, 500)
    # and what the request holds is in the waiting section, not counted twice
    assert reply.json["refunds_waiting"]["amount"] == 50


async def test_the_unmatched_report_lists_at_most_its_limit_but_counts_them_all(
    api: Api,
) -> None:
    currency = "SEK"
    for _ in range(3):
        await _customer(api, currency, 100)
    reply = await api.get(f"/v1/reconciliation/unmatched?currency={currency}&limit=2",
                          role=FINANCE)
    assert reply.status == 200, reply.text
    never = reply.json["deposits_never_spent"]
    assert never["count"] >= 3 and len(never["items"]) == 2
    both = await api.get("/v1/reconciliation/unmatched?idle_days=1"
                         "&idle_before=2026-01-01T00:00:00Z", role=FINANCE)
    assert_problem(both, 422, "validation_error")


async def test_journal_entries_carry_what_matches_them_to_the_bank_and_the_cases(
    api: Api,
) -> None:
    # Given a customer who paid in (PAY-…), bought, was paid a balance refund out (BANK-…),
    # and had a return refunded with freight charged
    username = await api.open_account("USD")
    payment = f"PAY-{uuid.uuid4().hex[:6]}"
    await api.post(f"/v1/accounts/{username}/deposits", {"amount": 5_000, "reference": payment})
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "ORD-1", "amount": 2_000})
    request = await _request(api, username, 500)
    await api.post(f"/v1/refund-requests/{request['id']}/approve", {}, role=FINANCE)
    paid = await api.post(f"/v1/refund-requests/{request['id']}/pay",
                          {"payout_reference": "BANK-4711"}, role="payer")  # four eyes
    assert paid.status == 200, paid.text
    case = await _returned_for_a_refund_with_freight(api, username)

    # When finance reads the customer's journal
    entries = await _entries(api, f"account=customer:{username}")

    # Then each entry names what a statement or a case names it by
    seen = {e["type"]: (e["payment_reference"], e["payout_reference"], e["case_id"],
                        e["request_id"], e["order_no"]) for e in entries}
    assert seen == {
        "deposit_received": (payment, None, None, None, None),
        "purchase_paid": (None, None, None, None, "ORD-1"),
        "balance_refund_paid_out": (None, "BANK-4711", None, request["id"], None),
        "return_refund_credited": (None, None, case["id"], None, "ORD-1"),
        "freight_charged": (None, None, case["id"], None, "ORD-1"),
    }
