"""The console in a real browser: Playwright for Python driving Debian's Chromium.

Chromium comes from Debian's packages (``make chromium``, a prerequisite of ``make test``);
Playwright's own browser download is never used. Without ``/usr/bin/chromium`` these tests fail
with the command that installs it: they never skip (under ``CI=true`` or not).
One ``ledger serve`` on SQLite serves the module, with named staff of each role.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.http.conftest import TOKENS, Server, add_person, start_server

CHROMIUM = Path(os.environ.get("LEDGER_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
PEOPLE = {"ann": "finance", "bea": "finance", "cleo": "finance", "carl": "cs",
          "audrey": "auditor"}
# Above USD 1,000.00 a refund needs two approvers (the other tests stay below it).
SECOND_APPROVAL_ABOVE = 100_000


# Module-scoped, not session: Playwright's sync API keeps an event loop running in this thread
# until it stops, and every asyncio test after it would find that loop running.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("console")
    running = start_server(f"sqlite:///{workdir}/ledger.db", workdir, env={
        "LEDGER_SECOND_APPROVAL_ABOVE": f"USD={SECOND_APPROVAL_ABOVE}"})
    try:
        for name, role in PEOPLE.items():
            add_person(running, name, role)
        yield running
    finally:
        running.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    try:
        yield opened
    finally:
        context.close()


def screenshot(page: Page, name: str) -> Path:
    """Keeps a screenshot of the screen under var/screenshots/ (the README shows two)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def call(server: Server, method: str, path: str, role: str, body: Any = None, *,
         token: str | None = None) -> Any:
    """One API call as a role token (the shop's systems), or as a person's ``token``, for the
    tests' set-up."""
    headers = {"Authorization": f"Bearer {token or TOKENS[role]}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(server.base_url + path, data=data, headers=headers,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{method} {path}: {error.code} {error.read()!r}") from None


def customer(server: Server, *, currency: str = "USD", deposit: int = 5_000,
             paid: int = 3_000) -> str:
    """A customer who deposited and paid for order ORD-1."""
    username = f"cust-{uuid.uuid4().hex[:8]}"
    call(server, "POST", "/v1/accounts", "system", {"username": username, "currency": currency})
    call(server, "POST", f"/v1/accounts/{username}/deposits", "system",
         {"amount": deposit, "reference": f"dep-{username}"})
    if paid:
        call(server, "POST", f"/v1/accounts/{username}/purchases", "system",
             {"order_no": "ORD-1", "amount": paid})
    return username
