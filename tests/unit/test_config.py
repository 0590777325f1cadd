"""The configuration (``api.config``): every setting read once, from the environment only
there, each default what the README's settings table says, a bad value said in one line."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path
from typing import Any

import pytest

from api.auth import DEFAULT_TOKENS_FILE
from api.cli import _bounds
from api.config import Config, load
from api.edge import EdgeSettings
from api.limits import DEFAULT_STARTS_PER_S, Lane, Limits
from api.logs import settings_of
from api.webhooks import WebhookSettings
from ledger.errors import InvalidInput
from ledger.pipeline import DEFAULT_LOCK_TIMEOUT_S, DEFAULT_MAX_ATTEMPTS
from ledger.settings import DEFAULT_DATABASE_URL, StoreSettings
from projections.checkpoints import DEFAULT_INTERVAL_S
from projections.notes import signing_settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_ROW = re.compile(r"^\| `(LEDGER_[A-Z_<>]+)`[^|]* \| ([^|]+) \|", re.M)


def documented() -> dict[str, str]:
    """The README's settings table: variable → its default as written."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Settings"):]
    section = section[:section.index("\n\n", section.index("| variable |"))]
    return {name: default.strip() for name, default in SETTINGS_ROW.findall(section)}


def effective_defaults() -> dict[str, Any]:
    """Each setting's default as the code that uses it makes it, from an empty environment."""
    config = Config.of({})
    key, origin, _ = signing_settings(config.signing_key_file, config.origin)
    edge = EdgeSettings.from_config(config)
    hooks = WebhookSettings.from_config(config)
    limits = Limits()
    log_format, log_level = settings_of(config)
    store = StoreSettings.from_url(config.database_url, chain_key_file=config.chain_key_file)
    return {
        "LEDGER_DATABASE_URL": store.url,
        "LEDGER_CHAIN_KEY_FILE": str(store.chain_key_file),
        "LEDGER_SIGNING_KEY_FILE": str(key),
        "LEDGER_ORIGIN": origin,
        "LEDGER_CHECKPOINT_INTERVAL_S": config.checkpoint_interval_s or DEFAULT_INTERVAL_S,
        "LEDGER_LOG_FORMAT": log_format,
        "LEDGER_LOG_LEVEL": log_level,
        "LEDGER_HEADER_TIMEOUT_S": edge.header_timeout_s,
        "LEDGER_REQUIRE_LEAST_PRIVILEGE": int(config.require_least_privilege),
        "LEDGER_MAX_ATTEMPTS": DEFAULT_MAX_ATTEMPTS,
        "LEDGER_LOCK_TIMEOUT_S": DEFAULT_LOCK_TIMEOUT_S,
        "LEDGER_REQUEST_DEADLINE_S": limits.request_deadline_s,
        "LEDGER_MAX_WAITING_REQUESTS": limits.max_waiting,
        "LEDGER_QUEUE_WAIT_S": limits.queue_wait_s,
        **{f"LEDGER_WEBHOOK_{name.upper()}": getattr(hooks, name)
           for name, _, _ in WebhookSettings.BOUNDS},
    }


def shown(value: Any) -> str:
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def test_every_setting_has_a_row_in_the_readmes_table() -> None:
    rows = documented()
    lanes = {"workers", "max_waiting", "queue_wait_s", "role_workers", "role_waiting",
             "starts_per_s"}
    for field in Config.model_fields:
        name = f"LEDGER_{field.upper()}"
        if field.split("_", 1)[0] in {lane.value for lane in Lane} and \
                field.split("_", 1)[1] in lanes:
            assert "LEDGER_<LANE>_WORKERS" in rows
        elif field in ("jwt_audience", "jwks_file"):
            assert "LEDGER_JWT_ISSUER" in rows  # one row for the three
        else:
            assert name in rows, f"{name} is not in the README's settings table"


@pytest.mark.parametrize("name,value", sorted(effective_defaults().items()))
def test_each_default_is_what_the_readme_says(name: str, value: Any) -> None:
    assert documented()[name] == shown(value)


def test_the_defaults_said_in_words_are_the_codes() -> None:
    rows = documented()
    config = Config.of({})
    assert config.tokens is None
    assert rows["LEDGER_TOKENS"] == f"the tokens in `{DEFAULT_TOKENS_FILE}`"
    assert rows["LEDGER_CHECKPOINT_FILE"] == "`checkpoints.txt` beside the signing key"
    key, _, checkpoint_file = signing_settings()
    assert checkpoint_file == key.parent / "checkpoints.txt"
    assert EdgeSettings.from_config(config).max_connections is None
    for none in ("LEDGER_OPS_PORT", "LEDGER_JWT_ISSUER", "LEDGER_SECOND_APPROVAL_ABOVE",
                 "LEDGER_WEBHOOK_URL", "LEDGER_WEBHOOK_SECRET"):
        assert rows[none] == "none"
    assert config.ops_port is None and config.second_approval_above is None
    assert WebhookSettings.from_config(config).urls == ()
    assert StoreSettings.from_url(None).url == DEFAULT_DATABASE_URL
    assert math.isinf(DEFAULT_STARTS_PER_S[Lane.WRITE])


def test_the_same_names_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", "sqlite:///elsewhere.db")
    monkeypatch.setenv("LEDGER_HEAVY_WORKERS", "2")
    monkeypatch.setenv("LEDGER_HEAVY_STARTS_PER_S", "5")
    monkeypatch.setenv("LEDGER_WEBHOOK_CONCURRENCY", "3")
    monkeypatch.setenv("LEDGER_OPS_PORT", "")  # empty: unset
    config = load()
    assert config.database_url == "sqlite:///elsewhere.db" and config.ops_port is None
    assert WebhookSettings.from_config(config).concurrency == 3
    heavy = _bounds(config)["limits"].lanes(8)[Lane.HEAVY]
    assert (heavy.workers, heavy.starts_per_s) == (2, 5.0)
    # an empty LEDGER_TOKENS is kept as given, for api.auth to refuse: never the tokens file
    monkeypatch.setenv("LEDGER_TOKENS", "")
    tokens = load().tokens
    assert tokens is not None and tokens.get_secret_value() == ""
    # and Config.of reads only what it is given
    assert Config.of({"LEDGER_OPS_PORT": "9"}).database_url is None


SECRET = "s3cr3t-token-value-never-said"


@pytest.mark.parametrize("name,value,said", [
    ("LEDGER_HEADER_TIMEOUT_S", "soon", "LEDGER_HEADER_TIMEOUT_S is not a number: 'soon'"),
    ("LEDGER_MAX_CONNECTIONS", "2.5", "LEDGER_MAX_CONNECTIONS is not a whole number: '2.5'"),
    ("LEDGER_REQUIRE_LEAST_PRIVILEGE", "maybe",
     "LEDGER_REQUIRE_LEAST_PRIVILEGE is not 1 or 0 (true or false): 'maybe'"),
    ("LEDGER_WEBHOOK_POLL_S", "often", "LEDGER_WEBHOOK_POLL_S is not a number: 'often'"),
    ("LEDGER_HEAVY_WORKERS", "one", "LEDGER_HEAVY_WORKERS is not a whole number: 'one'"),
])
def test_a_value_that_cannot_be_had_is_said_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, said: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as raised:
        load()
    assert str(raised.value) == said and "\n" not in str(raised.value)


def test_a_secrets_value_is_never_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    # A SecretStr takes any text: what could go wrong is repeating it elsewhere.
    monkeypatch.setenv("LEDGER_TOKENS", SECRET)
    monkeypatch.setenv("LEDGER_WEBHOOK_SECRET", SECRET)
    config = load()
    assert SECRET not in repr(config) and SECRET not in str(config.model_dump())
    assert config.tokens is not None and config.tokens.get_secret_value() == SECRET


READERS = {("os", "environ"), ("os", "getenv"), ("os", "environb")}


def _reads_environment(tree: ast.AST) -> list[int]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                (node.value.id, node.attr) in READERS:
            found.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == "os" and \
                any(a.name in {"environ", "getenv", "environb"} for a in node.names):
            found.append(node.lineno)
    return found


def test_only_the_configuration_reads_the_environment() -> None:
    readers = {}
    for package in ("ledger", "projections", "api"):
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = _reads_environment(ast.parse(path.read_text(), str(path)))
            if lines:
                readers[str(path.relative_to(ROOT))] = lines
    assert readers == {}, f"read the environment outside api/config.py: {readers}"


def test_the_environment_check_finds_a_reader() -> None:
    code = "import os\nfrom os import getenv\nx = os.environ.get('A')\ny = os.getenv('B')\n"
    assert sorted(_reads_environment(ast.parse(code))) == [2, 3, 4]


@pytest.mark.parametrize("url", [
    "postgresql://ledger:pw@db.example:5432/ledger?sslmode=verify-full",
    "postgresql://ledger@db.example/ledger#x",
    "sqlite:///var/ledger.db?mode=ro",
])
def test_a_database_url_with_a_query_is_refused_not_read_without_it(url: str) -> None:
    """Connection options in the URL would be dropped in silence (sslmode=verify-full then
    connects in plain text): they are refused, pointing at libpq's environment."""
    with pytest.raises(InvalidInput, match="PGSSLMODE") as refused:
        StoreSettings.from_url(url)
    assert "pw" not in refused.value.detail
