"""The OpenAPI document explains itself (issue 13): a description for every field, parameter
and operation, the problem codes of each operation, and an example of every body and answer
that its own model accepts."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from api import openapi, problems
from api.routes import ROUTES


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.build(ROUTES)


def test_every_field_of_every_schema_has_a_description(document: dict[str, Any]) -> None:
    missing = [f"{model}.{name}"
               for model, schema in document["components"]["schemas"].items()
               for name, prop in schema.get("properties", {}).items()
               if not prop.get("description", "").strip()]
    assert missing == []


def test_every_parameter_has_a_description(document: dict[str, Any]) -> None:
    missing = [(path, method, p["name"])
               for path, operations in document["paths"].items()
               for method, operation in operations.items()
               for p in operation["parameters"]
               if "$ref" not in p and not p.get("description")]
    assert missing == []


def test_every_operation_says_what_it_does_who_may_and_its_problems(
    document: dict[str, Any],
) -> None:
    codes = problems.codes_by_status()
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        description = operation["description"]
        assert description.startswith(route.summary)
        assert "Roles:" in description or "without a token" in description
        assert "Problems" in description
        listed = operation["x-problem-codes"]
        assert set(listed) == {s for s in operation["responses"] if not s.startswith("2")}
        for status, status_codes in listed.items():
            assert status_codes == codes[int(status)]
            for code in status_codes:
                assert code in description


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
def test_every_body_and_answer_has_an_example_its_model_accepts(
    document: dict[str, Any], route: Any
) -> None:
    operation = document["paths"][route.path][route.method.lower()]
    if route.body is not None:
        example = operation["requestBody"]["content"]["application/json"]["example"]
        route.body.model_validate(example)
    for status, answer in route.answers.items():
        if isinstance(answer, type) and issubclass(answer, BaseModel):
            content = operation["responses"][str(status)]["content"]["application/json"]
            answer.model_validate(content["example"])


def test_the_money_fields_say_what_they_mean(document: dict[str, Any]) -> None:
    account = document["components"]["schemas"]["Account"]["properties"]
    assert "held" in account["available"]["description"]
    assert "refund requests" in account["held"]["description"]
    assert "available money" in account["refundable"]["description"]  # DOMAIN: = available
    assert "minor units" in account["posted"]["description"]


def test_a_refusal_answered_again_under_its_key_is_documented_as_marked(
    document: dict[str, Any],
) -> None:
    responses = document["components"]["responses"]
    for status in (404, 409, 422):  # the refusals a key's record keeps
        assert "Idempotent-Replayed" in responses[f"Problem{status}"]["headers"], status
    for status in (400, 401, 503):  # never kept under a key
        assert "Idempotent-Replayed" not in responses[f"Problem{status}"]["headers"], status
