"""The chaos checkers judge a history: a consistent one passes, and each kind of broken
promise is caught by the checker named for it. (No server here: histories are made by hand.)"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.chaos.checkers import check, figures
from tests.chaos.history import FORMAT

STREAM = "7a1c0000-0000-0000-0000-000000000001"


def op(id: int, kind: str, outcome: str, *, status: int | None, phase: str = "load",
       tag: str | None = None, args: dict[str, Any] | None = None, body: Any = None,
       start: float = 0.0, resolves: int | None = None, twin: bool = False,
       replayed: bool = False, code: str | None = None) -> dict[str, Any]:
    paths = {"deposit": "/v1/accounts/alice/deposits", "purchase": "/v1/accounts/alice/purchases",
             "open_account": "/v1/accounts", "read": "/v1/accounts/alice/balance"}
    return {"id": id, "phase": phase, "worker": 0, "server": 0, "op": kind,
            "method": "GET" if kind == "read" else "POST", "path": paths[kind], "role": "system",
            "args": args, "key": None if tag is None else f"key-{tag}", "tag": tag,
            "account": "alice", "request_id": None, "resolves": resolves, "twin": twin,
            "timeout_s": None, "start": start, "end": start + 0.1, "status": status,
            "code": code, "outcome": outcome, "error": None if status else "timeout",
            "replayed": replayed, "body": body}


def snapshot(posted: int, held: int = 0) -> dict[str, Any]:
    return {"username": "alice", "currency": "USD", "posted": posted, "held": held,
            "available": posted - held}


def event(position: int, kind: str, **data: Any) -> dict[str, Any]:
    return {"position": position, "stream": STREAM, "type": f"ledger:Account.{kind}",
            "data": data}


def line(position: int, kind: str, amount: int, posted: int, **data: Any) -> dict[str, Any]:
    return {"position": position, "type": kind, "amount": amount, "posted_after": posted,
            "available_after": posted, "data": {"amount": amount, **data}}


def consistent_history() -> dict[str, Any]:
    """Alice is opened, deposits 1000, buys for 300 (read: 700), a purchase of 5000 is refused,
    a deposit of 50 is unknown until its retry is answered by replay: 750 in the end."""
    ops = [
        op(0, "open_account", "ok", status=201, phase="setup", tag="alice",
           args={"username": "alice", "currency": "USD"}, body=snapshot(0)),
        op(1, "deposit", "ok", status=201, tag="dep-1", start=1.0,
           args={"amount": 1000, "reference": "dep-1"}, body={"account": snapshot(1000)}),
        op(2, "purchase", "ok", status=201, tag="ord-2", start=1.2,
           args={"order_no": "ord-2", "amount": 300}, body={"account": snapshot(700)}),
        op(3, "read", "ok", status=200, start=1.4, body={**snapshot(700), "position": 4}),
        op(4, "purchase", "refused", status=422, code="insufficient_funds", tag="ord-4",
           start=1.6, args={"order_no": "ord-4", "amount": 5000}),
        op(5, "deposit", "unknown", status=None, tag="dep-5", start=1.8,
           args={"amount": 50, "reference": "dep-5"}),
        op(6, "deposit", "ok", status=201, phase="resolve", resolves=5, tag="dep-5", start=9.0,
           replayed=True, args={"amount": 50, "reference": "dep-5"},
           body={"account": snapshot(750)}),
    ]
    return {
        "format": FORMAT,
        "meta": {"config": {"operations": 5, "kills": 0, "pg_restarts": 0, "terminations": 0}},
        "accounts": [{"username": "alice", "hot": True}],
        "ops": ops,
        "faults": [],
        "final": {
            "events": [
                event(1, "Opened", username="alice", currency="USD"),
                event(3, "DepositReceived", amount=1000, reference="dep-1"),
                event(4, "PurchasePaid", amount=300, order_no="ord-2"),
                event(7, "DepositReceived", amount=50, reference="dep-5"),
            ],
            "accounts": {"alice": {"0": snapshot(750), "1": snapshot(750)}},
            "histories": {"alice": [
                line(3, "deposit_received", 1000, 1000, reference="dep-1"),
                line(4, "purchase_paid", 300, 700, order_no="ord-2"),
                line(7, "deposit_received", 50, 750, reference="dep-5"),
            ]},
            "reconciliation": {"0": {"ok": True, "position": 7, "invariants": {},
                                     "customer_balances": snapshot(750)}},
            "verify": {"exit_code": 0, "output": "{\"ok\": true}"},
        },
    }


def failing(doc: dict[str, Any]) -> set[str]:
    return {verdict.name for verdict in check(doc) if not verdict.ok}


def test_a_consistent_history_passes_every_checker() -> None:
    verdicts = check(consistent_history())
    assert [v.problems for v in verdicts if not v.ok] == []
    assert all(v.checked > 0 for v in verdicts)


def test_its_figures_count_the_outcomes_and_how_unknowns_were_resolved() -> None:
    found = figures(consistent_history())
    assert (found["operations"], found["acknowledged"], found["refused"], found["unknown"]) \
        == (5, 3, 1, 1)
    assert found["unknown_writes_resolved"] == {"took_effect_originally": 1}


def test_an_acknowledged_write_missing_from_the_log_is_caught() -> None:
    doc = consistent_history()
    del doc["final"]["events"][2]  # the purchase of ord-2
    assert {"acknowledged_writes_not_lost", "final_balances"} <= failing(doc)


def test_an_acknowledged_write_missing_from_the_accounts_history_is_caught() -> None:
    doc = consistent_history()
    del doc["final"]["histories"]["alice"][1]
    assert failing(doc) == {"acknowledged_writes_not_lost"}


def test_a_write_applied_twice_is_caught() -> None:
    doc = consistent_history()
    doc["final"]["events"].append(event(9, "DepositReceived", amount=1000, reference="dep-1"))
    assert "no_write_applied_twice" in failing(doc)


def test_a_refused_write_found_in_the_log_is_caught() -> None:
    doc = consistent_history()
    doc["final"]["events"].append(event(9, "PurchasePaid", amount=5000, order_no="ord-4"))
    assert "no_write_applied_twice" in failing(doc)


def test_a_write_nobody_made_is_caught() -> None:
    doc = consistent_history()
    doc["final"]["events"].append(event(9, "DepositReceived", amount=5, reference="dep-x"))
    assert "no_write_applied_twice" in failing(doc)


@pytest.mark.parametrize("where", ["read", "answer", "log", "history"])
def test_a_negative_available_anywhere_is_caught(where: str) -> None:
    doc = consistent_history()
    final = doc["final"]
    if where == "read":
        doc["ops"][3]["body"]["available"] = -1
    elif where == "answer":
        doc["ops"][2]["body"]["account"]["available"] = -1
    elif where == "log":
        final["events"][2]["data"]["amount"] = 3000  # 1000 - 3000
    else:
        final["histories"]["alice"][1]["available_after"] = -5
    assert "no_negative_available" in failing(doc)


def test_a_read_missing_a_write_acknowledged_before_it_began_is_caught() -> None:
    doc = consistent_history()
    doc["ops"][3]["body"] = {**snapshot(1000), "position": 3}  # before the purchase at 4
    assert failing(doc) == {"reads_are_current"}


def test_a_read_showing_balances_the_log_never_had_is_caught() -> None:
    doc = consistent_history()
    doc["ops"][3]["body"] = {**snapshot(650), "position": 4}
    assert failing(doc) == {"reads_are_current"}


def test_a_read_that_began_before_the_write_was_acknowledged_may_miss_it() -> None:
    doc = consistent_history()
    doc["ops"][3].update(start=1.25, body={**snapshot(1000), "position": 3})
    assert failing(doc) == set()


def test_an_unknown_write_left_unresolved_is_caught() -> None:
    doc = consistent_history()
    doc["ops"][6].update(outcome="unknown", status=None, body=None)
    assert "unknowns_resolved" in failing(doc)


def test_a_retry_refused_while_the_first_attempt_took_effect_is_caught() -> None:
    doc = consistent_history()
    twin = copy.deepcopy(doc["ops"][2])
    twin.update(id=7, twin=True, status=409, code="duplicate_order", outcome="refused",
                body={"code": "duplicate_order"})
    doc["ops"].append(twin)
    assert failing(doc) == {"idempotent_answers_agree"}


def test_two_answers_of_one_key_that_differ_are_caught() -> None:
    doc = consistent_history()
    twin = copy.deepcopy(doc["ops"][2])
    twin.update(id=7, twin=True, body={"account": snapshot(699)})
    doc["ops"].append(twin)
    assert failing(doc) == {"idempotent_answers_agree"}


def test_a_server_showing_other_final_balances_is_caught() -> None:
    doc = consistent_history()
    doc["final"]["accounts"]["alice"]["1"] = snapshot(700)
    assert failing(doc) == {"final_balances"}


def test_a_reconciliation_not_ok_and_a_failed_verify_are_caught() -> None:
    doc = consistent_history()
    doc["final"]["reconciliation"]["0"]["ok"] = False
    doc["final"]["verify"]["exit_code"] = 1
    assert failing(doc) == {"reconciliation_ok", "ledger_verify"}


def test_a_500_or_a_stack_trace_is_caught() -> None:
    doc = consistent_history()
    doc["ops"][4].update(status=500, outcome="unknown", body="Traceback (most recent call)")
    assert "no_server_errors" in failing(doc)


def test_a_run_short_of_its_operations_or_faults_is_caught() -> None:
    doc = consistent_history()
    doc["meta"]["config"].update(operations=6, kills=1)
    doc["faults"].append({"kind": "pg_restart", "start": 1.0, "end": 2.0, "ok": False,
                          "detail": "pg_ctlcluster exited 1"})
    assert failing(doc) == {"faults_injected"}
