"""The document lists every problem the contract names, under its status, with the headers
every answer of that status carries; and the bounds it states are the service's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from api import openapi, problems
from api.limits import REQUEST_DEADLINE_S
from api.routes import ROUTES
from api.webhooks import DELIVERY_ID_HEADER, SIGNATURE_HEADER, TYPE_HEADER, signature
from projections.outbox import MESSAGE_TYPES

# API.md, "Conventions": the codes it names, by status; then the ones api/README.md adds.
CONTRACT_CODES = {
    400: {"malformed_json", "bad_content_encoding"},
    401: {"unauthorized"},
    403: {"forbidden"},
    404: {"not_found"},
    409: {"account_exists", "duplicate_order", "duplicate_reference", "invalid_transition",
          "request_open_for_order", "notes_full",
          "four_eyes"},  # issue 11: whoever approved a refund request cannot pay it
    413: {"too_large"},
    415: {"unsupported_media_type"},
    422: {"validation_error", "insufficient_funds", "over_refundable", "unknown_order",
          "case_refused", "idempotency_key_reused"},
    500: {"internal_error"},
    503: {"not_ready", "busy", "store_unavailable", "deadline_exceeded"},
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.build(ROUTES)


def documented(document: dict[str, Any], status: int) -> dict[str, Any]:
    found: dict[str, Any] = document["components"]["responses"][f"Problem{status}"]
    return found


@pytest.mark.parametrize("status", sorted(CONTRACT_CODES))
def test_every_problem_code_of_the_contract_is_documented_under_its_status(
    document: dict[str, Any], status: int
) -> None:
    schema = documented(document, status)["content"]["application/problem+json"]["schema"]
    constraints = schema["allOf"][1]["properties"]
    assert CONTRACT_CODES[status] <= set(constraints["code"]["enum"])
    assert constraints["status"] == {"const": status}
    assert set(constraints["type"]["enum"]) == {
        problems.TYPE_PREFIX + code for code in constraints["code"]["enum"]}


def test_every_code_the_service_can_answer_is_one_of_the_contract(
    document: dict[str, Any],
) -> None:
    """Nothing undocumented in API.md or api/README.md can reach a client."""
    for status, codes in problems.codes_by_status().items():
        extra = set(codes) - CONTRACT_CODES.get(status, set())
        assert extra <= {"bad_request", "method_not_allowed"}, (status, extra)


@pytest.mark.parametrize(("status", "header"), [(401, "WWW-Authenticate"), (503, "Retry-After")])
def test_the_headers_a_problem_always_carries_are_required(
    document: dict[str, Any], status: int, header: str
) -> None:
    assert header in documented(document, status)["headers"]
    assert document["components"]["headers"][header]["required"] is True


def test_the_document_states_the_request_deadline(document: dict[str, Any]) -> None:
    assert f"within {REQUEST_DEADLINE_S:g} s" in document["info"]["description"]
    tighter = openapi.build(ROUTES, request_deadline_s=2.5)
    assert "within 2.5 s" in tighter["info"]["description"]


def test_every_bound_is_stated_in_json_schema_s_words(document: dict[str, Any]) -> None:
    """A client's generator or validator reads "minimum", never pydantic's "ge": a bound the
    document states under another name is a bound no client keeps (an optional query number's,
    say, which then looked valid at -2206)."""
    foreign: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            foreign.extend(f"{where}/{key}" for key in ("ge", "gt", "le", "lt") if key in node)
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(document, "")
    assert foreign == []


def test_every_write_links_to_what_it_enables(document: dict[str, Any]) -> None:
    purchase = document["paths"]["/v1/accounts/{username}/purchases"]["post"]
    links = purchase["responses"]["201"]["links"]
    assert {"fail_purchase", "request_refund", "open_case"} <= set(links)
    opened = document["paths"]["/v1/accounts"]["post"]["responses"]["201"]["links"]
    assert opened["deposit"]["parameters"] == {"username": "$response.body#/username"}


def test_the_unmatched_report_documents_its_parameters_sections_and_sums(
    document: dict[str, Any],
) -> None:
    operation = document["paths"]["/v1/reconciliation/unmatched"]["get"]
    assert "auditor, finance" in operation["description"]
    parameters = {p["name"]: p for p in operation["parameters"] if "name" in p}
    assert {"currency", "idle_days", "idle_before", "limit"} <= set(parameters)
    assert "idle_before" in parameters["idle_days"]["description"]
    assert "422" in parameters["idle_before"]["description"]
    assert (parameters["limit"]["schema"]["minimum"], parameters["limit"]["schema"]["maximum"]
            ) == (1, 1000)
    assert {"401", "403", "422", "503"} <= set(operation["responses"])
    schemas = document["components"]["schemas"]
    sections = schemas["Unmatched"]["properties"]
    assert {"deposits_never_spent", "idle_balances", "refunds_waiting",
            "payouts_not_paid"} <= set(sections)
    for section, sums in (("NeverSpentSection", "available"), ("IdleSection", "available"),
                          ("RequestSection", "requests' amounts")):
        fields = schemas[section]["properties"]
        assert {"count", "amount", "items"} <= set(fields)
        assert sums in fields["amount"]["description"]
    never_spent = schemas["NeverSpentSection"]["properties"]
    assert "deposited" in never_spent  # what came in, beside what is still there
    assert "Not what they deposited" in never_spent["amount"]["description"]


def readme_message_types() -> set[str]:
    """The types api/README.md's webhook table lists; ``a.b`` / ``.c`` names ``a.b`` and ``a.c``."""
    text = (Path(__file__).parents[2] / "api" / "README.md").read_text()
    section = text.split("| type | when | `details` |", 1)[1].split("\n\n", 1)[0]
    found: set[str] = set()
    for row in section.splitlines()[2:]:
        stem = ""
        for name in re.findall(r"`([a-z_.]+)`", row.split("|")[1]):
            full = stem + name if name.startswith(".") else name
            stem = full.rsplit(".", 1)[0]
            found.add(full)
    return found


def test_the_readme_lists_every_message_type_and_no_other() -> None:
    assert readme_message_types() == set(MESSAGE_TYPES)


def test_a_message_type_is_one_of_the_outboxs_in_the_document(
    document: dict[str, Any]
) -> None:
    schemas = document["components"]["schemas"]
    for model in ("OutboxMessage", "WebhookMessage"):
        assert schemas[model]["properties"]["type"]["enum"] == list(MESSAGE_TYPES)
    outbox = document["paths"]["/v1/outbox"]["get"]["responses"]["200"]
    example = outbox["content"]["application/json"]["example"]["items"][0]
    assert example["type"] in MESSAGE_TYPES
    assert "case" in example["customer_message"] and " " in example["customer_message"]


def test_the_document_describes_the_webhooks_post(document: dict[str, Any]) -> None:
    post = document["webhooks"]["outboxMessage"]["post"]
    body = post["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/WebhookMessage"}
    assert "deliveries" not in document["components"]["schemas"]["WebhookMessage"]["properties"]
    assert body["example"]["type"] in MESSAGE_TYPES
    headers = {p["name"]: p for p in post["parameters"] if p["in"] == "header"}
    assert set(headers) == {SIGNATURE_HEADER, DELIVERY_ID_HEADER, TYPE_HEADER}
    assert all(h["required"] for h in headers.values())
    assert headers[TYPE_HEADER]["schema"]["enum"] == list(MESSAGE_TYPES)
    assert re.fullmatch(headers[SIGNATURE_HEADER]["schema"]["pattern"],
                        signature("s", b"{}", 1_700_000_000))
