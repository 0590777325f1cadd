"""The ``ledger`` command: ``serve``, ``rebuild``, ``verify``, ``digest`` and ``export``.

Configuration comes from the environment and is checked before anything is done:
``LEDGER_DATABASE_URL`` (see ``ledger.settings``) and, for ``serve``, ``LEDGER_TOKENS`` (see
``api.auth``) and the bounds of ``_bounds_from_env``. SIGTERM and SIGINT stop the server
gracefully: no new connections, requests in flight finish (up to ``SHUTDOWN_TIMEOUT_S``), then
the resources close.

Exit codes: 0 done (``verify``: everything holds); 1 refused or not ok (``rebuild`` while a
``ledger serve`` keeps the read models, ``verify`` finding a bad position, ``digest`` with
nothing bound yet); 2 bad configuration or arguments. The commands other than ``serve`` never
create a store: an SQLite file that does not exist is refused.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from tqdm import tqdm  # type: ignore[import-untyped]

from api import auditcli, preflight
from api.auth import DEFAULT_TOKENS_FILE, TokenConfigError, Tokens, load_or_create
from api.limits import MAX_QUEUE_WAIT_S, REQUEST_DEADLINE_S, Lane, LaneLimits, Limits
from ledger import money
from ledger.application import LedgerApplication
from ledger.errors import InvalidInput
from ledger.settings import StoreSettings
from projections import audit, beancount, replay
from projections.chain import Chain, Digest, read_digests
from projections.journal import JournalProjection
from projections.leadership import LeadershipBusy
from projections.readmodels import ReadModels
from projections.seal import ChainKeyError
from projections.store import open_application

SHUTDOWN_TIMEOUT_S = 15.0
SWITCH_INTERVAL_S = 0.0005
# The one-off commands use a connection or two at a time.
COMMAND_POOL_SIZE = 2
DEFAULT_REBUILD_LOCK_TIMEOUT_S = 5.0
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


def _env_number(name: str, kind: type[int] | type[float]) -> int | float | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name} is not a number: {raw!r}") from None


# Each lane's own bounds (``api.limits.LaneLimits``): LEDGER_<LANE>_<NAME>, e.g.
# LEDGER_HEAVY_WORKERS=1 or LEDGER_WRITE_ROLE_WAITING=64.
LANE_BOUNDS_ENV = (("WORKERS", "workers", int), ("MAX_WAITING", "max_waiting", int),
                   ("QUEUE_WAIT_S", "queue_wait_s", float), ("ROLE_WORKERS", "role_workers", int),
                   ("ROLE_WAITING", "role_waiting", int))


def _bounds_from_env() -> dict[str, Any]:
    """The bounds an operator (or a test) may tighten, each checked before the server starts:
    ``LEDGER_MAX_ATTEMPTS`` (optimistic retries of a write), ``LEDGER_LOCK_TIMEOUT_S`` (wait
    for an account's lock), ``LEDGER_REQUEST_DEADLINE_S``, ``LEDGER_MAX_WAITING_REQUESTS`` and
    ``LEDGER_QUEUE_WAIT_S`` (every lane's line and wait), and each lane's own
    ``LEDGER_<LANE>_{WORKERS,MAX_WAITING,QUEUE_WAIT_S,ROLE_WORKERS,ROLE_WAITING}`` (lanes
    ``WRITE``, ``READ``, ``HEAVY``; see ``api.limits``). Unset: the defaults."""
    options: dict[str, Any] = {}
    for name, option, kind in (("LEDGER_MAX_ATTEMPTS", "max_attempts", int),
                               ("LEDGER_LOCK_TIMEOUT_S", "lock_timeout_s", float)):
        value = _env_number(name, kind)
        if value is not None:
            options[option] = value
    limits: dict[str, Any] = {}
    for name, field, kind in (("LEDGER_REQUEST_DEADLINE_S", "request_deadline_s", float),
                              ("LEDGER_MAX_WAITING_REQUESTS", "max_waiting", int),
                              ("LEDGER_QUEUE_WAIT_S", "queue_wait_s", float)):
        value = _env_number(name, kind)
        if value is not None:
            limits[field] = value
    for lane in Lane:
        own: dict[str, Any] = {
            field: value for suffix, field, kind in LANE_BOUNDS_ENV
            if (value := _env_number(f"LEDGER_{lane.upper()}_{suffix}", kind)) is not None
        }
        if own:
            limits[lane.value] = LaneLimits(**own)
    if limits:
        deadline_s = limits.get("request_deadline_s", REQUEST_DEADLINE_S)
        limits.setdefault("queue_wait_s", min(MAX_QUEUE_WAIT_S, deadline_s))
        options["limits"] = Limits(**limits)
    return options


@click.group()
def main() -> None:
    """The ledger of a cross-border shopping agent's customer money."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
def serve(host: str, port: int) -> None:
    """Serve the HTTP API and keep the read models current."""
    # Imported here: the HTTP stack is most of the start-up time of the one-off commands.
    from aiohttp import web

    from api.app import create_app

    # Threads hand work to each other on every write (handler → committer → handler): with
    # CPython's default 5 ms switch interval, each hand-off may wait that long for the GIL
    # behind a busy thread (the read-model keeper, an event page being encoded).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = StoreSettings.from_url(os.environ.get("LEDGER_DATABASE_URL"))
        unreachable = preflight.reachable(settings)
        if unreachable is not None:
            raise ValueError(unreachable)
        tokens = _tokens()
        auditcli.check_privilege(settings)  # issue 10: LEDGER_REQUIRE_LEAST_PRIVILEGE
        app = create_app(settings, tokens, **_bounds_from_env())
    except (InvalidInput, TokenConfigError, OSError, ValueError) as error:
        detail = error.detail if isinstance(error, InvalidInput) else str(error)
        click.echo(f"ledger serve: {detail}", err=True)
        sys.exit(2)
    try:
        web.run_app(
            app,
            host=host,
            port=port,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            # Explicit, though aiohttp's default: a client hanging up never cuts a write in half.
            handler_cancellation=False,
            access_log=logging.getLogger("aiohttp.access"),
            access_log_format=ACCESS_LOG_FORMAT,
            print=lambda message: log.info("%s", message),
        )
    except ChainKeyError as error:  # found at start-up, before anything is served
        click.echo(f"ledger serve: {error}", err=True)
        sys.exit(2)


# -- the one-off commands ------------------------------------------------------------------------


def _refuse(command: str, message: str, *, exit_code: int = 2) -> NoReturn:
    click.echo(f"ledger {command}: {message}", err=True)
    sys.exit(exit_code)


def _settings(command: str) -> StoreSettings:
    try:
        settings = StoreSettings.from_url(
            os.environ.get("LEDGER_DATABASE_URL"), pool_size=COMMAND_POOL_SIZE
        )
    except InvalidInput as error:
        _refuse(command, error.detail)
    if settings.sqlite_path is not None and not settings.sqlite_path.exists():
        _refuse(command, f"there is no store at {settings.sqlite_path} (LEDGER_DATABASE_URL)")
    # Reached, and the ledger's: said in one line, and no tables made in another database.
    wrong = preflight.problem(settings)
    if wrong is not None:
        _refuse(command, wrong)
    return settings


@contextmanager
def _application(settings: StoreSettings, command: str) -> Iterator[LedgerApplication]:
    """The application on an existing store; never a new chain key (only ``serve`` makes one,
    on an empty store's first start)."""
    try:
        app = open_application(settings, may_create_key=False)
    except ChainKeyError as error:
        _refuse(command, str(error))
    try:
        yield app
    finally:
        app.close()


@main.command()
@click.option("--lock-timeout", "lock_timeout_s", default=DEFAULT_REBUILD_LOCK_TIMEOUT_S,
              show_default=True, type=click.FloatRange(0, 600),
              help="Seconds to wait for the read models' lock.")
def rebuild(lock_timeout_s: float) -> None:
    """Rebuild every read model from the event log, with a progress bar.

    Refused while a `ledger serve` keeps the read models: stop it first."""
    settings = _settings("rebuild")
    with _application(settings, "rebuild") as app:
        total = app.recorder.max_notification_id() or 0
        with tqdm(total=total, unit="event", desc="rebuild", file=sys.stderr) as bar:
            try:
                report = replay.rebuild(
                    settings, app, on_batch=bar.update, lock_timeout_s=lock_timeout_s
                )
            except LeadershipBusy as error:
                bar.close()
                _refuse("rebuild", str(error), exit_code=1)
    click.echo(
        f"rebuilt every read model from {report.events} events in {report.seconds:.2f} s "
        f"({report.events_per_second:,.0f} events/s)"
    )


def _digests(paths: tuple[Path, ...]) -> list[Digest]:
    found: list[Digest] = []
    for path in paths:
        try:
            found += read_digests(path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            _refuse("verify", f"{path} is not a file of digests from `ledger digest`: {error}")
    return found


def _print_report(report: audit.VerifyReport) -> None:
    if report.ok:
        click.echo(f"ok: {report.events_checked} events checked; every seal, every digest "
                   "and every invariant hold, and the read models equal a fresh replay")
    else:
        where = report.first_bad_position
        click.echo(f"NOT OK: {report.events_checked} events checked; first bad position: "
                   f"{'none in the log (a read model differs)' if where is None else where}")
        for problem in report.problems:
            click.echo(f"  - {problem}")


@main.command()
@click.option("--digest", "digest_files", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="A file of digests written by `ledger digest` (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--checkpoint", "checkpoint_files", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="A file of signed checkpoints kept outside the database (repeatable).")
def verify(digest_files: tuple[Path, ...], as_json: bool,
           checkpoint_files: tuple[Path, ...] = ()) -> None:
    """Re-derive history and check it: the hash chain against the stored events and the
    digests, every invariant at every position, the read models against a fresh replay.

    Exits 0 only when all hold; otherwise 1, with the first bad position."""
    settings = _settings("verify")
    nothing = preflight.empty(settings)
    if nothing is not None:  # "ok: 0 events checked" would read as a clean bill
        _refuse("verify", nothing, exit_code=1)
    digests = _digests(digest_files)
    with _application(settings, "verify") as app:
        report = audit.verify(settings, app, digests,
                              checkpoint_notes=auditcli.notes_of(checkpoint_files))
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        _print_report(report)
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Append the digest to this file (default: print it).")
def digest(output: Path | None) -> None:
    """The hash chain's head as a JSON line: keep it outside the database, and give it to
    `ledger verify --digest` to catch a rewrite of events and chain together."""
    settings = _settings("digest")
    with _application(settings, "digest") as app:
        head = Chain(app.recorder).head()
    if head.position == 0:
        _refuse("digest", "the chain seals no event yet", exit_code=1)
    if output is None:
        click.echo(head.to_json())
    else:
        with output.open("a") as file:
            file.write(head.to_json() + "\n")
            file.flush()
            os.fsync(file.fileno())


def beancount_text(app: LedgerApplication, currency: str | None) -> str:
    """The journal as Beancount text, replayed from the log into a scratch journal (a temporary
    SQLite file): exact up to where the log stood, whether or not a ``ledger serve`` keeps the
    live read models current, and nothing is written to the store."""
    with tempfile.TemporaryDirectory(prefix="ledger-export-") as folder:
        scratch = StoreSettings.from_url(f"sqlite:///{folder}/export.db")
        read_models = ReadModels(scratch, app)
        try:
            journal = read_models.views[JournalProjection.name]
            replay.replay(app, [(JournalProjection, journal)])
            title = "Ledger journal" if currency is None else f"Ledger journal ({currency})"
            return beancount.export(read_models.journal_entries(currency=currency), title=title)
        finally:
            read_models.close()


@main.command()
@click.option("--format", "fmt", required=True,
              type=click.Choice(["beancount", "events", "csv", "hledger"]),
              help="The file format.")
@click.option("--currency", default=None, help="Only this ISO 4217 currency (default: all).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (default: print).")
def export(fmt: str, currency: str | None, output: Path | None) -> None:
    """The journal for plain-text accounting tools."""
    if currency is not None:
        try:
            currency = money.currency(currency)
        except InvalidInput as error:
            _refuse("export", error.detail)
    settings = _settings("export")
    with _application(settings, "export") as app:
        if fmt == "events":  # issue 10: what tools/ledger_audit.py reads
            text = "".join(line + "\n" for line in auditcli.event_lines(app))
        elif fmt in ("csv", "hledger"):  # issue 10: the general ledger, the hledger journal
            text = auditcli.csv_text(app, currency, fmt)
        else:
            text = beancount_text(app, currency)
    if output is None:
        click.echo(text, nl=False)
        return
    partial = output.with_name(f".{output.name}.partial")
    partial.write_text(text)
    partial.replace(output)  # a failed export never leaves half a file


auditcli.register(main)  # issue 10: checkpoint, keys
