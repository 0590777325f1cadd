"""Finance and audit over HTTP: the global log, the journal, reconciliation, verify, the chain's
digest and the Beancount export (checked by ``bean-check`` itself)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from beancount import loader
from beancount.core import data as bean

from projections.beancount import account_name
from tests.http.conftest import (
    Api,
    Server,
    assert_problem,
    cli_workdir,
    ledger_command,
    metric,
)

# DOMAIN.md's invariants that reconciliation checks by name (the ledger may check more).
INVARIANTS = {"available_never_negative", "customer_balances_equal_flows",
              "journal_equals_account_balances", "trial_balance_zero", "refunds_within_paid"}


def _bean_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("bean-check")), str(path)],
                          capture_output=True, text=True, timeout=60)


async def _positions_of(api: Api, username: str) -> list[int]:
    history = (await api.get(f"/v1/accounts/{username}/history")).json["items"]
    return [item["position"] for item in history]


# -- the global log ------------------------------------------------------------------------------


async def test_the_event_log_pages_every_event_once_in_order(api: Api) -> None:
    opened = await api.post("/v1/accounts", {"username": "log-reader-1", "currency": "USD"})
    assert opened.status == 201, opened.text
    start = opened.json["position"] - 1
    for n in range(3):
        await api.post("/v1/accounts/log-reader-1/deposits", {"amount": 10 + n,
                                                              "reference": f"L{n}"})
    seen: list[dict[str, Any]] = []
    after: str | None = str(start)
    while after is not None and len(seen) < 50:
        reply = await api.get(f"/v1/events?limit=2&after={after}", role="finance")
        assert reply.status == 200, reply.text
        assert len(reply.json["items"]) <= 2
        seen += reply.json["items"]
        after = reply.json["next"]
    positions = [e["position"] for e in seen]
    assert positions == sorted(set(positions))
    assert (seen[0]["type"], seen[0]["data"]) == ("ledger:Account.Opened",
                                                  {"username": "log-reader-1", "currency": "USD"})
    mine = [e for e in seen if e["stream"] == seen[0]["stream"]]
    assert [e["type"] for e in mine] == ["ledger:Account.Opened"] + [
        "ledger:Account.DepositReceived"] * 3
    assert [e["version"] for e in mine] == [1, 2, 3, 4]
    assert [e["data"].get("amount") for e in mine[1:]] == [10, 11, 12]
    assert all(set(e) == {"position", "stream", "version", "type", "name", "aggregate", "at",
                          "actor", "data", "leaf_index", "leaf_hash"}  # issue 10's leaf
               for e in seen)
    assert mine[0]["actor"].startswith("system:")


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "after=-1", "after=x", "kind=a",
                                   "since=yesterday", "type=a%20b"])
async def test_a_bad_event_log_query_is_refused(api: Api, query: str) -> None:
    assert_problem(await api.get(f"/v1/events?{query}", role="auditor"), 422,
                   "validation_error")


# -- the journal ---------------------------------------------------------------------------------


async def test_a_full_page_of_the_log_is_answered_again_as_kept_and_the_head_page_grows(
    api: Api,
) -> None:
    opened = await api.post("/v1/accounts", {"username": "log-reader-2", "currency": "USD"})
    assert opened.status == 201, opened.text
    after = opened.json["position"] - 1
    for n in range(3):
        await api.post("/v1/accounts/log-reader-2/deposits", {"amount": 10 + n,
                                                              "reference": f"K{n}"})
    full = f"/v1/events?limit=2&after={after}"

    async def placed() -> bool:  # the notary has put both events in its tree
        items = (await api.get(full, role="auditor")).json["items"]
        return all(item["leaf_index"] is not None for item in items)

    deadline = asyncio.get_running_loop().time() + 30
    while not await placed():
        assert asyncio.get_running_loop().time() < deadline, "the notary never placed them"
        await asyncio.sleep(0.05)
    first = await api.get(full, role="auditor")
    kept_before = await metric(api, "ledger_event_pages_answered_kept")
    again = await api.get(full, role="finance")
    assert again.status == 200 and again.text == first.text
    assert again.headers["Content-Type"] == first.headers["Content-Type"]  # charset included
    assert first.json["next"] is not None and len(first.json["items"]) == 2
    assert await metric(api, "ledger_event_pages_answered_kept") == kept_before + 1
    # Kept gzipped: sent so to a client that takes gzip, unzipped to one that does not.
    zipped = await api.get(full, role="auditor", headers={"Accept-Encoding": "gzip, br"})
    plain = await api.get(full, role="auditor", headers={"Accept-Encoding": "gzip;q=0"})
    assert zipped.headers["Content-Encoding"] == "gzip" and zipped.text == first.text
    assert "Content-Encoding" not in plain.headers and plain.text == first.text
    assert zipped.headers["Vary"] == plain.headers["Vary"] == "Accept-Encoding"
    assert await metric(api, "ledger_event_pages_answered_kept") == kept_before + 3
    # The page at the head is not full: it is read anew, and shows what is written next.
    head = f"/v1/events?limit=5&after={after + 2}"
    before = (await api.get(head, role="auditor")).json
    assert before["next"] is None and len(before["items"]) == 2
    await api.post("/v1/accounts/log-reader-2/deposits", {"amount": 99, "reference": "K9"})
    grown = (await api.get(head, role="auditor")).json["items"]
    assert [i["position"] for i in grown][:2] == [i["position"] for i in before["items"]]
    assert len(grown) == 3 and grown[-1]["data"]["reference"] == "K9"


async def test_the_journal_shows_balanced_postings_for_each_money_event(api: Api) -> None:
    username = await api.funded_account(1_000)
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "J-1", "amount": 250})
    reply = await api.get(f"/v1/journal?account=customer:{username}", role="auditor")
    assert reply.status == 200, reply.text
    entries = reply.json["items"]
    assert [(e["type"], e["username"], e["order_no"]) for e in entries] == [
        ("deposit_received", username, None), ("purchase_paid", username, "J-1")]
    for entry in entries:
        assert sum(p["amount"] for p in entry["postings"]) == 0
        assert f"customer:{username}" in [p["account"] for p in entry["postings"]]
        assert entry["currency"] == "USD"
    assert entries[0]["postings"] == [{"account": "clearing:deposits", "amount": 1_000},
                                      {"account": f"customer:{username}", "amount": -1_000}]
    assert {e["position"] for e in entries} <= set(await _positions_of(api, username))


async def test_the_journal_pages_in_log_order(api: Api) -> None:
    username = await api.funded_account(100)
    for n in range(3):
        await api.post(f"/v1/accounts/{username}/deposits", {"amount": 1, "reference": f"j{n}"})
    first = await api.get(f"/v1/journal?account=customer:{username}&limit=3", role="finance")
    rest = await api.get(f"/v1/journal?account=customer:{username}&after={first.json['next']}",
                         role="finance")
    positions = [e["position"] for e in first.json["items"] + rest.json["items"]]
    assert len(positions) == 4 and positions == sorted(positions)
    assert rest.json["next"] is None


@pytest.mark.parametrize("query", ["account=Customer:Alice", "account=", "account=nonsense",
                                   "limit=5000"])
async def test_a_bad_journal_query_is_refused(api: Api, query: str) -> None:
    assert_problem(await api.get(f"/v1/journal?{query}", role="auditor"), 422,
                   "validation_error")


# -- reconciliation ------------------------------------------------------------------------------


async def test_reconciliation_adds_up_and_every_invariant_holds(api: Api) -> None:
    # CHF is this test's alone on the module's server: its totals are exactly what it writes
    username = await api.open_account("CHF")
    deposit = await api.post(f"/v1/accounts/{username}/deposits",
                             {"amount": 1_000, "reference": "CHF-1"})
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "C-1", "amount": 300})
    await api.post(f"/v1/accounts/{username}/refund-requests",
                   {"order_no": "C-1", "amount": 200}, role="cs")

    reply = await api.get("/v1/reconciliation?currency=CHF", role="finance")

    assert reply.status == 200, reply.text
    body = reply.json
    assert body["currency"] == "CHF"
    assert body["totals"] == {"deposits": 1_000, "purchases": 300, "failure_credits": 0,
                              "return_refunds": 0, "freight": 0, "payouts": 0, "held": 200}
    assert body["customer_balances"] == {"posted": 700, "held": 200, "available": 500}
    assert (body["journal_customer_balances"], body["trial_balance"]) == (700, 0)
    assert set(body["invariants"]) >= INVARIANTS
    assert all(holds is True for holds in body["invariants"].values())
    assert body["ok"] is True
    assert body["position"] >= deposit.json["position"]

    then = await api.get(
        f"/v1/reconciliation?currency=CHF&at_position={deposit.json['position']}",
        role="auditor")
    assert then.status == 200, then.text
    assert then.json["position"] == deposit.json["position"]
    assert (then.json["totals"]["deposits"], then.json["totals"]["purchases"]) == (1_000, 0)
    assert then.json["customer_balances"]["posted"] == 1_000
    assert then.json["ok"] is True


async def test_reconciliation_moves_by_exactly_what_a_case_resolution_posts(api: Api) -> None:
    username = await api.customer_with_order(deposit=10_000, paid=3_000)
    case = await api.open_case(username)
    await api.walk(case["id"], "with_supplier")
    before = (await api.get("/v1/reconciliation?currency=USD", role="finance")).json
    await api.step(case["id"], "resolve",
                   {"outcome": "refund", "refund_amount": 1_200, "freight_amount": 150})
    after = (await api.get("/v1/reconciliation?currency=USD", role="finance")).json
    assert after["totals"]["return_refunds"] - before["totals"]["return_refunds"] == 1_200
    assert after["totals"]["freight"] - before["totals"]["freight"] == 150
    moved = after["customer_balances"]["posted"] - before["customer_balances"]["posted"]
    assert moved == 1_050
    assert after["ok"] is True and after["trial_balance"] == 0


async def test_a_currency_nobody_uses_reconciles_to_zero(api: Api) -> None:
    reply = await api.get("/v1/reconciliation?currency=ISK", role="finance")
    assert reply.status == 200, reply.text
    assert reply.json["ok"] is True
    assert set(reply.json["totals"].values()) == {0}


@pytest.mark.parametrize("query", ["as_of=2026-01-01", "currency=usd", "currency=XYZ",
                                   "currency=USD&at_position=-1",
                                   "currency=USD&at_position=9999999999",
                                   "currency=USD&position=3"])
async def test_a_bad_reconciliation_query_is_refused(api: Api, query: str) -> None:
    assert_problem(await api.get(f"/v1/reconciliation?{query}", role="finance"), 422,
                   "validation_error")


# -- verify and the chain's digest ---------------------------------------------------------------


async def test_verify_finds_a_clean_store_ok(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    await api.walk(case["id"], "with_supplier")
    await api.step(case["id"], "resolve", {"outcome": "refund", "freight_amount": 100})
    reply = await api.get("/v1/audit/verify", role="auditor")
    assert reply.status == 200, reply.text
    body = reply.json
    assert body["ok"] is True
    assert body["first_bad_position"] is None
    assert body["events_checked"] >= 10
    assert body["problems"] == []
    assert body["damage"] == []


async def test_verifies_asked_at_once_are_served_one_at_a_time(api: Api) -> None:
    replies = await asyncio.gather(*(api.get("/v1/audit/verify", role="auditor")
                                     for _ in range(3)))
    assert {r.status for r in replies} <= {200, 503}
    assert any(r.status == 200 for r in replies)
    for reply in replies:
        if reply.status == 503:
            assert_problem(reply, 503, "busy")
            assert reply.headers["Retry-After"]


async def test_the_digest_binds_every_event_written_before_it(
    api: Api, server: Server, tmp_path: Path
) -> None:
    username = await api.funded_account(500)
    written = (await _positions_of(api, username))[-1]
    reply = await api.get("/v1/audit/digest", role="auditor")
    assert reply.status == 200, reply.text
    assert reply.json["position"] >= written
    assert re.fullmatch(r"[0-9a-f]{64}", reply.json["hash"])
    # kept outside the database, it is what `ledger verify` checks the chain against
    digests = tmp_path / "digests.jsonl"
    digests.write_text(reply.text + "\n")
    result = subprocess.run(
        [*ledger_command(), "verify", "--digest", str(digests)], capture_output=True, text=True,
        timeout=120, cwd=cli_workdir(),
        env={"PATH": "/usr/bin:/bin", "LEDGER_DATABASE_URL": server.database_url,
                          "LEDGER_CHAIN_KEY_FILE": os.environ["LEDGER_CHAIN_KEY_FILE"]},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok:")


# -- the Beancount export ------------------------------------------------------------------------


async def test_the_beancount_export_passes_bean_check_and_matches_the_balances(
    api: Api, tmp_path: Path
) -> None:
    username = await api.customer_with_order(deposit=10_000, paid=3_000)
    case = await api.open_case(username)
    await api.walk(case["id"], "with_supplier")
    await api.step(case["id"], "resolve",
                   {"outcome": "refund", "refund_amount": 1_000, "freight_amount": 250})
    other = await api.funded_account(777)

    reply = await api.get("/v1/export/beancount?currency=USD", role="finance")

    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    path = tmp_path / "ledger.beancount"
    path.write_text(reply.text)
    checked = _bean_check(path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    entries, errors, _ = loader.load_file(str(path))
    assert errors == []
    for name in (username, other):
        account = account_name(f"customer:{name}")
        total = sum((p.units.number for e in entries if isinstance(e, bean.Transaction)
                     for p in e.postings if p.account == account), start=0)
        posted = (await api.account(name))["posted"]
        assert -total * 100 == posted, name


async def test_an_export_of_all_currencies_passes_bean_check(api: Api, tmp_path: Path) -> None:
    await api.funded_account(100)
    await api.open_account("JPY")
    reply = await api.get("/v1/export/beancount", role="auditor")
    assert reply.status == 200, reply.text
    path = tmp_path / "all.beancount"
    path.write_text(reply.text)
    checked = _bean_check(path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("query", ["currency=XYZ", "currency=usd", "format=csv"])
async def test_a_bad_export_query_is_refused(api: Api, query: str) -> None:
    assert_problem(await api.get(f"/v1/export/beancount?{query}", role="finance"), 422,
                   "validation_error")
