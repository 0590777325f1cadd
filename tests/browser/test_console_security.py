"""The console against an attacker, in Chromium: what customers and colleagues typed is shown as
text and never run, the token is never sent anywhere but in the ``Authorization`` header, a
token that stopped holding signs the tab out, and no other page may frame the console."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

from playwright.sync_api import Dialog, Page, Request, expect

from tests.browser.conftest import call, customer
from tests.http.conftest import (
    TOKENS,
    Server,
    add_person,
    case_body,
    ledger_command,
    wait_for_person,
)

# Free text the API accepts (order numbers are printable ASCII; notes and reasons any text).
PAYLOAD = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


def sign_in(page: Page, server: Server, token: str) -> None:
    page.goto(f"{server.base_url}/console/")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(re.compile(r"Signed in as "))).to_be_visible()


def nothing_ran(page: Page, dialogs: list[str]) -> None:
    assert page.evaluate("window.pwned") is None
    assert dialogs == []
    expect(page.locator("#view img, #view script")).to_have_count(0)


def test_what_people_typed_is_shown_as_text_and_never_run(page: Page, console_server: Server
                                                          ) -> None:
    dialogs: list[str] = []

    def refuse(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", refuse)
    username = customer(console_server, paid=0)
    call(console_server, "POST", f"/v1/accounts/{username}/purchases", "system",
         {"order_no": PAYLOAD, "amount": 3_000})
    call(console_server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
         {"order_no": PAYLOAD, "amount": 100, "reason": PAYLOAD})
    opened: dict[str, Any] = call(console_server, "POST", "/v1/return-cases", "cs",
                                  case_body(username, PAYLOAD, note=PAYLOAD))
    call(console_server, "POST", f"/v1/return-cases/{opened['id']}/notes", "cs",
         {"text": PAYLOAD})

    sign_in(page, console_server, console_server.people["carl"])
    page.goto(f"{console_server.base_url}/console/#customers/{username}")
    orders = page.get_by_role("table", name="Orders")
    expect(orders.get_by_role("cell", name=PAYLOAD, exact=True)).to_be_visible()
    orders.get_by_role("link", name=re.compile("case: opened")).click()
    expect(page.locator("#case-area ol")).to_contain_text(PAYLOAD)
    nothing_ran(page, dialogs)

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, console_server, console_server.people["ann"])
    page.goto(f"{console_server.base_url}/console/#refunds/requested")
    row = page.get_by_role("row", name=f"Refund request of {username}")
    expect(row).to_contain_text(PAYLOAD)
    nothing_ran(page, dialogs)


def test_a_sign_in_form_its_script_did_not_take_over_never_sends_the_token(
    page: Page, console_server: Server,
) -> None:
    sent: list[str] = []

    def record(request: Request) -> None:
        sent.append(f"{request.url} {request.post_data or ''}")

    page.route("**/console/console.js", lambda route: route.abort())  # blocked, or still loading
    page.on("request", record)
    page.goto(f"{console_server.base_url}/console/")
    page.get_by_label("Token").fill(TOKENS["cs"])
    page.keyboard.press("Enter")  # the field has the focus: filled
    page.wait_for_timeout(500)
    assert TOKENS["cs"] not in page.url  # nor in the browser's history, nor a proxy's log
    assert not [line for line in sent if TOKENS["cs"] in line]


def test_a_token_revoked_while_signed_in_signs_the_tab_out(page: Page, console_server: Server
                                                           ) -> None:
    token = add_person(console_server, "rex", "cs")
    username = customer(console_server)
    sign_in(page, console_server, token)
    page.goto(f"{console_server.base_url}/console/#customers/{username}")
    expect(page.get_by_role("table", name="Orders")).to_be_visible()

    revoked = subprocess.run(
        [*ledger_command(), "staff", "revoke", "rex", "--by", "tests"],
        cwd=console_server.log_path.parent, capture_output=True, text=True, timeout=60,
        env={**os.environ, "LEDGER_DATABASE_URL": console_server.database_url})
    assert revoked.returncode == 0, revoked.stderr
    wait_for_person(console_server, token, None, timeout_s=5)
    page.get_by_role("button", name="Find").click()

    expect(page.get_by_role("alert")).to_contain_text("Authorization: Bearer")
    expect(page.get_by_label("Token")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Signed in as "))).to_be_hidden()
    expect(page.get_by_role("navigation", name="Sections")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('ledger-token')") is None


def test_no_other_page_may_frame_the_console(page: Page, console_server: Server) -> None:
    page.set_content(f'<iframe id="framed" src="{console_server.base_url}/console/"></iframe>')
    page.wait_for_timeout(1_000)
    framed = page.frame_locator("#framed")
    expect(framed.get_by_label("Token")).to_have_count(0)
