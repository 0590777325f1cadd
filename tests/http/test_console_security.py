"""The console's answers against an attacker's page: what it may run, who may frame it, and why
another site cannot make a signed-in browser write (the token travels only in an
``Authorization`` header, which a cross-site form cannot send and a cross-site fetch may not
without this server's leave, and every write is JSON)."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.http.conftest import TOKENS, Server, start_server, store

CONSOLE_FILES = ["/console/", "/console/index.html", "/console/console.js",
                 "/console/console.css", "/console/favicon.svg"]
EVIL_ORIGIN = "https://evil.example"


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Headers do not depend on the store: one SQLite server serves the module."""
    workdir = tmp_path_factory.mktemp("console-security")
    with store("sqlite", workdir) as url:
        running = start_server(url, workdir)
        try:
            yield running
        finally:
            running.stop()


def fetch(server: Server, method: str, path: str, *, headers: dict[str, str] | None = None,
          data: bytes | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(server.base_url + path, data=data, headers=headers or {},
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, dict(refused.headers), refused.read().decode()


def directives(policy: str) -> dict[str, list[str]]:
    """A Content-Security-Policy as directive -> sources."""
    parts = (item.split() for item in policy.split(";") if item.strip())
    return {name: sources for name, *sources in parts}


@pytest.mark.parametrize("path", CONSOLE_FILES)
def test_the_console_runs_only_its_own_code_cannot_be_framed_and_sends_no_referrer(
    console_server: Server, path: str,
) -> None:
    status, headers, _ = fetch(console_server, "GET", path)
    assert status == 200
    policy = directives(headers.get("Content-Security-Policy", ""))
    assert policy.get("default-src") == ["'none'"]
    assert policy.get("script-src") == ["'self'"]  # no inline script, no eval, nothing remote
    assert policy.get("connect-src") == ["'self'"]  # its API calls go to this server only
    assert policy.get("frame-ancestors") == ["'none'"]  # no page may frame it: no clickjacking
    assert policy.get("form-action") == ["'none'"]  # no form is ever sent: the script does it
    assert policy.get("base-uri") == ["'none'"]
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert headers.get("Referrer-Policy") == "no-referrer"
    assert "Set-Cookie" not in headers  # the token is kept by the tab, never in a cookie


def test_the_console_page_has_no_inline_script_style_or_handler_the_policy_would_block(
    console_server: Server,
) -> None:
    _, _, page = fetch(console_server, "GET", "/console/")
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert scripts and all(re.search(r'\bsrc="/console/', tag) for tag in scripts)
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", page)


def test_the_console_has_an_icon_of_its_own_the_policy_lets_the_browser_show(
    console_server: Server,
) -> None:
    """A tab among many is found by its icon: one the console serves itself ('self', as the
    policy's img-src allows), and an SVG that runs nothing."""
    _, _, page = fetch(console_server, "GET", "/console/")
    icon = re.search(r'<link rel="icon" href="([^"]+)"', page)
    assert icon is not None and icon.group(1).startswith("/console/")
    status, headers, svg = fetch(console_server, "GET", icon.group(1))
    assert status == 200 and headers["Content-Type"] == "image/svg+xml"
    assert svg.startswith("<svg") and not re.search(r"<script|\son[a-z]+=|href=", svg)


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
])
def test_a_cross_site_form_cannot_write_without_a_token_nor_with_a_form_body(
    console_server: Server, content_type: str,
) -> None:
    body = b'{"username": "csrf-victim", "currency": "USD"}'
    # What a form on another site sends: no Authorization header, only its Origin.
    status, _, _ = fetch(console_server, "POST", "/v1/accounts", data=body, headers={
        "Origin": EVIL_ORIGIN, "Content-Type": content_type})
    assert status == 401
    # Even with the token, a body a form can send is not a write.
    status, _, _ = fetch(console_server, "POST", "/v1/accounts", data=body, headers={
        "Authorization": f"Bearer {TOKENS['system']}", "Content-Type": content_type})
    assert status == 415
    status, _, _ = fetch(console_server, "GET", "/v1/accounts/csrf-victim",
                         headers={"Authorization": f"Bearer {TOKENS['system']}"})
    assert status == 404


def test_another_origin_is_never_given_leave_to_call_with_a_token(console_server: Server
                                                                  ) -> None:
    # A browser asks first (a preflight) before it sends an Authorization header cross-site.
    _, preflight, _ = fetch(console_server, "OPTIONS", "/v1/accounts", headers={
        "Origin": EVIL_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    _, answer, _ = fetch(console_server, "GET", "/v1/me", headers={
        "Origin": EVIL_ORIGIN, "Authorization": f"Bearer {TOKENS['cs']}"})
    for headers in (preflight, answer):
        assert not any(name.lower().startswith("access-control-") for name in headers)
