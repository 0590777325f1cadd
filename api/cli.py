"""The ``ledger`` command: ``serve``, ``rebuild``, ``verify``, ``digest`` and ``export``.

Configuration comes from the environment, read once and checked before anything is done
(``api.config``): ``LEDGER_DATABASE_URL`` (see ``ledger.settings``) and, for ``serve``,
``LEDGER_TOKENS`` (see ``api.auth``), the bounds of ``_bounds`` and the rest of
``api.config.Config``. SIGTERM and SIGINT stop the server
gracefully: no new connections, requests in flight finish (up to ``SHUTDOWN_TIMEOUT_S``), then
the resources close.

Exit codes: 0 done (``verify``: everything holds); 1 refused or not ok (``rebuild`` while
another rebuild runs or the read models' tables stay locked, ``verify`` finding a bad position,
``digest`` with
nothing bound yet); 2 bad configuration or arguments. The commands other than ``serve`` never
create a store: an SQLite file that does not exist is refused.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import getpass
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import click

from api import auditcli

# The HTTP stack, the store's drivers and eventsourcing are imported by the commands that use
# them, not here: `ledger --help` and `--version` answer at once (tests/http/test_cli_start.py).
if TYPE_CHECKING:
    from api.auth import Tokens
    from api.config import Config
    from ledger.application import LedgerApplication
    from ledger.settings import StoreSettings
    from projections import audit
    from projections.chain import Digest
    from projections.seal import ChainKey

SHUTDOWN_TIMEOUT_S = 15.0
SWITCH_INTERVAL_S = 0.0005
# The one-off commands use a connection or two at a time.
COMMAND_POOL_SIZE = 2
DEFAULT_REBUILD_LOCK_TIMEOUT_S = 5.0
log = logging.getLogger("api.cli")


@functools.cache
def _config(command: str) -> Config:
    """The configuration, read once (``api.config``); a bad value refuses ``command`` in one
    line, exit code 2."""
    from api.config import load

    try:
        return load()
    except ValueError as error:
        _refuse(command, str(error))


def _tokens(config: Config) -> Tokens:
    """``LEDGER_TOKENS``, or the tokens file: its tokens are printed once, when they are made
    (to the terminal of that first start); later starts name the file, never the tokens."""
    from api.auth import DEFAULT_TOKENS_FILE, Tokens, load_or_create

    if config.tokens is not None:
        return Tokens.parse(config.tokens.get_secret_value())
    tokens, shown, created = load_or_create(DEFAULT_TOKENS_FILE)
    if not created:
        click.echo(f"LEDGER_TOKENS is unset: using the tokens in {DEFAULT_TOKENS_FILE} "
                   "(shown when they were made; read the file to see them again)")
        return tokens
    click.echo(f"LEDGER_TOKENS is unset: made new tokens in {DEFAULT_TOKENS_FILE} (mode 600); "
               "they are shown this once:")
    for role, token in shown.items():
        click.echo(f"  {role}:{token}")
    return tokens


# Each lane's own bounds (``api.limits.LaneLimits``): LEDGER_<LANE>_<NAME>, e.g.
# LEDGER_HEAVY_WORKERS=1 or LEDGER_WRITE_ROLE_WAITING=64.
LANE_BOUNDS = ("workers", "max_waiting", "queue_wait_s", "role_workers", "role_waiting",
               "starts_per_s")


def _bounds(config: Config) -> dict[str, Any]:
    """The bounds an operator (or a test) may tighten, each checked before the server starts:
    ``LEDGER_MAX_ATTEMPTS`` (optimistic retries of a write), ``LEDGER_LOCK_TIMEOUT_S`` (wait
    for an account's lock), ``LEDGER_REQUEST_DEADLINE_S``, ``LEDGER_MAX_WAITING_REQUESTS`` and
    ``LEDGER_QUEUE_WAIT_S`` (every lane's line and wait), and each lane's own
    ``LEDGER_<LANE>_{WORKERS,MAX_WAITING,QUEUE_WAIT_S,ROLE_WORKERS,ROLE_WAITING,STARTS_PER_S}``
    (lanes ``WRITE``, ``READ``, ``HEAVY``; see ``api.limits``). Unset: the defaults."""
    from api.limits import MAX_QUEUE_WAIT_S, REQUEST_DEADLINE_S, Lane, LaneLimits, Limits

    options: dict[str, Any] = {
        option: value for option in ("max_attempts", "lock_timeout_s")
        if (value := getattr(config, option)) is not None
    }
    limits: dict[str, Any] = {
        field: value for name, field in (("request_deadline_s", "request_deadline_s"),
                                         ("max_waiting_requests", "max_waiting"),
                                         ("queue_wait_s", "queue_wait_s"))
        if (value := getattr(config, name)) is not None
    }
    for lane in Lane:
        own = {name: value for name in LANE_BOUNDS
               if (value := config.lane(lane.value, name)) is not None}
        if own:
            limits[lane.value] = LaneLimits(**own)
    if limits:
        deadline_s = limits.get("request_deadline_s", REQUEST_DEADLINE_S)
        limits.setdefault("queue_wait_s", min(MAX_QUEUE_WAIT_S, deadline_s))
        options["limits"] = Limits(**limits)
    return options


def _keeper(settings: StoreSettings, config: Config) -> Callable[[StoreSettings], Any]:
    """The read-model keeper ``LEDGER_KEEPER`` asks for: ``process`` (the default on
    PostgreSQL) applies the batches in a child process, so they never hold the GIL a request
    waits for; ``thread`` in a thread of this process (SQLite's only way: no notice of new
    events crosses processes there, so a child would only poll)."""
    from api import logs
    from projections.readmodels import ReadModelKeeper

    mode = config.keeper or ("process" if settings.kind == "postgres" else "thread")
    if mode == "process" and settings.kind != "postgres":
        raise ValueError("LEDGER_KEEPER=process needs PostgreSQL: on SQLite it is `thread`")
    if mode == "thread":
        return ReadModelKeeper
    return functools.partial(ReadModelKeeper, in_child_process=True,
                             child_setup=functools.partial(logs.configure,
                                                           *logs.settings_of(config)))


class _Commands(click.Group):
    """The ledger's commands: one the database refuses for want of a privilege (the
    least-privileged login running what only the tables' owner may: a rebuild, a first
    checkpoint, webhooks' tables), or whose lock wait it cut short (``bound_ddl_lock_waits``),
    is said in one line, not a driver's traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as error:
            found = sys.modules.get("psycopg.errors")  # not loaded: not the database's refusal
            if found is None:  # (and --help and --version load no database driver)
                raise
            InsufficientPrivilege, LockNotAvailable = (
                found.InsufficientPrivilege, found.LockNotAvailable)
            command = ctx.invoked_subcommand or ""
            if (said := _refused_by(error, InsufficientPrivilege)) is not None:
                _refuse(command, f"the database refused it ({said}): run it with the tables' "
                        "owner's LEDGER_DATABASE_URL", exit_code=1)
            if _refused_by(error, LockNotAvailable) is not None:
                _refuse(command, f"the tables are in use: a lock was not given within "
                        f"{DDL_LOCK_TIMEOUT_S} s (nothing was changed by the statement that "
                        "waited); try again", exit_code=1)
            raise


def _refused_by(error: BaseException, kind: type[BaseException]) -> str | None:
    """The database's words when ``error`` (or one it came from) is of ``kind``."""
    seen: BaseException | None = error
    for _ in range(8):  # a bounded walk of the cause chain
        if seen is None:
            return None
        if isinstance(seen, kind):
            return str(seen).strip().splitlines()[0]
        seen = seen.__cause__ or seen.__context__
    return None


# The longest a command that changes the schema (migrate, a first checkpoint) waits for a
# table's lock: a CREATE INDEX queued behind a long transaction holds every writer behind it.
DDL_LOCK_TIMEOUT_S = 5


def bound_ddl_lock_waits(settings: StoreSettings) -> StoreSettings:
    """``settings`` whose PostgreSQL connections wait at most ``DDL_LOCK_TIMEOUT_S`` for a
    lock (the pools' included)."""
    return dataclasses.replace(settings, lock_wait_s=DDL_LOCK_TIMEOUT_S)


@click.group(cls=_Commands)
@click.version_option(package_name="ledger", prog_name="ledger",
                      message="%(prog)s %(version)s")
def main() -> None:
    """The ledger of a cross-border shopping agent's customer money."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
def serve(host: str, port: int) -> None:
    """Serve the HTTP API and keep the read models current."""
    # Imported here: the HTTP stack is most of the start-up time of the one-off commands.
    from api import edge, logs, preflight
    from api.app import create_app
    from api.auth import TokenConfigError
    from ledger.errors import InvalidInput
    from projections.notes import NoteError
    from projections.privileges import schema_behind
    from projections.seal import ChainKeyError

    # Threads hand work to each other on every write (handler → committer → handler): with
    # CPython's default 5 ms switch interval, each hand-off may wait that long for the GIL
    # behind a busy thread (the read-model keeper, an event page being encoded).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    config = _config("serve")
    try:
        logs.configure(*logs.settings_of(config))
        settings = store_settings(config)
        unreachable = preflight.reachable(settings)
        if unreachable is not None:
            raise ValueError(unreachable)
        behind = schema_behind(settings)  # a least-privileged login makes no table
        if behind is not None:
            raise ValueError(behind)
        tokens = _tokens(config)
        edge_settings = edge.EdgeSettings.from_config(config)
        # issue 10: LEDGER_REQUIRE_LEAST_PRIVILEGE
        auditcli.check_privilege(settings, required=config.require_least_privilege)
        app = create_app(settings, tokens, config=config, keeper=_keeper(settings, config),
                         **_bounds(config))
    except (InvalidInput, TokenConfigError, OSError, ValueError) as error:
        detail = error.detail if isinstance(error, InvalidInput) else str(error)
        click.echo(f"ledger serve: {detail}", err=True)
        sys.exit(2)
    try:
        # Handler cancellation stays off (edge.serve): a client hanging up never cuts a write
        # in half.
        edge.serve(
            app, host=host, port=port, edge=edge_settings, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            access_log=logging.getLogger(logs.ACCESS_LOGGER),
            access_log_class=logs.AccessLogger,
            on_started=lambda names: log.info("serving on %s", ", ".join(names)),
        )
    except (ChainKeyError, NoteError) as error:  # found at start-up, before anything is served
        click.echo(f"ledger serve: {error}", err=True)
        sys.exit(2)
    except OSError as error:  # the port taken (LEDGER_OPS_PORT the same, another server)
        if error.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        click.echo(f"ledger serve: cannot listen on {host} port {port}"
                   f"{'' if edge_settings.ops_port is None else f' and {edge_settings.ops_port}'}"
                   f": {os.strerror(error.errno) if error.errno else error}", err=True)
        sys.exit(2)


# -- the one-off commands ------------------------------------------------------------------------


def _login_name() -> str:
    """Who runs the command, as the operating system says (``getpass``), else "operator"."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "operator"


def _refuse(command: str, message: str, *, exit_code: int = 2) -> NoReturn:
    click.echo(f"ledger {command}: {message}", err=True)
    sys.exit(exit_code)


def store_settings(config: Config, **options: Any) -> StoreSettings:
    """The store ``LEDGER_DATABASE_URL`` names, sealed with ``LEDGER_CHAIN_KEY_FILE``'s key;
    InvalidInput, in words that never repeat the URL, when it cannot be read."""
    from ledger.settings import StoreSettings

    return StoreSettings.from_url(config.database_url, chain_key_file=config.chain_key_file,
                                  **options)


def _settings(command: str) -> StoreSettings:
    from api import preflight
    from ledger.errors import InvalidInput

    config = _config(command)
    try:
        settings = store_settings(config, pool_size=COMMAND_POOL_SIZE)
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
    from projections.seal import ChainKeyError
    from projections.store import open_application

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
              help="Seconds to wait for another rebuild to end and for the read models' "
                   "tables at the swap.")
def rebuild(lock_timeout_s: float) -> None:
    """Rebuild every read model from the event log, with a progress bar, without downtime.

    Builds fresh read models beside the live ones, catches them up with the log (or, while
    a `ledger serve` keeps the live ones, with where they stand), then swaps them in, with
    their tracking records, in one transaction and drops the old ones. Servers may run
    meanwhile: reads see the old complete set or the new one and stay current; only during
    the swap do they wait (briefly) for the tables."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    from api.edge import full_collections_held_back
    from ledger.errors import HistoryDamaged
    from projections import replay
    from projections.leadership import LeadershipBusy

    settings = _settings("rebuild")
    with _application(settings, "rebuild") as app, full_collections_held_back():
        total = app.recorder.max_notification_id() or 0
        with tqdm(total=total, unit="event", desc="rebuild", file=sys.stderr) as bar:
            try:
                report = replay.rebuild(
                    settings, app, on_batch=bar.update, lock_timeout_s=lock_timeout_s
                )
            except (LeadershipBusy, HistoryDamaged) as error:
                # damaged: the fresh read models are dropped, the live ones left as they were
                bar.close()
                _refuse("rebuild", str(error), exit_code=1)
    click.echo(
        f"rebuilt every read model from {report.events} events in {report.seconds:.2f} s "
        f"({report.events_per_second:,.0f} events/s)"
    )
    click.echo(f"swapped in: the live read models were held {report.swap_seconds * 1000:.0f} ms "
               "(reads waited at most that long)")


def _digests(paths: tuple[Path, ...]) -> list[Digest]:
    from projections.chain import read_digests

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
    if report.unchecked_signatures:
        click.echo(f"signatures NOT checked: {report.unchecked_signatures} stored checkpoints "
                   "were checked against the log but not their signatures (no verifier key: "
                   "give --key, what `ledger keys public` prints)")


@main.command()
@click.option("--digest", "digest_files", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="A file of digests written by `ledger digest` (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--checkpoint", "checkpoint_files", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="A file of signed checkpoints kept outside the database (repeatable; "
              "needs a verifier key).")
@click.option("--key", "verifier_key", default=None, metavar="VERIFIER",
              help="The checkpoints' verifier key, as `ledger keys public` prints it "
              "(default: the public half of LEDGER_SIGNING_KEY_FILE, when it is here).")
def verify(digest_files: tuple[Path, ...], as_json: bool,
           checkpoint_files: tuple[Path, ...] = (), verifier_key: str | None = None) -> None:
    """Re-derive history and check it: the hash chain against the stored events and the
    digests, every invariant at every position, every checkpoint (its signature and its root),
    the read models against a fresh replay.

    Exits 0 only when all hold; otherwise 1, with the first bad position. Checkpoint
    signatures are checked with --key, else with the signing key's public half; with neither,
    checkpoint files (--checkpoint) are refused (exit 2: their signatures are the point), and
    the stored checkpoints' roots are checked but the report says their signatures were not.
    The last checkpoints of the service's own file (LEDGER_CHECKPOINT_FILE, outside the
    database) that the key signed are checked too: a tail cut with its checkpoint rows, or an
    older backup restored, is named."""
    from api import preflight
    from projections import audit

    settings = _settings("verify")
    config = _config("verify")
    checkpoint_key = auditcli.checkpoint_key(config, verifier_key)
    if checkpoint_key is None and checkpoint_files:
        _refuse("verify", "no verifier key to check the signatures of the checkpoints given "
                "with --checkpoint: give --key (what `ledger keys public` prints)")
    nothing = preflight.empty(settings)
    if nothing is not None:  # "ok: 0 events checked" would read as a clean bill
        _refuse("verify", nothing, exit_code=1)
    digests = _digests(digest_files)
    with _application(settings, "verify") as app:
        report = audit.verify(settings, app, digests,
                              checkpoint_notes=auditcli.notes_of(checkpoint_files),
                              checkpoint_key=checkpoint_key,
                              checkpoint_file=auditcli.service_checkpoint_file(config))
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
    from projections.chain import Chain

    settings = _settings("digest")
    with _application(settings, "digest") as app:
        head = Chain(app.recorder).head()
    if head.position == 0:
        _refuse("digest", "the chain seals no event yet", exit_code=1)
    if output is None:
        click.echo(head.to_json())
        return
    try:
        with output.open("a") as file:
            file.write(head.to_json() + "\n")
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        _refuse("digest", f"cannot append to {output}: {error.strerror}")


def write_beancount(app: LedgerApplication, currency: str | None, out: TextIO) -> None:
    """The journal as Beancount text, written to ``out`` as it is made: replayed from the log
    into a scratch journal (a temporary SQLite file), so exact up to where the log stood,
    whether or not a ``ledger serve`` keeps the live read models current, and nothing is
    written to the store."""
    from ledger.settings import StoreSettings
    from projections import beancount, replay
    from projections.journal import JournalProjection
    from projections.readmodels import ReadModels

    with tempfile.TemporaryDirectory(prefix="ledger-export-") as folder:
        scratch = StoreSettings.from_url(f"sqlite:///{folder}/export.db")
        read_models = ReadModels(scratch, app)
        try:
            journal = read_models.views[JournalProjection.name]
            replay.replay(app, [(JournalProjection, journal)])
            title = "Ledger journal" if currency is None else f"Ledger journal ({currency})"
            beancount.export(read_models.journal_entries(currency=currency), out, title=title)
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
    from ledger import money
    from ledger.errors import HistoryDamaged, InvalidInput

    if currency is not None:
        try:
            currency = money.currency(currency)
        except InvalidInput as error:
            _refuse("export", error.detail)
    settings = _settings("export")
    with _application(settings, "export") as app:

        def write(out: TextIO) -> None:  # as it is made: the export is never held whole
            if fmt == "events":  # issue 10: what tools/ledger_audit.py reads
                for line in auditcli.event_lines(app):
                    out.write(line + "\n")
            elif fmt in ("csv", "hledger"):  # issue 10: the general ledger, the hledger journal
                auditcli.write_journal(app, currency, fmt, out)
            else:
                write_beancount(app, currency, out)

        try:
            if output is None:
                write(sys.stdout)
                sys.stdout.flush()
            else:
                _write_whole(output, write)
        except HistoryDamaged as error:  # the journal is replayed only from sealed events
            _refuse("export", str(error), exit_code=1)


def _write_whole(output: Path, write: Callable[[TextIO], None]) -> None:
    """``write`` into ``output`` through a file beside it, put in its place once whole: a
    failed export never leaves half a file."""
    partial = output.with_name(f".{output.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as file:
            write(file)
        partial.replace(output)
    except OSError as error:
        partial.unlink(missing_ok=True)
        _refuse("export", f"cannot write {output}: {error.strerror}")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


# -- named staff (issue 11) ----------------------------------------------------------------------


@main.group()
def staff() -> None:
    """Named staff: each person has a role and a token of their own (only its hash is kept).

    Every server honours a change within a second or two."""


def _staff_app(command: str) -> AbstractContextManager[LedgerApplication]:
    return _application(_settings(f"staff {command}"), f"staff {command}")


# Who changed the staff, as the history records it and `staff list` shows it: one word, so no
# tab, newline or control character can forge a line of the list.
_OPERATOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


def _operator(command: str, by: str | None) -> Any:
    from ledger.identity import Actor

    who = (by or _login_name()).strip() or "operator"
    if not _OPERATOR.fullmatch(who):
        _refuse(f"staff {command}", "--by is 1-64 letters, digits, '.', '_', '@', '+' or '-', "
                "starting with a letter or digit" if by else
                "your login name cannot be recorded as who did this: give --by NAME")
    return Actor.of_person(who, "system", f"cli-staff-{os.getpid()}")


def _staff_do(command: str, action: Any) -> Any:
    from eventsourcing.application import AggregateNotFoundError

    from ledger.errors import LedgerError

    with _staff_app(command) as app:
        def load(aggregate_id: Any) -> Any:
            try:
                return app.repository.get(aggregate_id)
            except AggregateNotFoundError:
                return None

        try:
            return action(load, app.save)
        except LedgerError as error:
            _refuse(f"staff {command}", error.detail, exit_code=1)


BY_OPTION = click.option("--by", default=None,
                         help="Who is doing this, for the history (default: $USER).")


@staff.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["cs", "finance", "auditor", "system"]), required=True)
@BY_OPTION
def staff_add(name: str, role: str, by: str | None) -> None:
    """Add NAME with ROLE; prints their token once (it is not kept: only its hash is)."""
    from ledger import staff as people

    actor = _operator("add", by)
    token = _staff_do("add", lambda load, save: people.add(load, save, name, role, actor=actor))
    click.echo(token)


@staff.command("rotate")
@click.argument("name")
@BY_OPTION
def staff_rotate(name: str, by: str | None) -> None:
    """A new token for NAME (printed once); the old one stops working."""
    from ledger import staff as people

    actor = _operator("rotate", by)
    click.echo(_staff_do("rotate", lambda load, save: people.rotate(load, save, name,
                                                                    actor=actor)))


@staff.command("revoke")
@click.argument("name")
@BY_OPTION
def staff_revoke(name: str, by: str | None) -> None:
    """NAME's token stops working, on every server within a second or two."""
    from ledger import staff as people

    actor = _operator("revoke", by)
    _staff_do("revoke", lambda load, save: people.revoke(load, save, name, actor=actor))
    click.echo(f"revoked {name.strip().lower()}")


@staff.command("list")
def staff_list() -> None:
    """Everyone on the staff: name, role, active or revoked, and who last changed them."""
    from projections.staff import StaffDirectory

    with _staff_app("list") as app:
        directory = StaffDirectory(app)
        directory.refresh()
        if directory.damage is not None:
            click.echo(f"the history is damaged ({directory.damage.describe()}): no one listed "
                       "is let in until the store is restored; ledger verify names the damage",
                       err=True)
        for person in directory.people():
            state = "revoked" if person.revoked else "active"
            click.echo(f"{person.name}\t{person.role}\t{state}\t"
                       f"added {person.added_at} by {person.added_by}\t"
                       f"changed {person.changed_at} by {person.changed_by}")
# -- webhooks (issue 14: api.webhooks, projections.outbox) ---------------------------------------


@main.group()
def webhooks() -> None:
    """Webhook subscriptions and redelivery (messages to customers, api/README.md)."""


@contextmanager
def _outbox(command: str) -> Iterator[tuple[Any, ChainKey]]:
    """The outbox's view on an existing store, its delivery tables made if missing, and the
    store's chain key (checked against it), which seals the subscriptions."""
    from projections import outbox
    from projections.readmodels import open_view

    settings = _settings(f"webhooks {command}")
    with _application(settings, f"webhooks {command}") as app:
        key: ChainKey = app.recorder.chain_key  # type: ignore[attr-defined]
    view = open_view(settings, outbox.OutboxProjection, pool_size=1)
    try:
        outbox.create_delivery_tables(view)
        yield view, key
    finally:
        view.datastore.close()


@webhooks.command("add")
@click.argument("url")
def webhooks_add(url: str) -> None:
    """Send URL every message from now on (LEDGER_WEBHOOK_SECRET signs them)."""
    from datetime import UTC, datetime

    from api.webhooks import check_url
    from ledger.clock import rfc3339
    from projections import outbox

    try:
        check_url(url, "URL")
    except ValueError as error:
        _refuse("webhooks add", str(error))
    with _outbox("add") as (view, key):
        since = outbox.last_position(view)
        try:
            added = outbox.subscribe(view, url, since=since,
                                     added_at=rfc3339(datetime.now(UTC)), key=key)
        except outbox.TooManySubscriptions as error:
            _refuse("webhooks add", str(error))
    shown = outbox.shown_url(url)
    click.echo(f"subscribed {shown} to the messages after position {since}" if added
               else f"{shown} was subscribed already")


@webhooks.command("list")
def webhooks_list() -> None:
    """The subscriptions (LEDGER_WEBHOOK_URL's URLs are the server's own, not listed)."""
    from projections import outbox

    with _outbox("list") as (view, key):
        rows = outbox.subscriptions(view)
    for row in rows:
        sealed = "" if outbox.subscription_sealed(key, row) else (
            "\tNOT SEALED: not made with the service's key (by SQL?), nothing is sent to it;"
            " add it again if it is yours, else remove it")
        click.echo(f"{outbox.shown_url(row['url'])}\tsince {row['since']}\t"
                   f"added {row['added_at']}{sealed}")


@webhooks.command("remove")
@click.argument("url")
def webhooks_remove(url: str) -> None:
    """Stop sending URL messages."""
    from projections import outbox

    with _outbox("remove") as (view, _):
        removed = outbox.unsubscribe(view, url)
    if not removed:
        _refuse("webhooks remove", f"{outbox.shown_url(url)} is not subscribed", exit_code=1)
    click.echo(f"unsubscribed {outbox.shown_url(url)}")


@webhooks.command("redeliver")
@click.argument("message_id", type=click.UUID)
def webhooks_redeliver(message_id: Any) -> None:
    """Send a message again, with the same id, to every receiver of now that had it."""
    from api.webhooks import WebhookSettings, sent_to
    from projections import outbox

    config = _config("webhooks redeliver")
    try:
        configured = WebhookSettings.from_config(config).urls
    except ValueError as error:
        _refuse("webhooks redeliver", str(error))
    with _outbox("redeliver") as (view, key):
        count, others = outbox.redeliver(view, str(message_id), configured, sent_to, key=key)
    if count == 0 and others:
        _refuse("webhooks redeliver", f"message {message_id} was sent only to {others} "
                "receiver(s) that are no receivers now: removed, or not in LEDGER_WEBHOOK_URL "
                "here (set it as the servers have it)", exit_code=1)
    if count == 0:
        _refuse("webhooks redeliver", f"no message {message_id} was sent yet", exit_code=1)
    also = f" (not to {others} that are no receivers now)" if others else ""
    click.echo(f"message {message_id} will be sent again to {count} receiver(s){also}")


auditcli.register(main)  # issue 10: checkpoint, keys


if __name__ == "__main__":  # python -m api.cli, as the ledger script
    main()
