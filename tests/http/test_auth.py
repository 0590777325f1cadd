"""Tokens and roles: 401 without a valid token, 403 when the role may not, per API.md "Roles".

The expected matrix is written out here from API.md, not read from the route table."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.conftest import TOKENS, Api, assert_problem

ROLES = ("system", "cs", "finance", "auditor")
ALL = frozenset(ROLES)
A = "/v1/accounts/someone-x"
R = "/v1/refund-requests/00000000-0000-4000-8000-000000000000"
C = "/v1/return-cases/00000000-0000-4000-8000-0000000000c0"
CS_ONLY = frozenset({"cs"})
READERS = frozenset({"cs", "finance", "auditor"})
BOOKS = frozenset({"finance", "auditor"})

# (method, path, body, roles that may) from API.md's role table.
MATRIX: list[tuple[str, str, Any, frozenset[str]]] = [
    ("POST", "/v1/accounts", {"username": "nobody-x", "currency": "QQQ"},
     frozenset({"system", "cs"})),
    ("GET", A, None, ALL),
    ("GET", f"{A}/balance", None, ALL),
    ("GET", f"{A}/history", None, ALL),
    ("GET", f"{A}/orders", None, ALL),
    ("GET", f"{A}/refundable", None, ALL),
    ("POST", f"{A}/deposits", {"amount": 1, "reference": "r"}, frozenset({"system"})),
    ("POST", f"{A}/purchases", {"amount": 1, "order_no": "o"}, frozenset({"system"})),
    ("POST", f"{A}/purchases/o/failure", {"reason": "r"}, frozenset({"system", "cs"})),
    ("POST", f"{A}/refund-requests", {"amount": 1, "order_no": "o"}, frozenset({"cs"})),
    ("GET", "/v1/refund-requests", None, frozenset({"cs", "finance", "auditor"})),
    ("GET", R, None, frozenset({"cs", "finance", "auditor"})),
    ("POST", f"{R}/approve", {}, frozenset({"finance"})),
    ("POST", f"{R}/reject", {"reason": "r"}, frozenset({"finance"})),
    ("POST", f"{R}/pay", {"payout_reference": "p"}, frozenset({"finance"})),
    ("POST", f"{R}/cancel", {"reason": "r"}, frozenset({"cs"})),
    ("POST", "/v1/return-cases", {"username": "someone-x"}, CS_ONLY),
    ("GET", "/v1/return-cases", None, READERS),
    ("GET", C, None, READERS),
    ("POST", f"{C}/supplier-review", {}, CS_ONLY),
    ("POST", f"{C}/accept", {"return_by": "2030-01-01", "return_address": "a"}, CS_ONLY),
    ("POST", f"{C}/reject", {"reason": "r"}, CS_ONLY),
    ("POST", f"{C}/ship-back", {"tracking": "t"}, CS_ONLY),
    ("POST", f"{C}/receive", {"postmark_date": "2026-01-01", "goods": True,
                              "original_packaging": True, "acceptance_copy": True}, CS_ONLY),
    ("POST", f"{C}/expire", {}, CS_ONLY),
    ("POST", f"{C}/forward", {}, CS_ONLY),
    ("POST", f"{C}/resolve", {"outcome": "refund", "freight_amount": 0}, CS_ONLY),
    ("POST", f"{C}/close", {}, CS_ONLY),
    ("POST", f"{C}/cancel", {"reason": "r"}, CS_ONLY),
    ("POST", f"{C}/notes", {"text": "t"}, CS_ONLY),
    ("POST", f"{C}/evidence", {"goods_photos": ["p"]}, CS_ONLY),
    ("GET", "/v1/events", None, BOOKS),
    ("GET", "/v1/journal", None, BOOKS),
    ("GET", "/v1/reconciliation?currency=USD", None, BOOKS),
    ("GET", "/v1/audit/verify", None, frozenset({"auditor"})),
    ("GET", "/v1/audit/digest", None, frozenset({"auditor"})),
    ("GET", "/v1/export/beancount", None, BOOKS),
    ("GET", "/openapi.json", None, ALL),
    ("GET", "/docs", None, ALL),
]


@pytest.mark.parametrize(("method", "path", "body", "allowed"), MATRIX,
                         ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
async def test_each_role_may_do_exactly_what_the_role_table_says(
    api: Api, method: str, path: str, body: Any, allowed: frozenset[str]
) -> None:
    for role in ROLES:
        reply = await api.call(method, path, role=role, json_body=body)
        if role in allowed:
            assert reply.status not in (401, 403), (role, reply.text)
        else:
            assert_problem(reply, 403, "forbidden")


@pytest.mark.parametrize(("method", "path", "body", "allowed"), MATRIX,
                         ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
async def test_no_request_but_health_is_served_without_a_valid_token(
    api: Api, method: str, path: str, body: Any, allowed: frozenset[str]
) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-known-token"},
                    {"Authorization": f"Basic {TOKENS['system']}"},
                    {"Authorization": "Bearer "},
                    {"Authorization": TOKENS["system"]}):
        reply = await api.call(method, path, role=None, json_body=body, headers=headers)
        assert_problem(reply, 401, "unauthorized")
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")


async def test_an_unknown_route_without_a_token_is_unauthorized_not_not_found(api: Api) -> None:
    assert_problem(await api.get("/v1/secret-things", role=None), 401, "unauthorized")


async def test_health_answers_without_a_token(api: Api) -> None:
    reply = await api.get("/health", role=None)
    assert reply.status == 200
    assert reply.json == {"status": "ok"}


async def test_a_refused_role_changes_nothing(api: Api) -> None:
    username = await api.funded_account(1_000)
    before = await api.state(username)
    for role in ("cs", "finance", "auditor"):
        reply = await api.post(f"/v1/accounts/{username}/deposits",
                               {"amount": 5, "reference": f"by-{role}"}, role=role)
        assert_problem(reply, 403, "forbidden")
    reply = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": 5, "reference": "anon"}, role=None)
    assert_problem(reply, 401, "unauthorized")
    assert await api.state(username) == before


async def test_the_actor_of_an_event_names_the_role_and_not_the_token(api: Api) -> None:
    username = await api.funded_account(100)
    items = (await api.get(f"/v1/accounts/{username}/history")).json["items"]
    actor = items[-1]["actor"]
    role, fingerprint = actor.split(":")
    assert role == "system"
    assert len(fingerprint) == 8
    assert TOKENS["system"] not in actor


async def test_the_bearer_scheme_is_case_insensitive(api: Api) -> None:
    reply = await api.get("/openapi.json", role=None,
                          headers={"Authorization": f"bearer {TOKENS['auditor']}"})
    assert reply.status == 200, reply.text
