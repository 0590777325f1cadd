"""The metrics an operator pages on (api/gauges.py), and the alert rules and the dashboard in
deploy/ that use them."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.http.conftest import Api, Server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC_NAME = re.compile(r"\bledger_[a-z_]+\b")


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


async def scrape(api: Api) -> dict[str, list[tuple[dict[str, str], float]]]:
    reply = await api.get("/metrics", role=None)
    assert reply.status == 200, reply.text
    return samples(reply.text)


async def scrape_current(api: Api, timeout_s: float = 10.0
                         ) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A scrape once the read models have every event of the log (lag 0)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        found = await scrape(api)
        if value(found, "ledger_read_model_lag_events") == 0:
            return found
        if loop.time() > deadline:
            pytest.fail(f"the read models did not catch up within {timeout_s:g} s")
        await asyncio.sleep(0.02)


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str,
          **labels: str) -> float:
    matching = [v for have, v in found.get(name, []) if labels.items() <= have.items()]
    assert len(matching) == 1, (name, labels, found.get(name))
    return matching[0]


def alert_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "ledger.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_rules_and_the_dashboard_are_well_formed() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
            assert rule["labels"]["severity"] in ("page", "ticket")
            assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    assert len(dashboard_expressions()) >= 10


async def test_every_metric_the_rules_and_the_dashboard_name_is_exposed(api: Api) -> None:
    username = await api.funded_account(1_000)  # requests counted and timed
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "ORD-E", "amount": 400})
    reply = await api.post(f"/v1/accounts/{username}/refund-requests",  # one open request
                           {"order_no": "ORD-E", "amount": 100, "reason": "r"}, role="cs")
    assert reply.status == 201, reply.text
    exposed = set(await scrape_current(api))
    named = {name for expr in alert_expressions() + dashboard_expressions()
             for name in METRIC_NAME.findall(expr)}
    assert named, "no ledger metric named"
    assert named <= exposed, sorted(named - exposed)


async def test_the_metrics_say_the_log_the_read_models_the_keeper_and_the_chain(
    api: Api,
) -> None:
    await api.funded_account(500)
    found = await scrape_current(api)
    ready = (await api.get("/ready", role=None)).json
    assert ready["log_position"] >= value(found, "ledger_log_position") > 0
    for name in ready["read_models"]:
        assert value(found, "ledger_read_model_position", read_model=name) == value(
            found, "ledger_log_position")
    assert value(found, "ledger_read_model_lag_events") >= 0
    assert value(found, "ledger_read_model_lag_seconds") >= 0
    assert ready["lag_seconds"] >= 0  # the age of the oldest event not applied yet
    assert value(found, "ledger_read_model_keeper_leader") == 1  # the only process
    assert value(found, "ledger_chain_ok") == 1
    assert value(found, "ledger_history_damaged_position") == 0
    assert value(found, "ledger_store_up") == 1
    assert value(found, "ledger_pool_connections", pool="store", state="size") >= 1
    for lane in ("write", "read", "heavy"):
        assert value(found, "ledger_lane_workers", lane=lane) >= 1
        assert value(found, "ledger_lane_waiting", lane=lane) >= 0
        assert value(found, "ledger_lane_rejections_total", lane=lane) >= 0
    # The scrape itself holds a read slot while it reads the store: at least none in use now
    assert value(found, "ledger_lane_in_use", lane="heavy") == 0
    assert value(found, "ledger_http_connections") >= 1  # this client's


async def test_the_writer_says_how_it_recorded_its_batches_on_postgresql(
    api: Api, server: Server,
) -> None:
    before = await scrape(api)
    await api.funded_account(500)
    found = await scrape(api)
    if not server.database_url.startswith("postgresql"):  # SQLite writes on a thread anyway
        assert "ledger_writer_batches" not in found
        return
    recorded = {labels["how"]: n for labels, n in found["ledger_writer_batches"]}
    earlier = {labels["how"]: n for labels, n in before["ledger_writer_batches"]}
    assert set(recorded) == {"statement", "thread"}
    assert sum(recorded.values()) >= sum(earlier.values()) + 2  # an opening and a deposit
    assert value(found, "ledger_writer_connection_failures") == 0


async def test_open_refund_requests_are_counted_with_their_amount_by_currency(
    api: Api,
) -> None:
    def open_ones(found: dict[str, Any]) -> tuple[float, float]:
        counts = {labels["currency"]: v for labels, v in found.get(
            "ledger_open_refund_requests", [])}
        amounts = {labels["currency"]: v for labels, v in found.get(
            "ledger_open_refund_requests_amount_minor", [])}
        return counts.get("USD", 0), amounts.get("USD", 0)

    before = open_ones(await scrape_current(api))
    username = await api.funded_account(1_000)
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "ORD-M", "amount": 400})
    reply = await api.post(f"/v1/accounts/{username}/refund-requests",
                           {"order_no": "ORD-M", "amount": 250, "reason": "wants it back"},
                           role="cs")
    assert reply.status == 201, reply.text
    found = await scrape_current(api)
    assert open_ones(found) == (before[0] + 1, before[1] + 250)

    reply = await api.post(f"/v1/refund-requests/{reply.json['id']}/reject",
                           {"reason": "no"}, role="finance")
    assert reply.status == 200, reply.text
    assert open_ones(await scrape_current(api)) == before


async def test_overdue_cases_are_the_ones_the_case_list_calls_overdue(api: Api) -> None:
    found = await scrape_current(api)
    listed = (await api.get("/v1/return-cases?overdue=true&limit=1000", role="cs")).json
    assert value(found, "ledger_overdue_return_cases") == len(listed["items"])
