"""The role matrix, generated: every route of the route table, by every caller (no token, a wrong
token, system, cs, finance, auditor). Exactly the allowed cells get past the role check; the
others are 401 (no valid token) or 403 (a role that may not), and change nothing. The auditor
never changes anything, whatever it calls.

Who may call what is written out here from API.md's "Roles" table (narrowed by its "Finance
and audit" table, as api/README.md says) and never read from the route table: a route added
to the table without a line here fails ``test_the_matrix_names_every_route_of_the_table``.
Every write is sent with a body that would take effect for a caller allowed to send it (a
fresh payment reference, a fresh order, a real refund request and case), so a missing role
check would show up as a moved log position.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from api.routes import ROUTES
from tests.http.conftest import TOKENS, Server, case_body

NONE, WRONG = "no token", "a wrong token"
CALLERS = (NONE, WRONG, "system", "cs", "finance", "auditor")
EVERYONE = frozenset({NONE, WRONG, "system", "cs", "finance", "auditor"})
ANY_ROLE = frozenset({"system", "cs", "finance", "auditor"})
READERS = frozenset({"cs", "finance", "auditor"})  # refund requests and cases
BOOKS = frozenset({"finance", "auditor"})  # "Finance and audit": the log, journal, export
OPENERS = frozenset({"system", "cs"})
SYSTEM, CS, FINANCE, AUDITOR = (frozenset({r}) for r in ("system", "cs", "finance", "auditor"))
U = "/v1/accounts/{username}"
R = "/v1/refund-requests/{id}"
C = "/v1/return-cases/{id}"

# (method, path template) -> the callers that get past the role check. From API.md, by hand.
ALLOWED: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/v1/accounts"): OPENERS,
    ("GET", "/v1/accounts"): READERS,  # the customer list (issue 12): CS, finance, auditors
    ("GET", U): ANY_ROLE,
    ("GET", f"{U}/balance"): ANY_ROLE,
    ("GET", f"{U}/history"): ANY_ROLE,
    ("GET", f"{U}/orders"): ANY_ROLE,
    ("GET", f"{U}/refundable"): ANY_ROLE,
    ("POST", f"{U}/deposits"): SYSTEM,
    ("POST", f"{U}/purchases"): SYSTEM,
    ("POST", f"{U}/purchases/{{order_no}}/failure"): OPENERS,
    ("POST", f"{U}/refund-requests"): CS,
    ("GET", "/v1/refund-requests"): READERS,
    ("GET", R): READERS,
    ("POST", f"{R}/approve"): FINANCE,
    ("POST", f"{R}/reject"): FINANCE,
    ("POST", f"{R}/pay"): FINANCE,
    ("POST", f"{R}/cancel"): CS,
    ("POST", "/v1/return-cases"): CS,
    ("GET", "/v1/return-cases"): READERS,
    ("GET", C): READERS,
    **{("POST", f"{C}/{step}"): CS for step in (
        "supplier-review", "accept", "reject", "ship-back", "receive", "expire", "forward",
        "resolve", "close", "cancel", "notes", "evidence")},
    ("GET", "/v1/events"): BOOKS,
    ("GET", "/v1/journal"): BOOKS,
    ("GET", "/v1/reconciliation"): BOOKS,
    ("GET", "/v1/reconciliation/unmatched"): BOOKS,
    ("GET", "/v1/export/beancount"): BOOKS,
    ("GET", "/v1/audit/verify"): AUDITOR,
    ("GET", "/v1/audit/digest"): AUDITOR,
    # issue 10: the auditor's kit (finance and auditor, as the books)
    ("GET", "/v1/audit/checkpoint"): BOOKS,
    ("GET", "/v1/audit/proof"): BOOKS,
    ("GET", "/v1/audit/consistency"): BOOKS,
    ("GET", "/v1/export/csv"): BOOKS,
    ("GET", "/v1/export/hledger"): BOOKS,
    ("GET", "/health"): EVERYONE,
    ("GET", "/ready"): EVERYONE,  # probes: no token (issue 13)
    ("GET", "/metrics"): EVERYONE,
    ("GET", "/openapi.json"): ANY_ROLE,
    ("GET", "/docs"): ANY_ROLE,
    ("GET", "/docs/static/{name}"): ANY_ROLE,
    ("GET", "/v1/me"): ANY_ROLE,
    ("GET", "/console/"): EVERYONE,
    ("GET", "/console/{name}"): EVERYONE,
    ("GET", "/v1/outbox"): BOOKS,  # issue 14: messages to customers, for operators
}


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# A body that would take effect for an allowed caller, by (method, path template).
BODIES: dict[tuple[str, str], Callable[[World], Any]] = {
    ("POST", "/v1/accounts"): lambda w: {"username": fresh("matrix"), "currency": "USD"},
    ("POST", f"{U}/deposits"): lambda w: {"amount": 5, "reference": fresh("pay")},
    ("POST", f"{U}/purchases"): lambda w: {"order_no": fresh("ORD"), "amount": 1},
    ("POST", f"{U}/purchases/{{order_no}}/failure"): lambda w: {"amount": 1, "reason": "lost"},
    ("POST", f"{U}/refund-requests"): lambda w: {"order_no": w.refund_order, "amount": 1},
    ("POST", f"{R}/approve"): lambda w: {"note": "ok"},
    ("POST", f"{R}/reject"): lambda w: {"reason": "no"},
    ("POST", f"{R}/pay"): lambda w: {"payout_reference": fresh("PAYOUT")},
    ("POST", f"{R}/cancel"): lambda w: {"reason": "the customer asked"},
    ("POST", "/v1/return-cases"): lambda w: case_body(w.username, w.case_order),
    ("POST", f"{C}/supplier-review"): lambda w: {"note": "asked the supplier"},
    ("POST", f"{C}/accept"): lambda w: {"return_by": "2999-01-01", "return_address": "Dock 4"},
    ("POST", f"{C}/reject"): lambda w: {"reason": "no"},
    ("POST", f"{C}/ship-back"): lambda w: {"tracking": "TRK-1"},
    ("POST", f"{C}/receive"): lambda w: {"postmark_date": "2026-01-01", "goods": True,
                                         "original_packaging": True, "acceptance_copy": True},
    ("POST", f"{C}/expire"): lambda w: {},
    ("POST", f"{C}/forward"): lambda w: {},
    ("POST", f"{C}/resolve"): lambda w: {"outcome": "refund", "freight_amount": 0},
    ("POST", f"{C}/close"): lambda w: {},
    ("POST", f"{C}/cancel"): lambda w: {"reason": "the customer asked"},
    ("POST", f"{C}/notes"): lambda w: {"text": "called the customer"},
    ("POST", f"{C}/evidence"): lambda w: {"goods_photos": ["photo-later"]},
}
QUERIES = {"/v1/reconciliation": "?currency=USD"}


@dataclass
class Answer:
    status: int
    body: bytes


def call(server: Server, method: str, path: str, caller: str, body: Any = None) -> Answer:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if caller == WRONG:
        headers["Authorization"] = "Bearer not-a-token-of-this-server"
    elif caller != NONE:
        headers["Authorization"] = f"Bearer {TOKENS[caller]}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.base_url + path, data=data, headers=headers,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return Answer(reply.status, reply.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read())


@dataclass
class World:
    """An account with paid orders, a requested refund and an opened case: what the writes of
    the matrix act on."""

    username: str
    refund_order: str
    case_order: str
    refund_id: str
    case_id: str

    def path(self, template: str) -> str:
        values = {"username": self.username, "order_no": self.case_order,
                  "name": "swagger-ui.css"}
        values["id"] = self.refund_id if template.startswith("/v1/refund-requests") \
            else self.case_id
        path = template.format(**values)
        return path + QUERIES.get(template, "")


def made(answer: Answer) -> Any:
    assert answer.status in (200, 201), answer.body
    return json.loads(answer.body)


@pytest.fixture(scope="module")
def world(server: Server) -> World:
    username = fresh("matrix")
    made(call(server, "POST", "/v1/accounts", "system", {"username": username,
                                                          "currency": "USD"}))
    made(call(server, "POST", f"/v1/accounts/{username}/deposits", "system",
              {"amount": 100_000, "reference": fresh("pay")}))
    for order in ("ORD-CASE", "ORD-REFUND"):
        made(call(server, "POST", f"/v1/accounts/{username}/purchases", "system",
                  {"order_no": order, "amount": 5_000}))
    refund = made(call(server, "POST", f"/v1/accounts/{username}/refund-requests", "cs",
                       {"order_no": "ORD-REFUND", "amount": 100}))
    case = made(call(server, "POST", "/v1/return-cases", "cs",
                     case_body(username, "ORD-CASE")))
    return World(username, "ORD-REFUND", "ORD-CASE", refund["id"], case["id"])


def log_position(server: Server) -> int:
    ready = made(call(server, "GET", "/ready", "auditor"))
    return int(ready["log_position"])


def test_the_matrix_names_every_route_of_the_table() -> None:
    assert set(ALLOWED) == {(route.method, route.path) for route in ROUTES}
    assert {key for key in ALLOWED if key[0] == "POST"} == set(BODIES)


def test_the_auditor_may_write_nothing() -> None:
    assert all("auditor" not in allowed for (method, _), allowed in ALLOWED.items()
               if method == "POST")


CELLS = [(route.method, route.path, caller) for route in ROUTES for caller in CALLERS]


@pytest.fixture
def position_kept(server: Server) -> Iterator[Callable[[], None]]:
    before = log_position(server)

    def check() -> None:
        assert log_position(server) == before, "the log moved"

    yield check


@pytest.mark.parametrize(("method", "template", "caller"), CELLS,
                         ids=[f"{m} {p} as {c}" for m, p, c in CELLS])
def test_exactly_the_allowed_callers_get_past_the_role_check(
    server: Server, world: World, method: str, template: str, caller: str,
    position_kept: Callable[[], None],
) -> None:
    make_body = BODIES.get((method, template))
    answer = call(server, method, world.path(template), caller,
                  None if make_body is None else make_body(world))
    if caller in ALLOWED[(method, template)]:
        assert answer.status not in (401, 403), answer.body
    else:
        expected = 401 if caller in (NONE, WRONG) else 403
        assert answer.status == expected, answer.body
        problem = json.loads(answer.body)
        assert problem["code"] == ("unauthorized" if expected == 401 else "forbidden")
    if caller not in ALLOWED[(method, template)] or caller == "auditor":
        position_kept()
