"""People, not roles (issue 11): named staff in the history, four eyes on payouts, a revoked
token refused by every server within 2 seconds, and sign-in with an identity provider's JWT.

Two servers share each store: the module's (``server``) and ``other``, started with a test
identity provider (a JWKS file made here) and a second-approval threshold for USD.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.http.conftest import (
    TOKENS,
    Api,
    Server,
    add_person,
    assert_problem,
    ledger_command,
    me,
    start_server,
    wait_for_person,
)

ISSUER = "https://id.example.test/"
AUDIENCE = "ledger-console"
THRESHOLD = 1_000  # USD minor units: above it, two approvals


class Issuer:
    """A test identity provider: an RSA key and an Ed25519 key, published as a JWKS file."""

    def __init__(self, folder: Path) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ed = ed25519.Ed25519PrivateKey.generate()
        keys = [{**json.loads(_public_jwk(key)), "kid": kid}
                for kid, key in (("rsa-1", self.rsa), ("ed-1", self.ed))]
        self.jwks_file = folder / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": keys}))

    def token(self, sub: str, roles: list[str], *, key: str = "rsa", audience: str = AUDIENCE,
              expires_in: int = 300, private: Any = None) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": audience, "sub": sub, "roles": roles,
                  "iat": now, "nbf": now - 5, "exp": now + expires_in}
        if key == "rsa":
            return jwt.encode(claims, private or self.rsa, algorithm="RS256",
                              headers={"kid": "rsa-1"})
        return jwt.encode(claims, private or self.ed, algorithm="EdDSA", headers={"kid": "ed-1"})


def _public_jwk(key: Any) -> str:
    algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "EdDSA"
    text: str = jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(key.public_key())
    return text


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    return Issuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def other(server: Server, issuer: Issuer, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Server]:
    """A second server on the same store, with sign-in and a second-approval threshold."""
    workdir = server.log_path.parent  # the chain key lives beside the store
    running = start_server(server.database_url, workdir, env={
        "LEDGER_JWT_ISSUER": ISSUER, "LEDGER_JWT_AUDIENCE": AUDIENCE,
        "LEDGER_JWKS_FILE": str(issuer.jwks_file),
        "LEDGER_SECOND_APPROVAL_ABOVE": f"USD={THRESHOLD}",
    })
    running.people = server.people
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def api2(other: Server) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(base_url=other.base_url) as session:
        yield Api(session, other.people)


@pytest.fixture(scope="module")
def finance_people(server: Server) -> dict[str, str]:
    """Two named finance people, ann and bea."""
    for name in ("ann", "bea"):
        if name not in server.people:
            add_person(server, name, "finance")
    return server.people


async def requested(api: Api, amount: int = 300) -> tuple[str, str]:
    username = await api.funded_account(10_000)
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "ORD-1", "amount": 5_000})
    reply = await api.post(f"/v1/accounts/{username}/refund-requests",
                           {"order_no": "ORD-1", "amount": amount, "reason": "moving"},
                           role="cs")
    assert reply.status == 201, reply.text
    return username, reply.json["id"]


async def test_events_written_by_two_named_finance_people_carry_their_names(
    api: Api, finance_people: dict[str, str],
) -> None:
    username, rid = await requested(api)
    approved = await api.post(f"/v1/refund-requests/{rid}/approve", {"note": "ok"}, role="ann")
    assert approved.status == 200, approved.text
    assert approved.json["approvers"] == ["ann"]
    paid = await api.post(f"/v1/refund-requests/{rid}/pay", {"payout_reference": "W-1"},
                          role="bea")
    assert paid.status == 200, paid.text

    steps = (await api.get(f"/v1/refund-requests/{rid}", role="finance")).json["steps"]
    assert [s["actor"] for s in steps][1:] == ["finance:ann", "finance:bea"]
    events = (await api.get(f"/v1/events?stream={rid}", role="auditor")).json["items"]
    assert [e["actor"] for e in events][1:] == ["finance:ann", "finance:bea"]
    history = (await api.get(f"/v1/accounts/{username}/history", role="cs")).json["items"]
    assert history[-1]["actor"] == "finance:bea"
    position = paid.json["position"]  # the write's last event: the payout is just before it
    journal = (await api.get(f"/v1/journal?after={position - 10}&limit=20",
                             role="finance")).json["items"]
    mine = [(e["type"], e["actor"]) for e in journal if e["username"] == username]
    assert mine[-1] == ("balance_refund_paid_out", "finance:bea"), mine


async def test_the_person_who_approved_cannot_pay_four_eyes(
    api: Api, finance_people: dict[str, str],
) -> None:
    username, rid = await requested(api)
    await api.post(f"/v1/refund-requests/{rid}/approve", {"note": "ok"}, role="ann")
    before = await api.state(username)

    refused = await api.post(f"/v1/refund-requests/{rid}/pay", {"payout_reference": "W-2"},
                             role="ann")

    problem = assert_problem(refused, 409, "four_eyes")
    assert "ann approved" in problem["detail"]
    assert await api.state(username) == before
    paid = await api.post(f"/v1/refund-requests/{rid}/pay", {"payout_reference": "W-2"},
                          role="bea")
    assert paid.status == 200, paid.text


async def test_a_shared_finance_token_that_approved_cannot_pay_either(api: Api) -> None:
    _, rid = await requested(api)
    await api.post(f"/v1/refund-requests/{rid}/approve", {"note": "ok"}, role="finance")
    refused = await api.post(f"/v1/refund-requests/{rid}/pay", {"payout_reference": "W-3"},
                             role="finance")
    assert_problem(refused, 409, "four_eyes")


async def test_me_names_the_person_and_their_role(api: Api, finance_people: dict[str, str]
                                                  ) -> None:
    mine = await api.get("/v1/me", role="ann")
    assert mine.status == 200, mine.text
    assert mine.json == {"person": "ann", "role": "finance", "actor": "finance:ann"}
    shared = (await api.get("/v1/me", role="cs")).json
    assert (shared["person"], shared["role"]) == ("cs", "cs")
    assert TOKENS["cs"] not in json.dumps(shared)


def test_a_revoked_token_answers_401_on_every_server_within_2_seconds(
    server: Server, other: Server,
) -> None:
    token = add_person(server, "dora", "cs")
    wait_for_person(other, token, "dora")
    revoked = subprocess.run(
        [*ledger_command(), "staff", "revoke", "dora", "--by", "tests"],
        cwd=server.log_path.parent, env={**_env(), "LEDGER_DATABASE_URL": server.database_url},
        capture_output=True, text=True, timeout=60,
    )
    assert revoked.returncode == 0, revoked.stderr
    started = time.monotonic()
    for running in (server, other):
        wait_for_person(running, token, None, timeout_s=5)
    assert time.monotonic() - started < 2.0
    assert me(server, token)[0] == 401 and me(other, token)[0] == 401


def test_staff_list_says_who_added_and_revoked_whom(server: Server) -> None:
    add_person(server, "eve", "auditor")
    subprocess.run([*ledger_command(), "staff", "revoke", "eve", "--by", "grace"],
                   cwd=server.log_path.parent, check=True, capture_output=True, timeout=60,
                   env={**_env(), "LEDGER_DATABASE_URL": server.database_url})
    listed = subprocess.run([*ledger_command(), "staff", "list"], cwd=server.log_path.parent,
                            env={**_env(), "LEDGER_DATABASE_URL": server.database_url},
                            capture_output=True, text=True, timeout=60, check=True).stdout
    eve = next(line for line in listed.splitlines() if line.startswith("eve\t"))
    assert "\tauditor\trevoked\t" in eve
    assert "by system:tests" in eve and "by system:grace" in eve
    assert "token" not in listed.lower()


def test_a_rotated_token_replaces_the_old_one(server: Server) -> None:
    old = add_person(server, "finn", "cs")
    rotated = subprocess.run([*ledger_command(), "staff", "rotate", "finn"],
                             cwd=server.log_path.parent, capture_output=True, text=True,
                             env={**_env(), "LEDGER_DATABASE_URL": server.database_url},
                             timeout=60, check=True)
    new = rotated.stdout.strip()
    wait_for_person(server, new, "finn")
    wait_for_person(server, old, None)


def _env() -> dict[str, str]:
    return dict(os.environ)


# -- sign-in from an identity provider -----------------------------------------------------------


async def test_a_jwt_from_the_issuer_signs_a_person_in_rs256_and_eddsa(
    api2: Api, issuer: Issuer,
) -> None:
    for key in ("rsa", "ed"):
        reply = await api2.get("/v1/me", token=issuer.token("hana", ["finance"], key=key))
        assert reply.status == 200, reply.text
        assert reply.json == {"person": "hana", "role": "finance", "actor": "finance:hana"}


async def test_a_jwt_person_acts_in_the_role_the_route_needs_and_is_recorded(
    api2: Api, issuer: Issuer,
) -> None:
    token = issuer.token("ivan", ["auditor", "cs"])
    username = await api2.funded_account(1_000)
    await api2.post(f"/v1/accounts/{username}/purchases", {"order_no": "ORD-1", "amount": 500})
    reply = await api2.post(f"/v1/accounts/{username}/refund-requests",
                            {"order_no": "ORD-1", "amount": 100, "reason": "r"}, token=token)
    assert reply.status == 201, reply.text
    request = (await api2.get(f"/v1/refund-requests/{reply.json['id']}", token=token)).json
    assert request["steps"][0]["actor"] == "cs:ivan"
    refused = await api2.post(f"/v1/refund-requests/{reply.json['id']}/approve", {},
                              token=token)
    assert_problem(refused, 403, "forbidden")


@pytest.mark.parametrize("wrong", ["expired", "wrong audience", "wrong key", "not yet valid",
                                   "no ledger role"])
async def test_a_jwt_that_does_not_hold_is_refused(api2: Api, issuer: Issuer, wrong: str
                                                   ) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = {
        "expired": lambda: issuer.token("hana", ["finance"], expires_in=-3600),
        "wrong audience": lambda: issuer.token("hana", ["finance"], audience="another-app"),
        "wrong key": lambda: issuer.token("hana", ["finance"], private=stranger),
        "not yet valid": lambda: _not_yet(issuer),
        "no ledger role": lambda: issuer.token("hana", ["admin"]),
    }[wrong]()
    assert_problem(await api2.get("/v1/me", token=token), 401, "unauthorized")


def _not_yet(issuer: Issuer) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "hana", "roles": ["finance"],
              "nbf": now + 3600, "exp": now + 7200}
    return jwt.encode(claims, issuer.rsa, algorithm="RS256", headers={"kid": "rsa-1"})


# -- the second approval -------------------------------------------------------------------------


async def test_above_the_threshold_two_different_people_approve_before_a_third_pays(
    api2: Api, finance_people: dict[str, str], issuer: Issuer,
) -> None:
    _, rid = await requested(api2, amount=THRESHOLD + 1)
    first = await api2.post(f"/v1/refund-requests/{rid}/approve", {"note": "1"}, role="ann")
    assert first.status == 200, first.text
    assert (first.json["status"], first.json["approvers"]) == ("requested", ["ann"])
    assert_problem(await api2.post(f"/v1/refund-requests/{rid}/approve", {"note": "again"},
                                   role="ann"), 409, "four_eyes")
    assert_problem(await api2.post(f"/v1/refund-requests/{rid}/pay",
                                   {"payout_reference": "W-9"}, role="payer"),
                   409, "invalid_transition")

    second = await api2.post(f"/v1/refund-requests/{rid}/approve", {"note": "2"}, role="bea")
    assert (second.json["status"], second.json["approvers"]) == ("approved", ["ann", "bea"])
    assert_problem(await api2.post(f"/v1/refund-requests/{rid}/pay",
                                   {"payout_reference": "W-9"}, role="bea"), 409, "four_eyes")
    paid = await api2.post(f"/v1/refund-requests/{rid}/pay", {"payout_reference": "W-9"},
                           role="payer")
    assert paid.status == 200, paid.text


async def test_at_the_threshold_one_approval_is_enough(
    api2: Api, finance_people: dict[str, str],
) -> None:
    _, rid = await requested(api2, amount=THRESHOLD)
    approved = await api2.post(f"/v1/refund-requests/{rid}/approve", {}, role="ann")
    assert approved.json["status"] == "approved", approved.text


@pytest.mark.parametrize(("setting", "says"), [
    ({"LEDGER_JWT_ISSUER": ISSUER}, "LEDGER_JWT_AUDIENCE"),
    ({"LEDGER_JWT_ISSUER": ISSUER, "LEDGER_JWT_AUDIENCE": AUDIENCE,
      "LEDGER_JWKS_FILE": "/nonexistent/jwks.json"}, "not a usable JWKS document"),
    ({"LEDGER_SECOND_APPROVAL_ABOVE": "USD=lots"}, "LEDGER_SECOND_APPROVAL_ABOVE"),
])
def test_unusable_people_settings_refuse_to_start(server: Server, setting: dict[str, str],
                                                  says: str) -> None:
    started = subprocess.run(
        [*ledger_command(), "serve", "--port", "1"], cwd=server.log_path.parent,
        env={**_env(), "LEDGER_DATABASE_URL": server.database_url, **setting},
        capture_output=True, text=True, timeout=60,
    )
    assert started.returncode == 2, started.stderr
    assert says in started.stderr


async def test_an_idempotency_key_belongs_to_the_person(
    api: Api, finance_people: dict[str, str],
) -> None:
    _, first = await requested(api)
    _, second = await requested(api)
    key = {"Idempotency-Key": f"approve-{first}"}
    by_ann = await api.post(f"/v1/refund-requests/{first}/approve", {"note": "a"}, role="ann",
                            headers=key)
    by_bea = await api.post(f"/v1/refund-requests/{second}/approve", {"note": "b"}, role="bea",
                            headers=key)
    assert (by_ann.status, by_bea.status) == (200, 200), by_bea.text
    assert (by_ann.json["id"], by_bea.json["id"]) == (first, second)
    again = await api.post(f"/v1/refund-requests/{first}/approve", {"note": "a"}, role="ann",
                           headers=key)
    assert again.status == 200 and again.json == by_ann.json
    assert again.headers.get("Idempotent-Replayed") == "true"
