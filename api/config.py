"""The service's configuration: every ``LEDGER_`` variable, read once at start and checked.

``ledger serve`` and each one-off command read the environment here, once (``load``), and hand
the pieces down: the store's URL and chain key to ``StoreSettings``, the tokens to
``api.auth``, the bounds to ``api.limits``, the edge's to ``api.edge``, the logs' to
``api.logs``, sign-in to ``api.signin``, webhooks to ``api.webhooks``, the notary's to
``api.auditkit``, the second approval's thresholds to the ledger. Nothing else in ``ledger``,
``projections`` or ``api`` reads the environment (a test checks it).

A value that cannot be had stops the start with one line naming the variable and what it
should be, exit code 2; a secret's value (``LEDGER_TOKENS``, ``LEDGER_WEBHOOK_SECRET``) is never
repeated. An empty variable counts as unset (but an empty ``LEDGER_TOKENS`` is refused). Each
consumer still checks its own ranges, in its own words (``EdgeSettings``, ``Limits``,
``WebhookSettings`` …), and the same one-line refusal follows.

The tests read it the same way: ``Config.of(mapping)`` is a configuration from a mapping of
``LEDGER_`` names (a test's environment), without the process's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ledger.settings import DEFAULT_CHAIN_KEY_FILE

PREFIX = "LEDGER_"
SECRETS = frozenset({"tokens", "webhook_secret"})


class Config(BaseSettings):
    """Every setting of the service, by its name without ``LEDGER_`` (README, "Settings")."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, extra="ignore", frozen=True, str_strip_whitespace=True,
    )

    # -- the store, its keys, the tokens ---------------------------------------------------------
    database_url: str | None = None  # None: ledger.settings.DEFAULT_DATABASE_URL
    chain_key_file: Path = DEFAULT_CHAIN_KEY_FILE
    tokens: SecretStr | None = None  # None: the tokens file (api.auth)
    require_least_privilege: bool = False
    # -- checkpoints (issue 10) ------------------------------------------------------------------
    signing_key_file: str = ""  # "": projections.notes' defaults
    origin: str = ""
    checkpoint_file: str = ""
    checkpoint_interval_s: float | None = None  # None: projections.checkpoints' default
    # -- the read-model keeper --------------------------------------------------------------------
    keeper: Literal["process", "thread"] | None = None  # None: process on PostgreSQL
    # -- logs ------------------------------------------------------------------------------------
    log_format: str = "json"
    log_level: str = "INFO"
    # -- the edge --------------------------------------------------------------------------------
    header_timeout_s: float | None = None
    max_connections: int | None = None
    ops_port: int | None = None
    # -- people (issue 11) -----------------------------------------------------------------------
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwks_file: str = ""
    second_approval_above: str | None = None
    # -- bounds (api.limits; None: the defaults) -------------------------------------------------
    max_attempts: int | None = None
    lock_timeout_s: float | None = None
    request_deadline_s: float | None = None
    max_waiting_requests: int | None = None
    queue_wait_s: float | None = None
    write_workers: int | None = None
    write_max_waiting: int | None = None
    write_queue_wait_s: float | None = None
    write_role_workers: int | None = None
    write_role_waiting: int | None = None
    write_starts_per_s: float | None = None
    read_workers: int | None = None
    read_max_waiting: int | None = None
    read_queue_wait_s: float | None = None
    read_role_workers: int | None = None
    read_role_waiting: int | None = None
    read_starts_per_s: float | None = None
    heavy_workers: int | None = None
    heavy_max_waiting: int | None = None
    heavy_queue_wait_s: float | None = None
    heavy_role_workers: int | None = None
    heavy_role_waiting: int | None = None
    heavy_starts_per_s: float | None = None
    # -- webhooks (issue 14) ---------------------------------------------------------------------
    webhook_url: str = ""  # comma separated
    webhook_secret: SecretStr | None = None
    webhook_max_age_s: float | None = None
    webhook_timeout_s: float | None = None
    webhook_concurrency: int | None = None
    webhook_backoff_base_s: float | None = None
    webhook_backoff_max_s: float | None = None
    webhook_poll_s: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, values: Any) -> Any:
        """An empty variable is an unset one; but an empty ``LEDGER_TOKENS`` is a mistake,
        refused (``api.auth``), never a silent fall back to the tokens file."""
        if not isinstance(values, dict):
            return values
        return {name: value for name, value in values.items()
                if name == "tokens" or not (isinstance(value, str) and not value.strip())}

    @classmethod
    def of(cls, env: Mapping[str, str]) -> Config:
        """The configuration ``env`` (``LEDGER_`` names) gives, ignoring the process's own
        environment; ValueError in ``load``'s words."""
        values = {name[len(PREFIX):].lower(): value for name, value in env.items()
                  if name.startswith(PREFIX)}
        try:
            return _Given.model_validate(values)
        except ValidationError as error:
            raise ValueError(said(error)) from None

    def lane(self, lane: str, name: str) -> Any:
        """A lane's own bound (``write``, ``read``, ``heavy``; ``workers``, ``queue_wait_s`` …)."""
        return getattr(self, f"{lane}_{name}")


class _Given(Config):
    """A configuration of the values given only (``Config.of``)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # not the environment, a dotenv file or secrets


def load() -> Config:
    """The process's configuration, read once; ValueError saying, in one line, what is wrong."""
    try:
        return Config()
    except ValidationError as error:
        raise ValueError(said(error)) from None


_KINDS = {"float_parsing": "a number", "int_parsing": "a whole number",
          "int_from_float": "a whole number", "bool_parsing": "1 or 0 (true or false)",
          "finite_number": "a finite number"}


def said(error: ValidationError) -> str:
    """The first problem of ``error`` as one line: the variable, what it should be and (unless
    it is a secret) what it was."""
    problem = error.errors(include_url=False)[0]
    field = str(problem["loc"][0]) if problem["loc"] else ""
    name = f"{PREFIX}{field.upper()}"
    wanted = _KINDS.get(problem["type"])
    what = f"is not {wanted}" if wanted else problem["msg"].lower()
    if field in SECRETS:
        return f"{name} {what}"
    return f"{name} {what}: {problem.get('input')!r}"
