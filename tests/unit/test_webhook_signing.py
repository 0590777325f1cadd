"""Webhook signatures, the back-off's bounds and the settings' checks (``api.webhooks``)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.config import Config
from api.webhooks import WebhookSettings, backoff_s, signature, verify

SECRET = "whsec-unit"
BODY = b'{"id":"m-1","type":"deposit.recorded"}'


def test_the_signature_is_an_hmac_of_the_time_and_the_body() -> None:
    header = signature(SECRET, BODY, 1_700_000_000)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_a_signature_verifies_with_its_secret_body_and_time() -> None:
    header = signature(SECRET, BODY, 1_700_000_000)
    assert verify(SECRET, BODY, header, now=1_700_000_010)


@pytest.mark.parametrize(
    ("secret", "body", "now"),
    [
        ("another secret", BODY, 1_700_000_000),  # not the receiver's secret
        (SECRET, BODY + b" ", 1_700_000_000),  # the body changed on the way
        (SECRET, BODY, 1_700_000_301),  # replayed past the tolerance
        (SECRET, BODY, 1_699_999_699),  # from the future past it
    ],
)
def test_anything_else_does_not_verify(secret: str, body: bytes, now: float) -> None:
    header = signature(SECRET, BODY, 1_700_000_000)
    assert not verify(secret, body, header, now=now)


MALFORMED = ["", "t=1", "v1=ab", "t=x,v1=ab", "garbage", "t=,v1=", "t=\u00b2,v1=ab",
             "t=1,v1=\u00e9", "t=-1,v1=ab"]


@pytest.mark.parametrize("header", MALFORMED)
def test_a_malformed_header_does_not_verify(header: str) -> None:
    assert not verify(SECRET, BODY, header, now=1)


def readme_check() -> Callable[[str, bytes, str], bool]:
    """The signature check api/README.md shows receivers, run as it is written there."""
    readme = (Path(__file__).parents[2] / "api" / "README.md").read_text()
    section = readme.split("**Checking a signature**", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, object] = {}
    exec(compile(code, "api/README.md", "exec"), scope)  # our own README
    check = scope["verified"]
    assert callable(check)
    return check


def test_the_readmes_check_accepts_what_the_service_signs() -> None:
    header = signature(SECRET, BODY, int(time.time()))
    assert readme_check()(SECRET, BODY, header)
    assert not readme_check()("another secret", BODY, header)
    assert not readme_check()(SECRET, BODY + b" ", header)
    assert not readme_check()(SECRET, BODY, signature(SECRET, BODY, int(time.time()) - 301))


@pytest.mark.parametrize("header", MALFORMED)
def test_the_readmes_check_answers_false_to_a_malformed_header(header: str) -> None:
    assert readme_check()(SECRET, BODY, header) is False


def test_a_time_changed_in_the_header_does_not_verify() -> None:
    header = signature(SECRET, BODY, 1_700_000_000).replace("t=1700000000", "t=1700000001")
    assert not verify(SECRET, BODY, header, now=1_700_000_000)


@given(attempts=st.integers(1, 10_000), base=st.floats(0.01, 60), cap=st.floats(0.01, 3600),
       rand=st.floats(0, 1, exclude_max=True))
def test_the_backoff_is_bounded_and_jittered(attempts: int, base: float, cap: float,
                                             rand: float) -> None:
    wait = backoff_s(attempts, base, cap, rand=lambda: rand)
    ceiling = min(cap, base * 2.0 ** min(attempts - 1, 60))
    assert ceiling / 2 < wait <= ceiling
    assert wait <= cap


def test_the_backoff_doubles_until_its_cap() -> None:
    waits = [backoff_s(n, 1.0, 10.0, rand=lambda: 0.0) for n in range(1, 7)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_settings_come_from_the_environment_checked() -> None:
    hooks = settings_of({
        "LEDGER_WEBHOOK_URL": "http://a.example/h, https://b.example/h",
        "LEDGER_WEBHOOK_SECRET": "s",
        "LEDGER_WEBHOOK_MAX_AGE_S": "60",
        "LEDGER_WEBHOOK_CONCURRENCY": "3",
    })
    assert hooks.urls == ("http://a.example/h", "https://b.example/h")
    assert (hooks.secret, hooks.max_age_s, hooks.concurrency) == ("s", 60.0, 3)
    assert settings_of({}).secret is None


def settings_of(env: dict[str, str]) -> WebhookSettings:
    return WebhookSettings.from_config(Config.of(env))


@pytest.mark.parametrize("env", [
    {"LEDGER_WEBHOOK_URL": "ftp://x.example"},
    {"LEDGER_WEBHOOK_MAX_AGE_S": "forever"},
    {"LEDGER_WEBHOOK_CONCURRENCY": "0"},
    {"LEDGER_WEBHOOK_TIMEOUT_S": "1000"},
    {"LEDGER_WEBHOOK_BACKOFF_BASE_S": "10", "LEDGER_WEBHOOK_BACKOFF_MAX_S": "1"},
])
def test_bad_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="LEDGER_WEBHOOK"):
        settings_of(env)
