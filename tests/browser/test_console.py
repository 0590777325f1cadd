"""The console at /console/, in Chromium: each role signs in and does their day's work, by the
accessible names a screen reader announces (labels, buttons, links)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.conftest import call, customer, screenshot
from tests.http.conftest import TOKENS, Server, days_from_today


def sign_in(page: Page, server: Server, token: str, *, query: str = "") -> None:
    page.goto(f"{server.base_url}/console/{query}")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def find(page: Page, username: str) -> None:
    page.get_by_label("Customer", exact=True).fill(username)
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_role("heading", name=re.compile(username))).to_be_visible()


@pytest.mark.parametrize(("who", "sees", "does_not_see"), [
    ("carl", ["Customers"], ["Refund requests", "Verify"]),
    ("ann", ["Customers", "Refund requests", "Reconciliation", "Journal"], ["Verify"]),
    ("audrey", ["Event log", "Verify", "Exports"], []),
    ("cs", ["Customers"], ["Refund requests"]),  # a shared role token: its person is its role
])
def test_each_role_signs_in_and_sees_its_sections(
    page: Page, console_server: Server, who: str, sees: list[str], does_not_see: list[str],
) -> None:
    token = TOKENS.get(who) or console_server.people[who]
    sign_in(page, console_server, token)
    expect(page.get_by_text(re.compile(rf"Signed in as {who} \("))).to_be_visible()
    nav = page.get_by_role("navigation", name="Sections")
    for name in sees:
        expect(nav.get_by_role("link", name=name)).to_be_visible()
    for name in does_not_see:
        expect(nav.get_by_role("link", name=name)).to_have_count(0)
    stored = page.evaluate("sessionStorage.getItem('ledger-token')")
    assert stored == token
    assert page.evaluate("localStorage.length") == 0  # for the tab only


def test_a_wrong_token_shows_the_problem_in_words(page: Page, console_server: Server) -> None:
    sign_in(page, console_server, "not-a-token")
    expect(page.get_by_role("alert")).to_contain_text("Authorization: Bearer")
    expect(page.get_by_label("Token")).to_be_visible()
    screenshot(page, "console-sign-in")


def test_a_customer_service_day_walks_a_case_to_a_refund_and_the_balance_moves(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server, deposit=5_000, paid=3_000)
    sign_in(page, console_server, console_server.people["carl"])
    find(page, username)
    expect(page.get_by_label("Posted")).to_have_text("USD 20.00")
    expect(page.get_by_label("Held")).to_have_text("USD 0.00")
    expect(page.get_by_label("Available")).to_have_text("USD 20.00")
    expect(page.get_by_label("Refundable", exact=True)).to_have_text("USD 20.00")

    page.get_by_role("button", name="Open a return case for ORD-1").click()
    page.get_by_label("Item").fill("an electric kettle")
    page.get_by_label("Goods photo").fill("photo-goods-1")
    page.get_by_label("Package photo").fill("photo-box-1")
    page.get_by_role("button", name="Open case").click()
    title = page.get_by_role("heading", name=re.compile("Case for ORD-1"))
    expect(title).to_contain_text("opened")
    # Only the steps the case's state allows are offered.
    steps = page.get_by_role("group", name="Steps")
    expect(steps.get_by_role("button", name="Supplier review")).to_be_visible()
    expect(steps.get_by_role("button", name="Ship back")).to_have_count(0)
    expect(steps.get_by_role("button", name="Resolve")).to_have_count(0)

    def step(name: str, state: str, **fields: str) -> None:
        steps.get_by_role("button", name=name, exact=True).click()
        for label, value in fields.items():
            page.get_by_label(label.replace("_", " "), exact=True).fill(value)
        page.get_by_role("button", name=f"Confirm {name.lower()}").click()
        expect(title).to_contain_text(state)

    step("Supplier review", "supplier review")
    step("Accept", "accepted", Return_address="Supplier Ltd, Dock 4")
    step("Ship back", "goods in transit", Tracking="TRK-1")
    step("Receive", "received")
    step("Forward", "with supplier")
    step("Resolve", "resolved")
    expect(page.get_by_label("Posted")).to_have_text("USD 50.00")
    expect(page.get_by_label("Available")).to_have_text("USD 50.00")

    page.get_by_label("Note text").fill("called the customer: refund received")
    page.get_by_role("button", name="Add note").click()
    expect(page.get_by_text("refund received")).to_be_visible()
    history = page.get_by_role("table", name="History")
    expect(history).to_contain_text("cs:carl")
    # a history of one page offers no pager, and says nothing in its place
    expect(page.locator("#history")).not_to_contain_text("null")
    expect(page.get_by_role("navigation", name="History pages")).to_have_count(0)
    screenshot(page, "console-cs")
    step("Close", "closed")


def test_amounts_are_in_major_units_with_their_currency(page: Page, console_server: Server
                                                        ) -> None:
    username = customer(console_server, currency="JPY", deposit=1_500, paid=300)
    sign_in(page, console_server, console_server.people["carl"])
    find(page, username)
    expect(page.get_by_label("Posted")).to_have_text("JPY 1,200")


@pytest.mark.parametrize(("currency", "posted"), [
    ("HUF", "HUF 12.00"),  # the ledger's 2 digits, where the browser's data says 0
    ("IQD", "IQD 1.200"),  # 3, where the browser's says 0
    ("BHD", "BHD 1.200"),
])
def test_amounts_are_shown_at_the_ledger_s_scale_of_each_currency(
    page: Page, console_server: Server, currency: str, posted: str
) -> None:
    username = customer(console_server, currency=currency, deposit=1_500, paid=300)
    sign_in(page, console_server, console_server.people["carl"])
    find(page, username)
    expect(page.get_by_label("Posted")).to_have_text(posted)


def test_an_amount_is_taken_at_the_ledger_s_scale_and_never_rounded(
    page: Page, console_server: Server
) -> None:
    username = customer(console_server, currency="HUF", deposit=2_000, paid=1_000)
    sign_in(page, console_server, console_server.people["carl"])
    find(page, username)
    page.get_by_label("Reason", exact=True).fill("moving abroad")
    # More decimals than the currency has: refused in words, nothing asked for
    page.get_by_label("Amount (HUF)").fill("5.555")
    page.get_by_role("button", name="Request refund").click()
    expect(page.get_by_role("alert")).to_have_text("5.555 has more than the 2 decimals HUF has")
    expect(page.get_by_label("Held")).to_have_text("HUF 0.00")
    # 5.50 forints are 550 minor units (the browser's own data would have taken 6)
    page.get_by_label("Amount (HUF)").fill("5.50")
    page.get_by_role("button", name="Request refund").click()
    expect(page.get_by_label("Held")).to_have_text("HUF 5.50")
    held = call(console_server, "GET", f"/v1/accounts/{username}", "cs")["held"]
    assert held == 550


def test_a_customer_service_agent_asks_for_a_balance_refund(page: Page, console_server: Server
                                                            ) -> None:
    username = customer(console_server)
    sign_in(page, console_server, console_server.people["carl"])
    find(page, username)
    page.get_by_label("Amount (USD)").fill("5.50")
    page.get_by_label("Reason", exact=True).fill("moving abroad")
    page.get_by_role("button", name="Request refund").click()
    expect(page.get_by_label("Held")).to_have_text("USD 5.50")
    expect(page.get_by_label("Available")).to_have_text("USD 14.50")


def test_a_finance_day_approve_as_one_person_pay_refused_for_them_paid_by_another(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server)
    call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
         {"order_no": "ORD-1", "amount": 1_234, "reason": "moving abroad"})

    sign_in(page, console_server, console_server.people["ann"])
    page.get_by_role("link", name="Refund requests").click()
    row = page.get_by_role("row", name=f"Refund request of {username}")
    expect(row).to_contain_text("USD 12.34")
    expect(row.get_by_role("button", name="Pay")).to_be_disabled()
    row.get_by_role("button", name="Approve").click()
    expect(row).to_contain_text("approved")
    expect(row).to_contain_text("ann")
    # Four eyes, shown before the click: ann approved, so her Pay is off, and says why.
    pay = row.get_by_role("button", name="Pay")
    expect(pay).to_be_disabled()
    expect(pay).to_have_accessible_description(re.compile("another finance person must pay"))
    screenshot(page, "console-finance")

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, console_server, console_server.people["bea"])
    page.get_by_role("link", name="Refund requests").click()
    row = page.get_by_role("row", name=f"Refund request of {username}")
    row.get_by_role("button", name="Pay").click()
    page.get_by_label("Payout reference").fill("WIRE-77")
    page.get_by_role("button", name="Confirm payout").click()
    expect(page.get_by_role("status").first).to_contain_text(f"Paid USD 12.34 to {username}")
    page.get_by_label("Status").select_option("paid")
    expect(page.get_by_role("row", name=f"Refund request of {username}")).to_contain_text("paid")


def test_a_four_eyes_refusal_from_the_server_is_shown_in_words(
    page: Page, console_server: Server,
) -> None:
    """The server, not the page, has the last word: Ann approved (through the API), but her
    page believes Bea did, so it offers her Pay; her click reaches the server, whose 409
    four_eyes detail is what the console's own error path shows her.

    A page whose knowledge is merely old cannot get here (a request is only payable once its
    approvers are final), so the page is told a wrong approver: its answer for the request is
    rewritten on the way in. The payout itself goes to the real server."""
    username = customer(console_server)
    ann = console_server.people["ann"]
    request = call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
                   {"order_no": "ORD-1", "amount": 100, "reason": "r"})
    call(console_server, "POST", f"/v1/refund-requests/{request['id']}/approve", "finance",
         {"note": "ok"}, token=ann)

    def as_if_bea_approved(route: Route) -> None:
        answer = route.fetch()
        found = answer.json()
        for step in found["steps"]:
            if step["status"] == "approved":
                step["actor"] = "finance:bea"
                step["data"]["person"] = "bea"
        route.fulfill(response=answer, json=found)

    page.route(f"**/v1/refund-requests/{request['id']}", as_if_bea_approved)
    sign_in(page, console_server, ann)
    page.get_by_role("link", name="Refund requests").click()
    row = page.get_by_role("row", name=f"Refund request of {username}")
    expect(row).to_contain_text("bea")
    pay = row.get_by_role("button", name="Pay")
    expect(pay).to_be_enabled()
    pay.click()
    page.get_by_label("Payout reference").fill("WIRE-4-EYES")
    page.get_by_role("button", name="Confirm payout").click()
    expect(page.get_by_role("alert")).to_have_text(
        "ann approved this refund request, so another person must pay it")
    assert call(console_server, "GET", f"/v1/refund-requests/{request['id']}",
                "finance")["status"] == "approved"


def test_a_second_approval_refused_by_the_server_is_shown_in_words(
    page: Page, console_server: Server,
) -> None:
    """Above the threshold, Ann's page still offers Approve when she has meanwhile given the
    first approval elsewhere (another tab, the API): the server refuses the second, in words."""
    username = customer(console_server, deposit=500_000, paid=250_000)
    ann = console_server.people["ann"]
    request = call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
                   {"order_no": "ORD-1", "amount": 200_000, "reason": "r"})
    sign_in(page, console_server, ann)
    page.get_by_role("link", name="Refund requests").click()
    row = page.get_by_role("row", name=f"Refund request of {username}")
    approve = row.get_by_role("button", name="Approve")
    expect(approve).to_be_enabled()
    call(console_server, "POST", f"/v1/refund-requests/{request['id']}/approve", "finance",
         {"note": "first"}, token=ann)
    approve.click()
    expect(page.get_by_role("alert")).to_have_text(
        "the second approval must come from another person: you gave the first")


def test_an_auditor_verifies_and_downloads_the_exports(page: Page, console_server: Server
                                                       ) -> None:
    customer(console_server)
    sign_in(page, console_server, console_server.people["audrey"])
    page.get_by_role("link", name="Event log").click()
    expect(page.get_by_role("heading", name="Event log")).to_be_visible()
    expect(page.get_by_role("table")).to_contain_text("deposit received")
    screenshot(page, "console-event-log")
    page.get_by_role("link", name="Verify").click()
    page.get_by_role("button", name="Verify").click()
    expect(page.locator("#verify-result")).to_contain_text("Everything holds", timeout=60_000)
    screenshot(page, "console-auditor")
    page.get_by_role("link", name="Exports").click()
    expect(page.get_by_role("button", name="Download the journal (Beancount)")).to_be_visible()
    screenshot(page, "console-exports")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the journal (Beancount)").click()
    assert download.value.suggested_filename == "ledger.beancount"
    with open(download.value.path()) as exported:
        assert "Ledger journal" in exported.read()


def test_finance_reads_reconciliation_and_the_journal_with_who_did_it(
    page: Page, console_server: Server,
) -> None:
    customer(console_server)
    sign_in(page, console_server, console_server.people["bea"])
    page.get_by_role("link", name="Reconciliation").click()
    expect(page.get_by_text("Every invariant holds.")).to_be_visible()
    expect(page.get_by_role("region", name="USD")).to_contain_text("trial balance")
    screenshot(page, "console-reconciliation")
    page.get_by_role("link", name="Journal").click()
    expect(page.get_by_role("heading", name="Journal")).to_be_visible()
    journal = page.get_by_role("table")
    expect(journal).to_contain_text("deposit received")
    expect(journal).to_contain_text("system:")
    screenshot(page, "console-journal")


def test_above_the_threshold_the_queue_shows_who_may_still_approve_and_pay(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server, deposit=500_000, paid=250_000)
    call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
         {"order_no": "ORD-1", "amount": 200_000, "reason": "moving abroad"})

    def queue_as(name: str) -> Locator:
        if page.get_by_role("button", name="Sign out").is_visible():
            page.get_by_role("button", name="Sign out").click()
        sign_in(page, console_server, console_server.people[name])
        page.get_by_role("link", name="Refund requests").click()
        return page.get_by_role("row", name=f"Refund request of {username}")

    row = queue_as("ann")
    expect(row).to_contain_text("USD 2,000.00")
    row.get_by_role("button", name="Approve").click()
    expect(row).to_contain_text("ann")
    expect(row.get_by_role("cell", name="requested")).to_be_visible()
    approve = row.get_by_role("button", name="Approve")
    expect(approve).to_be_disabled()
    expect(approve).to_have_accessible_description(re.compile("must come from another person"))

    row = queue_as("bea")
    row.get_by_role("button", name="Approve").click()
    expect(row).to_contain_text("ann, bea")
    expect(row.get_by_role("button", name="Pay")).to_be_disabled()

    row = queue_as("cleo")
    row.get_by_role("button", name="Pay").click()
    page.get_by_label("Payout reference").fill("WIRE-2000")
    page.get_by_role("button", name="Confirm payout").click()
    expect(page.get_by_role("status").first).to_contain_text(f"Paid USD 2,000.00 to {username}")


def whole_log(server: Server) -> list[dict[str, Any]]:
    """Every event of the log, through the API, page by page."""
    items: list[dict[str, Any]] = []
    after = ""
    while True:
        page = call(server, "GET", f"/v1/events?limit=1000{after}", "auditor")
        items += page["items"]
        if page["next"] is None:
            return items
        after = f"&after={page['next']}"


def body_rows(table: Locator) -> Locator:
    return table.locator("tbody tr")


def first_cells(table: Locator) -> list[str]:
    return [text.strip() for text in body_rows(table).locator("td:first-child").all_inner_texts()]


def test_the_event_log_and_the_journal_page_on_past_their_first_page(
    page: Page, console_server: Server,
) -> None:
    customer(console_server)
    sign_in(page, console_server, console_server.people["audrey"], query="?limit=2")
    for section in ("Event log", "Journal"):
        page.get_by_role("link", name=section).click()
        table = page.get_by_role("table", name=section)
        pages = page.get_by_role("navigation", name=f"{section} pages")
        expect(body_rows(table).first).to_be_visible()
        expect(pages.get_by_role("button", name="First page")).to_have_count(0)
        first = first_cells(table)
        pages.get_by_role("button", name="Next page").click()
        expect(pages.get_by_role("button", name="First page")).to_be_visible()
        expect(table.locator("tbody tr td:first-child").first).not_to_have_text(first[0])
        second = [cell for cell in first_cells(table) if cell]
        assert min(map(int, second)) > max(int(cell) for cell in first if cell)
        pages.get_by_role("button", name="First page").click()
        expect(table.locator("tbody tr td:first-child").first).to_have_text(first[0])
    # The event log, two events a page: the view shows two, and the next page the next two.
    page.get_by_role("link", name="Event log").click()
    expect(body_rows(page.get_by_role("table", name="Event log"))).to_have_count(2)


def test_the_event_log_download_reads_every_page(page: Page, console_server: Server) -> None:
    customer(console_server)
    sign_in(page, console_server, console_server.people["audrey"], query="?limit=3")
    page.get_by_role("link", name="Exports").click()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the event log (JSON)").click()
    assert download.value.suggested_filename == "events.json"
    with open(download.value.path()) as saved:
        log = json.load(saved)
    expected = whole_log(console_server)
    assert len(expected) > 3
    assert log["next"] is None
    assert [e["position"] for e in log["items"]] == [e["position"] for e in expected]
    expect(page.get_by_role("status").first).to_contain_text(
        f"the whole log, {len(expected)} events")


def test_the_event_log_download_stops_after_its_most_pages_and_says_so(
    page: Page, console_server: Server,
) -> None:
    most_pages = 100  # MAX_DOWNLOAD_PAGES in console.js
    username = customer(console_server, paid=0)
    for n in range(most_pages + 1 - len(whole_log(console_server))):
        call(console_server, "POST", f"/v1/accounts/{username}/deposits", "system",
             {"amount": 1, "reference": f"dep-{username}-{n}"})
    expected = whole_log(console_server)
    assert len(expected) > most_pages
    sign_in(page, console_server, console_server.people["audrey"], query="?limit=1")
    page.get_by_role("link", name="Exports").click()
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Download the event log (JSON)").click()
    with open(download.value.path()) as saved:
        log = json.load(saved)
    assert [e["position"] for e in log["items"]] == [
        e["position"] for e in expected[:most_pages]]
    assert log["next"] == str(expected[most_pages - 1]["position"])
    expect(page.get_by_role("status").first).to_contain_text(
        f"only the first {most_pages} events")


def test_the_journal_exports_as_csv_and_hledger(page: Page, console_server: Server) -> None:
    username = customer(console_server)
    sign_in(page, console_server, console_server.people["audrey"])
    page.get_by_role("link", name="Exports").click()
    for label, file, words in [("Download the journal (CSV)", "ledger.csv", "date,position,"),
                               ("Download the journal (hledger)", "ledger.journal",
                                f"liabilities:customers:{username}")]:
        with page.expect_download() as download:
            page.get_by_role("button", name=label).click()
        assert download.value.suggested_filename == file
        with open(download.value.path()) as exported:
            text = exported.read()
        assert words in text
        assert username in text


def test_a_customers_history_pages_on(page: Page, console_server: Server) -> None:
    username = customer(console_server)
    call(console_server, "POST", f"/v1/accounts/{username}/deposits", "system",
         {"amount": 700, "reference": f"dep2-{username}"})
    sign_in(page, console_server, console_server.people["carl"], query="?limit=2")
    find(page, username)
    history = page.get_by_role("table", name="History")
    expect(body_rows(history)).to_have_count(2)
    expect(history).not_to_contain_text("USD 7.00")
    pages = page.get_by_role("navigation", name="History pages")
    items = call(console_server, "GET", f"/v1/accounts/{username}/history?limit=1000",
                 "cs")["items"]
    last_page = len(items) - 1 - (len(items) - 1) % 2
    for start in range(2, last_page + 1, 2):
        pages.get_by_role("button", name="Next page").click()
        expect(history.locator("tbody tr td:first-child").first).to_have_text(
            str(items[start]["position"]))
    expect(body_rows(history)).to_have_count(len(items) - last_page)
    expect(history).to_contain_text("USD 7.00")
    expect(pages.get_by_role("button", name="Next page")).to_have_count(0)
    pages.get_by_role("button", name="First page").click()
    expect(body_rows(history)).to_have_count(2)
    expect(history).not_to_contain_text("USD 7.00")


def test_the_refund_queue_pages_on(page: Page, console_server: Server) -> None:
    for _ in range(2):
        username = customer(console_server)
        call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
             {"order_no": "ORD-1", "amount": 100, "reason": "r"})
    sign_in(page, console_server, console_server.people["cleo"], query="?limit=1")
    page.get_by_role("link", name="Refund requests").click()
    queue = page.locator("#view table")
    expect(body_rows(queue)).to_have_count(1)
    first = body_rows(queue).first.get_attribute("data-id")
    page.get_by_role("navigation", name="Refund requests pages").get_by_role(
        "button", name="Next page").click()
    expect(body_rows(queue).first).not_to_have_attribute("data-id", first or "")
    expect(body_rows(queue)).to_have_count(1)


def tab_to(page: Page, target: Locator, *, most: int = 40) -> None:
    """Presses Tab until the keyboard is on ``target`` (at most ``most`` times)."""
    for _ in range(most):
        page.keyboard.press("Tab")
        if target.evaluate("node => node === document.activeElement"):
            return
    raise AssertionError(f"Tab never reached {target}")


def test_customer_service_works_by_keyboard_alone(page: Page, console_server: Server) -> None:
    username = customer(console_server)
    page.goto(f"{console_server.base_url}/console/")
    tab_to(page, page.get_by_label("Token"))
    page.keyboard.type(console_server.people["carl"])
    page.keyboard.press("Enter")
    expect(page.get_by_text("Signed in as carl (cs)")).to_be_visible()
    expect(page.locator("#loaded")).to_have_text("")  # no list yet
    tab_to(page, page.get_by_label("Customer", exact=True))
    page.keyboard.type(username)
    page.keyboard.press("Enter")
    expect(page.get_by_label("Posted")).to_have_text("USD 20.00")
    expect(page.get_by_role("status").filter(has_text="Loaded")).to_have_text(
        "Loaded 3 history entries.")  # opened, deposit, purchase
    tab_to(page, page.get_by_role("button", name="Open a return case for ORD-1"))
    page.keyboard.press("Enter")
    expect(page.get_by_label("Item")).to_be_focused()
    page.keyboard.type("an electric kettle")
    tab_to(page, page.get_by_label("Goods photo"))
    page.keyboard.type("photo-goods-1")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Package photo")).to_be_focused()
    page.keyboard.type("photo-box-1")
    page.keyboard.press("Enter")
    title = page.get_by_role("heading", name=re.compile("Case for ORD-1"))
    expect(title).to_contain_text("opened")
    expect(title).to_be_focused()
    tab_to(page, page.get_by_role("button", name="Supplier review"))
    page.keyboard.press("Enter")
    expect(page.get_by_label("Note", exact=True)).to_be_focused()
    page.keyboard.type("sent to the supplier")
    page.keyboard.press("Enter")
    expect(title).to_contain_text("supplier review")
    expect(page.get_by_role("listitem").filter(has_text="sent to the supplier")).to_be_visible()


def test_every_table_has_a_name_and_the_view_is_not_read_out_whole(
    page: Page, console_server: Server,
) -> None:
    username = customer(console_server)
    call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
         {"order_no": "ORD-1", "amount": 100, "reason": "r"})
    sign_in(page, console_server, console_server.people["bea"])
    expect(page.locator("#view")).not_to_have_attribute("aria-live", re.compile(".*"))
    for link in ("Refund requests", "Reconciliation", "Journal", "Event log"):
        page.get_by_role("link", name=link).click()
        expect(page.get_by_role("heading", name=link)).to_be_visible()
        expect(page.locator("#view table").first).to_be_visible()
        for table in page.locator("#view table").all():
            expect(table).to_have_accessible_name(re.compile(r"\S"))
    page.get_by_role("link", name="Customers").click()
    find(page, username)
    for table in page.locator("#view table").all():
        expect(table).to_have_accessible_name(re.compile(r"\S"))


def test_an_invariant_that_does_not_hold_is_highlighted_in_words(
    page: Page, console_server: Server,
) -> None:
    """The server's reconciliation, with one invariant of USD made to fail on its way in."""
    customer(console_server)
    broken: list[str] = []

    def one_invariant_fails(route: Route) -> None:
        answer = route.fetch()
        report = answer.json()
        usd = next(r for r in report["currencies"] if r["currency"] == "USD")
        name = next(iter(usd["invariants"]))
        usd["invariants"][name] = False
        usd["ok"] = report["ok"] = False
        broken.append(name)
        route.fulfill(response=answer, json=report)

    page.route("**/v1/reconciliation", one_invariant_fails)
    sign_in(page, console_server, console_server.people["bea"])
    page.get_by_role("link", name="Reconciliation").click()
    expect(page.get_by_text("Something does not hold (highlighted).")).to_have_class("bad")
    usd = page.get_by_role("table", name="USD reconciliation")
    row = usd.get_by_role("row", name=re.compile(broken[0].replace("_", " ")))
    expect(row).to_have_class("bad")
    expect(row.get_by_role("cell")).to_have_text("does not hold")
    expect(usd.locator("tr.bad")).to_have_count(1)
    holding = usd.get_by_role("row").filter(has_text="holds").first
    expect(holding).not_to_have_class("bad")


def test_finance_rejects_a_refund_request(page: Page, console_server: Server) -> None:
    username = customer(console_server)
    call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
         {"order_no": "ORD-1", "amount": 250, "reason": "moving abroad"})
    sign_in(page, console_server, console_server.people["cleo"])
    page.get_by_role("link", name="Refund requests").click()
    page.get_by_role("row", name=f"Refund request of {username}").get_by_role(
        "button", name="Reject").click()
    page.get_by_label("Reason").fill("no such request from the customer")
    page.get_by_role("button", name="Confirm rejection").click()
    expect(page.get_by_role("status").first).to_have_text(f"Rejected the refund for {username}.")
    expect(page.get_by_role("row", name=f"Refund request of {username}")).to_have_count(0)
    page.get_by_label("Status").select_option("rejected")
    row = page.get_by_role("row", name=f"Refund request of {username}")
    expect(row.get_by_role("cell", name="rejected", exact=True)).to_be_visible()
    expect(row.get_by_role("button")).to_have_count(0)


def open_case(server: Server, username: str, *steps: tuple[str, dict[str, Any]]) -> str:
    """A defective-goods case on ORD-1, opened and taken through ``steps`` by the API."""
    opened = call(server, "POST", "/v1/return-cases", "cs", {
        "username": username, "order_no": "ORD-1", "kind": "defective",
        "shipped_on": days_from_today(-10),
        "items": [{"description": "a kettle", "quantity": 1}],
        "evidence": {"goods_photos": ["g-1"], "package_photos": ["p-1"]},
        "conditions": {"replaced_or_modified": False, "parts_missing": False,
                       "opened_media": False, "has_quality_assurance": True}})
    for action, body in steps:
        call(server, "POST", f"/v1/return-cases/{opened['id']}/{action}", "cs", body)
    return str(opened["id"])


def open_the_case(page: Page, server: Server, username: str) -> Locator:
    sign_in(page, server, server.people["carl"])
    find(page, username)
    page.get_by_role("link", name=re.compile("defective case")).click()
    return page.get_by_role("heading", name=re.compile("Case for ORD-1"))


@pytest.mark.parametrize(("steps", "button", "state"), [
    ([("supplier-review", {"note": ""})], "Reject", "rejected"),
    ([("supplier-review", {"note": ""})], "Cancel", "cancelled"),
    ([], "Cancel", "cancelled"),
])
def test_a_case_is_rejected_or_cancelled(
    page: Page, console_server: Server, steps: list[tuple[str, dict[str, Any]]], button: str,
    state: str,
) -> None:
    username = customer(console_server)
    open_case(console_server, username, *steps)
    title = open_the_case(page, console_server, username)
    expect(title).to_contain_text("supplier review" if steps else "opened")
    page.get_by_role("group", name="Steps").get_by_role("button", name=button, exact=True).click()
    form = page.get_by_role("form", name=button)
    form.get_by_label("Reason").fill("the customer changed their mind")
    form.get_by_role("button", name=f"Confirm {button.lower()}").click()
    expect(title).to_contain_text(state)
    expect(page.get_by_role("group", name="Steps").get_by_role("button")).to_have_count(0)
    expect(page.get_by_role("link", name=re.compile(f"defective case: {state}"))).to_be_visible()


def test_expire_reaches_the_server_which_says_why_not_yet(
    page: Page, console_server: Server,
) -> None:
    """A case expires only once its return_by has passed, and a test cannot move the server's
    clock: the page is told Expire is allowed, and the server's refusal is what it shows."""
    username = customer(console_server)
    case_id = open_case(console_server, username, ("supplier-review", {"note": ""}),
                        ("accept", {"return_address": "Supplier Ltd, Dock 4",
                                    "return_by": days_from_today(0)}))

    def expire_allowed(route: Route) -> None:
        answer = route.fetch()
        found = answer.json()
        found["allowed_actions"].append("expire")
        route.fulfill(response=answer, json=found)

    page.route(re.compile(rf"/v1/return-cases/{case_id}(\?.*)?$"), expire_allowed)
    title = open_the_case(page, console_server, username)
    expect(title).to_contain_text("accepted")
    page.get_by_role("group", name="Steps").get_by_role("button", name="Expire").click()
    form = page.get_by_role("form", name="Expire")
    form.get_by_label("Note").fill("no goods came back")
    form.get_by_role("button", name="Confirm expire").click()
    expect(page.get_by_role("alert")).to_contain_text("the case is not past its return_by")
    expect(title).to_contain_text("accepted")
