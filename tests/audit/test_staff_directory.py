"""The staff directory (``projections.staff``) against someone with the database's password but
not the chain key, on both stores: a staff event changed, hidden as another event, stripped of
its seal or deleted never lets anyone in again, whether a directory had read it before (and left
a mark naming it), reads it while running, or starts after the change; and a directory that
starts after a mark reads the staff's events and the log after the mark, not the whole log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import uuid4

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ed25519

from api.keys import SIGNIN, STAFF
from api.people import identify_person
from api.signin import SignIn
from ledger import staff
from ledger.application import LedgerApplication
from ledger.identity import Actor
from projections.staff import StaffDirectory
from tests.audit.conftest import Intruder, seals_checked_here
from tests.audit.history import SYSTEM
from tests.conftest import load_or_none

BOSS = Actor.of_person("grace", "system", "cli-1")
REVOKED = "ledger:Staff.StaffRevoked"
ROTATED = "ledger:Staff.TokenRotated"
ADDED = "ledger:Staff.StaffAdded"


def save(app: LedgerApplication) -> Callable[[staff.Staff], None]:
    def put(person: staff.Staff) -> None:
        app.save(person)
    return put


def some_money(app: LedgerApplication, name: str) -> None:
    app.open_account(name, "EUR", actor=SYSTEM)
    app.deposit(name, 1_000, f"PAY-{name}", actor=SYSTEM)


@dataclass
class Staffed:
    """ann's first token (rotated away), her second (active), cy's (revoked) and bea's
    (active)."""

    first: str
    second: str
    cy: str
    bea: str


def staff_history(app: LedgerApplication, before: Callable[[], None] = lambda: None) -> Staffed:
    """ann and cy added, then ann's token rotated and cy revoked, then bea added, with money
    moving between (so every staff event has events after it); ``before`` runs just before the
    rotation."""
    some_money(app, "early")
    first = staff.add(load_or_none(app), save(app), "ann", "cs", actor=BOSS)
    cy = staff.add(load_or_none(app), save(app), "cy", "system", actor=BOSS)
    before()
    second = staff.rotate(load_or_none(app), save(app), "ann", actor=BOSS)
    some_money(app, "middle")
    staff.revoke(load_or_none(app), save(app), "cy", actor=BOSS)
    bea = staff.add(load_or_none(app), save(app), "bea", "finance", actor=BOSS)
    some_money(app, "late")
    return Staffed(first, second, cy, bea)


def lets_in(directory: StaffDirectory, token: str) -> bool:
    return directory.identify(staff.token_hash(token)) is not None


TAMPERINGS: dict[str, Callable[[Intruder, int], None]] = {
    "given another topic": lambda intruder, at: intruder.set_topic(at, "ledger:Staff.Nothing"),
    "moved to another stream and topic": lambda intruder, at: intruder.move_to_stream(
        at, uuid4(), "ledger:Account.DepositReceived"),
    "stripped of its seal": lambda intruder, at: intruder.delete_seal(at),
    "deleted with its seal": lambda intruder, at: intruder.delete_with_seal(at),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
@pytest.mark.parametrize("read", ["after a directory marked it", "before any directory read it",
                                  "under a running directory"])
@pytest.mark.parametrize("topic", [REVOKED, ROTATED])
def test_a_revocation_or_rotation_tampered_with_never_lets_the_old_token_in_again(
    app: LedgerApplication, intruder: Intruder, topic: str, read: str, tampering: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given ann's token rotated and cy revoked, and bea added after, read by a directory before
    # the tampering (which leaves a mark), or by none, or by one that read only up to before
    # the rotation
    running = StaffDirectory(app)
    tokens = staff_history(app, running.refresh if read == "under a running directory"
                           else lambda: None)
    if read == "after a directory marked it":
        running.refresh()
        assert not lets_in(running, tokens.first) and not lets_in(running, tokens.cy)
        assert lets_in(running, tokens.second)
    (changed,) = intruder.positions_of(topic)
    old = tokens.first if topic == ROTATED else tokens.cy

    # When an intruder changes the revocation or the rotation behind the service's back
    TAMPERINGS[tampering](intruder, changed)

    # Then a directory started afresh (a restarted server), and the running one, let neither
    # the old token (ann's first, or revoked cy's) in nor anyone named, and say where the log
    # is damaged, in an ERROR line
    directory = running if read == "under a running directory" else StaffDirectory(app)
    with caplog.at_level(logging.ERROR, logger="projections.staff"):
        directory.refresh()
    assert not lets_in(directory, old)
    assert not lets_in(directory, tokens.second) and not lets_in(directory, tokens.bea)
    assert directory.damage is not None and directory.damage.position == changed
    assert f"history damaged at position {changed}" in caplog.text
    # and still lists who is on the staff, for the operator
    assert [p.name for p in directory.people()] == ["ann", "bea", "cy"]


@pytest.mark.parametrize("read", ["after a directory marked it", "before any directory read it"])
def test_a_person_whose_addition_is_deleted_with_its_seal_lets_no_one_in(
    app: LedgerApplication, intruder: Intruder, read: str
) -> None:
    # Given ann and bea added
    tokens = staff_history(app)
    if read == "after a directory marked it":
        StaffDirectory(app).refresh()
    bea_added = intruder.positions_of(ADDED)[-1]
    # When bea's addition is deleted with its seal
    intruder.delete_with_seal(bea_added)
    # Then a directory started afresh lets no one named in, and names the position
    directory = StaffDirectory(app)
    directory.refresh()
    assert not lets_in(directory, tokens.bea)
    assert directory.damage is not None and directory.damage.position == bea_added


def remembering(app: LedgerApplication) -> bool:
    """The writer remembers what it seals from now on, as under a notary (``ledger serve``):
    PostgreSQL's writer does; SQLite's has no such memory (False)."""
    keep_written = getattr(app.recorder, "keep_written", None)
    if keep_written is None:
        return False
    keep_written()
    return True


def test_events_written_here_are_read_without_their_seals_computed_again(
    app: LedgerApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a staff history written by this process, whose writer remembers what it sealed
    # for its notary (on PostgreSQL)
    remembers = remembering(app)
    tokens = staff_history(app)
    head = app.recorder.max_notification_id() or 0
    # When a directory reads it
    checked = seals_checked_here(monkeypatch)
    directory = StaffDirectory(app)
    directory.refresh()
    # Then each event read back as written is vouched for by that memory, without an HMAC
    # (SQLite's events are all checked in full), and the staff are as the events say
    assert checked == ([] if remembers else list(range(1, head + 1)))
    assert directory.damage is None
    assert lets_in(directory, tokens.second) and lets_in(directory, tokens.bea)
    assert not lets_in(directory, tokens.first) and not lets_in(directory, tokens.cy)
    # and the memory is left whole for the notary, which takes each event as it places it
    if remembers:
        assert len(app.recorder.written) == head  # type: ignore[attr-defined]


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_an_event_written_here_and_changed_since_is_named_whatever_the_writer_remembers(
    app: LedgerApplication, intruder: Intruder, tampering: str
) -> None:
    # Given a staff history written by this process, whose writer remembers what it sealed
    remembering(app)
    tokens = staff_history(app)
    (revoked,) = intruder.positions_of(REVOKED)
    # When an intruder changes cy's revocation behind the service's back
    TAMPERINGS[tampering](intruder, revoked)
    # Then what the writer remembers does not vouch for what is stored now: the directory
    # names the position and lets no one named in
    directory = StaffDirectory(app)
    directory.refresh()
    assert directory.damage is not None and directory.damage.position == revoked
    assert not lets_in(directory, tokens.cy) and not lets_in(directory, tokens.bea)


def test_a_directory_started_after_a_mark_checks_the_staff_events_and_the_log_after_it_only(
    app: LedgerApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a directory that read a history and left a mark (every 10 events here)
    staff_history(app)
    StaffDirectory(app, mark_every=10).refresh()
    marked = app.recorder.max_notification_id() or 0
    for n in range(3):
        some_money(app, f"after-{n}")
    staff_positions = [n.id for n in app.recorder.select_notifications(1, 1_000, stop=marked)
                       if n.topic.startswith("ledger:Staff.")]
    # When a directory starts
    checked = seals_checked_here(monkeypatch)
    directory = StaffDirectory(app, mark_every=10)
    directory.refresh()
    # Then it checked the seals of the staff's events the mark names, and of the events after
    # the mark, and of no other event
    head = app.recorder.max_notification_id() or 0
    assert sorted(checked) == staff_positions + list(range(marked + 1, head + 1))
    assert directory.damage is None
    assert [p.name for p in directory.people() if not p.revoked] == ["ann", "bea"]


def test_a_mark_written_behind_the_services_back_is_not_used(
    app: LedgerApplication, intruder: Intruder, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a history whose revocation was changed before any directory read it, and a mark
    # INSERTed by SQL that says the log was whole up to far beyond it, naming no staff event
    staff_history(app)
    (revoked,) = intruder.positions_of(REVOKED)
    intruder.set_topic(revoked, "ledger:Staff.Nothing")
    intruder.run("INSERT INTO ledger_staff_marks (position, link, staff, seal)"
                 " VALUES (%s, %s, %s, %s)", (10**9, "0" * 64, "[]", "f" * 64), unguarded=False)
    # When a directory starts
    directory = StaffDirectory(app)
    with caplog.at_level(logging.ERROR, logger="projections.staff"):
        directory.refresh()
    # Then the mark is named and not used: the whole log is read, and the change is found
    assert "mark at position 1000000000 has no valid seal" in caplog.text
    assert directory.damage is not None and directory.damage.position == revoked


def test_a_log_cut_at_its_end_after_a_mark_lets_no_one_in(
    app: LedgerApplication, intruder: Intruder
) -> None:
    # Given a directory that read up to ann's revocation, the log's last event, and marked it
    tokens = staff_history(app)
    staff.revoke(load_or_none(app), save(app), "ann", actor=BOSS)
    StaffDirectory(app).refresh()
    revoked = intruder.positions_of(REVOKED)[-1]
    # When the revocation (the log's end) is deleted with its seal
    intruder.delete_with_seal(revoked)
    # Then a directory started afresh finds the mark beyond the log's end: no one named is let in
    directory = StaffDirectory(app)
    directory.refresh()
    assert not lets_in(directory, tokens.second) and not lets_in(directory, tokens.bea)
    assert directory.damage is not None and directory.damage.position == revoked




def test_a_store_without_the_marks_table_is_read_whole_at_each_start(
    app: LedgerApplication, intruder: Intruder, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a store made before the directory's marks (and served by a login that makes no
    # table), with a revocation given another topic
    tokens = staff_history(app)
    intruder.run("DROP TABLE ledger_staff_marks", (), unguarded=False)
    (revoked,) = intruder.positions_of(REVOKED)
    intruder.set_topic(revoked, "ledger:Staff.Nothing")
    # When a directory starts
    directory = StaffDirectory(app)
    with caplog.at_level(logging.WARNING, logger="projections.staff"):
        directory.refresh()
    # Then it says it keeps no marks, reads the whole log, and finds the change
    assert "keeps no marks on this store" in caplog.text
    assert not lets_in(directory, tokens.cy) and not lets_in(directory, tokens.bea)
    assert directory.damage is not None and directory.damage.position == revoked


# -- a JWT naming a member of staff, once the staff's history is damaged ----------------------

ISSUER, AUDIENCE = "https://id.example.test/", "ledger-console"


class Console:
    """What ``api.people.identify_person`` reads: an identity provider's key, a directory."""

    def __init__(self) -> None:
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.app = web.Application()
        self.app[SIGNIN] = SignIn(ISSUER, AUDIENCE, ((None, self.key.public_key(), "EdDSA"),))

    def lets_in(self, directory: StaffDirectory, sub: str) -> bool:
        """Whether a JWT the identity provider signed for ``sub`` lets someone in."""
        now = int(time.time())
        token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "roles": ["system"],
                            "nbf": now - 5, "exp": now + 300}, self.key, algorithm="EdDSA")
        directory.refresh()
        self.app[STAFF] = directory
        return identify_person(self.app, token) is not None


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_a_jwt_naming_a_revoked_member_lets_no_one_in_once_the_revocation_is_tampered_with(
    app: LedgerApplication, intruder: Intruder, tampering: str,
) -> None:
    # Given cy revoked, whom the identity provider still signs tokens for
    staff_history(app)
    console = Console()
    assert not console.lets_in(StaffDirectory(app), "cy")
    assert console.lets_in(StaffDirectory(app), "dora")  # no member of staff: as signed
    # When an intruder hides her revocation
    (revoked,) = intruder.positions_of(REVOKED)
    TAMPERINGS[tampering](intruder, revoked)
    # Then no JWT lets anyone in while the staff's history is damaged: any name may be one
    # whose revocation was hidden
    assert not console.lets_in(StaffDirectory(app), "cy")
    assert not console.lets_in(StaffDirectory(app), "dora")


def test_a_jwt_naming_a_member_whose_every_staff_event_is_deleted_lets_no_one_in(
    app: LedgerApplication, intruder: Intruder,
) -> None:
    staff_history(app)
    added = [p for p in intruder.positions_of(ADDED) if b'"cy"' in intruder.state_at(p)]
    for position in (*added, *intruder.positions_of(REVOKED)):
        intruder.delete_with_seal(position)
    directory = StaffDirectory(app)
    assert not Console().lets_in(directory, "cy")
    assert directory.damage is not None
