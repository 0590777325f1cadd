"""The staff directory (projections.staff): how long a revoked person's token can
still be accepted when the directory stops being refreshed (the store does not answer, or an
event cannot be read: every refresh fails); and what a member of staff signing in meanwhile
is told (503 ``not_ready``, try again shortly; not 401, as if their token were wrong)."""

from __future__ import annotations

import pytest
from aiohttp import web

from api.keys import STAFF
from api.people import identify_person
from ledger import staff
from ledger.application import LedgerApplication
from ledger.errors import NotReady
from ledger.identity import Actor
from projections.staff import StaffDirectory
from tests.conftest import load_or_none as load

BOSS = Actor.of_person("grace", "system", "cli-1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def directory(app: LedgerApplication, clock: Clock) -> StaffDirectory:
    """A directory that counts as stale once 30 s pass on ``clock`` without a refresh."""
    return StaffDirectory(app, stale_s=30.0, clock=clock)


def test_a_directory_not_refreshed_for_stale_s_lets_no_member_of_staff_in(
    app: LedgerApplication, clock: Clock, directory: StaffDirectory
) -> None:
    token = staff.add(load(app), app.save, "vic", "finance", actor=BOSS)
    directory.refresh()
    assert directory.identify(staff.token_hash(token)) is not None

    # vic is revoked; this directory's refreshes fail from now on (it never reads it)
    staff.revoke(load(app), app.save, "vic", actor=BOSS)
    clock.now += 29.0
    assert directory.identify(staff.token_hash(token)) is not None  # within the bound
    clock.now += 2.0
    assert directory.identify(staff.token_hash(token)) is None
    assert directory.is_revoked("vic")  # a JWT naming vic neither

    directory.refresh()  # the store answers again: the revocation is read
    assert directory.identify(staff.token_hash(token)) is None
    assert directory.is_revoked("vic")


def test_a_refreshed_directory_lets_the_active_in_and_knows_the_revoked(
    app: LedgerApplication, clock: Clock, directory: StaffDirectory
) -> None:
    token = staff.add(load(app), app.save, "wes", "cs", actor=BOSS)
    staff.add(load(app), app.save, "xia", "cs", actor=BOSS)
    staff.revoke(load(app), app.save, "xia", actor=BOSS)
    for _ in range(5):  # refreshed on time, for much longer than stale_s in all
        clock.now += 20.0
        directory.refresh()
        found = directory.identify(staff.token_hash(token))
        assert found is not None and found.name == "wes"
        assert directory.is_revoked("xia") and not directory.is_revoked("wes")
        assert not directory.is_revoked("nobody")


def test_a_staff_token_is_answered_not_ready_once_the_directory_is_stale(
    app: LedgerApplication, clock: Clock, directory: StaffDirectory
) -> None:
    token = staff.add(load(app), app.save, "yan", "cs", actor=BOSS)
    directory.refresh()
    web_app = web.Application()
    web_app[STAFF] = directory
    assert identify_person(web_app, token) == ("yan", ("cs",))
    assert identify_person(web_app, "not-a-token-anyone-holds") is None

    clock.now += 31.0  # no refresh held for longer than stale_s
    with pytest.raises(NotReady, match="try again shortly"):
        identify_person(web_app, token)

    directory.refresh()  # the store answers again
    assert identify_person(web_app, token) == ("yan", ("cs",))
