"""Sign-in (api.signin, api.people): what an identity provider's JWT may and may not do.

One server on SQLite with the test identity provider of ``test_people`` (an RSA and an Ed25519
key in its JWKS file, both with a ``kid``).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.http.conftest import (
    TOKENS,
    Api,
    Server,
    add_person,
    assert_problem,
    ledger_command,
    start_server,
    wait_for_person,
)
from tests.http.test_people import AUDIENCE, ISSUER, Issuer


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    return Issuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def signin_server(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("review-signin")
    running = start_server(f"sqlite:///{workdir}/ledger.db", workdir, env={
        "LEDGER_JWT_ISSUER": ISSUER, "LEDGER_JWT_AUDIENCE": AUDIENCE,
        "LEDGER_JWKS_FILE": str(issuer.jwks_file),
        "LEDGER_LOG_FORMAT": "text",  # the format a newline in a field would break
    })
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def api(signin_server: Server) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(base_url=signin_server.base_url) as session:
        yield Api(session, signin_server.people)


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "hana", "roles": ["finance"],
            "exp": now + 300, **changes}


@pytest.mark.parametrize("header", [{"alg": "RS256", "typ": "JWT"}, {"alg": "EdDSA"}])
async def test_a_forged_jwt_naming_no_key_is_401_never_a_500(api: Api, header: dict[str, str]
                                                             ) -> None:
    # No kid: every key of the JWKS is tried, the Ed25519 one with RS256 too.
    forged = f"{_b64(header)}.{_b64(_claims())}.{_b64('not a signature')}"
    reply = await api.get("/v1/me", token=forged)
    assert_problem(reply, 401, "unauthorized")


async def test_a_jwt_without_exp_and_without_a_kid_is_401_never_a_500(api: Api,
                                                                      issuer: Issuer) -> None:
    import jwt

    claims = _claims()
    del claims["exp"]
    token = jwt.encode(claims, issuer.rsa, algorithm="RS256")  # signed well, but no exp
    assert_problem(await api.get("/v1/me", token=token), 401, "unauthorized")


@pytest.mark.parametrize("sub", [
    "eve\nlevel=ERROR forged line",  # a line of its own in the logs
    "eve\x1b[2J",  # a terminal's control sequence
    "eve\u2028x",  # a line separator for some readers
    "a" * 300,  # a person's name that fills every log line and event
    "finance",  # a role's name: the shared finance token's person
    "Finance", "SYSTEM", "Cs",  # the same, in other cases
    "1f2e3d4c",  # the shape of a shared role token's fingerprint: cs:1f2e3d4c
    "1F2E3D4C", "DeadBeef",  # the same, in capitals
    " hana",  # another spelling of hana
])
async def test_a_jwt_whose_sub_is_no_plain_name_is_refused(api: Api, issuer: Issuer, sub: str
                                                          ) -> None:
    reply = await api.get("/v1/me", token=issuer.token(sub, ["finance"]))
    assert_problem(reply, 401, "unauthorized")


async def test_a_plain_sub_still_signs_in(api: Api, issuer: Issuer) -> None:
    for sub in ("hana", "auth0|5f7c8ec7c33c", "ann@example.com", "00u1abcdEFGH"):
        reply = await api.get("/v1/me", token=issuer.token(sub, ["finance"]))
        assert reply.status == 200, (sub, reply.text)
        assert reply.json["person"] == sub


def _staff(server: Server, *args: str) -> None:
    done = subprocess.run(
        [*ledger_command(), "staff", *args, "--by", "tests"], cwd=server.log_path.parent,
        env={**os.environ, "LEDGER_DATABASE_URL": server.database_url},
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


async def test_a_revoked_member_of_staff_cannot_sign_in_with_a_jwt_naming_them(
    api: Api, signin_server: Server, issuer: Issuer,
) -> None:
    token = add_person(signin_server, "rex", "finance")
    jwt_token = issuer.token("rex", ["finance"])
    assert (await api.get("/v1/me", token=jwt_token)).status == 200  # the same person, rex

    _staff(signin_server, "revoke", "rex")
    wait_for_person(signin_server, token, None)  # the server has read the revocation

    assert_problem(await api.get("/v1/me", token=jwt_token), 401, "unauthorized")


async def test_a_sub_s_newline_forges_no_log_line(api: Api, signin_server: Server,
                                                 issuer: Issuer) -> None:
    token = issuer.token("eve\nlevel=ERROR forged line", ["finance"])
    request_id = f"review-inject-{time.monotonic_ns()}"
    await api.get("/v1/me", token=token, headers={"X-Request-Id": request_id})
    deadline = time.monotonic() + 10
    while f"request_id={request_id}" not in signin_server.log():  # its access line is written
        assert time.monotonic() < deadline, signin_server.log()[-2000:]
        time.sleep(0.02)
    assert not any(line.startswith("level=ERROR forged")
                   for line in signin_server.log().splitlines())


async def _approved_by(api: Api, token: str) -> tuple[str, str]:
    username = await api.funded_account(10_000)
    bought = await api.post(f"/v1/accounts/{username}/purchases",
                            {"order_no": "ORD-1", "amount": 5_000})
    assert bought.status == 201, bought.text
    asked = await api.post(f"/v1/accounts/{username}/refund-requests",
                           {"order_no": "ORD-1", "amount": 300, "reason": "moving"}, role="cs")
    assert asked.status == 201, asked.text
    rid = asked.json["id"]
    approved = await api.post(f"/v1/refund-requests/{rid}/approve", {}, token=token)
    assert approved.status == 200, approved.text
    return username, rid


@pytest.mark.parametrize("sub", ["amy", "Amy", "AMY"])
async def test_a_staff_member_who_approved_cannot_pay_with_a_jwt_naming_them(
    api: Api, signin_server: Server, issuer: Issuer, sub: str,
) -> None:
    """Staff names are one spelling whatever case they were given in (``ledger staff add Amy``
    adds amy): the identity provider's Amy is the same person."""
    token = signin_server.people.get("amy") or add_person(signin_server, "amy", "finance")
    username, rid = await _approved_by(api, token)
    before = await api.state(username)

    refused = await api.post(f"/v1/refund-requests/{rid}/pay", {"payout_reference": "W-1"},
                             token=issuer.token(sub, ["finance"]))

    assert_problem(refused, 409, "four_eyes")
    assert await api.state(username) == before


async def test_a_jwt_naming_a_member_of_staff_is_recorded_under_the_staff_spelling(
    api: Api, signin_server: Server, issuer: Issuer,
) -> None:
    signin_server.people.get("amy") or add_person(signin_server, "amy", "finance")
    reply = await api.get("/v1/me", token=issuer.token("Amy", ["finance"]))
    assert reply.json == {"person": "amy", "role": "finance", "actor": "finance:amy"}
    other = await api.get("/v1/me", token=issuer.token("Zed", ["finance"]))  # no staff: as given
    assert other.json["person"] == "Zed"


def test_tokens_of_the_classic_confusions_are_refused_as_before(signin_server: Server,
                                                                issuer: Issuer) -> None:
    """Regression guards (these held before the review too): alg none, and HS256 keyed with
    the issuer's public key."""
    import hashlib
    import hmac
    import urllib.error
    import urllib.request

    from cryptography.hazmat.primitives import serialization

    public = issuer.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."
    signing_input = f"{_b64({'alg': 'HS256', 'kid': 'rsa-1'})}.{_b64(_claims())}"
    mac = base64.urlsafe_b64encode(
        hmac.new(public, signing_input.encode(), hashlib.sha256).digest()).rstrip(b"=")
    for token in (unsigned, f"{signing_input}.{mac.decode()}"):
        asked = urllib.request.Request(f"{signin_server.base_url}/v1/me",
                                       headers={"Authorization": f"Bearer {token}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(asked, timeout=5)
        assert refused.value.code == 401


async def test_what_the_shared_finance_token_approved_is_not_paid_by_a_jwt_named_finance(
    api: Api, issuer: Issuer,
) -> None:
    username, rid = await _approved_by(api, TOKENS["finance"])
    before = await api.state(username)
    paid = await api.post(f"/v1/refund-requests/{rid}/pay", {"payout_reference": "W-FIN"},
                          token=issuer.token("Finance", ["finance"]))
    assert_problem(paid, 401, "unauthorized")
    assert await api.state(username) == before


async def test_who_approved_by_jwt_cannot_pay_once_added_to_the_staff_under_the_same_name(
    api: Api, signin_server: Server, issuer: Issuer,
) -> None:
    """Quin approved signing in as ``Quin``; then she is added to the staff (as quin, the
    staff's spelling): she is one person, who may not pay what she approved."""
    username, rid = await _approved_by(api, issuer.token("Quin", ["finance"]))
    token = add_person(signin_server, "quin", "finance")
    before = await api.state(username)

    paid = await api.post(f"/v1/refund-requests/{rid}/pay", {"payout_reference": "W-QUIN"},
                          token=token)

    assert_problem(paid, 409, "four_eyes")
    assert await api.state(username) == before


def _raw_get(server: Server, path: str, authorization: bytes) -> bytes:
    url = urllib.parse.urlparse(server.base_url)
    assert url.hostname is not None and url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=5) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: ledger\r\nConnection: close\r\n"
                           .encode() + b"Authorization: " + authorization + b"\r\n\r\n")
        answer = b""
        for _ in range(1_000):  # bounded: the answer is small, then the server closes
            if not (chunk := connection.recv(65536)):
                break
            answer += chunk
    return answer


@pytest.mark.parametrize("path", ["/v1/me", "/v1/accounts/nobody", "/no-such-route"])
@pytest.mark.parametrize("token", [b"\xff\xfe" + b"a" * 30,
                                   TOKENS["finance"].encode() + b"\xc3",
                                   b"e30.e30.\xff"], ids=["latin", "a-token-and-a-byte", "jwt"])
def test_a_bearer_token_that_is_no_text_is_401_never_a_500(signin_server: Server, path: str,
                                                           token: bytes) -> None:
    answer = _raw_get(signin_server, path, b"Bearer " + token)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"Traceback" not in signin_server.log().encode()
