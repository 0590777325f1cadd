"""Every bad input of the contract gets its documented status and code, and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.conftest import Api, assert_problem

BAD_AMOUNTS: list[Any] = [
    "100",  # a string
    100.0,  # a float, even a whole one
    99.5,
    0,
    -1,
    10**12 + 1,  # over the limit
    10**30,
    True,  # a bool is not one cent
    None,
    [100],
    {"minor": 100},
]


@pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=repr)
async def test_a_deposit_of_a_bad_amount_is_refused_and_changes_nothing(
    api: Api, amount: Any
) -> None:
    username = await api.funded_account(1_000)
    before = await api.state(username)
    reply = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": amount, "reference": "bad-amount"})
    problem = assert_problem(reply, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["amount"]
    assert await api.state(username) == before


@pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=repr)
async def test_a_purchase_of_a_bad_amount_is_refused_and_changes_nothing(
    api: Api, amount: Any
) -> None:
    username = await api.funded_account(1_000)
    before = await api.state(username)
    reply = await api.post(f"/v1/accounts/{username}/purchases",
                           {"amount": amount, "order_no": "bad-amount"})
    assert_problem(reply, 422, "validation_error")
    assert await api.state(username) == before


@pytest.mark.parametrize(
    "body",
    [
        {"reference": "no-amount"},
        {"amount": 5},
        {"amount": 5, "reference": ""},
        {"amount": 5, "reference": " padded "},
        {"amount": 5, "reference": "x" * 129},
        {"amount": 5, "reference": "tab\there"},
        {"amount": 5, "reference": 12345},
        {"amount": 5, "reference": "ok", "currency": "USD"},  # unknown field
        [5, "ok"],
        "5",
    ],
    ids=repr,
)
async def test_a_deposit_with_a_bad_body_is_refused_and_changes_nothing(
    api: Api, body: Any
) -> None:
    username = await api.funded_account(1_000)
    before = await api.state(username)
    reply = await api.post(f"/v1/accounts/{username}/deposits", body)
    problem = assert_problem(reply, 422, "validation_error")
    assert problem["errors"]
    assert await api.state(username) == before


@pytest.mark.parametrize(
    "currency", ["usd", "US", "USDX", "XXX", "ZZZ", 840, "", None, "U$D"], ids=repr
)
async def test_an_account_in_a_bad_currency_is_not_opened(api: Api, currency: Any) -> None:
    reply = await api.post("/v1/accounts", {"username": "currency-test-x", "currency": currency})
    problem = assert_problem(reply, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["currency"]
    assert_problem(await api.get("/v1/accounts/currency-test-x"), 404, "not_found")


@pytest.mark.parametrize(
    "username",
    ["ab", "x" * 65, "bad name", "ålice", "semi;colon", "", "   ", 12345, None],
    ids=repr,
)
async def test_an_account_with_a_bad_user_name_is_not_opened(api: Api, username: Any) -> None:
    reply = await api.post("/v1/accounts", {"username": username, "currency": "USD"})
    problem = assert_problem(reply, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["username"]


@pytest.mark.parametrize("path_name", ["ab", "x" * 65, "bad%20name", "%C3%A5lice", "a%2Cb"])
@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("GET", "/history"), ("GET", "/balance"), ("POST", "/deposits")],
)
async def test_a_bad_user_name_in_the_path_is_a_validation_error(
    api: Api, path_name: str, method: str, suffix: str
) -> None:
    body = {"amount": 1, "reference": "x"} if method == "POST" else None
    reply = await api.call(method, f"/v1/accounts/{path_name}{suffix}", json_body=body)
    problem = assert_problem(reply, 422, "validation_error")
    assert problem["errors"][0]["field"] == "username"


@pytest.mark.parametrize(
    "raw",
    [b'{"amount": 5, "reference": "x"', b"{amount: 5}", b"", b"\xff\xfe", b'{"amount": NaN}',
     b'{"amount": Infinity, "reference": "x"}', b'{"amount": 5, "amount": 500, "reference": "x"}'],
    ids=["truncated", "unquoted", "empty", "not-utf8", "nan", "infinity", "duplicate-key"],
    # (A 5,000-digit number is JSON: 422 in words, tests/http/test_edge.py.)
)
async def test_a_body_that_is_not_json_is_refused_and_changes_nothing(
    api: Api, raw: bytes
) -> None:
    username = await api.funded_account(1_000)
    before = await api.state(username)
    reply = await api.call("POST", f"/v1/accounts/{username}/deposits", data=raw,
                           headers={"Content-Type": "application/json"})
    assert_problem(reply, 400, "malformed_json")
    assert await api.state(username) == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonx", None])
async def test_a_body_of_another_media_type_is_refused_and_changes_nothing(
    api: Api, content_type: str | None
) -> None:
    username = await api.funded_account(1_000)
    before = await api.state(username)
    headers = {} if content_type is None else {"Content-Type": content_type}
    reply = await api.call("POST", f"/v1/accounts/{username}/deposits",
                           data=b'{"amount": 5, "reference": "media"}', headers=headers)
    assert_problem(reply, 415, "unsupported_media_type")
    assert await api.state(username) == before


async def test_a_json_content_type_with_a_charset_is_accepted(api: Api) -> None:
    username = await api.open_account()
    reply = await api.call("POST", f"/v1/accounts/{username}/deposits",
                           data=b'{"amount": 5, "reference": "charset"}',
                           headers={"Content-Type": "application/json; charset=utf-8"})
    assert reply.status == 201, reply.text


async def test_a_body_over_64_kib_is_refused_and_changes_nothing(api: Api) -> None:
    username = await api.funded_account(1_000)
    before = await api.state(username)
    body = {"amount": 5, "reference": "big", "padding": "x" * (64 * 1024)}
    reply = await api.post(f"/v1/accounts/{username}/deposits", body)
    assert_problem(reply, 413, "too_large")
    assert await api.state(username) == before


async def test_a_body_just_under_64_kib_reaches_validation(api: Api) -> None:
    username = await api.open_account()
    reason = "x" * (60 * 1024)
    reply = await api.post(f"/v1/accounts/{username}/purchases/none/failure", {"reason": reason})
    # Not 413: the body is read, then refused for what it says.
    assert_problem(reply, 422, "validation_error")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/purchases", {"order_no": "", "amount": 5}),
        ("/purchases", {"order_no": "x" * 129, "amount": 5}),
        ("/purchases/P-1/failure", {"amount": 5}),  # reason is required
        ("/purchases/P-1/failure", {"amount": 0, "reason": "x"}),
        ("/purchases/P-1/failure", {"amount": "5", "reason": "x"}),
        ("/refund-requests", {"order_no": "P-1", "amount": 5.0}),
        ("/refund-requests", {"order_no": "P-1"}),
        ("/refund-requests", {"order_no": "P-1", "amount": 5, "reason": 7}),
    ],
    ids=repr,
)
async def test_other_writes_with_bad_bodies_are_refused_and_change_nothing(
    api: Api, path: str, body: dict[str, Any]
) -> None:
    username = await api.funded_account(1_000)
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "P-1", "amount": 100})
    before = await api.state(username)
    role = "cs" if "refund" in path else "system"
    reply = await api.post(f"/v1/accounts/{username}{path}", body, role=role)
    assert_problem(reply, 422, "validation_error")
    assert await api.state(username) == before


async def test_a_write_to_an_account_that_does_not_exist_is_not_found(api: Api) -> None:
    reply = await api.post("/v1/accounts/no-such-account/deposits",
                           {"amount": 5, "reference": "x"})
    assert_problem(reply, 404, "not_found")


async def test_an_unknown_route_is_not_found(api: Api) -> None:
    assert_problem(await api.get("/v1/nothing-here"), 404, "not_found")


async def test_a_method_a_route_does_not_serve_is_not_allowed(api: Api) -> None:
    reply = await api.call("DELETE", "/v1/accounts/someone")
    assert_problem(reply, 405, "method_not_allowed")
    assert {m.strip() for m in reply.headers["Allow"].split(",")} == {"GET", "HEAD"}


async def test_head_is_answered_as_get_is_without_a_body(api: Api) -> None:
    username = await api.funded_account(1_000)
    for path, role in [(f"/v1/accounts/{username}", "system"),
                       (f"/v1/accounts/{username}/history?limit=5", "cs"),
                       ("/v1/events?limit=2", "auditor")]:
        # A page of the log changes once the notary places its events (their leaf indexes),
        # and is then kept gzipped: compared once the GET's answer stands still around the HEAD
        for _ in range(100):
            got = await api.get(path, role=role)
            head = await api.call("HEAD", path, role=role)
            again = await api.get(path, role=role)
            if framing(got) == framing(again):
                break
        else:
            pytest.fail(f"GET {path} kept changing")
        assert (head.status, head.text) == (200, ""), path
        assert head.content_type == got.content_type == "application/json"
        assert framing(head) == framing(got), path


def framing(reply: Any) -> tuple[str | None, ...]:
    """What says how a body comes: its length and its coding."""
    return tuple(reply.headers.get(name) for name in ("Content-Length", "Content-Encoding"))


async def test_head_needs_the_same_token_and_role_as_get(api: Api) -> None:
    username = await api.open_account()
    assert (await api.call("HEAD", f"/v1/accounts/{username}", role=None)).status == 401
    assert (await api.call("HEAD", "/v1/events", role="system")).status == 403  # books: no
    assert (await api.call("HEAD", "/v1/nothing-here")).status == 404
