"""The document lists every problem the contract names, under its status, with the headers
every answer of that status carries; and the bounds it states are the service's."""

from __future__ import annotations

from typing import Any

import pytest

from api import openapi, problems
from api.limits import REQUEST_DEADLINE_S
from api.routes import ROUTES

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
