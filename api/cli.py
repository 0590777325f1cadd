"""The ``ledger`` command: ``ledger serve`` (``rebuild``, ``verify`` and ``export`` join later).

Configuration comes from the environment and is checked before anything is served:
``LEDGER_DATABASE_URL`` (see ``ledger.settings``) and ``LEDGER_TOKENS`` (see ``api.auth``).
SIGTERM and SIGINT stop the server gracefully: no new connections, requests in flight finish
(up to ``SHUTDOWN_TIMEOUT_S``), then the resources close.
"""

from __future__ import annotations

import logging
import os
import sys

import click
from aiohttp import web

from api.app import create_app
from api.auth import DEFAULT_TOKENS_FILE, TokenConfigError, Tokens, load_or_create
from ledger.errors import InvalidInput
from ledger.settings import StoreSettings

SHUTDOWN_TIMEOUT_S = 15.0
ACCESS_LOG_FORMAT = '%a "%r" %s %bB %Tfs request_id=%{X-Request-Id}o'
log = logging.getLogger("api.cli")


def _tokens() -> Tokens:
    configured = os.environ.get("LEDGER_TOKENS")
    if configured is not None:
        return Tokens.parse(configured)
    tokens, shown, created = load_or_create(DEFAULT_TOKENS_FILE)
    how = "made new" if created else "kept"
    click.echo(f"LEDGER_TOKENS is unset: using the tokens {how} in {DEFAULT_TOKENS_FILE}:")
    for role, token in shown.items():
        click.echo(f"  {role}:{token}")
    return tokens


@click.group()
def main() -> None:
    """The ledger of a cross-border shopping agent's customer money."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
def serve(host: str, port: int) -> None:
    """Serve the HTTP API and keep the read models current."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = StoreSettings.from_url(os.environ.get("LEDGER_DATABASE_URL"))
        tokens = _tokens()
    except (InvalidInput, TokenConfigError, OSError) as error:
        detail = error.detail if isinstance(error, InvalidInput) else str(error)
        click.echo(f"ledger serve: {detail}", err=True)
        sys.exit(2)
    web.run_app(
        create_app(settings, tokens),
        host=host,
        port=port,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        # Explicit, though aiohttp's default: a client hanging up never cuts a write in half.
        handler_cancellation=False,
        access_log=logging.getLogger("aiohttp.access"),
        access_log_format=ACCESS_LOG_FORMAT,
        print=lambda message: log.info("%s", message),
    )
