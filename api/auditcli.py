"""The auditor's kit on the command line: ``ledger checkpoint``, ``ledger keys public`` and the
event export (``ledger export --format events``), registered on ``ledger`` by ``api.cli``."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

# The store and the signing stack are imported by the commands that use them, so that
# `ledger --help` answers at once (tests/http/test_cli_start.py).
if TYPE_CHECKING:
    from ledger.application import LedgerApplication


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


def register(main: click.Group) -> None:
    from api.cli import _application, _refuse, _settings

    @main.command()
    def checkpoint() -> None:
        """Sign a checkpoint of the whole log now (if it grew since the last one), store it and
        append it to LEDGER_CHECKPOINT_FILE; print the latest checkpoint."""
        from projections.checkpoints import Notary, guard_notary
        from projections.notes import NoteError, load_or_create_signer, signing_settings

        settings = _settings("checkpoint")
        try:
            key_file, origin, checkpoint_file = signing_settings()
            signer = load_or_create_signer(key_file, origin, may_create=True)
        except NoteError as error:
            _refuse("checkpoint", str(error))
        with _application(settings, "checkpoint") as app:
            guard_notary(app.recorder)
            notary = Notary(app.recorder, signer, checkpoint_file)
            notary.round(force_checkpoint=True)
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

        try:
            key_file, origin, _ = signing_settings()
            click.echo(read_signer(key_file, origin).verifier.text())
        except NoteError as error:
            _refuse("keys", str(error))


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
        except (OSError, NoteError) as error:
            _refuse("verify", f"{path} is not a file of checkpoints: {error}")
    return notes
