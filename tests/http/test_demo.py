"""``make demo``'s month (api/demo.py): every state is in it, it serves, and the README's
walkthrough of a day works against it as shown."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.demo import CASE_STATES, CURRENCIES, DEMO_TOKENS, REFUND_STATES, demo_tokens_env
from tests.http.conftest import Server, start_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("demo")
    database = workdir / "var" / "demo.db"
    built = subprocess.run([sys.executable, "-m", "api.demo", str(database)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "LEDGER_CHAIN_KEY_FILE": ""})
    assert built.returncode == 0, built.stderr
    assert "9 customers in USD, EUR, JPY" in built.stdout
    server = start_server(f"sqlite:///{database}", workdir, env={
        "LEDGER_TOKENS": demo_tokens_env(),
        "LEDGER_CHAIN_KEY_FILE": str(database.with_suffix(".chain-key")),
    })
    try:
        _until_current(server)
        yield server
    finally:
        server.stop()


def _until_current(server: Server, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{server.base_url}/ready", timeout=5) as answer:
            if json.load(answer)["lag"] == 0:
                return
        time.sleep(0.05)
    pytest.fail("the demo's read models did not catch up")


def get(server: Server, path: str, role: str = "finance") -> Any:
    request = urllib.request.Request(f"{server.base_url}{path}",
                                     headers={"Authorization": f"Bearer {DEMO_TOKENS[role]}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def test_the_month_has_customers_in_three_currencies(demo: Server) -> None:
    accounts = get(demo, "/v1/accounts?limit=100")["items"]
    assert {a["currency"] for a in accounts} == set(CURRENCIES)
    assert len(accounts) == 9
    assert all(a["posted"] > 0 for a in accounts)


def test_the_month_has_refund_requests_in_every_state(demo: Server) -> None:
    for state in REFUND_STATES:
        assert get(demo, f"/v1/refund-requests?status={state}")["items"], state


def test_the_month_has_return_cases_in_every_state(demo: Server) -> None:
    for state in CASE_STATES:
        items = get(demo, f"/v1/return-cases?state={state}", role="cs")["items"]
        assert [case["state"] for case in items] == [state], state


def test_the_month_has_purchases_that_failed_and_were_credited_back(demo: Server) -> None:
    for name in ("bob", "elise", "yui"):
        history = get(demo, f"/v1/accounts/{name}/history?limit=1000")["items"]
        assert any("fail" in json.dumps(event) for event in history), name


def test_the_month_verifies(demo: Server) -> None:
    report = get(demo, "/v1/audit/verify", role="auditor")
    assert report["ok"] is True, report


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"## A day with the demo.*?```sh\n(.*?)```", text, re.S)
    assert found, "README.md has no demo walkthrough"
    return found.group(1)


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("jq") is None,
                    reason="the walkthrough needs curl and jq")
def test_the_readmes_walkthrough_works_as_shown(demo: Server) -> None:
    script = walkthrough().replace("BASE=http://127.0.0.1:8080", f"BASE={demo.base_url}")
    assert f"BASE={demo.base_url}" in script
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"approved"' in result.stdout and '"paid"' in result.stdout
    assert "ledger_open_refund_requests" in result.stdout
    # The day happened: alice has today's purchase, a request was paid
    orders = get(demo, "/v1/accounts/alice/orders?limit=1000")["items"]
    assert "ORD-ALICE-TODAY" in json.dumps(orders)
