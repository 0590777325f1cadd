"""The console's views as finance, customer service and auditors read them, in Chromium: each
event's data in words, the journal and the event log filtered by the API's own parameters,
customers browsed by the start of their names, the refund queue's totals per currency and each
request's age, and what a list loaded or the ledger refused said in a live region.

(A favicon is not among them: the console's Content-Security-Policy, ``img-src 'self'``, refuses
an inline ``data:`` icon, and a file of its own would be a new entry in ``api/people.py``'s
``CONSOLE_ASSETS``.)"""

from __future__ import annotations

import re
import uuid
from typing import Any

from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.conftest import call, customer
from tests.browser.test_console import body_rows, sign_in
from tests.http.conftest import Server, case_body

PAYLOAD = '<img src=x onerror="window.pwned=1">'


def data_field(row: Locator, name: str) -> Locator:
    """The value of one field of an event's data, in its row of the event log."""
    return row.locator(f"dt:text-is('{name}') + dd")


def event_row(page: Page, position: int) -> Locator:
    return page.get_by_role("table", name="Event log").get_by_role("row").filter(
        has=page.get_by_role("cell", name=str(position), exact=True))


def events_of(server: Server, username: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = call(server, "GET", f"/v1/events?stream={username}&limit=1000",
                                       "auditor")["items"]
    return found


def loaded(page: Page) -> Locator:
    return page.get_by_role("status").filter(has_text="Loaded")


# 1. The event log shows what each event says, not only its type and position.

def test_the_event_log_shows_each_events_data_in_words_with_amounts_in_their_currency(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server, currency="EUR", deposit=5_000, paid=3_000)
    call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
         {"order_no": "ORD-1", "amount": 1_234, "reason": PAYLOAD})
    call(console_server, "POST", "/v1/return-cases", "cs",
         case_body(username, "ORD-1", note="the lid is cracked"))
    account = {e["name"]: e["position"] for e in events_of(console_server, username)}
    opened_case = next(e["position"] for e in call(
        console_server, "GET", "/v1/events?type=ledger:ReturnCase.Opened&limit=1000",
        "auditor")["items"] if e["data"]["username"] == username)

    sign_in(page, console_server, console_server.people["audrey"], query="?limit=1000")
    page.get_by_role("link", name="Event log").click()
    opened = event_row(page, account["opened"])
    expect(data_field(opened, "username")).to_have_text(username)
    expect(data_field(opened, "currency")).to_have_text("EUR")
    deposit = event_row(page, account["deposit_received"])
    expect(data_field(deposit, "amount")).to_have_text("EUR 50.00")
    expect(data_field(deposit, "reference")).to_have_text(f"dep-{username}")
    # A hold names no currency: the account's is the one its opening and its journal give.
    hold = event_row(page, account["balance_refund_requested"])
    expect(data_field(hold, "amount")).to_have_text("EUR 12.34")
    expect(data_field(hold, "order no")).to_have_text("ORD-1")
    expect(data_field(hold, "reason")).to_have_text(PAYLOAD)  # as text, never run
    case = event_row(page, opened_case)
    expect(data_field(case, "note")).to_have_text("the lid is cracked")
    expect(data_field(case, "items")).to_have_text(
        "sku: SKU-1, description: an electric kettle, quantity: 1")
    expect(data_field(case, "conditions")).to_contain_text("has quality assurance: yes")
    expect(data_field(case, "guarantee until")).to_have_text("none")
    assert page.evaluate("window.pwned") is None
    expect(page.locator("#view img")).to_have_count(0)


def test_an_amount_is_in_its_currencys_own_digits_or_said_to_be_in_minor_units(
    page: Page, console_server: Server,
) -> None:
    """An account's events name no currency. A hold has no journal entry either: with the
    account's opening off the page, its amount is said to be in minor units, never given a
    currency guessed. A deposit's currency is its journal entry's, and from then on the tab
    knows the account's."""
    username = customer(console_server, currency="JPY", deposit=1_500, paid=500)
    call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
         {"order_no": "ORD-1", "amount": 400, "reason": "r"})
    own = {e["name"]: e["position"] for e in events_of(console_server, username)}
    sign_in(page, console_server, console_server.people["audrey"])
    expect(page.get_by_role("heading", name="Customers")).to_be_visible()

    def only(event_type: str) -> Locator:
        page.goto(f"{console_server.base_url}/console/#events?stream={username}&type={event_type}")
        return data_field(event_row(page, own[event_type]), "amount")

    expect(only("balance_refund_requested")).to_have_text("400 minor units")
    expect(only("deposit_received")).to_have_text("JPY 1,500")
    expect(only("balance_refund_requested")).to_have_text("JPY 400")


# 2. The journal and the event log are filtered by the parameters the API takes.

def test_the_journal_is_filtered_by_account_currency_and_time_and_a_reload_keeps_them(
    page: Page, console_server: Server,
) -> None:
    dollars = customer(console_server, currency="USD")
    pounds = customer(console_server, currency="GBP")
    sign_in(page, console_server, console_server.people["bea"])
    page.get_by_role("link", name="Journal").click()
    journal = page.get_by_role("table", name="Journal")
    expect(journal).to_contain_text(pounds)

    page.get_by_label("Account").fill(f"customer:{dollars}")
    page.get_by_role("button", name="Apply filters").click()
    expect(journal).not_to_contain_text(pounds)
    # Two entries, the deposit and the purchase, each naming the customer once.
    expect(journal.get_by_role("cell", name=dollars, exact=True)).to_have_count(2)
    expect(loaded(page)).to_contain_text(
        f"Loaded 2 journal entries matching account customer:{dollars}")
    page.reload()
    expect(page.get_by_label("Account")).to_have_value(f"customer:{dollars}")
    expect(journal.get_by_role("cell", name=dollars, exact=True)).to_have_count(2)
    expect(journal).not_to_contain_text(pounds)

    page.get_by_role("button", name="Clear filters").click()
    expect(journal).to_contain_text(pounds)
    page.get_by_label("Currency").fill("gbp")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_label("Currency")).to_have_value("GBP")
    expect(journal).to_contain_text(pounds)
    expect(journal).not_to_contain_text("USD")

    page.get_by_label("Since (UTC)").fill("2099-01-01T00:00:00")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_text("No journal entries match these filters.")).to_be_visible()
    page.get_by_label("Since (UTC)").fill("")
    page.get_by_label("Until (UTC)").fill("2099-01-01T00:00:00")
    page.get_by_role("button", name="Apply filters").click()
    expect(journal).to_contain_text(pounds)


def test_the_event_log_is_filtered_by_stream_type_and_time(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server)
    other = customer(console_server)
    own = events_of(console_server, username)
    sign_in(page, console_server, console_server.people["audrey"], query="?limit=1000")
    page.get_by_role("link", name="Event log").click()
    log = page.get_by_role("table", name="Event log")

    page.get_by_label("Stream", exact=True).fill(username)
    page.get_by_role("button", name="Apply filters").click()
    expect(body_rows(log)).to_have_count(len(own))
    expect(log).not_to_contain_text(f"dep-{other}")
    page.get_by_label("Event type").fill("deposit_received")
    page.get_by_role("button", name="Apply filters").click()
    expect(body_rows(log)).to_have_count(1)
    expect(log).to_contain_text(f"dep-{username}")

    page.get_by_label("Since (UTC)").fill("2099-01-01T00:00:00")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_text("No events match these filters.")).to_be_visible()

    # A stream in the unfiltered log is a link to that stream's events.
    page.get_by_role("button", name="Clear filters").click()
    page.get_by_role("link", name=f"Events of stream {own[0]['stream']}").first.click()
    expect(page.get_by_label("Stream", exact=True)).to_have_value(own[0]["stream"])
    expect(body_rows(log)).to_have_count(len(own))


# 3. Customers are browsed by the start of their names (GET /v1/accounts?prefix=).

def test_customers_are_browsed_by_the_start_of_their_names_in_any_case(
    page: Page, console_server: Server,
) -> None:
    family = f"br{uuid.uuid4().hex[:6]}"
    for name, currency in [("ann", "USD"), ("anna", "JPY"), ("bob", "USD")]:
        call(console_server, "POST", "/v1/accounts", "system",
             {"username": f"{family}-{name}", "currency": currency})
    call(console_server, "POST", f"/v1/accounts/{family}-ann/deposits", "system",
         {"amount": 1_250, "reference": f"dep-{family}"})
    sign_in(page, console_server, console_server.people["carl"], query="?limit=1")

    page.get_by_label("Name begins with").fill(f"{family.upper()}-AN")
    page.get_by_role("button", name="Browse").click()
    found = page.get_by_role("table", name=re.compile("Customers whose names begin with"))
    expect(body_rows(found)).to_have_count(1)
    expect(found.get_by_role("row", name=re.compile(f"{family}-ann "))).to_contain_text(
        "USD 12.50")
    expect(loaded(page)).to_have_text(
        f"Loaded 1 customer whose name begins with {family.upper()}-AN: {family}-ann.")
    page.get_by_role("navigation", name="Customers pages").get_by_role(
        "button", name="Next page").click()
    expect(found.get_by_role("link")).to_have_text(f"{family}-anna")
    expect(found).to_contain_text("JPY 0")
    expect(found).not_to_contain_text(f"{family}-bob")

    found.get_by_role("link", name=f"{family}-anna").click()
    expect(page.get_by_role("heading", name=f"{family}-anna (JPY)")).to_be_visible()

    page.get_by_label("Name begins with").fill(f"{family}-zz")
    page.get_by_role("button", name="Browse").click()
    expect(page.get_by_text(f"No customer's name begins with {family}-zz.")).to_be_visible()


# 4. The refund queue says what waits per currency, and how long each request has waited.

def test_the_refund_queue_shows_the_total_waiting_per_currency_and_each_requests_age(
    page: Page, console_server: Server,
) -> None:
    requested: list[str] = []
    for currency, amount in [("CHF", 1_234), ("CHF", 66), ("KWD", 1_005), ("KWD", 995)]:
        username = customer(console_server, currency=currency, deposit=5_000, paid=3_000)
        requested.append(call(console_server, "POST",
                              f"/v1/accounts/{username}/refund-requests", "cs",
                              {"order_no": "ORD-1", "amount": amount, "reason": "r"})["id"])

    def three_days_old(route: Route) -> None:
        answer = route.fetch()
        found = answer.json()
        for item in found["items"]:
            if item["id"] == requested[-1]:
                item["age_days"] = 3
        route.fulfill(response=answer, json=found)

    page.route(re.compile(r"/v1/refund-requests\?"), three_days_old)
    sign_in(page, console_server, console_server.people["ann"])
    page.get_by_role("link", name="Refund requests").click()
    totals = page.get_by_role("list", name="Totals by currency")
    expect(page.get_by_role("heading", name="Waiting (requested or approved), by currency")
           ).to_be_visible()
    # Summed in integer minor units: 12.34 + 0.66 is 13.00, 1.005 + 0.995 is 2.000.
    expect(totals.get_by_role("listitem").filter(has_text="CHF")).to_contain_text(
        "CHF 13.00 in 2 requests, the oldest requested ")
    expect(totals.get_by_role("listitem").filter(has_text="KWD")).to_contain_text(
        "KWD 2.000 in 2 requests")
    expect(loaded(page)).to_contain_text("CHF 13.00")

    queue = page.get_by_role("table", name="Refund requests: open")
    age = queue.locator("thead th").all_inner_texts().index("Age") + 1
    fresh = queue.locator(f"tr[data-id='{requested[0]}'] td:nth-child({age})")
    expect(fresh).to_have_text("today")
    expect(queue.locator(f"tr[data-id='{requested[-1]}'] td:nth-child({age})")).to_have_text(
        "3 days")


# 5. What a list loaded, or what the ledger refused, is said in a live region.

def test_each_page_loaded_and_each_refusal_is_said_in_a_live_region(
    page: Page, console_server: Server,
) -> None:
    customer(console_server)
    log = call(console_server, "GET", "/v1/events?limit=4", "auditor")["items"]
    sign_in(page, console_server, console_server.people["audrey"], query="?limit=2")
    page.get_by_role("link", name="Event log").click()
    status = loaded(page)
    expect(status).to_have_text(
        f"Loaded 2 events, positions {log[0]['position']} to {log[1]['position']}.")
    expect(status).to_have_attribute("aria-live", "polite")
    page.get_by_role("navigation", name="Event log pages").get_by_role(
        "button", name="Next page").click()
    # The next page is not heard as the same words again.
    expect(status).to_have_text(
        f"Loaded 2 events, positions {log[2]['position']} to {log[3]['position']}.")

    page.get_by_label("Stream", exact=True).fill("not a stream!")
    page.get_by_role("button", name="Apply filters").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("stream")
    expect(alert).to_have_attribute("aria-live", "assertive")
    # What was typed is kept, to be corrected.
    expect(page.get_by_label("Stream", exact=True)).to_have_value("not a stream!")
    page.get_by_label("Stream", exact=True).fill(log[0]["stream"])
    page.get_by_role("button", name="Apply filters").click()
    expect(alert).to_be_empty()
    expect(status).to_contain_text(f"matching stream {log[0]['stream']}")
