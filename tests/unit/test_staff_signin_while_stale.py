"""Signing in while the staff directory is stale (projections.staff ``stale_s``): a member of
staff is told to try again (503 ``not_ready``), not that their token is wrong (401); tokens the
directory does not decide on are answered as before."""

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


def test_a_staff_token_is_answered_not_ready_once_the_directory_is_stale(
    app: LedgerApplication,
) -> None:
    clock = Clock()
    directory = StaffDirectory(app, stale_s=30.0, clock=clock)
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
