"""Operations: health, readiness, metrics, and an API description that matches what is served."""

from __future__ import annotations

import re
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from api.keys import ROUTE_LANES, ROUTE_ROLES
from api.routes import ROUTES
from api.routing import HEAD_SUFFIX, register
from tests.http.conftest import Api, Reply, assert_problem, case_body, days_from_today

# API.md's paths, and those this service adds.
ADDITIONS = {("get", "/docs/static/{name}"), ("post", "/v1/return-cases/{id}/expire"),
             ("get", "/v1/audit/digest"),
             # issue 12: the customer list, photos added to an open case
             ("get", "/v1/accounts"), ("post", "/v1/return-cases/{id}/evidence"),
             ("get", "/v1/reconciliation/unmatched"),
             # issue 11: who is calling, and the console (served without a token)
             ("get", "/v1/me"), ("get", "/console/"), ("get", "/console/{name}"),
             # issue 14: messages to customers and their deliveries
             ("get", "/v1/outbox"),
             # issue 10: the auditor's kit
             ("get", "/v1/audit/checkpoint"), ("get", "/v1/audit/proof"),
             ("get", "/v1/audit/consistency"), ("get", "/v1/export/csv"),
             ("get", "/v1/export/hledger")}
CONTRACT = {
    ("post", "/v1/accounts"), ("get", "/v1/accounts/{username}"),
    ("get", "/v1/accounts/{username}/balance"), ("get", "/v1/accounts/{username}/history"),
    ("post", "/v1/accounts/{username}/deposits"), ("post", "/v1/accounts/{username}/purchases"),
    ("post", "/v1/accounts/{username}/purchases/{order_no}/failure"),
    ("get", "/v1/accounts/{username}/orders"), ("get", "/v1/accounts/{username}/refundable"),
    ("post", "/v1/accounts/{username}/refund-requests"), ("get", "/v1/refund-requests"),
    ("get", "/v1/refund-requests/{id}"), ("post", "/v1/refund-requests/{id}/approve"),
    ("post", "/v1/refund-requests/{id}/reject"), ("post", "/v1/refund-requests/{id}/cancel"),
    ("post", "/v1/refund-requests/{id}/pay"), ("get", "/health"), ("get", "/ready"),
    ("get", "/metrics"), ("get", "/openapi.json"), ("get", "/docs"),
    ("post", "/v1/return-cases"), ("get", "/v1/return-cases"), ("get", "/v1/return-cases/{id}"),
    *(("post", f"/v1/return-cases/{{id}}/{step}") for step in (
        "supplier-review", "accept", "reject", "ship-back", "receive", "forward", "resolve",
        "close", "cancel", "notes")),
    ("get", "/v1/events"), ("get", "/v1/journal"), ("get", "/v1/reconciliation"),
    ("get", "/v1/audit/verify"), ("get", "/v1/export/beancount"),
}
SAMPLE_PARAMETERS = {"username": "someone-x", "id": "00000000-0000-4000-8000-000000000000",
                     "order_no": "o", "name": "swagger-ui.css"}


def assert_documented(spec: dict[str, Any], method: str, template: str, reply: Reply) -> None:
    """The reply's status is documented for the operation, and its body fits the schema."""
    operation = spec["paths"][template][method.lower()]
    response = operation["responses"].get(str(reply.status))
    assert response is not None, f"{method} {template} answered undocumented {reply.status}"
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    media = response["content"].get(reply.content_type)
    assert media is not None, f"{reply.content_type} is not documented for {reply.status}"
    if reply.content_type.endswith("json"):
        schema = {**media["schema"], "components": spec["components"]}
        jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        ).validate(reply.json)


async def test_health_says_the_process_answers(api: Api) -> None:
    reply = await api.get("/health", role=None)
    assert (reply.status, reply.json) == (200, {"status": "ok"})


async def test_ready_says_the_database_answers_and_how_far_the_read_models_lag(
    api: Api,
) -> None:
    await api.funded_account(10)
    reply = await api.get("/ready", role="auditor")
    assert reply.status == 200, reply.text
    body = reply.json
    assert body["status"] == "ready"
    assert body["log_position"] >= 2
    assert set(body["read_models"]) >= {"accounts", "orders", "refund_requests"}
    assert isinstance(body["lag"], int) and body["lag"] >= 0


async def test_metrics_count_requests_by_route_template(api: Api) -> None:
    username = await api.open_account()
    await api.get(f"/v1/accounts/{username}")
    reply = await api.get("/metrics", role="auditor")
    assert reply.status == 200
    assert reply.content_type == "text/plain"
    assert re.search(r'ledger_http_requests_total\{method="GET",route="/v1/accounts/\{username\}",'
                     r'status="200"\} [1-9]', reply.text)
    assert "ledger_http_request_duration_seconds_bucket" in reply.text
    assert username not in reply.text  # label values stay bounded


def test_the_api_description_is_a_valid_openapi_3_1_document(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_the_api_description_covers_every_path_of_the_contract(spec: dict[str, Any]) -> None:
    documented = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert documented >= CONTRACT
    assert documented - CONTRACT == ADDITIONS


# Served without a token, GET and HEAD: the probes (issue 13) and the console's files.
OPEN_PATHS = {"/health", "/ready", "/metrics", "/console/", "/console/{name}"}


def test_every_operation_documents_its_security_and_problems(spec: dict[str, Any]) -> None:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert "500" in statuses, (method, path)
            if path in OPEN_PATHS:
                assert operation["security"] == []
            else:
                assert "security" not in operation  # the document's: bearer
                assert "401" in statuses, (method, path)
            if method == "post":
                assert {"400", "413", "415", "422"} <= statuses, (method, path)
                assert "requestBody" in operation
    assert spec["security"] == [{"bearer": []}]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


async def test_every_documented_path_serves_exactly_its_documented_methods(
    api: Api, spec: dict[str, Any]
) -> None:
    for template, operations in spec["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMETERS[m.group(1)], template)
        reply = await api.call("PATCH", path, role="auditor")
        assert_problem(reply, 405, "method_not_allowed")
        allowed = {m.strip().lower() for m in reply.headers["Allow"].split(",")}
        # Every GET answers HEAD too (RFC 9110 9.3.2): the document names the GET only.
        head = {"head"} if "get" in operations else set()
        assert allowed == set(operations) | head, template


def test_head_waits_in_its_get_s_lane_and_admits_its_get_s_roles_only() -> None:
    app = web.Application()
    register(app, ROUTES)
    gets = [route for route in ROUTES if route.method == "GET"]
    assert gets
    for route in gets:
        head = f"{route.name}{HEAD_SUFFIX}"
        assert app[ROUTE_ROLES][head] == route.roles, route.path
        assert app[ROUTE_LANES][head] == route.lane, route.path


async def test_every_answer_of_a_full_tour_is_documented(api: Api, spec: dict[str, Any]) -> None:
    u = await api.funded_account(1_000)
    A, R = "/v1/accounts/{username}", "/v1/refund-requests/{id}"

    async def step(method: str, template: str, path: str, role: str | None = "system",
                   body: Any = None, **options: Any) -> Reply:
        reply = await api.call(method, path, role=role, json_body=body, **options)
        assert_documented(spec, method, template, reply)
        return reply

    await step("POST", "/v1/accounts", "/v1/accounts", body={"username": f"{u}-2",
                                                             "currency": "JPY"})
    await step("POST", "/v1/accounts", "/v1/accounts", body={"username": u, "currency": "USD"})
    await step("POST", "/v1/accounts", "/v1/accounts", body={"username": 1})
    await step("POST", f"{A}/deposits", f"/v1/accounts/{u}/deposits",
               body={"amount": 5, "reference": "t"})
    await step("POST", f"{A}/deposits", f"/v1/accounts/{u}/deposits",
               body={"amount": 5, "reference": "t"})
    await step("POST", f"{A}/purchases", f"/v1/accounts/{u}/purchases",
               body={"order_no": "T", "amount": 500})
    await step("POST", f"{A}/purchases/{{order_no}}/failure", f"/v1/accounts/{u}/purchases/T/"
               "failure", body={"amount": 100, "reason": "late"})
    await step("POST", f"{A}/purchases", f"/v1/accounts/{u}/purchases", role="cs",
               body={"order_no": "T", "amount": 1})
    for suffix in ("", "/balance", "/history", "/orders", "/refundable"):
        await step("GET", A + suffix, f"/v1/accounts/{u}{suffix}", role="auditor")
    await step("GET", A, "/v1/accounts/no-one-here")
    await step("GET", A, "/v1/accounts/x")
    request = (await step("POST", f"{A}/refund-requests", f"/v1/accounts/{u}/refund-requests",
                          role="cs", body={"order_no": "T", "amount": 100})).json
    rid = request["id"]
    await step("GET", "/v1/refund-requests", "/v1/refund-requests", role="finance")
    await step("GET", R, f"/v1/refund-requests/{rid}", role="finance")
    await step("POST", f"{R}/pay", f"/v1/refund-requests/{rid}/pay", role="finance",
               body={"payout_reference": "early"})
    await step("POST", f"{R}/approve", f"/v1/refund-requests/{rid}/approve", role="finance",
               body={})
    await step("POST", f"{R}/pay", f"/v1/refund-requests/{rid}/pay", role="payer",
               body={"payout_reference": "P"})
    await step("GET", R, f"/v1/refund-requests/{rid}", role="cs")
    await step("POST", f"{R}/cancel", f"/v1/refund-requests/{rid}/cancel", role="cs",
               body={"reason": "too late"})
    await step("POST", f"{R}/reject", f"/v1/refund-requests/{rid}/reject", role="finance",
               data=b"{", headers={"Content-Type": "application/json"})
    for template in ("/health", "/ready", "/metrics", "/openapi.json", "/docs"):
        await step("GET", template, template, role="auditor")
    await step("GET", "/ready", "/ready", role=None)


async def _documented(api: Api, spec: dict[str, Any], method: str, template: str, path: str,
                      role: str | None = "cs", body: Any = None, **options: Any) -> Reply:
    reply = await api.call(method, path, role=role, json_body=body, **options)
    assert_documented(spec, method, template, reply)
    return reply


async def test_every_answer_of_a_case_tour_is_documented(api: Api, spec: dict[str, Any]) -> None:
    u = await api.customer_with_order()
    C = "/v1/return-cases/{id}"
    opened = await _documented(api, spec, "POST", "/v1/return-cases", "/v1/return-cases",
                               body=case_body(u))
    c = opened.json["id"]
    await _documented(api, spec, "POST", "/v1/return-cases", "/v1/return-cases",
                      body=case_body(u, order_no="NEVER"))
    await _documented(api, spec, "POST", "/v1/return-cases", "/v1/return-cases",
                      body=case_body("no-such-user"))
    await _documented(api, spec, "POST", "/v1/return-cases", "/v1/return-cases",
                      body=case_body(u, kind="x"))
    await _documented(api, spec, "POST", f"{C}/forward", f"/v1/return-cases/{c}/forward",
                      body={})
    for step, body in [
        ("supplier-review", {}),
        ("accept", {"return_by": days_from_today(9), "return_address": "Dock 4"}),
        ("ship-back", {"tracking": "T-1"}),
        ("receive", {"postmark_date": days_from_today(0), "goods": True,
                     "original_packaging": True, "acceptance_copy": True}),
        ("forward", {}),
        ("resolve", {"outcome": "refund", "refund_amount": 10**9, "freight_amount": 0}),
        ("resolve", {"outcome": "refund", "freight_amount": 10}),
        ("notes", {"text": "sent"}),
        ("close", {}),
        ("cancel", {"reason": "too late"}),
        ("expire", {}),
        ("reject", {"reason": "x"}),
    ]:
        await _documented(api, spec, "POST", f"{C}/{step}", f"/v1/return-cases/{c}/{step}",
                          body=body)
    await _documented(api, spec, "GET", C, f"/v1/return-cases/{c}", role="auditor")
    await _documented(api, spec, "GET", C, "/v1/return-cases/00000000-0000-4000-8000-0000000000c0")
    await _documented(api, spec, "GET", "/v1/return-cases", f"/v1/return-cases?username={u}",
                      role="finance")
    await _documented(api, spec, "GET", "/v1/return-cases", "/v1/return-cases?overdue=maybe")
    await _documented(api, spec, "GET", "/v1/return-cases", "/v1/return-cases", role="system")


async def test_every_answer_of_a_books_tour_is_documented(api: Api, spec: dict[str, Any]) -> None:
    await api.funded_account(100)
    for template, query, role in [
        ("/v1/events", "?limit=3", "finance"), ("/v1/events", "?limit=0", "auditor"),
        ("/v1/journal", "", "auditor"), ("/v1/journal", "?account=x", "finance"),
        ("/v1/reconciliation", "?currency=USD", "finance"),
        ("/v1/reconciliation", "?currency=USD&at_position=1", "auditor"),
        ("/v1/reconciliation", "?currency=QQQ", "auditor"),
        ("/v1/audit/verify", "", "auditor"), ("/v1/audit/verify", "", "finance"),
        ("/v1/audit/digest", "", "auditor"),
        ("/v1/export/beancount", "?currency=USD", "finance"),
        ("/v1/export/beancount", "?currency=1", "finance"),
        ("/v1/events", "", "cs"),
    ]:
        await _documented(api, spec, "GET", template, template + query, role=role)


async def test_the_docs_page_loads_nothing_from_outside(api: Api) -> None:
    reply = await api.get("/docs", role="cs")
    assert reply.status == 200
    assert reply.content_type == "text/html"
    assert "http://" not in reply.text and "https://" not in reply.text
    assert "validatorUrl: null" in reply.text  # Swagger UI's default badge is external
    assets = re.findall(r'(?:src|href)="([^"]+)"', reply.text)
    assert len(assets) >= 3
    for asset in assets:
        assert asset.startswith("/docs/static/"), asset
        fetched = await api.get(asset, role="cs")
        assert fetched.status == 200, asset
    spec_urls = re.findall(r'url: "([^"]+)"', reply.text)
    assert spec_urls == ["/openapi.json"]


@pytest.mark.parametrize("name", ["../../../etc/passwd", "swagger-editor.js", "LICENSE"])
async def test_the_docs_serve_only_their_own_assets(api: Api, name: str) -> None:
    reply = await api.get(f"/docs/static/{name}", role="cs")
    assert reply.status == 404
