"""The auditor's kit on the command line: ``ledger checkpoint``, ``ledger keys public`` and the
event export (``ledger export --format events``), registered on ``ledger`` by ``api.cli``."""

from __future__ import annotations

import base64
import json
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

# The store and the signing stack are imported by the commands that use them, so that
# `ledger --help` answers at once (tests/http/test_cli_start.py).
if TYPE_CHECKING:
    from api.config import Config
    from ledger.application import LedgerApplication
    from ledger.settings import StoreSettings
    from projections.notes import Verifier

log = logging.getLogger(__name__)


def event_lines(app: LedgerApplication) -> Iterator[str]:
    """The log as JSON lines, what ``tools/ledger_audit.py`` reads: each event's position,
    stream, version, type, stored state (base64), its leaf hash (base64) and its seal
    (``link``, ``previous``; null when the event has none)."""
    from projections.chain import Chain, all_notifications
    from projections.checkpoints import notification_leaf

    links = iter(Chain(app.recorder).links())
    pending = next(links, None)
    for event in all_notifications(app.recorder):
        while pending is not None and pending.position < event.id:
            pending = next(links, None)
        link = pending if pending is not None and pending.position == event.id else None
        yield json.dumps({
            "position": event.id,
            "stream": str(event.originator_id),
            "version": event.originator_version,
            "type": event.topic,
            "state": base64.b64encode(bytes(event.state)).decode(),
            "leaf_hash": base64.b64encode(notification_leaf(event)).decode(),
            "link": None if link is None else link.hash,
            "previous": None if link is None else link.previous,
        }, separators=(",", ":"))


def checkpoint_key(config: Config, given: str | None = None) -> Verifier | None:
    """The key ``ledger verify`` checks checkpoint signatures with: the verifier key ``given``
    (``--key``, in signed-note form, what ``ledger keys public`` prints), else the public half
    of this configuration's signing key, else None (no key file here). Refuses in one line
    when the key given does not parse or the origin cannot be had."""
    from api.cli import _refuse
    from projections.notes import NoteError, Verifier, signing_settings, verifier_of

    if given is not None:
        try:
            return Verifier.parse(given)
        except NoteError as error:
            _refuse("verify", f"--key: {error}")
    try:
        key_file, origin, _ = signing_settings(config.signing_key_file, config.origin)
    except NoteError as error:
        _refuse("verify", str(error))
    return verifier_of(key_file, origin)


def service_checkpoint_file(config: Config) -> Path | None:
    """The file the service appends each checkpoint it signs to (``LEDGER_CHECKPOINT_FILE``,
    default beside the signing key); None when the settings cannot name one."""
    from projections.notes import NoteError, signing_settings

    try:
        return signing_settings(config.signing_key_file, config.origin,
                                config.checkpoint_file)[2]
    except NoteError:
        return None


def check_privilege(settings: StoreSettings, *, required: bool) -> None:
    """Say at start when the service's login could rewrite history; refuse to start then
    (ValueError) when least privilege is ``required`` (``LEDGER_REQUIRE_LEAST_PRIVILEGE=1``)."""
    from projections.privileges import excess_privilege

    excess = excess_privilege(settings)
    if excess is None:
        return
    if required:
        raise ValueError(f"{excess}; LEDGER_REQUIRE_LEAST_PRIVILEGE=1 refuses to start")
    log.warning("%s", excess)


def register(main: click.Group) -> None:
    from api.cli import (
        _application,
        _config,
        _refuse,
        _settings,
        bound_ddl_lock_waits,
        store_settings,
    )

    @main.command()
    @click.option("--grant-to", "role", default=None,
                  help="Grant this PostgreSQL role what the service needs and no more.")
    def migrate(role: str | None) -> None:
        """Create or upgrade the schema (run with the tables' owner's LEDGER_DATABASE_URL);
        with --grant-to ROLE, grant ROLE only SELECT and INSERT on history's tables."""
        from api import preflight
        from ledger.errors import InvalidInput
        from projections.privileges import grant_to, may_make_tables, role_exists
        from projections.readmodels import prepare_read_models
        from projections.store import open_application

        config = _config("migrate")
        try:
            settings = bound_ddl_lock_waits(store_settings(config, pool_size=2))
        except InvalidInput as error:
            _refuse("migrate", error.detail)
        unreachable = preflight.reachable(settings)
        if unreachable is not None:
            _refuse("migrate", unreachable)
        if role is not None and settings.kind != "postgres":
            _refuse("migrate", "--grant-to is for PostgreSQL (an SQLite file has no roles)")
        if role is not None and not role_exists(settings, role):
            _refuse("migrate", f"--grant-to {role}: there is no such role in this database's "
                    "server (CREATE ROLE it first)")
        if not may_make_tables(settings):  # it would add nothing, and say all is in place
            _refuse("migrate", f"{settings.postgres['POSTGRES_USER']} does not own the "
                    "ledger's tables, so it can neither make nor upgrade them: run ledger "
                    "migrate with the tables' owner's LEDGER_DATABASE_URL")
        open_application(settings).close()
        prepare_read_models(settings)
        click.echo("the schema is in place")
        if role is None:
            return
        for grant in grant_to(settings, role):
            click.echo(f"granted {role}: {grant}")

    @main.command()
    def checkpoint() -> None:
        """Sign a checkpoint of the whole log now (if it grew since the last one), store it and
        append it to LEDGER_CHECKPOINT_FILE; print the latest checkpoint."""
        from projections.checkpoints import Notary, adopt_signer, guard_notary
        from projections.notes import NoteError, signing_settings

        settings = bound_ddl_lock_waits(_settings("checkpoint"))
        config = _config("checkpoint")
        try:
            key_file, origin, checkpoint_file = signing_settings(
                config.signing_key_file, config.origin, config.checkpoint_file)
            appendable(checkpoint_file)  # said before a checkpoint is signed and stored
        except NoteError as error:
            _refuse("checkpoint", str(error))
        with _application(settings, "checkpoint") as app:
            guard_notary(app.recorder)
            try:  # the key the store's checkpoints are signed with
                signer = adopt_signer(app.recorder, key_file, origin, may_create=True)
            except NoteError as error:
                _refuse("checkpoint", str(error))
            except OSError as error:  # a new key's folder or file cannot be made
                _refuse("checkpoint", f"cannot make a signing key at {key_file} "
                        f"(LEDGER_SIGNING_KEY_FILE): {error.strerror}")
            notary = Notary(app.recorder, signer, checkpoint_file)
            try:
                notary.round(force_checkpoint=True)
            except OSError as error:  # the file went away since ``appendable``
                _refuse("checkpoint", f"a checkpoint was signed and stored but not appended to "
                        f"{checkpoint_file}: {error.strerror}", exit_code=1)
            if notary.damage is not None:
                _refuse("checkpoint", f"history damaged at {notary.damage.describe()}: "
                        "no checkpoint signed", exit_code=1)
            latest = notary.latest()
        if latest is None:
            _refuse("checkpoint", "the log is empty: nothing to sign", exit_code=1)
        click.echo(latest.note, nl=False)

    @main.group()
    def keys() -> None:
        """The checkpoints' signing key."""

    @keys.command("public")
    def public() -> None:
        """The verifier key, in signed-note form: <name>+<hex key hash>+<base64 key>."""
        from projections.notes import NoteError, read_signer, signing_settings

        config = _config("keys")
        try:
            key_file, origin, _ = signing_settings(config.signing_key_file, config.origin)
            click.echo(read_signer(key_file, origin).verifier.text())
        except NoteError as error:
            _refuse("keys", str(error))


def appendable(path: Path) -> None:
    """NoteError, in one line, unless checkpoints can be appended to ``path`` (made, with its
    folder, when missing), as ``projections.notes.append_checkpoint`` will."""
    from projections.notes import NoteError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a"):
            pass
    except OSError as error:
        raise NoteError(f"cannot append checkpoints to {path} (LEDGER_CHECKPOINT_FILE): "
                        f"{error.strerror}") from None


def write_events(app: LedgerApplication) -> None:
    for line in event_lines(app):
        sys.stdout.write(line + "\n")


def notes_of(paths: tuple[Path, ...]) -> list[str]:
    """The checkpoints of the files given to ``ledger verify --checkpoint``."""
    from api.cli import _refuse
    from projections.notes import NoteError, read_checkpoints

    notes: list[str] = []
    for path in paths:
        try:
            notes += read_checkpoints(path.read_text())
        except (OSError, ValueError, NoteError) as error:  # ValueError: not UTF-8 text
            _refuse("verify", f"{path} is not a file of checkpoints: {error}")
    return notes


def write_journal(app: LedgerApplication, currency: str | None, fmt: str, out: TextIO) -> None:
    """The general-ledger CSV (``fmt`` ``csv``) or the hledger journal, written to ``out`` as it
    is made: replayed from the log into a scratch journal (as the Beancount export is: exact up
    to where the log stood, nothing written to the store)."""
    from ledger.settings import StoreSettings
    from projections import hledger, replay
    from projections.exports import general_ledger_csv
    from projections.journal import JournalProjection
    from projections.readmodels import ReadModels

    with tempfile.TemporaryDirectory(prefix="ledger-export-") as folder:
        scratch = StoreSettings.from_url(f"sqlite:///{folder}/export.db")
        read_models = ReadModels(scratch, app)
        try:
            replay.replay(app, [(JournalProjection, read_models.views[JournalProjection.name])])
            entries = read_models.journal_entries(currency=currency)
            if fmt == "csv":
                general_ledger_csv(entries, out)
            else:
                hledger.export(entries, out)
        finally:
            read_models.close()
