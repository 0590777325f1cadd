"""The words a person reads when a request is refused: what is wrong and what would do, never a
library's wording or a regular expression (issue 12, "Messages people read")."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.conftest import Api, assert_problem, case_body, days_from_today

LIBRARY_WORDS = ("Extra inputs are not permitted", "Value error", "String should",
                 "Field required", "Input should be")


def said_plainly(problem: dict[str, Any]) -> list[dict[str, str]]:
    text = str(problem)
    for words in LIBRARY_WORDS:
        assert words not in text, text
    assert "^[" not in text and "\\x" not in text, text  # no regular expression
    errors: list[dict[str, str]] = problem.get("errors") or []
    return errors


async def test_a_misspelt_query_parameter_is_told_which_ones_the_endpoint_takes(api: Api) -> None:
    username = await api.funded_account(500)
    reply = await api.get(f"/v1/accounts/{username}/balance?at_postion=5")
    errors = said_plainly(assert_problem(reply, 422, "validation_error"))
    assert errors == [{"field": "at_postion",
                       "message": "this parameter is not known here; the accepted ones are: "
                                  "as_of, at_position"}]


async def test_an_unknown_field_of_a_body_names_the_fields_the_body_takes(api: Api) -> None:
    username = await api.funded_account(500)
    reply = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": 5, "reference": "PAY-x", "currency": "USD"})
    errors = said_plainly(assert_problem(reply, 422, "validation_error"))
    assert errors == [{"field": "currency",
                       "message": "this field is not known here; the accepted ones are: "
                                  "amount, reference"}]


async def test_an_unknown_field_inside_a_case_s_evidence_names_the_evidence_fields(
    api: Api,
) -> None:
    username = await api.customer_with_order()
    body = case_body(username, evidence={"goods_photos": ["g"], "box_photos": ["b"]})
    reply = await api.post("/v1/return-cases", body, role="cs")
    errors = said_plainly(assert_problem(reply, 422, "validation_error"))
    assert errors == [{"field": "evidence.box_photos",
                       "message": "this field is not known here; the accepted ones are: "
                                  "goods_photos, package_photos"}]


async def test_a_bad_user_name_is_told_what_a_user_name_is_in_words(api: Api) -> None:
    reply = await api.post("/v1/accounts", {"username": "bad name!", "currency": "USD"})
    (error,) = said_plainly(assert_problem(reply, 422, "validation_error"))
    assert error["field"] == "username"
    assert error["message"] == ("must be a user name: 3-64 of A-Z, a-z, 0-9, '.', '_' and '-' "
                                "(spaces around it are trimmed, capitals lower-cased)")


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"amount": "250", "reference": "PAY-1"}, "amount", "amount must be a whole number"),
    ({"amount": 2.5, "reference": "PAY-1"}, "amount", "amount must be a whole number"),
    ({"amount": 0, "reference": "PAY-1"}, "amount", "amount must be more than 0"),
    ({"amount": 5, "reference": "P" * 129}, "reference",
     "reference must be at most 128 characters long"),
    ({"amount": 5, "reference": ""}, "reference", "reference must not be empty"),
    ({"amount": 5, "reference": 42}, "reference", "reference must be text (a JSON string)"),
], ids=["text-for-a-number", "a-fraction", "zero", "too-long", "empty", "a-number-for-text"])
async def test_a_deposit_out_of_bounds_names_the_field_and_its_bound(
    api: Api, body: dict[str, Any], field: str, words: str
) -> None:
    username = await api.funded_account(500)
    reply = await api.post(f"/v1/accounts/{username}/deposits", body)
    errors = said_plainly(assert_problem(reply, 422, "validation_error"))
    assert errors == [{"field": field, "message": words}]


@pytest.mark.parametrize(("query", "field", "words"), [
    ("limit=ten", "limit", "limit must be a whole number written with the digits 0-9 only"),
    ("limit=" + "9" * 5000, "limit", "limit must be a whole number of fewer digits: see its "
                                     "bound"),
    ("limit=0", "limit", "limit must be 1 or more"),
    ("limit=1001", "limit", "limit must be 1000 or less"),
    ("idle_days=5000", "idle_days", "idle_days must be 3650 or less"),
], ids=["a-word", "five-thousand-digits", "zero", "past-the-page", "past-ten-years"])
async def test_a_query_out_of_bounds_names_the_parameter_and_its_bound(
    api: Api, query: str, field: str, words: str
) -> None:
    reply = await api.get(f"/v1/reconciliation/unmatched?{query}", role="finance")
    errors = said_plainly(assert_problem(reply, 422, "validation_error"))
    assert errors == [{"field": field, "message": words}]


@pytest.mark.parametrize(("query", "words"), [
    ("overdue=yes", "overdue must be true or false"),
    ("state=lost", "state must be one of 'opened', 'supplier_review', 'accepted', 'rejected', "
                   "'goods_in_transit', 'received', 'late', 'expired', 'with_supplier', "
                   "'resolved', 'closed', 'cancelled', 'refused' or 'open'"),
], ids=["not-a-truth-value", "not-a-state"])
async def test_a_query_value_of_the_wrong_kind_names_the_parameter(
    api: Api, query: str, words: str
) -> None:
    reply = await api.get(f"/v1/return-cases?{query}", role="cs")
    errors = said_plainly(assert_problem(reply, 422, "validation_error"))
    assert errors == [{"field": query.split("=")[0], "message": words}]


async def test_a_time_without_its_offset_names_the_parameter(api: Api) -> None:
    username = await api.funded_account(500)
    reply = await api.get(f"/v1/accounts/{username}/balance?as_of=2026-01-01T00:00:00")
    errors = said_plainly(assert_problem(reply, 422, "validation_error"))
    assert errors == [{"field": "as_of", "message": "as_of must be an RFC 3339 time with its "
                                                    "offset, e.g. 2026-11-26T09:00:00Z"}]


# What the JSON decoder finds, said in words: never "Expecting value: line 1 column 1 (char 0)".
DECODER_WORDS = ("Expecting", "line 1", "column", "(char", "codec", "Unterminated",
                 "Extra data", "Invalid control")


@pytest.mark.parametrize(("raw", "words"), [
    (b'{"amount": 5,, "reference": "x"}',
     "the body is not valid JSON: a key must be text in double quotes, and no comma may come "
     "before a closing brace (at character 14 of 32)"),
    (b'{"amount": 5, "reference": "x"',
     "the body is not valid JSON: a comma or a closing bracket is missing (where the body "
     "ends)"),
    (b'{"amount": 5 "reference": "x"}',
     "the body is not valid JSON: a comma or a closing bracket is missing (at character 14 "
     "of 30)"),
    (b'{"amount": five}',
     "the body is not valid JSON: a value is missing, or is not one JSON has (text in double "
     "quotes, a number, true, false, null, an object or a list) (at character 12 of 16)"),
    (b'{"amount": 5, "reference": "x} ',
     "the body is not valid JSON: a text is not closed by a double quote (at character 28 of "
     "31)"),
    (b'{"amount": 5, "reference": "x"} {}',
     "the body is not valid JSON: something follows the JSON value (at character 33 of 34)"),
    (b"", "the body holds no JSON value: send a JSON object"),
    (b"\xff\xfe\xfd", "the body is not valid JSON: it is not text in UTF-8 (nor UTF-16 or "
                      "UTF-32)"),
    (b'{"amount": NaN, "reference": "x"}', "the body is not valid JSON: NaN is not a JSON "
                                            "value"),
    (b'{"amount": 5, "amount": 6, "reference": "x"}',
     "the body is not valid JSON: a key appears twice in one object"),
], ids=["two-commas", "cut-short", "no-comma", "a-bare-word", "open-text", "two-values",
        "empty", "not-utf8", "nan", "a-key-twice"])
async def test_a_body_that_is_not_json_is_told_where_and_what_in_words(
    api: Api, raw: bytes, words: str
) -> None:
    username = await api.funded_account(500)
    before = await api.state(username)
    reply = await api.call("POST", f"/v1/accounts/{username}/deposits", data=raw,
                           headers={"Content-Type": "application/json"})
    problem = assert_problem(reply, 400, "malformed_json")
    assert problem["detail"] == words
    for library in DECODER_WORDS:
        assert library not in problem["detail"]
    assert await api.state(username) == before


async def test_a_body_over_the_limit_is_told_the_limit_in_words(api: Api) -> None:
    username = await api.funded_account(500)
    reply = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": 5, "reference": "x", "note": "x" * 70_000})
    problem = assert_problem(reply, 413, "too_large")
    assert problem["detail"] == ("the body is 70,043 bytes: the most a request may send is "
                                 "65,536 bytes (64 KiB)")


async def test_a_reason_too_long_says_how_long_it_may_be(api: Api) -> None:
    username = await api.customer_with_order()
    reply = await api.post(f"/v1/accounts/{username}/refund-requests",
                           {"order_no": "ORD-1", "amount": 5, "reason": "x" * 2001}, role="cs")
    errors = said_plainly(assert_problem(reply, 422, "validation_error"))
    assert errors == [{"field": "reason", "message": "reason must be at most 2000 characters long"}]


async def test_a_missing_field_is_said_to_be_missing(api: Api) -> None:
    username = await api.funded_account(500)
    reply = await api.post(f"/v1/accounts/{username}/deposits", {"amount": 5})
    errors = said_plainly(assert_problem(reply, 422, "validation_error"))
    assert errors == [{"field": "reference", "message": "this field is missing"}]


async def test_two_points_in_time_are_refused_without_the_library_s_prefix(api: Api) -> None:
    username = await api.funded_account(500)
    reply = await api.get(
        f"/v1/accounts/{username}/balance?at_position=1&as_of=2026-01-01T00:00:00Z")
    errors = said_plainly(assert_problem(reply, 422, "validation_error"))
    assert [e["message"] for e in errors] == ["give as_of or at_position, not both"]


async def test_a_body_that_is_not_an_object_is_told_so(api: Api) -> None:
    username = await api.funded_account(500)
    reply = await api.post(f"/v1/accounts/{username}/deposits", [5, "PAY-1"])
    errors = said_plainly(assert_problem(reply, 422, "validation_error"))
    assert errors == [{"field": "body", "message": "must be a JSON object"}]


async def test_a_return_by_date_in_the_past_is_said_the_right_way_round(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    await api.step(case["id"], "supplier-review")
    reply = await api.post(f"/v1/return-cases/{case['id']}/accept",
                           {"return_by": days_from_today(-1), "return_address": "Dock 4"},
                           role="cs")
    problem = assert_problem(reply, 422, "validation_error")
    said_plainly(problem)
    assert problem["errors"][0]["field"] == "return_by"
    assert problem["errors"][0]["message"] == (
        f"return_by cannot be in the past: give today ({days_from_today(0)}) or a later date")


async def test_a_postmark_in_the_future_is_said_the_right_way_round(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    for step, body, _ in [
        ("supplier-review", {}, ""),
        ("accept", {"return_by": days_from_today(14), "return_address": "Dock 4"}, ""),
        ("ship-back", {"tracking": "T-1"}, ""),
    ]:
        await api.step(case["id"], step, body)
    reply = await api.post(f"/v1/return-cases/{case['id']}/receive",
                           {"postmark_date": days_from_today(2), "goods": True,
                            "original_packaging": True, "acceptance_copy": True}, role="cs")
    problem = assert_problem(reply, 422, "validation_error")
    assert problem["errors"][0]["message"] == (
        f"postmark_date cannot be in the future: give today ({days_from_today(0)}) "
        "or an earlier date")


async def test_a_quality_problem_without_its_guarantee_date_names_the_missing_field(
    api: Api,
) -> None:
    username = await api.customer_with_order()
    reply = await api.post("/v1/return-cases",
                           case_body(username, kind="quality_problem"), role="cs")
    problem = assert_problem(reply, 422, "case_refused")
    assert problem["reason"] == "no_quality_assurance"
    assert "guarantee_until is missing" in problem["detail"]


async def test_a_refused_case_says_why_in_words_beside_its_code(api: Api) -> None:
    username = await api.customer_with_order()
    conditions = {"replaced_or_modified": False, "parts_missing": False, "opened_media": True,
                  "has_quality_assurance": True}
    reply = await api.post("/v1/return-cases", case_body(username, conditions=conditions),
                           role="cs")
    problem = assert_problem(reply, 422, "case_refused")
    assert problem["reason"] == "opened_media"
    assert "cannot be returned once opened" in problem["detail"]
