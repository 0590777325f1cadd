"""The console at a day's work, in Chromium: what the review found missing or wrong, each as the
person at the console meets it (a deposit-only customer refunded, a double click, a stuck
exchange, a refund request to cancel, a reconciliation at a moment, a colleague's link, a
case's deadlines and its work queue, a long case, the server's words, a hold in the history,
a long order list, the keyboard's place in the queue, a busy ledger)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.conftest import call, customer
from tests.browser.test_console import body_rows, find, open_case, open_the_case, sign_in
from tests.http.conftest import TOKENS, Server, case_body, main_path


def usd(minor: int) -> str:
    """Minor units as the console shows them: USD 1,234.50, USD -5.50."""
    sign = "-" if minor < 0 else ""
    return f"USD {sign}{abs(minor) // 100:,}.{abs(minor) % 100:02d}"


def case_view(server: Server, case_id: str) -> dict[str, Any]:
    found: dict[str, Any] = call(server, "GET", f"/v1/return-cases/{case_id}?steps_limit=1000",
                                 "cs")
    return found


def refused_case(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    """Opens a case the policy refuses: its 422 problem, which names the recorded case."""
    request = urllib.request.Request(
        server.base_url + "/v1/return-cases", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {TOKENS['cs']}", "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=30).close()
    except urllib.error.HTTPError as error:
        problem: dict[str, Any] = json.load(error)
        assert error.code == 422, problem
        return problem
    raise AssertionError("the policy took the case")


# 1. A refund request may name a deposit's payment reference.
def test_a_customer_who_only_deposited_is_refunded_against_their_deposit(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server, deposit=5_000, paid=0)
    sign_in(page, console_server, console_server.people["carl"])
    find(page, username)
    page.get_by_label("Order", exact=True).select_option(label=f"Deposit dep-{username}")
    page.get_by_label("Amount (USD)").fill("5.00")
    page.get_by_label("Reason", exact=True).fill("moving abroad")
    page.get_by_role("button", name="Request refund").click()
    expect(page.get_by_label("Held")).to_have_text("USD 5.00")
    requests = call(console_server, "GET", f"/v1/refund-requests?username={username}", "cs")
    assert [r["order_no"] for r in requests["items"]] == [f"dep-{username}"]


# 2. Every write carries an Idempotency-Key, made once per fill, its button off in flight.
def test_a_double_click_adds_one_note_and_the_button_is_off_while_it_is_sent(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server)
    case_id = open_case(console_server, username)
    title = open_the_case(page, console_server, username)
    expect(title).to_contain_text("opened")
    add = page.get_by_role("button", name="Add note")
    sent: list[tuple[str | None, bool]] = []

    def record(route: Route) -> None:
        # What the page sent, and whether its button was off while the request was in flight.
        sent.append((route.request.headers.get("idempotency-key"), add.is_disabled()))
        route.continue_()

    page.route(re.compile(r"/v1/return-cases/[0-9a-f-]+/notes$"), record)
    page.get_by_label("Note text").fill("the customer called twice")
    add.dblclick()
    expect(page.locator("#notice")).to_have_text("Note added.")
    expect(page.locator("#case-area ol li").filter(has_text="the customer called twice")
           ).to_have_count(1)
    notes = [s for s in case_view(console_server, case_id)["steps"] if s["step"] == "note_added"]
    assert len(notes) == 1
    assert len(sent) == 1
    key, off_in_flight = sent[0]
    assert key and re.fullmatch(r"[0-9a-f]{32}", key)
    assert off_in_flight


def test_a_refused_write_corrected_is_sent_as_a_new_request(
    page: Page, console_server: Server,
) -> None:
    """The same key with another body would be 422 idempotency_key_reused: a changed form is
    sent under a new key."""
    username = customer(console_server)  # USD 20.00 available
    keys: list[str | None] = []

    def record(route: Route) -> None:
        keys.append(route.request.headers.get("idempotency-key"))
        route.continue_()

    page.route(re.compile(r"/refund-requests$"), record)
    sign_in(page, console_server, console_server.people["carl"])
    find(page, username)
    page.get_by_label("Amount (USD)").fill("25.00")
    page.get_by_role("button", name="Request refund").click()
    expect(page.get_by_role("alert")).not_to_be_empty()
    expect(page.get_by_role("alert")).not_to_contain_text("idempotency")
    page.get_by_label("Amount (USD)").fill("2.00")
    page.get_by_role("button", name="Request refund").click()
    expect(page.get_by_label("Held")).to_have_text("USD 2.00")
    assert len(keys) == 2 and all(keys) and keys[0] != keys[1]


# 3. An exchange whose freight is more than the balance: the freight waived, with a reason.
def test_an_exchange_whose_freight_exceeds_the_balance_is_resolved_with_the_freight_waived(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server, deposit=5_000, paid=3_000)  # USD 20.00 available
    open_case(console_server, username, *[(step, body) for step, body, _ in main_path()])
    title = open_the_case(page, console_server, username)
    expect(title).to_contain_text("with supplier")
    page.get_by_role("group", name="Steps").get_by_role("button", name="Resolve").click()
    form = page.get_by_role("form", name="Resolve")
    form.get_by_label("Outcome").select_option("exchange")
    form.get_by_label("Freight (USD)").fill("50.00")
    form.get_by_label("Outbound tracking").fill("TRK-OUT-9")
    form.get_by_label("Waive freight because").fill("the freight is more than the balance")
    form.get_by_role("button", name="Confirm resolve").click()
    expect(title).to_contain_text("resolved")
    expect(page.locator("#case-area ol")).to_contain_text("the freight is more than the balance")
    expect(page.get_by_label("Available")).to_have_text("USD 20.00")


# 4. Customer service sees a customer's open refund requests and cancels one.
def test_customer_service_sees_a_customers_refund_request_and_cancels_it(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server)
    request = call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
                   {"order_no": "ORD-1", "amount": 550, "reason": "moving abroad"})
    sign_in(page, console_server, console_server.people["carl"])
    find(page, username)
    requests = page.get_by_role("table", name="Open refund requests")
    row = requests.get_by_role("row", name="Refund request of USD 5.50 for ORD-1")
    expect(row).to_contain_text("requested")
    expect(row.get_by_role("cell", name="none", exact=True)).to_be_visible()  # no approver yet
    row.get_by_role("button", name="Cancel refund request").click()
    form = page.get_by_role("form", name="Cancel refund request")
    form.get_by_label("Reason").fill("the customer changed their mind")
    form.get_by_role("button", name="Confirm cancellation").click()
    expect(page.get_by_text("No open refund requests.")).to_be_visible()
    expect(page.get_by_label("Held")).to_have_text("USD 0.00")
    found = call(console_server, "GET", f"/v1/refund-requests/{request['id']}", "cs")
    assert found["status"] == "cancelled"


def test_finance_sees_a_customers_refund_requests_with_approvers_but_may_not_cancel(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server)
    request = call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
                   {"order_no": "ORD-1", "amount": 300, "reason": "r"})
    call(console_server, "POST", f"/v1/refund-requests/{request['id']}/approve", "finance",
         {"note": "ok"}, token=console_server.people["ann"])
    sign_in(page, console_server, console_server.people["bea"])
    find(page, username)
    row = page.get_by_role("row", name="Refund request of USD 3.00 for ORD-1")
    expect(row).to_contain_text("approved")
    expect(row).to_contain_text("ann")
    expect(row.get_by_role("button")).to_have_count(0)


# 5. Reconciliation at a moment, kept in the address.
def test_finance_reconciles_as_of_a_moment_and_a_reload_keeps_it(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server)
    history = call(console_server, "GET", f"/v1/accounts/{username}/history", "cs")["items"]
    moment = history[-1]["at"][:19]  # to the second, UTC: the purchase's second or before it
    call(console_server, "POST", f"/v1/accounts/{username}/deposits", "system",
         {"amount": 700, "reference": f"later-{username}"})
    then = call(console_server, "GET", f"/v1/reconciliation?currency=USD&as_of={moment}Z",
                "finance")
    now = call(console_server, "GET", "/v1/reconciliation?currency=USD", "finance")
    assert then["totals"]["deposits"] <= now["totals"]["deposits"] - 700

    sign_in(page, console_server, console_server.people["bea"])
    page.get_by_role("link", name="Reconciliation").click()
    page.get_by_label("As of (UTC)").fill(moment)
    page.get_by_role("button", name="Reconcile").click()
    expect(page).to_have_url(re.compile(rf"#reconciliation/{moment[:10]}T"))

    def shows_then() -> None:
        usd_totals = page.get_by_role("table", name="USD reconciliation")
        expect(usd_totals.get_by_role("row", name=re.compile("^deposits"))).to_contain_text(
            usd(then["totals"]["deposits"]))
        balances = page.get_by_role("table", name="USD customer balances")
        for name in ("posted", "held", "available"):
            expect(balances.get_by_role("row", name=re.compile(f"^{name}"))).to_contain_text(
                usd(then["customer_balances"][name]))
        chart = page.get_by_role("table", name="USD chart balances")
        for account, amount in then["chart_balances"].items():
            expect(chart.get_by_role("row", name=f"{account} {usd(amount)}", exact=True)
                   ).to_be_visible()

    shows_then()
    page.reload()
    expect(page.get_by_label("As of (UTC)")).to_have_value(moment)
    shows_then()


# 6. A link, a bookmark or a reload opens where it points.
def test_a_colleagues_link_opens_where_it_points(page: Page, console_server: Server) -> None:
    username = customer(console_server)
    request = call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
                   {"order_no": "ORD-1", "amount": 100, "reason": "r"})
    call(console_server, "POST", f"/v1/refund-requests/{request['id']}/approve", "finance",
         {"note": ""}, token=console_server.people["ann"])
    sign_in(page, console_server, console_server.people["bea"], query="#refunds/approved")
    expect(page.get_by_label("Status")).to_have_value("approved")
    expect(page.get_by_role("row", name=f"Refund request of {username}")).to_be_visible()
    page.reload()
    expect(page.get_by_label("Status")).to_have_value("approved")
    expect(page.get_by_role("row", name=f"Refund request of {username}")).to_be_visible()

    case_id = open_case(console_server, username)
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, console_server, console_server.people["carl"],
            query=f"#customers/{username}/{case_id}")
    expect(page.get_by_label("Posted")).to_have_text("USD 20.00")
    expect(page.get_by_role("heading", name=re.compile("Case for ORD-1"))).to_contain_text("opened")
    page.reload()
    expect(page.get_by_role("heading", name=re.compile("Case for ORD-1"))).to_contain_text("opened")
    # An address the nav does not have, with a quote in it, opens the role's first section.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, console_server, console_server.people["carl"], query='#nowhere"]/x')
    expect(page.get_by_role("heading", name="Customers")).to_be_visible()
    expect(page.get_by_role("alert")).to_be_empty()


# 7. What decides a case's next step, and the work queue.
def overdue(found: dict[str, Any]) -> dict[str, Any]:
    return {**found, "overdue": True, "overdue_reasons": ["past_return_by"]}


def test_a_case_shows_its_days_its_overdue_reasons_and_each_steps_words(
    page: Page, console_server: Server,
) -> None:
    """Overdue needs a return_by in the past, which a test cannot reach (the server's clock):
    the server's view is marked overdue on its way in."""
    username = customer(console_server)
    case_id = open_case(console_server, username, *[(step, body) for step, body, _ in
                                                     main_path()[:3]])

    def marked_overdue(route: Route) -> None:
        answer = route.fetch()
        route.fulfill(response=answer, json=overdue(answer.json()))

    page.route(re.compile(rf"/v1/return-cases/{case_id}(\?.*)?$"), marked_overdue)
    title = open_the_case(page, console_server, username)
    expect(title).to_contain_text("goods in transit")
    days = case_view(console_server, case_id)["days_open"]
    case = page.locator("#case-area")
    expect(case).to_contain_text(f"{days} {'day' if days == 1 else 'days'} open")
    expect(case.locator("p.bad")).to_have_text(
        "Overdue: the last postmark date has passed and nothing was posted back.")
    steps = case.locator("ol li")
    expect(steps.filter(has_text="shipped back")).to_contain_text("tracking TRK-BACK-1")
    expect(steps.filter(has_text="supplier review")).to_contain_text("asked the supplier")
    expect(steps.first).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"))


def test_a_refused_case_says_why_in_words(page: Page, console_server: Server) -> None:
    username = customer(console_server)
    problem = refused_case(console_server, case_body(
        username, evidence={"goods_photos": [], "package_photos": []}))
    words = case_view(console_server, problem["case_id"])["steps"][0]["data"]["words"]
    sign_in(page, console_server, console_server.people["carl"])
    find(page, username)
    page.get_by_role("link", name=re.compile("defective case: refused")).click()
    case = page.locator("#case-area")
    expect(case.locator("p.bad")).to_have_text(f"Refused: {words}")
    expect(case.locator("ol li").first).to_contain_text(words)
    expect(case.locator("ol li").first).not_to_contain_text("missing_evidence")


def test_customer_service_works_from_the_return_case_queue(
    page: Page, console_server: Server,
) -> None:
    first = customer(console_server)
    first_case = open_case(console_server, first)
    second = customer(console_server)
    open_case(console_server, second)
    sign_in(page, console_server, console_server.people["carl"], query="?limit=1")
    page.get_by_role("link", name="Return cases").click()
    queue = page.get_by_role("table", name="Return cases: open")
    expect(body_rows(queue)).to_have_count(1)
    shown = body_rows(queue).first.get_attribute("data-id")
    page.get_by_role("navigation", name="Return cases pages").get_by_role(
        "button", name="Next page").click()
    expect(body_rows(queue).first).not_to_have_attribute("data-id", shown or "")

    # Overdue: the server's answer to the console's overdue query, our case marked overdue.
    def ours_overdue(route: Route) -> None:
        answer = route.fetch()
        found = call(console_server, "GET", f"/v1/return-cases/{first_case}", "cs")
        summary = {k: v for k, v in found.items()
                   if k not in ("steps", "messages", "evidence", "steps_next")}
        route.fulfill(response=answer, json={**answer.json(), "items": [overdue(summary)]})

    page.route(re.compile(r"/v1/return-cases\?(.*&)?overdue=true"), ours_overdue)
    page.get_by_label("Queue").select_option("overdue")
    row = page.get_by_role("table", name="Return cases: overdue").get_by_role("row").filter(
        has_text=first)
    expect(row).to_contain_text("the last postmark date has passed")
    row.get_by_role("link", name=f"Case for ORD-1 of {first}").click()
    expect(page).to_have_url(re.compile(rf"#customers/{first}/{first_case}$"))
    expect(page.get_by_role("heading", name=re.compile("Case for ORD-1"))).to_contain_text("opened")


# 8. Every step of a long case is shown.
def test_a_case_with_more_than_a_hundred_steps_shows_them_all(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server)
    case_id = open_case(console_server, username)
    for n in range(1, 102):
        call(console_server, "POST", f"/v1/return-cases/{case_id}/notes", "cs",
             {"text": f"call {n}"})
    open_the_case(page, console_server, username)
    steps = page.locator("#case-area ol li")
    expect(steps).to_have_count(102)  # opened, then 101 notes
    expect(steps.last).to_contain_text("call 101")


# 9. A validation error says what is wrong.
def test_a_validation_error_shows_the_servers_messages(page: Page, console_server: Server
                                                       ) -> None:
    username = customer(console_server)
    sign_in(page, console_server, console_server.people["carl"])
    find(page, username)
    page.get_by_role("button", name="Open a return case for ORD-1").click()
    page.get_by_label("Item").fill("   ")
    page.get_by_role("button", name="Open case").click()
    alert = page.get_by_role("alert")
    expect(alert).to_have_text("items.0.description: must be text that is not blank")
    expect(alert).not_to_contain_text("the request is not valid")


# 10. A hold is shown as the available money it takes.
def test_the_history_shows_a_refund_hold_as_money_taken_from_the_available_balance(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server)
    call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
         {"order_no": "ORD-1", "amount": 550, "reason": "r"})
    sign_in(page, console_server, console_server.people["carl"])
    find(page, username)
    hold = page.get_by_role("table", name="History").get_by_role("row").filter(
        has_text="refund requested")
    expect(hold.locator("td.money").first).to_have_text("USD -5.50")
    expect(hold.locator("td.money").last).to_have_text("USD 14.50")


# 11. Orders page on.
def test_a_customers_orders_page_on_and_the_refund_form_offers_the_page_shown(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server, deposit=5_000, paid=1_000)
    call(console_server, "POST", f"/v1/accounts/{username}/purchases", "system",
         {"order_no": "ORD-2", "amount": 1_000})
    sign_in(page, console_server, console_server.people["carl"], query="?limit=1")
    find(page, username)
    orders = page.get_by_role("table", name="Orders")
    expect(body_rows(orders)).to_have_count(1)
    expect(orders).to_contain_text("ORD-1")
    page.get_by_role("navigation", name="Orders pages").get_by_role(
        "button", name="Next page").click()
    expect(orders).to_contain_text("ORD-2")
    expect(orders).not_to_contain_text("ORD-1")
    expect(page.get_by_role("button", name="Open a return case for ORD-2")).to_be_visible()
    page.get_by_label("Order", exact=True).select_option(label="Order ORD-2")
    page.get_by_label("Amount (USD)").fill("1.00")
    page.get_by_role("button", name="Request refund").click()
    expect(page.get_by_label("Held")).to_have_text("USD 1.00")
    requests = call(console_server, "GET", f"/v1/refund-requests?username={username}", "cs")
    assert [r["order_no"] for r in requests["items"]] == ["ORD-2"]


# 12. The keyboard stays in the queue after a decision; buttons say whose request.
def test_after_a_decision_the_keyboard_stays_in_the_refund_queue(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server)
    call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
         {"order_no": "ORD-1", "amount": 100, "reason": "r"})
    sign_in(page, console_server, console_server.people["cleo"])
    page.get_by_role("link", name="Refund requests").click()
    row = page.get_by_role("row", name=f"Refund request of {username}")

    def button(verb: str) -> Locator:
        return row.get_by_role("button", name=f"{verb} {username} USD 1.00", exact=True)

    expect(button("Pay")).to_be_disabled()
    button("Approve").click()
    expect(row).to_contain_text("approved")
    expect(button("Reject")).to_be_focused()  # Approve and Pay are off for cleo now
    button("Reject").press("Enter")
    page.get_by_label("Reason").fill("asked twice")
    page.get_by_label("Reason").press("Enter")
    expect(page.get_by_role("status").first).to_have_text(f"Rejected the refund for {username}.")
    expect(page.get_by_role("heading", name="Refund requests")).to_be_focused()


# 13. A busy ledger is said in words, and sending again is the same request.
def test_a_busy_ledger_is_said_in_words_and_sending_again_is_the_same_request(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server)
    keys: list[str | None] = []

    def busy_once(route: Route) -> None:
        keys.append(route.request.headers.get("idempotency-key"))
        if len(keys) > 1:
            route.continue_()
            return
        route.fulfill(status=503, headers={"Retry-After": "1"}, json={
            "type": "urn:ledger:problem:not_ready", "title": "Service Unavailable",
            "status": 503, "code": "not_ready",
            "detail": "read models accounts did not reach position 812 in time"})

    page.route(re.compile(r"/refund-requests$"), busy_once)
    sign_in(page, console_server, console_server.people["carl"])
    find(page, username)
    page.get_by_label("Amount (USD)").fill("3.00")
    page.get_by_role("button", name="Request refund").click()
    expect(page.get_by_role("alert")).to_have_text(
        "The ledger is busy or catching up; try again in a moment. "
        "(read models accounts did not reach position 812 in time)")
    page.get_by_role("button", name="Request refund").click()
    expect(page.get_by_label("Held")).to_have_text("USD 3.00")
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]


# Smaller: photos after opening, and the acceptance's instructions.
def test_photos_are_added_after_opening_and_acceptance_carries_instructions(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server)
    case_id = open_case(console_server, username, ("supplier-review", {"note": ""}))
    title = open_the_case(page, console_server, username)
    steps = page.get_by_role("group", name="Steps")
    steps.get_by_role("button", name="Add photos").click()
    page.get_by_role("form", name="Add photos").get_by_label("Goods photo").fill("photo-goods-2")
    page.get_by_role("button", name="Confirm add photos").click()
    expect(page.locator("#case-area ol")).to_contain_text("evidence added")
    steps.get_by_role("button", name="Accept").click()
    form = page.get_by_role("form", name="Accept")
    form.get_by_label("Return address").fill("Supplier Ltd, Dock 4")
    form.get_by_label("Instructions").fill("write the case number on the parcel")
    form.get_by_role("button", name="Confirm accept").click()
    expect(title).to_contain_text("accepted")
    found = case_view(console_server, case_id)
    assert "photo-goods-2" in found["evidence"]["goods_photos"]
    accepted = next(s for s in found["steps"] if s["step"] == "accepted")
    assert accepted["data"]["instructions"] == "write the case number on the parcel"
